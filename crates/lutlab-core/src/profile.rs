//! Opt-in phase timing for profiling (`LUTLAB_PROFILE=1`, native only): where a GPU k-means run,
//! the sequential Hessian loop or a Hessian rounding spends its wall-clock time, summed per phase
//! over a model (and over threads, where phases run concurrently) and printed to stderr by
//! [`report`]. Off, a phase costs one cached flag check; in the browser it compiles to nothing.
//! `LUTLAB_PROFILE=2` also prints each [`span`] as it ends, a timeline of concurrent work (which
//! layer of a step is the one the others wait for).

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::sync::{Mutex, OnceLock};
    use std::time::Instant;

    static TOTALS: Mutex<Vec<(&'static str, f64)>> = Mutex::new(Vec::new());

    /// The level asked for (0 off, 1 totals, 2 totals and spans) and the timeline's origin.
    fn level() -> &'static (u8, Instant) {
        static LEVEL: OnceLock<(u8, Instant)> = OnceLock::new();
        LEVEL.get_or_init(|| (std::env::var("LUTLAB_PROFILE").ok().and_then(|v| v.parse().ok()).unwrap_or(0), Instant::now()))
    }

    fn enabled() -> bool {
        level().0 >= 1
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

    /// With `LUTLAB_PROFILE=2`, prints `span LABEL FROM..TO s` (seconds from the first profiled
    /// moment) for work that began at `start`; `label` is only built then.
    pub fn span(label: impl FnOnce() -> String, start: Option<Instant>) {
        let (Some(start), (2.., origin)) = (start, level()) else { return };
        let from = start.saturating_duration_since(*origin).as_secs_f64();
        eprintln!("span {} {from:.4}..{:.4} s", label(), origin.elapsed().as_secs_f64());
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
pub use native::{add, report, span, start, stop, Phase};

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

#[cfg(target_arch = "wasm32")]
pub fn span(_label: impl FnOnce() -> String, _start: Option<()>) {}
