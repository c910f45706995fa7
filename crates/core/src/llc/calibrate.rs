/*!
Calibration of the sampler: estimates over a grid of step size ε × nβ (× γ), and the choice of
settings from it.

The usual recipe (Lau et al.; devinterp's calibration notebook): the estimate should not depend on
ε once ε is small enough, so look for the region where it is flat in ε, keep only healthy runs
([`LlcEstimate::healthy`]: no flag, MALA acceptance in a sane range), and take the largest ε there: the largest
step that does not change the answer mixes fastest.
*/

use serde::{Deserialize, Serialize};

use super::{estimate, LlcError, LlcEstimate, NBeta, SgldConfig};
use crate::sampler::SgldTarget;

/// The grid to sweep. An empty `nbetas` or `gammas` list means "the base config's value".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CalibrationGrid {
    /// Step sizes ε.
    pub epsilons: Vec<f64>,
    /// Values or rules for nβ.
    pub nbetas: Vec<NBeta>,
    /// Localisation strengths γ.
    pub gammas: Vec<f64>,
}

/// One grid point and its estimate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationPoint {
    /// Step size.
    pub epsilon: f64,
    /// nβ as configured.
    pub nbeta: NBeta,
    /// Localisation strength.
    pub gamma: f64,
    /// The estimate with its diagnostics.
    pub estimate: LlcEstimate,
}

/// The swept grid, in order: γ outermost, then nβ, then ε.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// All grid points.
    pub points: Vec<CalibrationPoint>,
}

/// What counts as flat and healthy when choosing settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecommendCriteria {
    /// Largest relative change of the estimate from the next smaller ε (same nβ and γ) that
    /// still counts as flat.
    pub flat_tolerance: f64,
    /// Lowest acceptable mean MALA acceptance probability (when it was measured).
    pub min_acceptance: f64,
    /// Highest acceptable mean MALA acceptance probability (when it was measured).
    pub max_acceptance: f64,
}

impl Default for RecommendCriteria {
    fn default() -> Self {
        // 0.9–0.95 is the usual MALA target; above 0.95 only means ε could be larger, which the
        // "largest flat ε" rule already takes care of, so the upper bound is 1.
        RecommendCriteria {
            flat_tolerance: 0.1,
            min_acceptance: 0.9,
            max_acceptance: 1.0,
        }
    }
}

/// The chosen settings and the evidence for them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// Chosen step size.
    pub epsilon: f64,
    /// Chosen nβ.
    pub nbeta: NBeta,
    /// Chosen γ.
    pub gamma: f64,
    /// The estimate at the chosen point.
    pub llc_mean: f64,
    /// Relative change of the estimate from the next smaller ε.
    pub relative_change: f64,
}

/// Runs one estimate per grid point with `base`'s other settings.
pub fn calibrate<T, F>(
    factory: F,
    base: &SgldConfig,
    grid: &CalibrationGrid,
) -> Result<Calibration, LlcError>
where
    T: SgldTarget,
    F: Fn(usize) -> anyhow::Result<T> + Sync,
{
    if grid.epsilons.is_empty() {
        return Err(LlcError::InvalidConfig(
            "the calibration grid has no epsilons".into(),
        ));
    }
    let gammas = if grid.gammas.is_empty() {
        vec![base.gamma]
    } else {
        grid.gammas.clone()
    };
    let nbetas = if grid.nbetas.is_empty() {
        vec![base.nbeta]
    } else {
        grid.nbetas.clone()
    };
    let mut epsilons = grid.epsilons.clone();
    epsilons.sort_by(f64::total_cmp);
    let mut points = Vec::new();
    for &gamma in &gammas {
        for &nbeta in &nbetas {
            for &epsilon in &epsilons {
                let config = SgldConfig {
                    epsilon: epsilon.into(),
                    gamma,
                    nbeta,
                    ..base.clone()
                };
                let estimate = estimate(&factory, &config)?;
                tracing::info!(epsilon, %nbeta, gamma, "{}", estimate.summary());
                points.push(CalibrationPoint {
                    epsilon,
                    nbeta,
                    gamma,
                    estimate,
                });
            }
        }
    }
    Ok(Calibration { points })
}

impl Calibration {
    /// The recommendation of this sweep (see [`recommend`]).
    pub fn recommend(&self, criteria: &RecommendCriteria) -> Option<Recommendation> {
        recommend(&self.points, criteria)
    }
}

/// The largest ε whose estimate is flat (relative change from the next smaller ε of the same nβ
/// and γ at most `flat_tolerance`) with both points [`LlcEstimate::healthy`]. Ties in ε (several
/// nβ or γ) go to the flattest. `None` when no point qualifies: widen or refine the grid.
pub fn recommend(points: &[CalibrationPoint], criteria: &RecommendCriteria) -> Option<Recommendation> {
    let mut best: Option<Recommendation> = None;
    for (i, p) in points.iter().enumerate() {
        // The next smaller ε of the same series: points are sorted by ε within a series.
        let Some(prev) = points[..i].iter().rev().find(|q| q.gamma == p.gamma && q.nbeta == p.nbeta && q.epsilon < p.epsilon) else {
            continue;
        };
        if !(p.estimate.healthy(criteria) && prev.estimate.healthy(criteria)) {
            continue;
        }
        let change = ((p.estimate.llc_mean - prev.estimate.llc_mean) / prev.estimate.llc_mean).abs();
        if change.is_nan() || change > criteria.flat_tolerance {
            continue;
        }
        let better = match &best {
            None => true,
            Some(b) => p.epsilon > b.epsilon || (p.epsilon == b.epsilon && change < b.relative_change),
        };
        if better {
            best = Some(Recommendation { epsilon: p.epsilon, nbeta: p.nbeta, gamma: p.gamma, llc_mean: p.estimate.llc_mean, relative_change: change });
        }
    }
    best
}
