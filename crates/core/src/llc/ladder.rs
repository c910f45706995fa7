/*!
The step ladder of `llc estimate`: the estimate at the settings' ε, redone while its flags say the
settings do not fit the checkpoint: at most `halvings` times at a smaller step, at most
`lengthenings` times with more draws.

Why: the loss surface sharpens and flattens along training, so the step that is healthy at one
checkpoint is too large at another (docs/llc.md, "Choosing the step per checkpoint"). What a flag
asks for ([`Retry::for_flags`], reading the flags [`LlcEstimate`] carries, whose rules are
[`super::diagnostics`]'):

- MALA acceptance, spiking chains or a diverged chain: the step is too large. The next rung runs at
  ε/2 with burn-in and thinning rescaled to the same sampling time ε × steps
  ([`super::SgldConfig::schedule`]).
- R-hat, or a chain still rising, and nothing wrong with the step: the chains are too short to
  agree or to have levelled off (ESS ~ 10 at the memorisation peak; the attention-restricted LLC
  of a trained model needed 800-1,600 draws). The next rung runs at the same ε with twice the
  draws (burn-in kept: two relaxation times were enough wherever it was measured, so the chains
  are twice as long after burn-in). It continues the rejected rung's chains rather than starting
  over: the same numbers as a fresh rung (the noise and minibatch streams do not depend on a
  chain's length; tested), for the new draws' cost.
- A negative estimate is not the step's fault, nor the chains' length: no retry.
- Spikes that a halving did not shrink ([`spikes_shrank`]) are not the step's fault either: a small
  group of a confidently trained model (the unembedding of the same-α experiment, LLC ~0.1-2) has
  heavy-tailed per-draw losses of its own, and its chains "spike" by the same height at ε, ε/2 …
  ε/8 (docs/llc.md, "Health flags"). When the spikes are all that asks for a halving and the last
  halving left them at least half as high, the ladder stops there, flagged: further halvings would
  cost up to 16× an estimate and end flagged anyway.

Every rung uses the same seeds, so the ladder is as deterministic as one estimate. The result is
the last rung's estimate, flagged if that rung is, with the rejected rungs listed
([`LlcEstimate::rejected`]).
*/

use serde::{Deserialize, Serialize};

use super::config::Rung;
use super::diagnostics::Spikes;
use super::estimate::Sampled;
use super::{EstimateFlags, LlcError, LlcEstimate, SgldConfig};
use crate::sampler::SgldTarget;

/// What a rejected rung's flags ask of the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Retry {
    /// ε/2 at equal sampling time: the step is too large for the checkpoint.
    HalveStep,
    /// Twice the draws at the same ε: the chains disagree or are still rising, the step is fine.
    DoubleDraws,
}

impl Retry {
    /// The retry these flags ask for, if any (see the module docs).
    pub fn for_flags(flags: &EstimateFlags) -> Option<Retry> {
        if flags.mala || flags.spikes || flags.diverged > 0 {
            Some(Retry::HalveStep)
        } else if flags.r_hat || flags.not_converged > 0 {
            Some(Retry::DoubleDraws)
        } else {
            None
        }
    }
}

/// A halving asked for by spikes alone must bring the spikes' height above the median of the draws
/// below this fraction of what it was, or the ladder stops halving. Spikes from too large a step
/// fall by orders of magnitude when the step halves (140-770 robust standard deviations to under
/// 10 on the p = 59 models); the heavy tail of a small group's loss stayed the same height (per-draw
/// estimates of 4, 5, 6, 5 over a median of 0.1 at ε … ε/8).
pub const SPIKE_SHRINK: f64 = 0.5;

/// Whether halving the step shrank the spikes: `now` (at the halved step) rises above its median
/// by less than [`SPIKE_SHRINK`] of what `before` did. No spike now, or nothing to judge, counts
/// as shrunk.
pub fn spikes_shrank(before: &Spikes, now: &Spikes) -> bool {
    let height = |s: &Spikes| s.worst - s.median;
    let (b, n) = (height(before), height(now));
    now.chains.is_empty() || !(b.is_finite() && n.is_finite()) || n < SPIKE_SHRINK * b
}

/// A rung whose estimate was flagged and redone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectedRung {
    /// Its step size.
    pub epsilon: f64,
    /// Its draws per chain.
    pub draws: usize,
    /// The flags that rejected it ([`EstimateFlags::names`]).
    pub flags: Vec<String>,
    /// What the next rung changed.
    pub retry: Retry,
}

impl std::fmt::Display for RejectedRung {
    /// `ε 2.51e-5, 100 draws: flag_mala, flag_spikes → ε/2`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let next = match self.retry {
            Retry::HalveStep => "ε/2",
            Retry::DoubleDraws => "2× draws",
        };
        write!(f, "ε {:.3e}, {} draws: {} → {next}", self.epsilon, self.draws, self.flags.join(", "))
    }
}

/// The rejected rungs in words, `; `-separated (empty when there are none): the tables'
/// `rejected_steps` column.
pub fn rejected_text(rejected: &[RejectedRung]) -> String {
    rejected.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// Estimates at the settings' ε and redoes the estimate as its flags ask (see the module docs),
/// at most `config.halvings` times at a halved step and `config.lengthenings` times with doubled
/// draws. `factory` as for [`super::estimate()`].
pub fn estimate_ladder<T, F>(factory: F, config: &SgldConfig) -> Result<LlcEstimate, LlcError>
where
    T: SgldTarget,
    F: Fn(usize) -> anyhow::Result<T> + Sync,
{
    let mut rung = Rung::default();
    let mut rejected = Vec::new();
    let mut sampled = Sampled::at(&factory, config, rung)?;
    // The spikes of the rung last halved for them, to see whether halving helped.
    let mut halved_spikes: Option<Spikes> = None;
    loop {
        let est = &sampled.estimate;
        let spikes = est.flags.spikes.then(|| est.spiking_chains());
        let spikes_alone = spikes.is_some() && !est.flags.mala && est.flags.diverged == 0;
        let futile = match (&halved_spikes, &spikes) {
            (Some(before), Some(now)) if spikes_alone && !spikes_shrank(before, now) => {
                tracing::info!(
                    "halving ε did not shrink the spikes (largest per-draw estimate {:.3} over a median of {:.3}, then {:.3} over {:.3}): \
                     a heavy tail of the loss, not the step; no further halving",
                    before.worst, before.median, now.worst, now.median
                );
                true
            }
            _ => false,
        };
        let allowed = |retry: &Retry| match retry {
            Retry::HalveStep => rung.halved < config.halvings && !futile,
            Retry::DoubleDraws => rung.lengthened < config.lengthenings,
        };
        match Retry::for_flags(&est.flags).filter(allowed) {
            Some(retry) => {
                let r = RejectedRung {
                    epsilon: est.schedule.epsilon,
                    draws: est.schedule.draws,
                    flags: est.flags.names().into_iter().map(str::to_string).collect(),
                    retry,
                };
                tracing::info!("rejected rung {}: {r} ({})", rejected.len() + 1, est.flag_text());
                rejected.push(r);
                sampled = match retry {
                    Retry::HalveStep => {
                        halved_spikes = spikes;
                        rung.halved += 1;
                        Sampled::at(&factory, config, rung)?
                    }
                    Retry::DoubleDraws => {
                        rung.lengthened += 1;
                        sampled.lengthen(config, rung)?
                    }
                };
            }
            _ => {
                let mut est = sampled.estimate;
                est.rejected = rejected;
                return Ok(est);
            }
        }
    }
}

#[cfg(test)]
#[path = "ladder_tests.rs"]
mod tests;
