//! Second-order weight rounding (GPTQ, QuIP's LDLQ and its greedy passes) and what it needs:
//! the Hessian of each linear layer's output error, `H = (2/N) Σ x xᵀ` over its calibration
//! inputs, and a little dense linear algebra.

pub mod admm;
pub mod linalg;
pub mod rounding;
pub mod shared;
pub mod summary;

pub use linalg::Square;
pub use rounding::{fit_uniform, proxy_loss, round_with_hessian, Feedback, FittedGroups, Grid, HessianRounder, Rounded, RoundingSettings};
pub use shared::ShareFactors;
pub use summary::{summarize, HessianSummary};
