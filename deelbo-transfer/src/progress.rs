//! Progress reporting during a long experiment: a small trait the runner calls, a silent
//! implementation and an indicatif progress bar.

use indicatif::{ProgressBar, ProgressStyle};

use crate::checkpoint::RunRecord;
use crate::config::Method;
use crate::models::Architecture;

/// Callbacks of [`crate::run_experiment`]; every method has an empty default.
pub trait Progress {
    /// The experiment starts: `total` training runs, `already_done` of them restored from
    /// checkpoints.
    fn begin(&mut self, _total: usize, _already_done: usize) {}
    /// A protocol (method for one architecture, N and seed) starts.
    fn protocol_started(&mut self, _arch: Architecture, _n: usize, _seed: u64, _method: Method) {}
    /// A training run finished (not called for restored runs).
    fn run_finished(&mut self, _record: &RunRecord) {}
    /// A free-form status message (e.g. pretraining).
    fn message(&mut self, _text: &str) {}
    /// The experiment ended.
    fn finish(&mut self) {}
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// An indicatif bar over all training runs (drawn on stderr, hidden when stderr is not a
/// terminal).
#[derive(Debug, Default)]
pub struct BarProgress {
    bar: Option<ProgressBar>,
}

impl BarProgress {
    /// A bar that appears at [`Progress::begin`].
    pub fn new() -> Self {
        Self::default()
    }
}

impl Progress for BarProgress {
    fn begin(&mut self, total: usize, already_done: usize) {
        let bar = ProgressBar::new(total as u64);
        let style = ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40.cyan/blue}] {pos}/{len} runs (eta {eta}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_position(already_done as u64);
        self.bar = Some(bar);
    }

    fn protocol_started(&mut self, arch: Architecture, n: usize, seed: u64, method: Method) {
        if let Some(b) = &self.bar {
            b.set_message(format!("{arch} N={n} seed={seed} {method}"));
        }
    }

    fn run_finished(&mut self, _record: &RunRecord) {
        if let Some(b) = &self.bar {
            b.inc(1);
        }
    }

    fn message(&mut self, text: &str) {
        match &self.bar {
            Some(b) => b.println(text),
            None => eprintln!("{text}"),
        }
    }

    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish();
        }
    }
}
