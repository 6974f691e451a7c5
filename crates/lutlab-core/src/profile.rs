//! Opt-in phase timing for profiling (`LUTLAB_PROFILE=1`, native only): where a GPU k-means run,
//! the sequential Hessian loop or a Hessian rounding spends its wall-clock time, summed per phase
//! over a model (and over threads, where phases run concurrently) and printed to stderr by
//! [`report`]. Off, a phase costs one cached flag check; in the browser it compiles to nothing.

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::sync::{Mutex, OnceLock};
    use std::time::Instant;

    static TOTALS: Mutex<Vec<(&'static str, f64)>> = Mutex::new(Vec::new());

    fn enabled() -> bool {
        static ON: OnceLock<bool> = OnceLock::new();
        *ON.get_or_init(|| std::env::var("LUTLAB_PROFILE").is_ok_and(|v| v == "1"))
    }

    /// A phase's start: `None` when profiling is off.
    pub type Phase = Option<Instant>;

    /// A phase's start (`None` when profiling is off).
    pub fn start() -> Phase {
        enabled().then(Instant::now)
    }

    /// Adds the time since `start` to phase `name`.
    pub fn stop(name: &'static str, start: Option<Instant>) {
        let Some(start) = start else { return };
        add(name, start.elapsed().as_secs_f64());
    }

    /// Adds `seconds` measured elsewhere to phase `name`.
    pub fn add(name: &'static str, seconds: f64) {
        if !enabled() {
            return;
        }
        // A poisoned lock only means another thread panicked mid-add: the totals are still usable.
        let mut t = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
        match t.iter_mut().find(|(n, _)| *n == name) {
            Some((_, total)) => *total += seconds,
            None => t.push((name, seconds)),
        }
    }

    /// Prints and clears the totals (`what` names the run).
    pub fn report(what: &str) {
        if !enabled() {
            return;
        }
        let totals = std::mem::take(&mut *TOTALS.lock().unwrap_or_else(|e| e.into_inner()));
        let phases: Vec<String> = totals.iter().map(|(n, s)| format!("{n} {s:.3} s")).collect();
        eprintln!("profile {what}: {}", phases.join(", "));
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub use native::{add, report, start, stop, Phase};

#[cfg(target_arch = "wasm32")]
pub type Phase = Option<()>;

#[cfg(target_arch = "wasm32")]
pub fn start() -> Phase {
    None
}

#[cfg(target_arch = "wasm32")]
pub fn stop(_name: &'static str, _start: Option<()>) {}

#[cfg(target_arch = "wasm32")]
pub fn add(_name: &'static str, _seconds: f64) {}

#[cfg(target_arch = "wasm32")]
pub fn report(_what: &str) {}
