//! Progress bars on a terminal (stderr), nothing elsewhere.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use usersync_engine::Progress;

/// A spinner with the phase and a count; hidden when stderr is not a terminal.
pub struct TerminalProgress {
    bar: ProgressBar,
}

impl TerminalProgress {
    pub fn new(wanted: bool) -> Self {
        let bar = if wanted && std::io::stderr().is_terminal() {
            let bar = ProgressBar::new_spinner();
            bar.set_style(spinner_style());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        } else {
            ProgressBar::hidden()
        };
        TerminalProgress { bar }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {msg} {pos} [{elapsed}]")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

impl Progress for TerminalProgress {
    fn phase(&self, name: &str) {
        // Each phase starts as a spinner with a count; `total` turns it into a bar.
        if self.bar.length().is_some() {
            self.bar.set_style(spinner_style());
            self.bar.unset_length();
        }
        self.bar.set_message(name.to_string());
        self.bar.set_position(0);
    }

    fn advance(&self, count: usize) {
        self.bar.set_position(count as u64);
        // The total is an estimate (eventually consistent): never let the count pass it.
        if self.bar.length().is_some_and(|len| len < count as u64) {
            self.bar.set_length(count as u64);
        }
    }

    fn total(&self, total: u64) {
        if self.bar.is_hidden() || total == 0 {
            return;
        }
        // Known total: a bar with the time left instead of the spinner.
        self.bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({percent}%, {eta} left)")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        self.bar.set_length(total.max(self.bar.position()));
    }
}
