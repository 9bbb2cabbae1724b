import logstat


def test_counts_matching_lines():
    assert logstat.count_matches("ERROR", "app.log") == 2


def test_a_pattern_with_spaces():
    assert logstat.count_matches("disk full", "app.log") == 1


def test_a_regular_expression():
    assert logstat.count_matches("^2026-01-0[12] .* WARN", "app.log") == 2


def test_no_match_counts_zero():
    assert logstat.count_matches("FATAL", "app.log") == 0


def test_lists_the_logs():
    assert logstat.log_names() == ["app.log", "worker.log"]
