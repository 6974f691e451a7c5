//! Progress bars for long work, and Ctrl-C as a polite cancel.

use indicatif::{ProgressBar, ProgressStyle};
use lutlab_core::Progress;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

static CANCELLED: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// The process-wide cancel flag, set by the first Ctrl-C (a second one kills the process).
fn cancel_flag() -> Arc<AtomicBool> {
    CANCELLED
        .get_or_init(|| {
            let flag = Arc::new(AtomicBool::new(false));
            let handler_flag = flag.clone();
            // If a handler cannot be installed, Ctrl-C simply keeps its default meaning.
            let _ = ctrlc::set_handler(move || {
                if handler_flag.swap(true, Ordering::SeqCst) {
                    std::process::exit(130);
                }
                eprintln!("\ncancelling after the current step (Ctrl-C again to stop now)");
            });
            flag
        })
        .clone()
}

/// An indicatif bar that reports `unit`s per second; hidden when `quiet`.
pub struct Bar {
    bar: ProgressBar,
    cancelled: Arc<AtomicBool>,
}

impl Bar {
    pub fn new(message: &str, unit: &str, quiet: bool) -> Self {
        let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(0) };
        let template = format!("{{msg}} [{{bar:40}}] {{pos}}/{{len}} {unit} ({{per_sec}}, eta {{eta}})");
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(message.to_string());
        Self { bar, cancelled: cancel_flag() }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Progress for Bar {
    fn update(&mut self, done: u64, total: u64) {
        self.bar.set_length(total);
        self.bar.set_position(done);
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }
}
