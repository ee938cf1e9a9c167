//! Live progress on stderr: a bar with the rate on a terminal, plain periodic lines otherwise
//! (a CI log or a pipe gets a line every few seconds instead of control characters).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::stats::fmt_rate;

/// How often a plain progress line is printed.
const LINE_INTERVAL: Duration = Duration::from_secs(2);

/// What the run is heading for: a time or a count.
#[derive(Clone, Copy, Debug)]
pub enum Goal {
    /// Runs for this long.
    Time(Duration),
    /// Runs until this many operations are done.
    Count(u64),
}

enum Display {
    Bar(ProgressBar),
    Lines { last_line: Instant, last_count: u64 },
    Off,
}

/// Progress of one run; call [`Progress::update`] a few times a second.
pub struct Progress {
    label: String,
    goal: Goal,
    started: Instant,
    display: Display,
}

impl Progress {
    /// Starts showing progress of `label` (say `log: appends`), unless `enabled` is false.
    pub fn start(label: &str, goal: Goal, enabled: bool) -> Progress {
        let display = if !enabled {
            Display::Off
        } else if std::io::stderr().is_terminal() {
            let len = match goal {
                Goal::Time(duration) => duration.as_millis() as u64,
                Goal::Count(n) => n,
            };
            let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
            let style =
                ProgressStyle::with_template("{prefix} [{elapsed_precise}] [{wide_bar}] {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(label.to_owned());
            Display::Bar(bar)
        } else {
            Display::Lines {
                last_line: Instant::now(),
                last_count: 0,
            }
        };
        Progress {
            label: label.to_owned(),
            goal,
            started: Instant::now(),
            display,
        }
    }

    /// Shows that `count` operations are done.
    pub fn update(&mut self, count: u64) {
        let elapsed = self.started.elapsed();
        match &mut self.display {
            Display::Off => {}
            Display::Bar(bar) => {
                let position = match self.goal {
                    Goal::Time(_) => elapsed.as_millis() as u64,
                    Goal::Count(_) => count,
                };
                bar.set_position(position);
                let rate = count as f64 / elapsed.as_secs_f64().max(1e-9);
                bar.set_message(format!("{count} ops, {}", fmt_rate(rate)));
            }
            Display::Lines {
                last_line,
                last_count,
            } => {
                let since = last_line.elapsed();
                if since >= LINE_INTERVAL {
                    let rate = (count - *last_count) as f64 / since.as_secs_f64();
                    let of = match self.goal {
                        Goal::Time(duration) => format!(" of {:.1} s", duration.as_secs_f64()),
                        Goal::Count(n) => {
                            format!(", {:.0}% of {n}", count as f64 * 100.0 / n as f64)
                        }
                    };
                    eprintln!(
                        "stress: {} {:.1} s{of}: {count} ops, {} now",
                        self.label,
                        elapsed.as_secs_f64(),
                        fmt_rate(rate)
                    );
                    *last_line = Instant::now();
                    *last_count = count;
                }
            }
        }
    }

    /// Removes the bar (the report follows).
    pub fn finish(self) {
        if let Display::Bar(bar) = self.display {
            bar.finish_and_clear();
        }
    }
}
