//! Bits where they matter: each layer's width chosen so that the summed loss estimate is least
//! under a size budget (a multiple-choice knapsack).
//!
//! Every quantized layer offers candidates (one per width), each with the bytes it takes in the
//! packed file (codes, tables, scales, outliers: everything stored) and an estimate of the loss it
//! adds. [`allocate`] picks one candidate per layer. It solves exactly by dynamic programming over
//! the bytes when the table is small enough, and otherwise by Lagrangian relaxation (every layer
//! picks its best `loss + λ·bytes`, λ bisected to the budget, then the leftover bytes filled
//! greedily), reporting the relaxation's lower bound so the gap to the optimum is stated.

use crate::error::{LoadError, Result};
use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// A size budget: average bits per quantized weight, or bytes of the whole packed file.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Budget {
    BitsPerWeight(f64),
    FileBytes(u64),
}

impl FromStr for Budget {
    type Err = LoadError;

    /// `3.5bpw` (or `3.5`), `12MB`, `12.5 MB`, `900kB`, `1GB` (decimal units, as sizes are
    /// printed), `12MiB`.
    fn from_str(text: &str) -> Result<Self> {
        let t = text.trim();
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
        let (number, unit) = (&t[..split], t[split..].trim());
        let bad = || LoadError::InvalidSetting(format!("budget `{text}`: give bits per weight (3.5bpw) or a file size (12MB, 900kB, 12MiB)"));
        let value: f64 = number.parse().map_err(|_| bad())?;
        if !value.is_finite() || value <= 0.0 {
            return Err(bad());
        }
        let bytes = |scale: f64| Ok(Budget::FileBytes((value * scale).floor() as u64));
        match unit.to_ascii_lowercase().as_str() {
            "" | "bpw" | "bits" => Ok(Budget::BitsPerWeight(value)),
            "b" => bytes(1.0),
            "kb" => bytes(1e3),
            "mb" => bytes(1e6),
            "gb" => bytes(1e9),
            "kib" => bytes(1024.0),
            "mib" => bytes(1024.0 * 1024.0),
            "gib" => bytes(1024.0 * 1024.0 * 1024.0),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Budget::BitsPerWeight(b) => write!(f, "{b} bits per weight"),
            Budget::FileBytes(n) => write!(f, "a {:.3} MB file", *n as f64 / 1e6),
        }
    }
}

/// One way to quantize a layer: its width, the bytes it stores, the loss it is estimated to add.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Candidate {
    pub bits: u32,
    pub bytes: u64,
    pub loss: f64,
}

/// A layer's candidates (at least one).
#[derive(Clone, Debug, PartialEq)]
pub struct LayerChoices {
    pub name: String,
    pub candidates: Vec<Candidate>,
}

/// How [`allocate`] solved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Solver {
    /// Dynamic programming over the bytes: the optimum.
    Exact,
    /// Lagrangian relaxation plus a greedy fill; `lower_bound` says how far from the optimum.
    Lagrangian,
    /// Not solved: widths given by rules (`--layer-bits`); no bound.
    Rules,
}

/// The chosen candidate of every layer, with what it adds up to.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Allocation {
    /// Index into each layer's candidates, in the order of the layers given.
    pub choice: Vec<usize>,
    pub bytes: u64,
    /// The summed loss estimate of the choice.
    pub loss: f64,
    /// No allocation within the budget has a smaller summed estimate than this (the optimum for
    /// the exact solver, the relaxation's dual bound otherwise).
    pub lower_bound: f64,
    pub solver: Solver,
}

impl Allocation {
    /// `(loss − lower_bound) / loss`: 0 when the choice is proven optimal.
    pub fn relative_gap(&self) -> Option<f64> {
        match self.solver {
            Solver::Rules => None,
            _ if self.loss > 0.0 => Some(((self.loss - self.lower_bound) / self.loss).max(0.0)),
            _ => Some(0.0),
        }
    }
}

/// Dynamic programming runs when layers × byte states stay under this (a `u8` per cell).
const EXACT_CELLS: u64 = 32_000_000;

/// The least summed loss over one candidate per layer with at most `max_bytes` bytes in all:
/// exact when the DP table is small enough, else [`allocate_relaxed`]. Fails, naming the
/// feasible range, when even the smallest candidates exceed `max_bytes`.
pub fn allocate(layers: &[LayerChoices], max_bytes: u64) -> Result<Allocation> {
    check(layers, max_bytes)?;
    match exact_states(layers, max_bytes) {
        Some((unit, states)) => Ok(allocate_exact(layers, max_bytes, unit, states)),
        None => Ok(allocate_lagrangian(layers, max_bytes)),
    }
}

/// [`allocate`] by Lagrangian relaxation and a greedy fill whatever the size, with the
/// relaxation's lower bound on the optimum.
pub fn allocate_relaxed(layers: &[LayerChoices], max_bytes: u64) -> Result<Allocation> {
    check(layers, max_bytes)?;
    Ok(allocate_lagrangian(layers, max_bytes))
}

fn check(layers: &[LayerChoices], max_bytes: u64) -> Result<()> {
    if let Some(empty) = layers.iter().find(|l| l.candidates.is_empty()) {
        return Err(LoadError::InvalidSetting(format!("{}: no candidate width to choose from", empty.name)));
    }
    if layers.is_empty() {
        return Err(LoadError::InvalidSetting("no layer to allocate bits to".into()));
    }
    if layers.iter().any(|l| l.candidates.len() > usize::from(u8::MAX)) {
        return Err(LoadError::InvalidSetting("more than 255 candidates for one layer".into()));
    }
    let (smallest, largest) = byte_range(layers);
    if smallest > max_bytes {
        return Err(LoadError::InvalidSetting(format!(
            "the budget allows {max_bytes} bytes for the quantized layers, below the smallest allocation ({smallest} bytes, every \
             layer at its narrowest width); feasible: {smallest} to {largest} bytes"
        )));
    }
    Ok(())
}

/// The byte unit (the gcd of every candidate's extra bytes over its layer's smallest) and the
/// number of budget states, when the DP table is small enough.
fn exact_states(layers: &[LayerChoices], max_bytes: u64) -> Option<(u64, u64)> {
    let (smallest, _) = byte_range(layers);
    let unit = layers
        .iter()
        .flat_map(|l| {
            let base = min_bytes(l);
            l.candidates.iter().map(move |c| c.bytes - base)
        })
        .fold(0, gcd)
        .max(1);
    let states = (max_bytes - smallest) / unit + 1;
    (states.saturating_mul(layers.len() as u64) <= EXACT_CELLS).then_some((unit, states))
}

/// The bytes of every layer at its smallest candidate, and at its largest.
pub fn byte_range(layers: &[LayerChoices]) -> (u64, u64) {
    let largest = layers.iter().map(|l| l.candidates.iter().map(|c| c.bytes).max().unwrap_or(0)).sum();
    (layers.iter().map(min_bytes).sum(), largest)
}

fn min_bytes(layer: &LayerChoices) -> u64 {
    layer.candidates.iter().map(|c| c.bytes).min().unwrap_or(0)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Multiple-choice knapsack by DP over `states` budgets of `unit` bytes above the smallest total.
fn allocate_exact(layers: &[LayerChoices], max_bytes: u64, unit: u64, states: u64) -> Allocation {
    let states = states as usize;
    // best[s]: the least loss of the layers so far using at most s units of extra bytes.
    let mut best = vec![0.0f64; states];
    let mut picks: Vec<Vec<u8>> = Vec::with_capacity(layers.len());
    for layer in layers {
        let base = min_bytes(layer);
        let extra: Vec<usize> = layer.candidates.iter().map(|c| ((c.bytes - base) / unit) as usize).collect();
        let mut next = vec![f64::INFINITY; states];
        let mut pick = vec![0u8; states];
        for s in 0..states {
            for (i, c) in layer.candidates.iter().enumerate() {
                if extra[i] <= s {
                    let total = best[s - extra[i]] + c.loss;
                    if total < next[s] {
                        next[s] = total;
                        pick[s] = i as u8;
                    }
                }
            }
        }
        best = next;
        picks.push(pick);
    }
    let mut choice = vec![0; layers.len()];
    let mut s = states - 1;
    for (l, layer) in layers.iter().enumerate().rev() {
        let i = picks[l][s] as usize;
        choice[l] = i;
        s -= ((layer.candidates[i].bytes - min_bytes(layer)) / unit) as usize;
    }
    let mut allocation = summed(layers, choice, Solver::Exact);
    debug_assert!(allocation.bytes <= max_bytes);
    allocation.lower_bound = allocation.loss;
    allocation
}

/// Each layer's best `loss + λ·bytes` (ties to fewer bytes).
fn relaxed_choice(layers: &[LayerChoices], lambda: f64) -> (Vec<usize>, f64) {
    let mut value = 0.0;
    let choice = layers
        .iter()
        .map(|l| {
            let score = |c: &Candidate| c.loss + lambda * c.bytes as f64;
            // `check` refuses a layer without candidates before any solver runs: cannot fail.
            let (i, c) = l
                .candidates
                .iter()
                .enumerate()
                .min_by(|(_, a), (_, b)| score(a).total_cmp(&score(b)).then(a.bytes.cmp(&b.bytes)))
                .expect("candidates checked non-empty");
            value += score(c);
            i
        })
        .collect();
    (choice, value)
}

fn allocate_lagrangian(layers: &[LayerChoices], max_bytes: u64) -> Allocation {
    let budget = max_bytes as f64;
    let bytes_of = |choice: &[usize]| -> u64 { layers.iter().zip(choice).map(|(l, &i)| l.candidates[i].bytes).sum() };
    // Any λ ≥ 0 gives the dual bound Σ min(loss + λ·bytes) − λ·budget; the best seen is kept.
    let mut lower_bound = f64::NEG_INFINITY;
    let mut bound_at = |value: f64, lambda: f64| lower_bound = lower_bound.max(value - lambda * budget);
    let (free, value) = relaxed_choice(layers, 0.0);
    bound_at(value, 0.0);
    let choice = if bytes_of(&free) <= max_bytes {
        free
    } else {
        // The λ that makes the smallest candidates best: the largest loss saved per byte.
        let mut hi = layers
            .iter()
            .flat_map(|l| l.candidates.iter().flat_map(move |a| l.candidates.iter().map(move |b| (a, b))))
            .filter(|(a, b)| a.bytes < b.bytes)
            .map(|(a, b)| (a.loss - b.loss) / (b.bytes - a.bytes) as f64)
            .fold(0.0f64, f64::max)
            * 2.0
            + f64::MIN_POSITIVE;
        let mut lo = 0.0;
        let (mut feasible, value) = relaxed_choice(layers, hi);
        bound_at(value, hi);
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if mid <= lo || mid >= hi {
                break;
            }
            let (choice, value) = relaxed_choice(layers, mid);
            bound_at(value, mid);
            if bytes_of(&choice) <= max_bytes {
                hi = mid;
                feasible = choice;
            } else {
                lo = mid;
            }
        }
        feasible
    };
    let choice = fill_greedily(layers, choice, max_bytes);
    let mut allocation = summed(layers, choice, Solver::Lagrangian);
    allocation.lower_bound = lower_bound.min(allocation.loss);
    allocation
}

/// Spends bytes left under the budget on the upgrades that save the most loss per byte.
fn fill_greedily(layers: &[LayerChoices], mut choice: Vec<usize>, max_bytes: u64) -> Vec<usize> {
    let mut bytes: u64 = layers.iter().zip(&choice).map(|(l, &i)| l.candidates[i].bytes).sum();
    loop {
        let mut best: Option<(usize, usize, f64)> = None;
        for (l, layer) in layers.iter().enumerate() {
            let now = layer.candidates[choice[l]];
            for (i, c) in layer.candidates.iter().enumerate() {
                if c.loss >= now.loss || bytes - now.bytes + c.bytes > max_bytes {
                    continue;
                }
                let per_byte = (now.loss - c.loss) / (c.bytes.saturating_sub(now.bytes).max(1)) as f64;
                if best.is_none_or(|(_, _, b)| per_byte > b) {
                    best = Some((l, i, per_byte));
                }
            }
        }
        let Some((l, i, _)) = best else { return choice };
        bytes = bytes - layers[l].candidates[choice[l]].bytes + layers[l].candidates[i].bytes;
        choice[l] = i;
    }
}

/// The allocation `choice` makes, its bound the choice's own loss until a solver says better.
pub(crate) fn summed(layers: &[LayerChoices], choice: Vec<usize>, solver: Solver) -> Allocation {
    let bytes = layers.iter().zip(&choice).map(|(l, &i)| l.candidates[i].bytes).sum();
    let loss = layers.iter().zip(&choice).map(|(l, &i)| l.candidates[i].loss).sum();
    Allocation { choice, bytes, loss, lower_bound: loss, solver }
}

/// The loss a layer's rounding is estimated to add: `Σ F·(w − q)²` with the Fisher diagonal `F`
/// (sample weights), else the plain squared error.
pub fn weighted_error(original: &[f32], dequantized: &[f32], fisher: Option<&[f32]>) -> f64 {
    let delta = original.iter().zip(dequantized).map(|(w, q)| f64::from(w - q).powi(2));
    match fisher {
        Some(f) => delta.zip(f).map(|(d, &f)| d * f64::from(f)).sum(),
        None => delta.sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(name: &str, candidates: &[(u32, u64, f64)]) -> LayerChoices {
        LayerChoices { name: name.into(), candidates: candidates.iter().map(|&(bits, bytes, loss)| Candidate { bits, bytes, loss }).collect() }
    }

    #[test]
    fn budgets_parse_in_bits_and_sizes() {
        assert_eq!("3.5bpw".parse::<Budget>().unwrap(), Budget::BitsPerWeight(3.5));
        assert_eq!("3".parse::<Budget>().unwrap(), Budget::BitsPerWeight(3.0));
        assert_eq!("12.5 MB".parse::<Budget>().unwrap(), Budget::FileBytes(12_500_000));
        assert_eq!("2MiB".parse::<Budget>().unwrap(), Budget::FileBytes(2 * 1024 * 1024));
        for bad in ["", "MB", "-3bpw", "0", "3 furlongs", "1e3MB"] {
            assert!(bad.parse::<Budget>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_greedy_fill_spends_what_the_relaxation_leaves() {
        // λ alone would stop at {a: 2-bit, b: 2-bit}; 15 bytes are left for b's 3-bit.
        let layers = [layer("a", &[(2, 10, 9.0), (4, 40, 0.0)]), layer("b", &[(2, 10, 4.0), (3, 25, 3.0)])];
        let a = allocate_lagrangian(&layers, 35);
        assert_eq!(a.choice, vec![0, 1]);
        assert!(a.lower_bound <= a.loss);
    }
}
