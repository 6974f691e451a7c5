//! Opt-in phase timing for profiling (`LUTLAB_PROFILE=1`, native only): where a GPU k-means run
//! or the sequential Hessian loop
//! spends its wall-clock time, summed per phase over a model and printed to stderr by
//! [`report`]. Off, a phase costs one cached flag check; in the browser it compiles to nothing.

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::cell::RefCell;
    use std::sync::OnceLock;
    use std::time::Instant;

    thread_local! {
        static TOTALS: RefCell<Vec<(&'static str, f64)>> = const { RefCell::new(Vec::new()) };
    }

    fn enabled() -> bool {
        static ON: OnceLock<bool> = OnceLock::new();
        *ON.get_or_init(|| std::env::var("LUTLAB_PROFILE").is_ok_and(|v| v == "1"))
    }

    /// A phase's start (`None` when profiling is off).
    pub fn start() -> Option<Instant> {
        enabled().then(Instant::now)
    }

    /// Adds the time since `start` to phase `name`.
    pub fn stop(name: &'static str, start: Option<Instant>) {
        let Some(start) = start else { return };
        add(name, start.elapsed().as_secs_f64());
    }

    /// Adds `seconds` measured elsewhere (another thread) to phase `name`.
    pub fn add(name: &'static str, seconds: f64) {
        if !enabled() {
            return;
        }
        TOTALS.with(|t| {
            let mut t = t.borrow_mut();
            match t.iter_mut().find(|(n, _)| *n == name) {
                Some((_, total)) => *total += seconds,
                None => t.push((name, seconds)),
            }
        });
    }

    /// Prints and clears the totals (`what` names the run).
    pub fn report(what: &str) {
        if !enabled() {
            return;
        }
        let totals = TOTALS.with(|t| std::mem::take(&mut *t.borrow_mut()));
        let phases: Vec<String> = totals.iter().map(|(n, s)| format!("{n} {s:.3} s")).collect();
        eprintln!("profile {what}: {}", phases.join(", "));
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub use native::{add, report, start, stop};

#[cfg(target_arch = "wasm32")]
pub fn start() -> Option<()> {
    None
}

#[cfg(target_arch = "wasm32")]
pub fn stop(_name: &'static str, _start: Option<()>) {}

#[cfg(target_arch = "wasm32")]
pub fn add(_name: &'static str, _seconds: f64) {}

#[cfg(target_arch = "wasm32")]
pub fn report(_what: &str) {}
