//! One-line renderings of run progress and worker state for `ase submit --watch` and
//! `ase status`.

use ase_proto::v1::{ImageStats, PhaseCounts, RunProgress, WorkerInfo};

fn counts(c: Option<PhaseCounts>) -> String {
    let c = c.unwrap_or_default();
    format!(
        "queued {} leased {} done {} failed {}",
        c.queued, c.leased, c.done, c.failed
    )
}

pub fn eta(seconds: f64) -> String {
    if seconds < 0.0 || !seconds.is_finite() {
        "unknown".into()
    } else {
        let s = seconds.round() as u64;
        format!("{}h{:02}m{:02}s", s / 3600, (s / 60) % 60, s % 60)
    }
}

pub fn run_line(p: &RunProgress) -> String {
    // Provider failures (429, 5xx, auth) use up no attempt: shown apart from retries. The time
    // to the next try changes every tick, so it goes after the ETA (see `ProgressView`).
    let provider = if p.provider_failures > 0 {
        format!(" | provider failures {}", p.provider_failures)
    } else {
        String::new()
    };
    let next_try = if p.pause_remaining_ms > 0 {
        format!(
            " | model calls resume in {:.1}s",
            p.pause_remaining_ms as f64 / 1000.0
        )
    } else if p.state == "paused: auth" || p.state == "paused: quota" {
        " | model calls resume when the key is supplied again (ase submit with the key)".into()
    } else {
        String::new()
    };
    format!(
        "run {} [{}] units {} | generate: {} | evaluate: {} | retries {}{provider} | model calls {} \
         | eta {}{next_try}",
        p.run_id,
        p.state,
        p.total_units,
        counts(p.generate),
        counts(p.evaluate),
        p.retries,
        p.model_calls,
        eta(p.eta_seconds)
    )
}

fn heartbeat_ago(ms: u64) -> String {
    if ms == ase_coordinator::NO_HEARTBEAT {
        "none since the coordinator started".into()
    } else {
        format!("{ms} ms ago")
    }
}

pub fn worker_line(w: &WorkerInfo) -> String {
    let liveness = if w.alive { "alive" } else { "dead" };
    let drain = if w.draining { " draining" } else { "" };
    format!(
        "worker {} [{liveness}{drain}] session {} running {}/{} (generate {} + eval {}) completed {} \
         last heartbeat {} cached repos: {} task images: {}",
        w.name,
        w.session,
        w.running,
        w.generate_slots + w.eval_slots,
        w.generate_slots,
        w.eval_slots,
        w.completed,
        heartbeat_ago(w.last_heartbeat_ms_ago),
        list_or_dash(&w.cached_repos),
        list_or_dash(&w.task_images),
    ) + &images_part(w.images.as_ref())
}

/// ` | images: …` from the worker's last heartbeat; empty when it sent none (no Docker, or
/// an older worker).
fn images_part(images: Option<&ImageStats>) -> String {
    let Some(s) = images else {
        return String::new();
    };
    let budget = s.cache_budget_bytes.map_or(String::new(), |b| {
        format!(" (pulled {} of budget {})", mb(s.cache_pulled_bytes), mb(b))
    });
    let mut out = format!(
        " | images: pulled {} failed {} attempts {} downloaded {} | cache {} images {}{budget} evictions {}",
        s.pulls_total,
        s.pulls_failed,
        s.pull_attempts,
        mb(s.bytes_downloaded),
        s.cache_images,
        mb(s.cache_bytes),
        s.evictions,
    );
    for p in &s.pulls {
        out.push_str(&format!(
            " | pulling {} (attempt {}) {}/{} layers {}/{}",
            p.image,
            p.attempt,
            p.layers_done,
            p.layers_seen,
            mb(p.bytes_downloaded),
            mb(p.bytes_total)
        ));
    }
    if s.pulls_not_shown > 0 {
        out.push_str(&format!(" | {} more pulls under way", s.pulls_not_shown));
    }
    out
}

/// Bytes in MB (10^6), one decimal.
fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn list_or_dash(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_string()
    } else {
        items.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paused_run_says_why_and_when_it_resumes() {
        let mut p = RunProgress {
            run_id: "m__b".into(),
            state: "paused: rate_limited".into(),
            provider_failures: 6,
            pause_remaining_ms: 1500,
            ..Default::default()
        };
        let line = run_line(&p);
        assert!(line.contains("[paused: rate_limited]"), "{line}");
        assert!(line.contains("provider failures 6"), "{line}");
        assert!(line.ends_with("model calls resume in 1.5s"), "{line}");
        p.state = "paused: auth".into();
        p.pause_remaining_ms = 0;
        assert!(run_line(&p).contains("when the key is supplied again"));
        p.state = "running".into();
        p.provider_failures = 0;
        assert!(!run_line(&p).contains("provider"), "{}", run_line(&p));
    }

    #[test]
    fn a_worker_never_heard_from_says_so() {
        let mut w = WorkerInfo {
            name: "w1".into(),
            last_heartbeat_ms_ago: ase_coordinator::NO_HEARTBEAT,
            ..Default::default()
        };
        assert!(
            worker_line(&w).contains("last heartbeat none since the coordinator started"),
            "{}",
            worker_line(&w)
        );
        w.last_heartbeat_ms_ago = 1500;
        assert!(worker_line(&w).contains("last heartbeat 1500 ms ago"));
    }

    #[test]
    fn the_task_images_a_worker_holds_are_listed() {
        let mut w = WorkerInfo {
            name: "w1".into(),
            ..Default::default()
        };
        assert!(
            worker_line(&w).ends_with("task images: -"),
            "{}",
            worker_line(&w)
        );
        w.task_images = vec!["r/a:1".into(), "r/b:2".into()];
        assert!(
            worker_line(&w).ends_with("task images: r/a:1,r/b:2"),
            "{}",
            worker_line(&w)
        );
    }

    #[test]
    fn a_worker_s_pulls_and_image_cache_are_shown() {
        let mut w = WorkerInfo {
            name: "w1".into(),
            images: Some(ImageStats {
                pulls_total: 3,
                pulls_failed: 1,
                pull_attempts: 5,
                bytes_downloaded: 12_500_000,
                cache_images: 2,
                cache_bytes: 20_000_000,
                cache_pulled_bytes: 15_000_000,
                cache_budget_bytes: Some(50_000_000),
                evictions: 4,
                pulls: vec![ase_proto::v1::PullUnderWay {
                    image: "r/c:1".into(),
                    attempt: 2,
                    layers_seen: 5,
                    layers_done: 3,
                    bytes_downloaded: 1_000_000,
                    bytes_total: 4_000_000,
                }],
                pulls_not_shown: 2,
                ..Default::default()
            }),
            ..Default::default()
        };
        let line = worker_line(&w);
        assert!(
            line.contains(
                "| images: pulled 3 failed 1 attempts 5 downloaded 12.5 MB | cache 2 images 20.0 MB \
                 (pulled 15.0 MB of budget 50.0 MB) evictions 4 | pulling r/c:1 (attempt 2) 3/5 \
                 layers 1.0 MB/4.0 MB | 2 more pulls under way"
            ),
            "{line}"
        );
        w.images = None;
        assert!(
            !worker_line(&w).contains("| images:"),
            "{}",
            worker_line(&w)
        );
    }
}
