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

Every rung uses the same seeds, so the ladder is as deterministic as one estimate. The result is
the last rung's estimate, flagged if that rung is, with the rejected rungs listed
([`LlcEstimate::rejected`]).
*/

use serde::{Deserialize, Serialize};

use super::config::Rung;
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
    loop {
        let est = &sampled.estimate;
        let allowed = |retry: &Retry| match retry {
            Retry::HalveStep => rung.halved < config.halvings,
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
