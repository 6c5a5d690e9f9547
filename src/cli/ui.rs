//! How the CLI talks to people: verbosity, warnings, and progress drawn with indicatif on a
//! terminal or as plain lines otherwise.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};

use shears::progress::Progress;

/// Verbosity and output channels of one CLI run.
pub struct Ui {
    pub quiet: bool,
    pub verbose: u8,
    progress: TerminalProgress,
}

impl Ui {
    pub fn new(quiet: bool, verbose: u8) -> Self {
        Ui {
            quiet,
            verbose,
            progress: TerminalProgress {
                quiet,
                bar: Mutex::new(None),
                label: Mutex::new(String::new()),
            },
        }
    }

    /// A warning, always printed on stderr.
    pub fn warn(&self, message: impl std::fmt::Display) {
        self.progress
            .suspend(|| diagnostic(format_args!("warning: {message}")));
    }

    /// An error that does not stop a batch, always printed on stderr.
    pub fn error(&self, message: impl std::fmt::Display) {
        self.progress
            .suspend(|| diagnostic(format_args!("error: {message}")));
    }

    /// A status line on stderr, unless quiet.
    pub fn info(&self, message: impl std::fmt::Display) {
        if !self.quiet {
            self.progress
                .suspend(|| diagnostic(format_args!("{message}")));
        }
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

/// A progress bar on a terminal; one line per phase otherwise.
struct TerminalProgress {
    quiet: bool,
    bar: Mutex<Option<ProgressBar>>,
    /// The current phase's label, which notes are shown beside.
    label: Mutex<String>,
}

impl TerminalProgress {
    fn suspend(&self, f: impl FnOnce()) {
        match self.bar.lock().expect("progress lock").as_ref() {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }
}

impl Progress for TerminalProgress {
    fn start(&self, label: &str, total: Option<u64>) {
        if self.quiet {
            return;
        }
        if !std::io::stderr().is_terminal() {
            diagnostic(format_args!("{label}..."));
            return;
        }
        let bar = match total {
            Some(n) => ProgressBar::new(n).with_style(
                ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} {elapsed}<{eta}")
                    .expect("valid template")
                    .progress_chars("=> "),
            ),
            None => {
                let spinner = ProgressBar::new_spinner().with_style(
                    ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                        .expect("valid template"),
                );
                spinner.enable_steady_tick(std::time::Duration::from_millis(200));
                spinner
            }
        };
        bar.set_message(label.to_string());
        *self.label.lock().expect("progress lock") = label.to_string();
        *self.bar.lock().expect("progress lock") = Some(bar);
    }

    fn advance(&self, n: u64) {
        if let Some(bar) = self.bar.lock().expect("progress lock").as_ref() {
            bar.inc(n);
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.bar.lock().expect("progress lock").take() {
            bar.finish_and_clear();
        }
    }

    fn note(&self, detail: &str) {
        if let Some(bar) = self.bar.lock().expect("progress lock").as_ref() {
            bar.set_message(format!(
                "{} {detail}",
                self.label.lock().expect("progress lock")
            ));
        }
    }
}
