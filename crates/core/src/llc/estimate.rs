/*!
From SGLD traces to an LLC estimate with its diagnostics and every health flag: the chains' own
(diverged, negative, not converged) and the diagnostics' (R-hat, MALA acceptance, spikes; the
rules are in [`super::diagnostics`]). Whatever judges an estimate (the tables' `flags` columns, the
calibration's recommendation) reads the flags an [`LlcEstimate`] carries.
*/

use serde::{Deserialize, Serialize};

use super::diagnostics::{ess_bulk, mean, rhat, sample_variance, spiking_chains, still_rising, Spikes, MALA_MIN, R_HAT_MAX};
use super::config::{Rung, Schedule};
use super::{LlcError, LossAtWstar, RecommendCriteria, SgldConfig};
use crate::sampler::{advance_chains, run_chains_kept, Chain, ChainPlan, ChainTrace, Minibatches, RmsProp, SgldTarget};

/// Health flags of one chain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainFlags {
    /// The chain was stopped: a non-finite loss, or one above the divergence threshold.
    pub diverged: bool,
    /// The chain's estimate is below zero: the sampler found lower loss than `w*` has, so `w*`
    /// is not a local minimum at this temperature (or γ is too weak to keep the chain near it).
    pub negative: bool,
    /// The per-draw estimate was still rising at the end of the chain (see
    /// [`super::diagnostics::still_rising`]): more burn-in or draws are needed.
    pub not_converged: bool,
}

impl ChainFlags {
    /// Whether any flag is set.
    pub fn any(&self) -> bool {
        self.diverged || self.negative || self.not_converged
    }
}

/// One chain's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainEstimate {
    /// Chain index.
    pub chain: usize,
    /// `nβ·(mean over draws of L_B(w_t) − L(w*))`; NaN for a diverged chain.
    pub llc: f64,
    /// Minibatch loss at each draw (shorter than `draws` when the chain diverged).
    pub draw_losses: Vec<f64>,
    /// Mean MALA acceptance probability of the checked steps, if any were checked.
    pub mala_acceptance: Option<f64>,
    /// The step at which the chain was stopped, if it diverged.
    pub diverged_at_step: Option<usize>,
    /// Health flags.
    pub flags: ChainFlags,
}

/// The health flags of a whole estimate: counts of flagged chains, and the diagnostics' flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EstimateFlags {
    /// Chains that diverged (excluded from the mean, std, R-hat and ESS).
    pub diverged: usize,
    /// Chains with a negative estimate.
    pub negative: usize,
    /// Chains whose trace had not levelled off.
    pub not_converged: usize,
    /// The mean over healthy chains is negative (or there is no healthy chain).
    pub negative_mean: bool,
    /// R-hat above [`R_HAT_MAX`]: the chains disagree.
    pub r_hat: bool,
    /// Mean MALA acceptance below [`MALA_MIN`]: ε is too large.
    pub mala: bool,
    /// Some chain spiked (see [`super::diagnostics::SPIKE_Z`]).
    pub spikes: bool,
}

impl EstimateFlags {
    /// Whether the chains themselves are flagged: one diverged, is negative or had not levelled
    /// off, or the mean is negative.
    pub fn chains_flagged(&self) -> bool {
        self.diverged + self.negative + self.not_converged > 0 || self.negative_mean
    }

    /// Whether any flag is set: the chains' or the diagnostics' (R-hat, MALA, spikes).
    pub fn flagged(&self) -> bool {
        self.chains_flagged() || self.r_hat || self.mala || self.spikes
    }

    /// The names of the flags that are set (a count is set when positive), for short labels:
    /// `flag_mala`, `flag_r_hat`, `flag_spikes`, `diverged`, `negative`, `not_converged`,
    /// `negative_mean`, in that order (the tables' column names).
    pub fn names(&self) -> Vec<&'static str> {
        [
            ("flag_mala", self.mala),
            ("flag_r_hat", self.r_hat),
            ("flag_spikes", self.spikes),
            ("diverged", self.diverged > 0),
            ("negative", self.negative > 0),
            ("not_converged", self.not_converged > 0),
            ("negative_mean", self.negative_mean),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }
}

/// An LLC estimate with everything needed to judge it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlcEstimate {
    /// The settings used.
    pub config: SgldConfig,
    /// Number of training rows n.
    pub n_train: usize,
    /// Number of sampled parameters d.
    pub n_params: usize,
    /// The batch size used.
    pub batch_size: usize,
    /// The value of nβ used.
    pub nbeta: f64,
    /// The step size and step counts used, resolved ([`SgldConfig::schedule`] at the rung this
    /// estimate ran at).
    pub schedule: Schedule,
    /// The rungs of the step ladder rejected before this estimate, in order (empty when the first
    /// was healthy, or without a ladder: see [`super::ladder`]).
    pub rejected: Vec<super::ladder::RejectedRung>,
    /// `L(w*)`, as chosen by `config.loss_at_wstar`.
    pub loss_at_wstar: f64,
    /// The loss above which a chain counted as diverged.
    pub divergence_loss: f64,
    /// Per-chain results, in chain order.
    pub chains: Vec<ChainEstimate>,
    /// Mean of the per-chain estimates over the chains that did not diverge.
    pub llc_mean: f64,
    /// Sample standard deviation (ddof = 1, i.e. `n − 1` in the denominator) of the per-chain
    /// estimates over the chains that did not diverge; NaN with fewer than two such chains.
    /// It measures the spread between chains, not the standard error of the mean (divide by
    /// √chains for that).
    pub llc_std: f64,
    /// Rank-normalised split R-hat (Vehtari et al. 2021) of the per-draw estimates
    /// `nβ·(L_B(w_t) − L(w*))` of the chains that did not diverge.
    pub r_hat: f64,
    /// Bulk effective sample size of the same per-draw estimates, over all those chains together.
    pub ess_bulk: f64,
    /// Mean MALA acceptance probability over all checked steps of the chains that did not
    /// diverge; `None` when no step was checked.
    pub mala_acceptance: Option<f64>,
    /// Flag counts.
    pub flags: EstimateFlags,
}

impl LlcEstimate {
    /// The per-draw loss traces as `(chain, draw, loss)` rows, for a long-format table.
    pub fn trace_rows(&self) -> impl Iterator<Item = (usize, usize, f64)> + '_ {
        self.chains.iter().flat_map(|c| {
            c.draw_losses
                .iter()
                .enumerate()
                .map(move |(d, &l)| (c.chain, d, l))
        })
    }

    /// The per-draw estimates `nβ·(L_B(w_t) − L(w*))` of one chain.
    pub fn draw_estimates(&self, chain: usize) -> Vec<f64> {
        self.chains.get(chain).map_or_else(Vec::new, |c| {
            c.draw_losses
                .iter()
                .map(|l| self.nbeta * (l - self.loss_at_wstar))
                .collect()
        })
    }

    /// One line for a log or a stderr warning: the estimate, the diagnostics, and which chains
    /// are flagged.
    pub fn summary(&self) -> String {
        let healthy = self.chains.len() - self.flags.diverged;
        let mala = self
            .mala_acceptance
            .map_or("n/a".to_string(), |a| format!("{a:.3}"));
        format!(
            "LLC {:.4} ± {:.4} (sample sd, ddof=1, over {healthy} of {} chains); R-hat {:.3}, bulk ESS {:.0}, MALA acceptance {mala}; flags: {}",
            self.llc_mean,
            self.llc_std,
            self.chains.len(),
            self.r_hat,
            self.ess_bulk,
            self.flag_summary()
        )
    }

    /// Sets the diagnostics' flags (R-hat, MALA acceptance, spikes) from the statistics and
    /// draws. [`estimate`] calls it; call it again after editing those.
    pub fn diagnose(&mut self) {
        self.flags.r_hat = self.r_hat.is_finite() && self.r_hat > R_HAT_MAX;
        self.flags.mala = self.mala_acceptance.is_some_and(|a| a.is_finite() && a < MALA_MIN);
        self.flags.spikes = !self.spiking_chains().chains.is_empty();
    }

    /// The chains that spike, among those that did not diverge (see [`spiking_chains`]).
    pub fn spiking_chains(&self) -> Spikes {
        let per_chain: Vec<(usize, Vec<f64>)> =
            self.chains.iter().filter(|c| !c.flags.diverged).map(|c| (c.chain, self.draw_estimates(c.chain))).collect();
        spiking_chains(&per_chain)
    }

    /// Whether the estimate is healthy enough to recommend its settings: no flag of the chains,
    /// a finite estimate, no R-hat or spike flag, and MALA acceptance within `criteria` (which
    /// replaces the [`MALA_MIN`] flag there). R-hat counts because on the transformer the series
    /// with nβ = B/ln B reached R-hat 1.15 at the ε a rule without it picked.
    pub fn healthy(&self, criteria: &RecommendCriteria) -> bool {
        let acceptance_ok = self.mala_acceptance.is_none_or(|a| a >= criteria.min_acceptance && a <= criteria.max_acceptance);
        !self.flags.chains_flagged() && self.llc_mean.is_finite() && acceptance_ok && !self.flags.r_hat && !self.flags.spikes
    }

    /// Every flag in words (the chains', then R-hat, MALA and spikes); empty when none is set.
    pub fn flag_text(&self) -> String {
        let mut parts = Vec::new();
        if self.flags.chains_flagged() {
            parts.push(self.flag_summary());
        }
        if self.flags.r_hat {
            parts.push(format!("R-hat {:.4} > {R_HAT_MAX} (chains disagree: longer chains, more burn-in or larger γ)", self.r_hat));
        }
        if self.flags.mala {
            parts.push(format!("MALA acceptance {:.4} < {MALA_MIN} (ε too large)", self.mala_acceptance.unwrap_or(f64::NAN)));
        }
        if self.flags.spikes {
            let s = self.spiking_chains();
            let ids: Vec<String> = s.chains.iter().map(usize::to_string).collect();
            parts.push(format!(
                "{}/{} chains spiked (chains {}; largest per-draw estimate {:.0} against a median of {:.1}: ε too large for this checkpoint, or a heavy tail of the loss where they persist after ε was halved)",
                s.chains.len(),
                self.chains.len(),
                ids.join(","),
                s.worst,
                s.median
            ));
        }
        parts.join("; ")
    }

    /// The chains' flags in words, or "none".
    pub fn flag_summary(&self) -> String {
        let list = |pick: fn(&ChainFlags) -> bool| {
            let ids: Vec<String> = self
                .chains
                .iter()
                .filter(|c| pick(&c.flags))
                .map(|c| c.chain.to_string())
                .collect();
            ids.join(",")
        };
        let total = self.chains.len();
        let mut parts = Vec::new();
        if self.flags.diverged > 0 {
            parts.push(format!(
                "{}/{total} chains diverged (chains {})",
                self.flags.diverged,
                list(|f| f.diverged)
            ));
        }
        if self.flags.negative > 0 {
            parts.push(format!(
                "{}/{total} negative (chains {})",
                self.flags.negative,
                list(|f| f.negative)
            ));
        }
        if self.flags.not_converged > 0 {
            parts.push(format!(
                "{}/{total} not converged (chains {})",
                self.flags.not_converged,
                list(|f| f.not_converged)
            ));
        }
        if self.flags.negative_mean {
            parts.push("mean estimate negative or undefined".into());
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join("; ")
        }
    }
}

/// Estimates the LLC at `w*` with SGLD chains, with the settings as given (the first rung; the
/// ladder of retries is [`super::ladder::estimate_ladder`]'s).
///
/// `factory(i)` builds chain `i`'s own copy of the target, at `w*`; it is called once more for
/// chain 0 up front, to compute `L(w*)` and the sizes (that instance then runs chain 0). The
/// result depends only on the target and `config`, not on `config.threads` or scheduling.
pub fn estimate<T, F>(factory: F, config: &SgldConfig) -> Result<LlcEstimate, LlcError>
where
    T: SgldTarget,
    F: Fn(usize) -> anyhow::Result<T> + Sync,
{
    estimate_at(factory, config, Rung::default())
}

/// [`estimate`] at one rung of the ladder: ε halved and the draws doubled as `rung` says (see
/// [`SgldConfig::schedule`]); the same seeds on every rung.
pub fn estimate_at<T, F>(factory: F, config: &SgldConfig, rung: Rung) -> Result<LlcEstimate, LlcError>
where
    T: SgldTarget,
    F: Fn(usize) -> anyhow::Result<T> + Sync,
{
    Ok(Sampled::at(&factory, config, rung)?.estimate)
}

/// One rung's estimate with its chains kept, so that a rung with more draws at the same step can
/// continue them instead of starting over ([`Sampled::lengthen`]).
pub(super) struct Sampled<T> {
    pub(super) estimate: LlcEstimate,
    chains: Vec<Chain<T>>,
}

impl<T: SgldTarget> Sampled<T> {
    /// Samples from `w*` at `rung`.
    pub(super) fn at<F>(factory: &F, config: &SgldConfig, rung: Rung) -> Result<Sampled<T>, LlcError>
    where
        F: Fn(usize) -> anyhow::Result<T> + Sync,
    {
        config.validate()?;
        let first = factory(0).map_err(LlcError::Target)?;
        let n = first.n_train();
        let batch_size = config.resolved_batch_size(n)?;
        let nbeta = config.nbeta.resolve(n, batch_size)?;
        let schedule = config.schedule(nbeta, rung);
        let n_params: usize = first.params().iter().map(|v| v.elem_count()).sum();
        let loss_at_wstar = loss_at_wstar(&first, config, batch_size)?;
        if !loss_at_wstar.is_finite() {
            return Err(LlcError::InvalidConfig(format!(
                "L(w*) is not finite: {loss_at_wstar}"
            )));
        }
        let divergence_loss = loss_at_wstar
            + config.divergence_factor * (loss_at_wstar.abs() + n_params as f64 / (2.0 * nbeta));
        let plan = ChainPlan {
            epsilon: schedule.epsilon,
            gamma: config.gamma,
            nbeta,
            batch_size,
            burn_in: schedule.burn_in,
            draws: schedule.draws,
            steps_between_draws: schedule.steps_between_draws,
            mala_every: config.mala_every,
            divergence_loss,
            seed: config.seed,
            rmsprop: config.rmsprop.then_some(RmsProp {
                alpha: config.rmsprop_alpha,
                eps: config.rmsprop_eps,
            }),
        };
        let chains = run_chains_kept(factory, &plan, config.chains, config.threads, Some(first))?;
        let traces = chains.iter().map(|c| c.trace().clone()).collect();
        let estimate = summarize(config.clone(), schedule, &plan, n, n_params, loss_at_wstar, traces);
        Ok(Sampled { estimate, chains })
    }

    /// The estimate at `rung`, which must differ from this one's by more draws alone (the ladder's
    /// R-hat retry): the chains go on from where they stopped, which gives what [`Sampled::at`]
    /// would at `rung` (the noise and minibatch streams do not depend on the chains' length;
    /// tested) at the cost of the new draws only.
    pub(super) fn lengthen(self, config: &SgldConfig, rung: Rung) -> Result<Sampled<T>, LlcError> {
        let Sampled { estimate, chains } = self;
        let schedule = config.schedule(estimate.nbeta, rung);
        let Schedule { epsilon, burn_in, steps_between_draws, draws } = schedule;
        // Every chain ran under the same plan; the new one differs in the schedule alone.
        let Some(ran) = chains.first().map(|c| c.plan().clone()) else {
            return Err(LlcError::InvalidConfig("no chains to continue".into()));
        };
        let plan = ChainPlan { epsilon, burn_in, steps_between_draws, draws, ..ran };
        let chains = advance_chains(chains, &plan, config.threads)?;
        let traces = chains.iter().map(|c| c.trace().clone()).collect();
        let LlcEstimate { n_train, n_params, loss_at_wstar, .. } = estimate;
        let estimate = summarize(config.clone(), schedule, &plan, n_train, n_params, loss_at_wstar, traces);
        Ok(Sampled { estimate, chains })
    }
}

/// `L(w*)` per `config.loss_at_wstar`.
fn loss_at_wstar<T: SgldTarget>(
    target: &T,
    config: &SgldConfig,
    batch_size: usize,
) -> Result<f64, LlcError> {
    let n = target.n_train();
    let value = |rows: &[u32]| -> Result<f64, LlcError> { Ok(target.loss_value(rows)?) };
    match config.loss_at_wstar {
        LossAtWstar::FullTrainingSet => {
            let rows: Vec<u32> = (0..n as u32).collect();
            value(&rows)
        }
        LossAtWstar::FirstBatches => {
            // A stream no chain uses, so the batches are the same whatever the chain count.
            let mut batches = Minibatches::new(n, batch_size, config.seed, u64::MAX);
            let wanted = if config.loss_at_wstar_batches == 0 {
                config.chains
            } else {
                config.loss_at_wstar_batches
            };
            let count = wanted.clamp(1, batches.batches_per_epoch());
            let mut total = 0.0;
            for _ in 0..count {
                total += value(batches.next_batch())?;
            }
            Ok(total / count as f64)
        }
    }
}

/// Turns the chains' traces into per-chain estimates, pooled statistics and flags.
fn summarize(
    config: SgldConfig,
    schedule: Schedule,
    plan: &ChainPlan,
    n_train: usize,
    n_params: usize,
    loss_at_wstar: f64,
    traces: Vec<ChainTrace>,
) -> LlcEstimate {
    let nbeta = plan.nbeta;
    let mut chains = Vec::with_capacity(traces.len());
    let mut healthy_draws: Vec<Vec<f64>> = Vec::new();
    let mut mala_all: Vec<f64> = Vec::new();
    for t in traces {
        let per_draw: Vec<f64> = t
            .draw_losses
            .iter()
            .map(|l| nbeta * (l - loss_at_wstar))
            .collect();
        let mala: Vec<f64> = t
            .mala_accept
            .iter()
            .copied()
            .filter(|a| a.is_finite())
            .collect();
        let mala_acceptance = (!mala.is_empty()).then(|| mean(&mala));
        let diverged = t.divergence.is_some();
        let llc = if diverged || per_draw.is_empty() {
            f64::NAN
        } else {
            mean(&per_draw)
        };
        let flags = ChainFlags {
            diverged,
            negative: !diverged && llc < 0.0,
            not_converged: !diverged && still_rising(&per_draw),
        };
        if !diverged {
            healthy_draws.push(per_draw);
            mala_all.extend(&mala);
        }
        chains.push(ChainEstimate {
            chain: t.chain,
            llc,
            draw_losses: t.draw_losses,
            mala_acceptance,
            diverged_at_step: t.divergence.map(|d| d.step),
            flags,
        });
    }
    let healthy: Vec<f64> = chains
        .iter()
        .filter(|c| !c.flags.diverged)
        .map(|c| c.llc)
        .collect();
    let llc_mean = mean(&healthy);
    let llc_std = sample_variance(&healthy).sqrt();
    let count = |pick: fn(&ChainFlags) -> bool| chains.iter().filter(|c| pick(&c.flags)).count();
    let flags = EstimateFlags {
        diverged: count(|f| f.diverged),
        negative: count(|f| f.negative),
        not_converged: count(|f| f.not_converged),
        negative_mean: llc_mean.is_nan() || llc_mean < 0.0,
        ..EstimateFlags::default()
    };
    let (r_hat, ess) = if healthy_draws.is_empty() {
        (f64::NAN, f64::NAN)
    } else {
        (rhat(&healthy_draws), ess_bulk(&healthy_draws))
    };
    let mut estimate = LlcEstimate {
        config,
        n_train,
        n_params,
        batch_size: plan.batch_size,
        nbeta,
        schedule,
        rejected: Vec::new(),
        loss_at_wstar,
        divergence_loss: plan.divergence_loss,
        chains,
        llc_mean,
        llc_std,
        r_hat,
        ess_bulk: ess,
        mala_acceptance: (!mala_all.is_empty()).then(|| mean(&mala_all)),
        flags,
    };
    estimate.diagnose();
    estimate
}
