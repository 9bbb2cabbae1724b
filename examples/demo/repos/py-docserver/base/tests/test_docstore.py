import docstore


def test_reads_a_document():
    assert docstore.read_document("welcome.txt").startswith("Welcome to the document store")


def test_reads_a_document_in_a_subfolder():
    assert "pip install" not in docstore.read_document("guides/setup.txt")
    assert docstore.document_title("guides/setup.txt") == "Setting up your workstation"


def test_a_missing_document_is_an_error():
    try:
        docstore.read_document("no-such-document.txt")
    except OSError:
        return
    raise AssertionError("reading a missing document did not fail")


def test_lists_every_document():
    assert docstore.list_documents() == ["guides/setup.txt", "welcome.txt"]
