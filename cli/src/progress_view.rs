//! Run progress as the user watches it: on a terminal, one indicatif bar per run and phase
//! (generate, evaluate) with ETA; otherwise (logs, tests, pipes) the plain one-line form of
//! `progress_fmt`, printed only when a run's figures change.

use crate::progress_fmt::{eta, run_line};
use ase_proto::v1::{PhaseCounts, RunProgress};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

/// `ASE_PROGRESS=plain` forces the line mode on a terminal; `bars` forces bars.
const MODE_ENV: &str = "ASE_PROGRESS";

struct RunBars {
    generate: ProgressBar,
    evaluate: ProgressBar,
}

enum Mode {
    Bars {
        multi: MultiProgress,
        runs: BTreeMap<String, RunBars>,
        /// A line under the bars (e.g. the workers' state).
        footer: Option<ProgressBar>,
    },
    Lines {
        last: BTreeMap<String, String>,
    },
}

pub struct ProgressView {
    mode: Mode,
}

/// Whether bars are drawn: stderr is a terminal, unless `ASE_PROGRESS` says otherwise.
pub fn bars_wanted() -> bool {
    match std::env::var(MODE_ENV).as_deref() {
        Ok("plain") => false,
        Ok("bars") => true,
        _ => std::io::stderr().is_terminal(),
    }
}

fn style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:<40!} {bar:30.cyan/blue} {pos:>5}/{len:<5} {msg}")
        .expect("a valid progress template")
        .progress_chars("=> ")
}

/// Units past a phase (done or failed for good) and the phase's message. The ETA is the
/// coordinator's estimate for the whole run (it knows the rates of every worker; a bar's own
/// rate would count a resumed run's old units as instant).
fn phase(counts: Option<PhaseCounts>, total: u64, state: &str, eta_seconds: f64) -> (u64, String) {
    let c = counts.unwrap_or_default();
    let past = c.done + c.failed;
    let failed = if c.failed > 0 {
        format!(", {} failed", c.failed)
    } else {
        String::new()
    };
    let msg = if past >= total {
        format!("done{failed}")
    } else {
        format!("{} running{failed}, run eta {}", c.leased, eta(eta_seconds))
    };
    let msg = match state {
        "running" => msg,
        other => format!("{other}; {msg}"),
    };
    (past, msg)
}

impl ProgressView {
    pub fn new() -> Self {
        Self::with_bars(bars_wanted())
    }

    pub fn with_bars(bars: bool) -> Self {
        let mode = if bars {
            Mode::Bars {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                runs: BTreeMap::new(),
                footer: None,
            }
        } else {
            Mode::Lines {
                last: BTreeMap::new(),
            }
        };
        ProgressView { mode }
    }

    /// Shows the latest figures of these runs.
    pub fn update(&mut self, runs: &[RunProgress]) {
        match &mut self.mode {
            Mode::Lines { last } => {
                for p in runs {
                    let line = run_line(p);
                    // The ETA changes every tick; print when the counts or the state do.
                    let key = line.split(" | eta ").next().unwrap_or(&line).to_string();
                    if last.get(&p.run_id) != Some(&key) {
                        eprintln!("{line}");
                        last.insert(p.run_id.clone(), key);
                    }
                }
            }
            Mode::Bars {
                multi,
                runs: bars,
                footer,
            } => {
                for p in runs {
                    let b = bars.entry(p.run_id.clone()).or_insert_with(|| {
                        let bar = |name: &str| {
                            let b = ProgressBar::new(p.total_units)
                                .with_style(style())
                                .with_prefix(format!("{} {name}", p.run_id));
                            // New runs go above the footer line.
                            let b = match footer.as_ref() {
                                Some(f) => multi.insert_before(f, b),
                                None => multi.add(b),
                            };
                            b.enable_steady_tick(Duration::from_millis(250));
                            b
                        };
                        RunBars {
                            generate: bar("generate"),
                            evaluate: bar("evaluate"),
                        }
                    });
                    for (bar, counts) in [(&b.generate, p.generate), (&b.evaluate, p.evaluate)] {
                        let (pos, msg) = phase(counts, p.total_units, &p.state, p.eta_seconds);
                        bar.set_length(p.total_units);
                        bar.set_position(pos);
                        bar.set_message(msg);
                        if matches!(p.state.as_str(), "completed" | "cancelled")
                            && !bar.is_finished()
                        {
                            bar.finish();
                        }
                    }
                }
            }
        }
    }

    /// Sets the line under the bars (line mode: prints it when it changes).
    pub fn set_footer(&mut self, msg: String) {
        match &mut self.mode {
            Mode::Bars { multi, footer, .. } => {
                let f = footer.get_or_insert_with(|| {
                    let f = multi.add(
                        ProgressBar::new_spinner().with_style(
                            ProgressStyle::with_template("{spinner} {msg}")
                                .expect("a valid progress template"),
                        ),
                    );
                    f.enable_steady_tick(Duration::from_millis(250));
                    f
                });
                f.set_message(msg);
            }
            Mode::Lines { last } => {
                if last.get("") != Some(&msg) {
                    eprintln!("{msg}");
                    last.insert(String::new(), msg);
                }
            }
        }
    }

    /// A message that must not be torn by the bars.
    pub fn println(&self, msg: &str) {
        match &self.mode {
            Mode::Bars { multi, .. } => {
                let _ = multi.println(msg);
            }
            Mode::Lines { .. } => eprintln!("{msg}"),
        }
    }

    /// Leaves the bars as they are on screen and stops redrawing them.
    pub fn finish(&mut self) {
        if let Mode::Bars { runs, footer, .. } = &mut self.mode {
            let bars = runs
                .values()
                .flat_map(|b| [&b.generate, &b.evaluate])
                .chain(footer.as_ref());
            for bar in bars {
                if !bar.is_finished() {
                    bar.abandon();
                }
            }
        }
    }
}

impl Drop for ProgressView {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phase_counts_done_and_failed_units_as_past_it() {
        let c = PhaseCounts {
            queued: 3,
            leased: 2,
            done: 4,
            failed: 1,
        };
        let (pos, msg) = phase(Some(c), 10, "running", 75.0);
        assert_eq!(pos, 5);
        assert_eq!(msg, "2 running, 1 failed, run eta 0h01m15s");
        let (pos, msg) = phase(None, 10, "scoring", -1.0);
        assert_eq!(pos, 0);
        assert_eq!(msg, "scoring; 0 running, run eta unknown");
        let done = PhaseCounts {
            done: 10,
            ..PhaseCounts::default()
        };
        assert_eq!(phase(Some(done), 10, "completed", 0.0).1, "completed; done");
    }
}
