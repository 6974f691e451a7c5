//! How long work reports progress and learns it was cancelled, the same way in the CLI and the page.

/// Receives progress of long work; `is_cancelled` is polled between steps.
pub trait Progress {
    /// `done` of `total` units (tokens, samples, bytes...) are finished.
    fn update(&mut self, done: u64, total: u64);
    fn is_cancelled(&self) -> bool {
        false
    }
}

/// Ignores progress and never cancels.
pub struct NoProgress;

impl Progress for NoProgress {
    fn update(&mut self, _done: u64, _total: u64) {}
}
