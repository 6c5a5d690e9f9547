//! How the CLI talks to people: verbosity, warnings, and progress drawn with indicatif on a
//! terminal or as plain lines otherwise.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use shears::progress::Progress;

/// Verbosity and output channels of one CLI run.
pub struct Ui {
    pub quiet: bool,
    pub verbose: u8,
    progress: Place<'static>,
}

impl Ui {
    pub fn new(quiet: bool, verbose: u8) -> Self {
        Ui {
            quiet,
            verbose,
            progress: Place {
                board: Arc::new(Board {
                    quiet,
                    terminal: std::io::stderr().is_terminal(),
                    bars: MultiProgress::new(),
                }),
                parent: None,
                phase: Mutex::new(None),
            },
        }
    }

    /// A warning, always printed on stderr.
    pub fn warn(&self, message: impl std::fmt::Display) {
        self.above_bars(format_args!("warning: {message}"));
    }

    /// An error that does not stop a batch, always printed on stderr.
    pub fn error(&self, message: impl std::fmt::Display) {
        self.above_bars(format_args!("error: {message}"));
    }

    /// A status line on stderr, unless quiet.
    pub fn info(&self, message: impl std::fmt::Display) {
        if !self.quiet {
            self.above_bars(format_args!("{message}"));
        }
    }

    /// Writes `line` on stderr above the bars.
    fn above_bars(&self, line: std::fmt::Arguments<'_>) {
        self.progress.board.bars.suspend(|| diagnostic(line));
    }

    /// Where library code reports progress.
    pub fn progress(&self) -> &dyn Progress {
        &self.progress
    }
}

/// Writes one line to stderr. Diagnostics never abort the work: when stderr is closed (a reader
/// that went away, `2>&-`) the line is dropped, where `eprintln!` would panic.
pub fn diagnostic(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Where phases show on stderr: as bars (counted steps) and spinners stacked under the phase they
/// run inside on a terminal, as one line per phase start otherwise, not at all when quiet.
struct Place<'p> {
    board: Arc<Board>,
    /// The place whose phase this one's phases run inside.
    parent: Option<&'p Place<'p>>,
    phase: Mutex<Option<Phase>>,
}

/// What every place of one run shares.
struct Board {
    quiet: bool,
    terminal: bool,
    bars: MultiProgress,
}

/// The phase open in a place.
struct Phase {
    label: String,
    note: String,
    /// Drawn only on a terminal.
    bar: Option<ProgressBar>,
}

impl Phase {
    /// The label with the note, as the bar shows it.
    fn message(&self) -> String {
        if self.note.is_empty() {
            self.label.clone()
        } else {
            format!("{} {}", self.label, self.note)
        }
    }
}

impl<'p> Place<'p> {
    fn phase(&self) -> MutexGuard<'_, Option<Phase>> {
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many places this one is nested in.
    fn depth(&self) -> usize {
        self.parent.map_or(0, |parent| 1 + parent.depth())
    }

    /// The messages of the phases this place runs inside, outermost first.
    fn context(&self) -> Vec<String> {
        let Some(parent) = self.parent else {
            return Vec::new();
        };
        let mut context = parent.context();
        context.extend(parent.phase().as_ref().map(Phase::message));
        context
    }

    /// A new bar for `label`, drawn right under the parent's phase when it has one, indented by
    /// its depth.
    fn new_bar(&self, label: &str, total: Option<u64>) -> ProgressBar {
        let bar = match total {
            Some(n) => ProgressBar::new(n).with_style(style(
                "{prefix}{msg} [{bar:30}] {pos}/{len} {elapsed}<{eta}",
                ProgressStyle::default_bar,
            )),
            None => ProgressBar::new_spinner().with_style(style(
                "{prefix}{spinner} {msg} {elapsed}",
                ProgressStyle::default_spinner,
            )),
        };
        bar.set_prefix("  ".repeat(self.depth()));
        bar.set_message(label.to_string());
        // the parent's lock keeps its bar in the stack while this one is placed under it
        let parent = self.parent.map(Place::phase);
        let bar = match parent.as_ref().and_then(|p| p.as_ref()?.bar.as_ref()) {
            Some(above) => self.board.bars.insert_after(above, bar),
            None => self.board.bars.add(bar),
        };
        drop(parent);
        let tick = if total.is_some() { 1000 } else { 200 };
        bar.enable_steady_tick(Duration::from_millis(tick));
        bar
    }

    /// Ends the open phase, if any, removing its bar.
    fn close(&self, phase: &mut Option<Phase>) {
        if let Some(bar) = phase.take().and_then(|p| p.bar) {
            bar.finish_and_clear();
            self.board.bars.remove(&bar);
        }
    }
}

/// The style of `template`, or `fallback` should indicatif refuse it.
fn style(template: &str, fallback: fn() -> ProgressStyle) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| fallback())
}

impl Progress for Place<'_> {
    fn start(&self, label: &str, total: Option<u64>) {
        if self.board.quiet {
            return;
        }
        let bar = if self.board.terminal {
            Some(self.new_bar(label, total))
        } else {
            let mut path = self.context();
            path.push(label.to_string());
            diagnostic(format_args!("{}...", path.join(": ")));
            None
        };
        let mut phase = self.phase();
        self.close(&mut phase);
        *phase = Some(Phase {
            label: label.to_string(),
            note: String::new(),
            bar,
        });
    }

    fn advance(&self, n: u64) {
        if let Some(bar) = self.phase().as_ref().and_then(|p| p.bar.as_ref()) {
            bar.inc(n);
        }
    }

    fn finish(&self) {
        self.close(&mut self.phase());
    }

    fn note(&self, detail: &str) {
        if let Some(phase) = self.phase().as_mut() {
            phase.note = detail.to_string();
            if let Some(bar) = &phase.bar {
                bar.set_message(phase.message());
            }
        }
    }

    fn child(&self) -> Box<dyn Progress + '_> {
        Box::new(Place {
            board: self.board.clone(),
            parent: Some(self),
            phase: Mutex::new(None),
        })
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.close(&mut self.phase());
    }
}
