/*!
The Local Learning Coefficient (Lau et al. 2023): estimation from SGLD chains, diagnostics,
calibration, and validation on models whose LLC is known.

- [`config`]: [`SgldConfig`], the settings of one estimate (serde, the single source of defaults).
- [`estimate()`]: runs the chains ([`crate::sampler`]) and computes, per chain,
  `λ̂ = nβ·(mean over draws of L_B(w_t) − L(w*))`, then the mean and sample std over chains, split
  R-hat, bulk ESS, the MALA acceptance rate and every health flag ([`LlcEstimate`]).
- [`diagnostics`]: R-hat, ESS (Vehtari et al. 2021), the "still rising" rule, and the health
  thresholds (R-hat, MALA acceptance, spikes): the one definition of a healthy estimate.
- [`ladder`]: the step ladder of `llc estimate` ([`estimate_ladder`]): a flagged estimate redone
  at ε/2 (MALA, spikes, divergence; at most `halvings` times) or continued with twice the draws
  (R-hat, still rising; at most `lengthenings` times).
- [`calibrate()`]: sweeps ε × nβ (× γ) and recommends the largest flat, healthy ε.
- [`analytic`]: polynomial, reduced-rank and linear regression models with known λ, and
  [`analytic::validate`].
- [`restrict`]: the weight-restricted LLC's groups of tensors (`llc.restrict`: presets, globs,
  which tensors a group frees, the `restriction` column's names).
- [`transformer`]: the paper's transformer as an [`crate::sampler::SgldTarget`] (a checkpoint's
  weights and training rows, gradients by the fast path).
- [`stage`]: the `llc estimate` and `llc calibrate` stages: checkpoints in, tables out
  (`tables::llc`), resumable at checkpoint granularity. Documented in `docs/llc.md`.

Architecture invariant: the estimator (`estimate`, `calibrate`, `diagnostics`) knows nothing about
the transformer; a model enters only through [`crate::sampler::SgldTarget`] and a factory closure
`Fn(chain) -> anyhow::Result<T>`. Only [`transformer`] and [`stage`] know about checkpoints.
*/

pub mod analytic;
mod calibrate;
pub mod config;
pub mod diagnostics;
mod estimate;
pub mod ladder;
pub mod restrict;
pub mod stage;
#[cfg(test)]
mod tests;
pub mod transformer;

pub use calibrate::{
    calibrate, recommend, Calibration, CalibrationGrid, CalibrationPoint, RecommendCriteria,
    Recommendation,
};
pub use config::{Epsilon, LossAtWstar, NBeta, NBetaRule, Rung, Schedule, SgldConfig, StepCount};
pub use estimate::{estimate, estimate_at, ChainEstimate, ChainFlags, EstimateFlags, LlcEstimate};
pub use ladder::estimate_ladder;

use crate::sampler::SamplerError;

/// Errors of LLC estimation. A diverged or unhealthy chain is not an error: it is reported in
/// the estimate's flags.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LlcError {
    /// A setting is out of range or does not fit the target (e.g. a batch larger than the data).
    #[error("invalid LLC settings: {0}")]
    InvalidConfig(String),
    /// Sampling failed (a tensor error inside a chain, or a target that could not be built).
    #[error(transparent)]
    Sampler(#[from] SamplerError),
    /// A tensor operation outside the chains failed (computing `L(w*)`, building a model).
    #[error("tensor operation failed")]
    Candle(#[from] candle_core::Error),
    /// The factory could not build the target used to compute `L(w*)`.
    #[error("could not build the sampling target")]
    Target(#[source] anyhow::Error),
}
