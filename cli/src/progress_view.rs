//! Run progress as the user watches it: on a terminal, one indicatif bar per run and phase
//! (generate, evaluate) with ETA; otherwise (logs, tests, pipes) the plain one-line form of
//! `progress_fmt`, printed only when a run's figures change.

use crate::progress_fmt::run_line;
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
    ProgressStyle::with_template(
        "{prefix:<40!} {bar:30.cyan/blue} {pos:>5}/{len:<5} {msg:<22!} eta {eta}",
    )
    .expect("a valid progress template")
    .progress_chars("=> ")
}

/// Units past a phase (done or failed for good) and the phase's message.
fn phase(counts: Option<PhaseCounts>, state: &str) -> (u64, String) {
    let c = counts.unwrap_or_default();
    let msg = if c.failed > 0 {
        format!("{} running, {} failed", c.leased, c.failed)
    } else {
        format!("{} running", c.leased)
    };
    let msg = match state {
        "running" => msg,
        other => format!("{other}; {msg}"),
    };
    (c.done + c.failed, msg)
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
            Mode::Bars { multi, runs: bars } => {
                for p in runs {
                    let b = bars.entry(p.run_id.clone()).or_insert_with(|| {
                        let bar = |name: &str| {
                            let b = multi.add(
                                ProgressBar::new(p.total_units)
                                    .with_style(style())
                                    .with_prefix(format!("{} {name}", p.run_id)),
                            );
                            b.enable_steady_tick(Duration::from_millis(250));
                            b
                        };
                        RunBars {
                            generate: bar("generate"),
                            evaluate: bar("evaluate"),
                        }
                    });
                    for (bar, counts) in [(&b.generate, p.generate), (&b.evaluate, p.evaluate)] {
                        let (pos, msg) = phase(counts, &p.state);
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
        if let Mode::Bars { runs, .. } = &mut self.mode {
            for b in runs.values() {
                for bar in [&b.generate, &b.evaluate] {
                    if !bar.is_finished() {
                        bar.abandon();
                    }
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
        let (pos, msg) = phase(Some(c), "running");
        assert_eq!(pos, 5);
        assert_eq!(msg, "2 running, 1 failed");
        let (pos, msg) = phase(None, "scoring");
        assert_eq!(pos, 0);
        assert_eq!(msg, "scoring; 0 running");
    }
}
