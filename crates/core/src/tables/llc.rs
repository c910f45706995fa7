//! The LLC tables, each schema with its rows, writer and reader: `llc estimate` (one
//! [`SummaryRow`] per checkpoint and restriction group in [`LLC_SUMMARY`], and the long per-draw
//! trace of [`TraceRow`]s in [`LLC_TRACE`]; both keyed by checkpoint and [`RESTRICTION`]), `llc calibrate` ([`LLC_CALIBRATION`]) and `llc validate`
//! ([`LLC_VALIDATION`]), `llc reference` ([`LLC_REFERENCE`]). The per-run tables start with the same key columns as the analysis
//! tables (`super::ids`); `docs/llc.md` documents how each value is computed.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use polars::prelude::{Column as PlColumn, DataFrame};

use super::ids::{key_columns, read_keys, CHECKPOINT, RUN, RUN_ID_COLUMNS as ID, STEP};
use super::{col_bool, col_f64, col_i64, col_str, read_parquet, write_parquet, col, ColType::*, Column, Schema};
use crate::llc::analytic::ValidationResult;
use crate::llc::stage::CalibrationCell;
use crate::llc::{EstimateFlags, LlcEstimate, NBeta, Schedule, SgldConfig};
use crate::run::RowKey;

/// The group of tensors an estimate samples (`llc.restrict`), the second key of the estimate
/// tables' rows after the checkpoint.
pub const RESTRICTION: Column = col(
    "restriction",
    Str,
    "the group of tensors SGLD moves, the rest held at w* (`llc.restrict`): a preset (`all` is the whole model; `embed`, `attn`, `mlp`, `unembed`) or the group's tensor names and globs joined by `+`",
);

/// `llc.parquet` (llc estimate): one row per checkpoint and restriction group.
pub const LLC_SUMMARY: Schema = Schema {
    name: "llc",
    columns: &[
        ID[0], ID[1], ID[2], ID[3], ID[4], ID[5], ID[6], STEP, CHECKPOINT, RESTRICTION,
        col("rows_used", Str, "`train_split` (the run's training rows) or `all_pairs` (a foreign checkpoint: every one of the p² pairs)"),
        col("n_train", I64, "rows n the loss is measured on"),
        col("n_params", I64, "number of sampled parameters d: the restriction group's (the whole model's for `all`)"),
        col("n_params_model", I64, "number of parameters of the whole model, sampled or held at w*"),
        col("llc_mean", F64, "LLC estimate: mean over the chains that did not diverge of nβ·(mean draw loss − L(w*)); NaN if every chain diverged"),
        col("llc_std", F64, "sample std (ddof = 1) of the per-chain estimates (spread between chains, not the standard error)"),
        col("llc_se", F64, "standard error of llc_mean: llc_std / √chains_used"),
        col("r_hat", F64, "rank-normalised split R-hat of the per-draw estimates over the chains used (Vehtari et al. 2021); ≤ 1.01–1.05 is mixed"),
        col("ess_bulk", F64, "bulk effective sample size of the per-draw estimates, all chains used together"),
        col("mala_acceptance", F64, "mean MALA acceptance probability of the checked steps (NaN when mala_every = 0); ≈ 0.9–0.95 is the usual target"),
        col("loss_at_wstar", F64, "L(w*): the loss subtracted in the estimate (see loss_at_wstar_mode)"),
        col("nbeta", F64, "the value of nβ used"),
        col("chains_used", I64, "chains that did not diverge (the ones averaged)"),
        col("n_diverged", I64, "chains stopped for a non-finite loss or one above divergence_loss (excluded from every statistic)"),
        col("n_negative", I64, "chains with a negative estimate (w* is not a local minimum at this temperature, or γ is too weak)"),
        col("n_not_converged", I64, "chains whose per-draw estimate was still rising at the end (more burn-in or draws needed)"),
        col("negative_mean", Bool, "llc_mean is negative or undefined"),
        col("flag_r_hat", Bool, "r_hat above 1.05: the chains disagree (longer chains, more burn-in, or a larger γ)"),
        col("flag_mala", Bool, "mala_acceptance below 0.8: ε is too large (discretisation error)"),
        col("flag_spikes", Bool, "a chain's largest per-draw estimate is > 30 robust sds (1.4826·MAD) above the median of all draws: thrown out of the basin and pulled back (ε too large); R-hat does not see this"),
        col("flags", Str, "every flag in words (which chains, and why); empty when healthy"),
        col("step_rungs", I64, "rungs of the step ladder run (1: the settings' ε was healthy; see llc.halvings and llc.lengthenings)"),
        col("rejected_steps", Str, "each rejected rung: its ε and draws, the flags that rejected it and what the next rung changed (`ε/2` or `2× draws`), `; `-separated; empty when step_rungs = 1"),
        col("epsilon", F64, "SGLD step size ε the estimate ran with (the last rung's, resolved)"),
        col("epsilon_setting", Str, "ε as configured: a number, or `{per_nbeta: c}` for c/nβ"),
        col("gamma", F64, "localisation strength γ"),
        col("nbeta_setting", Str, "nβ as configured: `n_over_ln_n`, `b_over_ln_b` or a number"),
        col("batch_size", I64, "rows per minibatch (n for full batch)"),
        col("chains", I64, "chains run"),
        col("draws", I64, "recorded draws per chain (the last rung's)"),
        col("draws_setting", I64, "draws per chain as configured (doubled by an R-hat rung)"),
        col("burn_in", I64, "SGLD steps before the first draw (the last rung's)"),
        col("burn_in_setting", Str, "burn-in as configured: steps, or `{relaxations: r}` for ceil(r·2/(εγ)) steps"),
        col("steps_between_draws", I64, "SGLD steps per draw (thinning; the last rung's)"),
        col("steps_between_draws_setting", Str, "thinning as configured: steps, or `{relaxations: x}`"),
        col("halvings", I64, "most step halvings of the ladder allowed (llc.halvings)"),
        col("lengthenings", I64, "most draw doublings of the ladder allowed (llc.lengthenings)"),
        col("sgld_seed", I64, "seed of the sampling noise and minibatches (llc.seed)"),
        col("loss_at_wstar_mode", Str, "`full_training_set` (mean loss over all n rows at w*) or `first_batches` (devinterp 1.3)"),
        col("loss_at_wstar_batches", I64, "minibatches averaged for `first_batches` (0: one per chain)"),
        col("mala_every", I64, "MALA acceptance measured every k-th step after burn-in (0: never)"),
        col("divergence_factor", F64, "a chain diverges when its loss exceeds L(w*) + factor·(abs(L(w*)) + d/(2nβ)), d = n_params"),
        col("divergence_loss", F64, "that threshold, resolved"),
        col("rmsprop", Bool, "RMSProp-preconditioned SGLD (pSGLD)"),
        col("rmsprop_alpha", F64, "RMSProp decay (when rmsprop)"),
        col("rmsprop_eps", F64, "RMSProp δ (when rmsprop)"),
        col("settings_hash", Str, "FNV-1a hash of the SGLD settings (threads, restrict, steps, first_group_steps and trajectory excluded): the resume key, with run, step, restriction and checkpoint_hash"),
        col("checkpoint_hash", Str, "FNV-1a hash of the checkpoint file's bytes"),
    ],
};

/// `llc_trace.parquet` (beside `llc.parquet`): one row per checkpoint, restriction group, chain
/// and draw.
pub const LLC_TRACE: Schema = Schema {
    name: "llc_trace",
    columns: &[
        RUN, STEP, CHECKPOINT, RESTRICTION,
        col("chain", I64, "chain index"),
        col("draw", I64, "draw index within the chain (a diverged chain stops early)"),
        col("loss", F64, "minibatch loss L_B(w_t) at the draw; the per-draw estimate is nbeta·(loss − loss_at_wstar) with the summary row's values"),
    ],
};

/// `llc calibrate --out`: one row per grid point (γ outermost, then batch size, nβ, ε).
pub const LLC_CALIBRATION: Schema = Schema {
    name: "llc_calibration",
    columns: &[
        RUN, STEP, CHECKPOINT,
        col("epsilon", F64, "SGLD step size ε"),
        col("gamma", F64, "localisation strength γ"),
        col("nbeta_setting", Str, "nβ as configured"),
        col("nbeta", F64, "the value of nβ used"),
        col("batch_size", I64, "rows per minibatch (n for full batch)"),
        col("chains", I64, "chains run"),
        col("draws", I64, "recorded draws per chain"),
        col("burn_in", I64, "SGLD steps before the first draw (scaled with ε under --equal-time-at)"),
        col("steps_between_draws", I64, "SGLD steps per draw (scaled with ε under --equal-time-at)"),
        col("llc_mean", F64, "LLC estimate (mean over chains that did not diverge)"),
        col("llc_std", F64, "sample std (ddof = 1) over those chains"),
        col("r_hat", F64, "rank-normalised split R-hat"),
        col("ess_bulk", F64, "bulk effective sample size"),
        col("mala_acceptance", F64, "mean MALA acceptance probability (NaN when not measured)"),
        col("loss_at_wstar", F64, "L(w*)"),
        col("n_diverged", I64, "diverged chains"),
        col("n_negative", I64, "chains with a negative estimate"),
        col("n_not_converged", I64, "chains still rising at the end"),
        col("flags", Str, "the flags in words (as in llc.parquet: R-hat, MALA and spikes included); empty when healthy"),
        col("healthy", Bool, "no flag of the estimator, a finite estimate, R-hat ≤ 1.05, no spiking chain and MALA acceptance within the recommendation's bounds"),
        col("relative_change", F64, "relative change of llc_mean, in absolute value, from the next smaller ε of the same γ, batch and nβ (NaN for the smallest)"),
        col("recommended", Bool, "the point `llc calibrate` recommends (largest ε in the flat, healthy region)"),
    ],
};

/// `llc validate --out`: one row per validation on a model with a known LLC.
pub const LLC_VALIDATION: Schema = Schema {
    name: "llc_validation",
    columns: &[
        col("model", Str, "analytic model, e.g. `polynomial[1,1]`, `rrr(5,3,5)`, `linear(d=4)`"),
        col("true_llc", F64, "exact learning coefficient"),
        col("llc_mean", F64, "mean of the per-chain estimates (diverged chains excluded)"),
        col("llc_std", F64, "sample std (ddof=1) of the per-chain estimates"),
        col("relative_error", F64, "(llc_mean − true_llc)/true_llc"),
        col("epsilon", F64, "SGLD step size ε"),
        col("gamma", F64, "localisation strength γ"),
        col("nbeta_setting", Str, "nβ as configured: `n_over_ln_n`, `b_over_ln_b` or a number"),
        col("nbeta", F64, "nβ used"),
        col("batch_size", I64, "rows per minibatch"),
        col("chains", I64, "number of chains"),
        col("draws", I64, "draws per chain"),
        col("burn_in", I64, "SGLD steps before the first draw"),
        col("steps_between_draws", I64, "thinning"),
        col("seed", I64, "sampling seed (as i64)"),
        col("loss_at_wstar_mode", Str, "`full_training_set` or `first_batches`"),
        col("loss_at_wstar", F64, "L(w*) subtracted in the estimate"),
        col("r_hat", F64, "rank-normalised split R-hat of the per-draw estimates"),
        col("ess_bulk", F64, "bulk effective sample size of the per-draw estimates"),
        col("mala_acceptance", F64, "mean MALA acceptance probability (NaN if not measured)"),
        col("flags", Str, "health flags in words, or `none`"),
    ],
};

/// `llc reference --out`: one row per checkpoint, its estimate against long chains.
pub const LLC_REFERENCE: Schema = Schema {
    name: "llc_reference",
    columns: &[
        ID[0], ID[1], ID[2], ID[3], ID[4], ID[5], ID[6], STEP, CHECKPOINT,
        col("ours_mean", F64, "the whole-model estimate with the run's settings (the step ladder's last rung), as llc estimate computes it"),
        col("ours_se", F64, "its standard error, llc_std / √chains_used"),
        col("ours_epsilon", F64, "the step it ran with"),
        col("ours_step_rungs", I64, "rungs of the step ladder it took"),
        col("ours_flags", Str, "its flags in words; empty when healthy"),
        col("reference_mean", F64, "the reference: same γ, nβ, batch size and seed; 8 chains, 4× the draws, half the step, thinning doubled, burn-in 2 relaxation times 2/(εγ) at the half step, no ladder"),
        col("reference_se", F64, "its standard error"),
        col("reference_epsilon", F64, "its step (half of ours_epsilon)"),
        col("reference_flags", Str, "its flags in words; empty when healthy"),
        col("difference", F64, "ours_mean − reference_mean"),
        col("relative_difference", F64, "difference / reference_mean"),
        col("agrees", Bool, "abs(difference) ≤ max(5 % of abs(reference_mean), 2·sqrt(ours_se² + reference_se²))"),
    ],
};

/// One row of [`LLC_REFERENCE`].
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceRow {
    /// Run identity, step and checkpoint.
    pub key: RowKey,
    /// See [`LLC_REFERENCE`].
    pub ours_mean: f64,
    /// See [`LLC_REFERENCE`].
    pub ours_se: f64,
    /// See [`LLC_REFERENCE`].
    pub ours_epsilon: f64,
    /// See [`LLC_REFERENCE`].
    pub ours_step_rungs: i64,
    /// See [`LLC_REFERENCE`].
    pub ours_flags: String,
    /// See [`LLC_REFERENCE`].
    pub reference_mean: f64,
    /// See [`LLC_REFERENCE`].
    pub reference_se: f64,
    /// See [`LLC_REFERENCE`].
    pub reference_epsilon: f64,
    /// See [`LLC_REFERENCE`].
    pub reference_flags: String,
    /// See [`LLC_REFERENCE`].
    pub difference: f64,
    /// See [`LLC_REFERENCE`].
    pub relative_difference: f64,
    /// See [`crate::llc::stage::agrees`].
    pub agrees: bool,
}

impl ReferenceRow {
    /// The comparison of two summary rows of the same checkpoint.
    pub fn of(ours: &SummaryRow, reference: &SummaryRow) -> ReferenceRow {
        let difference = ours.llc_mean - reference.llc_mean;
        ReferenceRow {
            key: ours.key.clone(),
            ours_mean: ours.llc_mean,
            ours_se: ours.llc_se,
            ours_epsilon: ours.schedule.epsilon,
            ours_step_rungs: ours.step_rungs,
            ours_flags: ours.flags.clone(),
            reference_mean: reference.llc_mean,
            reference_se: reference.llc_se,
            reference_epsilon: reference.schedule.epsilon,
            reference_flags: reference.flags.clone(),
            difference,
            relative_difference: difference / reference.llc_mean,
            agrees: crate::llc::stage::agrees(ours.llc_mean, ours.llc_se, reference.llc_mean, reference.llc_se),
        }
    }
}

/// Writes the reference table.
pub fn write_reference(rows: &[ReferenceRow], path: &Path, meta: &BTreeMap<String, String>) -> Result<()> {
    let f = |name: &str, g: &dyn Fn(&ReferenceRow) -> f64| PlColumn::new(name.into(), rows.iter().map(g).collect::<Vec<f64>>());
    let i = |name: &str, g: &dyn Fn(&ReferenceRow) -> i64| PlColumn::new(name.into(), rows.iter().map(g).collect::<Vec<i64>>());
    let s = |name: &str, g: &dyn Fn(&ReferenceRow) -> String| PlColumn::new(name.into(), rows.iter().map(g).collect::<Vec<String>>());
    let mut cols = key_columns(rows.iter().map(|r| &r.key));
    cols.extend([
        f("ours_mean", &|r| r.ours_mean),
        f("ours_se", &|r| r.ours_se),
        f("ours_epsilon", &|r| r.ours_epsilon),
        i("ours_step_rungs", &|r| r.ours_step_rungs),
        s("ours_flags", &|r| r.ours_flags.clone()),
        f("reference_mean", &|r| r.reference_mean),
        f("reference_se", &|r| r.reference_se),
        f("reference_epsilon", &|r| r.reference_epsilon),
        s("reference_flags", &|r| r.reference_flags.clone()),
        f("difference", &|r| r.difference),
        f("relative_difference", &|r| r.relative_difference),
        PlColumn::new("agrees".into(), rows.iter().map(|r| r.agrees).collect::<Vec<bool>>()),
    ]);
    write_parquet(&mut DataFrame::new(rows.len(), cols)?, &LLC_REFERENCE, path, meta)
}

/// Every LLC schema, for documentation and tests.
pub const ALL: &[&Schema] = &[&LLC_SUMMARY, &LLC_TRACE, &LLC_CALIBRATION, &LLC_VALIDATION, &LLC_REFERENCE];

// ---------------------------------------------------------------------------------------------
// llc estimate

/// One row of [`LLC_SUMMARY`].
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryRow {
    /// Run identity, step and checkpoint.
    pub key: RowKey,
    /// The restriction group's name (`all` for the whole model; see
    /// [`crate::llc::restrict::Restriction::name`]).
    pub restriction: String,
    /// `train_split` or `all_pairs`.
    pub rows_used: String,
    /// Rows n.
    pub n_train: i64,
    /// Sampled parameters d (the group's).
    pub n_params: i64,
    /// Parameters of the whole model.
    pub n_params_model: i64,
    /// The estimate.
    pub llc_mean: f64,
    /// Sample std over chains.
    pub llc_std: f64,
    /// Standard error of the mean.
    pub llc_se: f64,
    /// Split R-hat.
    pub r_hat: f64,
    /// Bulk ESS.
    pub ess_bulk: f64,
    /// Mean MALA acceptance (NaN when not measured).
    pub mala_acceptance: f64,
    /// L(w*).
    pub loss_at_wstar: f64,
    /// nβ used.
    pub nbeta: f64,
    /// Chains that did not diverge.
    pub chains_used: i64,
    /// Flag counts.
    pub n_diverged: i64,
    /// See [`crate::llc::EstimateFlags`].
    pub n_negative: i64,
    /// See [`crate::llc::EstimateFlags`].
    pub n_not_converged: i64,
    /// See [`crate::llc::EstimateFlags`].
    pub negative_mean: bool,
    /// See [`crate::llc::EstimateFlags::r_hat`].
    pub flag_r_hat: bool,
    /// See [`crate::llc::EstimateFlags::mala`].
    pub flag_mala: bool,
    /// See [`crate::llc::EstimateFlags::spikes`].
    pub flag_spikes: bool,
    /// Flags in words, empty when healthy.
    pub flags: String,
    /// Rungs of the step ladder run.
    pub step_rungs: i64,
    /// The rejected rungs in words ([`crate::llc::ladder::rejected_text`]).
    pub rejected_steps: String,
    /// The resolved step size and step counts (the last rung's).
    pub schedule: Schedule,
    /// The settings used ([`SgldConfig::sampling`]: `threads` zeroed, `restrict`, `steps` and
    /// `trajectory` at their defaults), with `batch_size` left out (the resolved batch size is
    /// [`SummaryRow::batch_size`]).
    pub settings: SgldConfig,
    /// Batch size used.
    pub batch_size: i64,
    /// Divergence threshold used.
    pub divergence_loss: f64,
    /// Resume keys.
    pub settings_hash: String,
    /// See [`LLC_SUMMARY`].
    pub checkpoint_hash: String,
}

/// One row of [`LLC_TRACE`] (its checkpoint's key aside).
#[derive(Debug, Clone, PartialEq)]
pub struct TraceRow {
    /// Chain index.
    pub chain: i64,
    /// Draw index.
    pub draw: i64,
    /// Minibatch loss at the draw.
    pub loss: f64,
}

/// One checkpoint's result: its summary row and trace.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointLlc {
    /// The summary row.
    pub summary: SummaryRow,
    /// The per-draw losses.
    pub trace: Vec<TraceRow>,
}

impl SummaryRow {
    /// The row of an estimate of the group `restriction` of a model with `n_params_model`
    /// parameters.
    pub fn of(key: RowKey, restriction: &str, rows_used: &str, n_params_model: usize, est: &LlcEstimate, settings_hash: String, checkpoint_hash: String) -> SummaryRow {
        let used = (est.chains.len() - est.flags.diverged) as i64;
        SummaryRow {
            key,
            restriction: restriction.to_string(),
            rows_used: rows_used.to_string(),
            n_train: est.n_train as i64,
            n_params: est.n_params as i64,
            n_params_model: n_params_model as i64,
            llc_mean: est.llc_mean,
            llc_std: est.llc_std,
            llc_se: if used >= 2 { est.llc_std / (used as f64).sqrt() } else { f64::NAN },
            r_hat: est.r_hat,
            ess_bulk: est.ess_bulk,
            mala_acceptance: est.mala_acceptance.unwrap_or(f64::NAN),
            loss_at_wstar: est.loss_at_wstar,
            nbeta: est.nbeta,
            chains_used: used,
            n_diverged: est.flags.diverged as i64,
            n_negative: est.flags.negative as i64,
            n_not_converged: est.flags.not_converged as i64,
            negative_mean: est.flags.negative_mean,
            flag_r_hat: est.flags.r_hat,
            flag_mala: est.flags.mala,
            flag_spikes: est.flags.spikes,
            flags: est.flag_text(),
            step_rungs: est.rejected.len() as i64 + 1,
            rejected_steps: crate::llc::ladder::rejected_text(&est.rejected),
            schedule: est.schedule,
            settings: SgldConfig { batch_size: None, ..est.config.sampling() },
            batch_size: est.batch_size as i64,
            divergence_loss: est.divergence_loss,
            settings_hash,
            checkpoint_hash,
        }
    }

    /// Whether any flag is set.
    pub fn flagged(&self) -> bool {
        !self.flags.is_empty()
    }

    /// The names of the flags that are set (a count is set when positive), for short labels:
    /// `flag_mala`, `flag_r_hat`, `flag_spikes`, `diverged`, `negative`, `not_converged`,
    /// `negative_mean`, in that order.
    pub fn flag_names(&self) -> Vec<&'static str> {
        let count = |n: i64| usize::try_from(n).unwrap_or(0);
        EstimateFlags {
            diverged: count(self.n_diverged),
            negative: count(self.n_negative),
            not_converged: count(self.n_not_converged),
            negative_mean: self.negative_mean,
            r_hat: self.flag_r_hat,
            mala: self.flag_mala,
            spikes: self.flag_spikes,
        }
        .names()
    }

    /// One line for logs and warnings.
    pub fn line(&self) -> String {
        let mala = if self.mala_acceptance.is_nan() { "n/a".to_string() } else { format!("{:.3}", self.mala_acceptance) };
        let group = if self.restriction == "all" { String::new() } else { format!(" [{}, d = {}]", self.restriction, self.n_params) };
        format!(
            "{} step {}{group}: LLC {:.3} ± {:.3} (sd over {} chains), R-hat {:.3}, ESS {:.0}, MALA {mala}{}",
            self.key.ident.run,
            self.key.step,
            self.llc_mean,
            self.llc_std,
            self.chains_used,
            self.r_hat,
            self.ess_bulk,
            if self.flagged() { format!("; flags: {}", self.flags) } else { String::new() }
        )
    }
}

/// Writes the two tables of `done` (in order): the trace first, then the summary that `make`
/// waits for.
pub fn write_estimates(done: &[CheckpointLlc], summary: &Path, trace: &Path, meta: &BTreeMap<String, String>) -> Result<()> {
    write_parquet(&mut trace_frame(done)?, &LLC_TRACE, trace, meta)?;
    let rows: Vec<&SummaryRow> = done.iter().map(|c| &c.summary).collect();
    write_parquet(&mut summary_frame(&rows)?, &LLC_SUMMARY, summary, meta)
}

fn summary_frame(rows: &[&SummaryRow]) -> Result<DataFrame> {
    let n = rows.len();
    let mut cols = key_columns(rows.iter().map(|r| &r.key));
    let f = |name: &str, g: &dyn Fn(&SummaryRow) -> f64| PlColumn::new(name.into(), rows.iter().map(|r| g(r)).collect::<Vec<f64>>());
    let i = |name: &str, g: &dyn Fn(&SummaryRow) -> i64| PlColumn::new(name.into(), rows.iter().map(|r| g(r)).collect::<Vec<i64>>());
    let s = |name: &str, g: &dyn Fn(&SummaryRow) -> String| PlColumn::new(name.into(), rows.iter().map(|r| g(r)).collect::<Vec<String>>());
    let b = |name: &str, g: &dyn Fn(&SummaryRow) -> bool| PlColumn::new(name.into(), rows.iter().map(|r| g(r)).collect::<Vec<bool>>());
    cols.extend([
        s("restriction", &|r| r.restriction.clone()),
        s("rows_used", &|r| r.rows_used.clone()),
        i("n_train", &|r| r.n_train),
        i("n_params", &|r| r.n_params),
        i("n_params_model", &|r| r.n_params_model),
        f("llc_mean", &|r| r.llc_mean),
        f("llc_std", &|r| r.llc_std),
        f("llc_se", &|r| r.llc_se),
        f("r_hat", &|r| r.r_hat),
        f("ess_bulk", &|r| r.ess_bulk),
        f("mala_acceptance", &|r| r.mala_acceptance),
        f("loss_at_wstar", &|r| r.loss_at_wstar),
        f("nbeta", &|r| r.nbeta),
        i("chains_used", &|r| r.chains_used),
        i("n_diverged", &|r| r.n_diverged),
        i("n_negative", &|r| r.n_negative),
        i("n_not_converged", &|r| r.n_not_converged),
        b("negative_mean", &|r| r.negative_mean),
        b("flag_r_hat", &|r| r.flag_r_hat),
        b("flag_mala", &|r| r.flag_mala),
        b("flag_spikes", &|r| r.flag_spikes),
        s("flags", &|r| r.flags.clone()),
        i("step_rungs", &|r| r.step_rungs),
        s("rejected_steps", &|r| r.rejected_steps.clone()),
        f("epsilon", &|r| r.schedule.epsilon),
        s("epsilon_setting", &|r| r.settings.epsilon.to_string()),
        f("gamma", &|r| r.settings.gamma),
        s("nbeta_setting", &|r| r.settings.nbeta.to_string()),
        i("batch_size", &|r| r.batch_size),
        i("chains", &|r| r.settings.chains as i64),
        i("draws", &|r| r.schedule.draws as i64),
        i("draws_setting", &|r| r.settings.draws as i64),
        i("burn_in", &|r| r.schedule.burn_in as i64),
        s("burn_in_setting", &|r| r.settings.burn_in.to_string()),
        i("steps_between_draws", &|r| r.schedule.steps_between_draws as i64),
        s("steps_between_draws_setting", &|r| r.settings.steps_between_draws.to_string()),
        i("halvings", &|r| i64::from(r.settings.halvings)),
        i("lengthenings", &|r| i64::from(r.settings.lengthenings)),
        i("sgld_seed", &|r| r.settings.seed as i64),
        s("loss_at_wstar_mode", &|r| r.settings.loss_at_wstar.to_string()),
        i("loss_at_wstar_batches", &|r| r.settings.loss_at_wstar_batches as i64),
        i("mala_every", &|r| r.settings.mala_every as i64),
        f("divergence_factor", &|r| r.settings.divergence_factor),
        f("divergence_loss", &|r| r.divergence_loss),
        b("rmsprop", &|r| r.settings.rmsprop),
        f("rmsprop_alpha", &|r| r.settings.rmsprop_alpha),
        f("rmsprop_eps", &|r| r.settings.rmsprop_eps),
        s("settings_hash", &|r| r.settings_hash.clone()),
        s("checkpoint_hash", &|r| r.checkpoint_hash.clone()),
    ]);
    Ok(DataFrame::new(n, cols)?)
}

fn trace_frame(done: &[CheckpointLlc]) -> Result<DataFrame> {
    let rows: Vec<(&SummaryRow, &TraceRow)> = done.iter().flat_map(|c| c.trace.iter().map(move |t| (&c.summary, t))).collect();
    let n = rows.len();
    Ok(DataFrame::new(
        n,
        vec![
            PlColumn::new("run".into(), rows.iter().map(|(s, _)| s.key.ident.run.as_str()).collect::<Vec<_>>()),
            PlColumn::new("step".into(), rows.iter().map(|(s, _)| s.key.step).collect::<Vec<_>>()),
            PlColumn::new("checkpoint".into(), rows.iter().map(|(s, _)| s.key.checkpoint.as_str()).collect::<Vec<_>>()),
            PlColumn::new("restriction".into(), rows.iter().map(|(s, _)| s.restriction.as_str()).collect::<Vec<_>>()),
            PlColumn::new("chain".into(), rows.iter().map(|(_, t)| t.chain).collect::<Vec<_>>()),
            PlColumn::new("draw".into(), rows.iter().map(|(_, t)| t.draw).collect::<Vec<_>>()),
            PlColumn::new("loss".into(), rows.iter().map(|(_, t)| t.loss).collect::<Vec<_>>()),
        ],
    )?)
}

/// Every row of a summary table (the final one, or the partial file of an interrupted stage).
pub fn read_summary(path: &Path) -> Result<Vec<SummaryRow>> {
    let df = read_parquet(path, &LLC_SUMMARY)?;
    let s = |n: &str| col_str(&df, n, path);
    let f = |n: &str| col_f64(&df, n, path);
    let i = |n: &str| col_i64(&df, n, path);
    let b = |n: &str| col_bool(&df, n, path);
    let keys = read_keys(&df, path)?;
    let (restriction, rows_used, n_train, n_params, n_params_model) = (s("restriction")?, s("rows_used")?, i("n_train")?, i("n_params")?, i("n_params_model")?);
    let (mean, std, se, r_hat, ess, mala, lw, nbeta) =
        (f("llc_mean")?, f("llc_std")?, f("llc_se")?, f("r_hat")?, f("ess_bulk")?, f("mala_acceptance")?, f("loss_at_wstar")?, f("nbeta")?);
    let (used, div, neg, nc, negm, flags) = (i("chains_used")?, i("n_diverged")?, i("n_negative")?, i("n_not_converged")?, b("negative_mean")?, s("flags")?);
    let (fr, fm, fs, rungs, rejected) = (b("flag_r_hat")?, b("flag_mala")?, b("flag_spikes")?, i("step_rungs")?, s("rejected_steps")?);
    let (eps, gamma, nbs, batch, chains, draws, burn, thin, sseed) =
        (f("epsilon")?, f("gamma")?, s("nbeta_setting")?, i("batch_size")?, i("chains")?, i("draws")?, i("burn_in")?, i("steps_between_draws")?, i("sgld_seed")?);
    let (eps_s, draws_s, burn_s, thin_s, halvings) = (s("epsilon_setting")?, i("draws_setting")?, s("burn_in_setting")?, s("steps_between_draws_setting")?, i("halvings")?);
    let lengthenings = i("lengthenings")?;
    let (lwm, lwb, mala_every, dfac, dloss, rms, rms_a, rms_e) =
        (s("loss_at_wstar_mode")?, i("loss_at_wstar_batches")?, i("mala_every")?, f("divergence_factor")?, f("divergence_loss")?, b("rmsprop")?, f("rmsprop_alpha")?, f("rmsprop_eps")?);
    let (sh, ch) = (s("settings_hash")?, s("checkpoint_hash")?);
    let mut out = Vec::with_capacity(df.height());
    for (k, key) in keys.into_iter().enumerate() {
        let nbeta_setting: NBeta = nbs[k].parse().map_err(|e: String| anyhow::anyhow!("{}: row {k}: {e}", path.display()))?;
        let parse_err = |e: String| anyhow::anyhow!("{}: row {k}: {e}", path.display());
        let loss_at_wstar = lwm[k].parse().map_err(parse_err)?;
        let settings = SgldConfig {
            epsilon: eps_s[k].parse().map_err(parse_err)?,
            gamma: gamma[k],
            nbeta: nbeta_setting,
            batch_size: None,
            chains: chains[k] as usize,
            draws: draws_s[k] as usize,
            burn_in: burn_s[k].parse().map_err(parse_err)?,
            steps_between_draws: thin_s[k].parse().map_err(parse_err)?,
            halvings: u32::try_from(halvings[k]).unwrap_or(0),
            lengthenings: u32::try_from(lengthenings[k]).unwrap_or(0),
            seed: sseed[k] as u64,
            loss_at_wstar,
            loss_at_wstar_batches: lwb[k] as usize,
            mala_every: mala_every[k] as usize,
            divergence_factor: dfac[k],
            rmsprop: rms[k],
            rmsprop_alpha: rms_a[k],
            rmsprop_eps: rms_e[k],
            ..SgldConfig::default().sampling()
        };
        out.push(SummaryRow {
            key,
            restriction: restriction[k].clone(),
            rows_used: rows_used[k].clone(),
            n_train: n_train[k],
            n_params: n_params[k],
            n_params_model: n_params_model[k],
            llc_mean: mean[k],
            llc_std: std[k],
            llc_se: se[k],
            r_hat: r_hat[k],
            ess_bulk: ess[k],
            mala_acceptance: mala[k],
            loss_at_wstar: lw[k],
            nbeta: nbeta[k],
            chains_used: used[k],
            n_diverged: div[k],
            n_negative: neg[k],
            n_not_converged: nc[k],
            negative_mean: negm[k],
            flag_r_hat: fr[k],
            flag_mala: fm[k],
            flag_spikes: fs[k],
            flags: flags[k].clone(),
            step_rungs: rungs[k],
            rejected_steps: rejected[k].clone(),
            schedule: Schedule { epsilon: eps[k], burn_in: burn[k] as usize, steps_between_draws: thin[k] as usize, draws: draws[k] as usize },
            settings,
            batch_size: batch[k],
            divergence_loss: dloss[k],
            settings_hash: sh[k].clone(),
            checkpoint_hash: ch[k].clone(),
        });
    }
    Ok(out)
}

/// The checkpoint (and, in the estimate's trace, the restriction group) a row belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceKey {
    /// Run id.
    pub run: String,
    /// Step of the checkpoint.
    pub step: i64,
    /// The checkpoint file.
    pub checkpoint: String,
    /// The restriction group (`all` for the calibration table, which samples the whole model).
    pub restriction: String,
}

/// Every row of a trace table, with its checkpoint.
pub fn read_trace(path: &Path) -> Result<Vec<(TraceKey, TraceRow)>> {
    let df = read_parquet(path, &LLC_TRACE)?;
    let (run, step, checkpoint) = (col_str(&df, "run", path)?, col_i64(&df, "step", path)?, col_str(&df, "checkpoint", path)?);
    let restriction = col_str(&df, "restriction", path)?;
    let (chain, draw, loss) = (col_i64(&df, "chain", path)?, col_i64(&df, "draw", path)?, col_f64(&df, "loss", path)?);
    Ok(run
        .into_iter()
        .zip(checkpoint)
        .zip(restriction)
        .enumerate()
        .map(|(k, ((run, checkpoint), restriction))| (TraceKey { run, step: step[k], checkpoint, restriction }, TraceRow { chain: chain[k], draw: draw[k], loss: loss[k] }))
        .collect())
}

// ---------------------------------------------------------------------------------------------
// llc calibrate

/// Writes the calibration table: one row per cell of the checkpoint with key `key`.
pub fn write_calibration(key: &RowKey, cells: &[CalibrationCell], path: &Path, meta: &BTreeMap<String, String>) -> Result<()> {
    let n = cells.len();
    let f = |name: &str, g: &dyn Fn(&CalibrationCell) -> f64| PlColumn::new(name.into(), cells.iter().map(g).collect::<Vec<f64>>());
    let i = |name: &str, g: &dyn Fn(&CalibrationCell) -> i64| PlColumn::new(name.into(), cells.iter().map(g).collect::<Vec<i64>>());
    let s = |name: &str, g: &dyn Fn(&CalibrationCell) -> String| PlColumn::new(name.into(), cells.iter().map(g).collect::<Vec<String>>());
    let b = |name: &str, g: &dyn Fn(&CalibrationCell) -> bool| PlColumn::new(name.into(), cells.iter().map(g).collect::<Vec<bool>>());
    let mut df = DataFrame::new(
        n,
        vec![
            s("run", &|_| key.ident.run.clone()),
            i("step", &|_| key.step),
            s("checkpoint", &|_| key.checkpoint.clone()),
            f("epsilon", &|c| c.estimate.schedule.epsilon),
            f("gamma", &|c| c.settings.gamma),
            s("nbeta_setting", &|c| c.settings.nbeta.to_string()),
            f("nbeta", &|c| c.estimate.nbeta),
            i("batch_size", &|c| c.estimate.batch_size as i64),
            i("chains", &|c| c.settings.chains as i64),
            i("draws", &|c| c.estimate.schedule.draws as i64),
            i("burn_in", &|c| c.estimate.schedule.burn_in as i64),
            i("steps_between_draws", &|c| c.estimate.schedule.steps_between_draws as i64),
            f("llc_mean", &|c| c.estimate.llc_mean),
            f("llc_std", &|c| c.estimate.llc_std),
            f("r_hat", &|c| c.estimate.r_hat),
            f("ess_bulk", &|c| c.estimate.ess_bulk),
            f("mala_acceptance", &|c| c.estimate.mala_acceptance.unwrap_or(f64::NAN)),
            f("loss_at_wstar", &|c| c.estimate.loss_at_wstar),
            i("n_diverged", &|c| c.estimate.flags.diverged as i64),
            i("n_negative", &|c| c.estimate.flags.negative as i64),
            i("n_not_converged", &|c| c.estimate.flags.not_converged as i64),
            s("flags", &|c| c.estimate.flag_text()),
            b("healthy", &|c| c.healthy),
            f("relative_change", &|c| c.relative_change),
            b("recommended", &|c| c.recommended),
        ],
    )?;
    write_parquet(&mut df, &LLC_CALIBRATION, path, meta)
}

/// One row of [`LLC_CALIBRATION`] as read back (the settings as written, unparsed).
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrationRow {
    /// The checkpoint's run, step and file.
    pub key: TraceKey,
    /// Step size ε.
    pub epsilon: f64,
    /// Localisation γ.
    pub gamma: f64,
    /// nβ as configured.
    pub nbeta_setting: String,
    /// nβ used.
    pub nbeta: f64,
    /// Batch size used.
    pub batch_size: i64,
    /// Chains run.
    pub chains: i64,
    /// Draws per chain.
    pub draws: i64,
    /// Burn-in.
    pub burn_in: i64,
    /// Thinning.
    pub steps_between_draws: i64,
    /// The estimate.
    pub llc_mean: f64,
    /// Sample std over chains.
    pub llc_std: f64,
    /// Split R-hat.
    pub r_hat: f64,
    /// Bulk ESS.
    pub ess_bulk: f64,
    /// Mean MALA acceptance (NaN when not measured).
    pub mala_acceptance: f64,
    /// L(w*).
    pub loss_at_wstar: f64,
    /// Diverged chains.
    pub n_diverged: i64,
    /// Negative chains.
    pub n_negative: i64,
    /// Chains still rising.
    pub n_not_converged: i64,
    /// Flags in words.
    pub flags: String,
    /// Healthy for the recommendation.
    pub healthy: bool,
    /// Relative change from the next smaller ε.
    pub relative_change: f64,
    /// The recommended point.
    pub recommended: bool,
}

/// Every row of a calibration table.
pub fn read_calibration(path: &Path) -> Result<Vec<CalibrationRow>> {
    let df = read_parquet(path, &LLC_CALIBRATION)?;
    let s = |n: &str| col_str(&df, n, path);
    let f = |n: &str| col_f64(&df, n, path);
    let i = |n: &str| col_i64(&df, n, path);
    let b = |n: &str| col_bool(&df, n, path);
    let (run, step, checkpoint) = (s("run")?, i("step")?, s("checkpoint")?);
    let (eps, gamma, nbs, nbeta, batch) = (f("epsilon")?, f("gamma")?, s("nbeta_setting")?, f("nbeta")?, i("batch_size")?);
    let (chains, draws, burn, thin) = (i("chains")?, i("draws")?, i("burn_in")?, i("steps_between_draws")?);
    let (mean, std, r_hat, ess, mala, lw) = (f("llc_mean")?, f("llc_std")?, f("r_hat")?, f("ess_bulk")?, f("mala_acceptance")?, f("loss_at_wstar")?);
    let (div, neg, nc, flags) = (i("n_diverged")?, i("n_negative")?, i("n_not_converged")?, s("flags")?);
    let (healthy, rel, rec) = (b("healthy")?, f("relative_change")?, b("recommended")?);
    Ok((0..df.height())
        .map(|k| CalibrationRow {
            key: TraceKey { run: run[k].clone(), step: step[k], checkpoint: checkpoint[k].clone(), restriction: "all".into() },
            epsilon: eps[k],
            gamma: gamma[k],
            nbeta_setting: nbs[k].clone(),
            nbeta: nbeta[k],
            batch_size: batch[k],
            chains: chains[k],
            draws: draws[k],
            burn_in: burn[k],
            steps_between_draws: thin[k],
            llc_mean: mean[k],
            llc_std: std[k],
            r_hat: r_hat[k],
            ess_bulk: ess[k],
            mala_acceptance: mala[k],
            loss_at_wstar: lw[k],
            n_diverged: div[k],
            n_negative: neg[k],
            n_not_converged: nc[k],
            flags: flags[k].clone(),
            healthy: healthy[k],
            relative_change: rel[k],
            recommended: rec[k],
        })
        .collect())
}

// ---------------------------------------------------------------------------------------------
// llc validate

/// Writes the validation table, one row per result, with the settings of every row as JSON
/// under the metadata key `settings`.
pub fn write_validation(results: &[ValidationResult], path: &Path) -> Result<()> {
    let f = |name: &str, g: &dyn Fn(&ValidationResult) -> f64| PlColumn::new(name.into(), results.iter().map(g).collect::<Vec<f64>>());
    let i = |name: &str, g: &dyn Fn(&ValidationResult) -> i64| PlColumn::new(name.into(), results.iter().map(g).collect::<Vec<i64>>());
    let s = |name: &str, g: &dyn Fn(&ValidationResult) -> String| PlColumn::new(name.into(), results.iter().map(g).collect::<Vec<String>>());
    let mut df = DataFrame::new(
        results.len(),
        vec![
            s("model", &|r| r.model.clone()),
            f("true_llc", &|r| r.true_llc),
            f("llc_mean", &|r| r.llc_mean),
            f("llc_std", &|r| r.llc_std),
            f("relative_error", &|r| r.relative_error),
            f("epsilon", &|r| r.estimate.schedule.epsilon),
            f("gamma", &|r| r.settings.gamma),
            s("nbeta_setting", &|r| r.settings.nbeta.to_string()),
            f("nbeta", &|r| r.estimate.nbeta),
            i("batch_size", &|r| r.estimate.batch_size as i64),
            i("chains", &|r| r.settings.chains as i64),
            i("draws", &|r| r.estimate.schedule.draws as i64),
            i("burn_in", &|r| r.estimate.schedule.burn_in as i64),
            i("steps_between_draws", &|r| r.estimate.schedule.steps_between_draws as i64),
            i("seed", &|r| r.settings.seed as i64),
            s("loss_at_wstar_mode", &|r| r.settings.loss_at_wstar.to_string()),
            f("loss_at_wstar", &|r| r.estimate.loss_at_wstar),
            f("r_hat", &|r| r.estimate.r_hat),
            f("ess_bulk", &|r| r.estimate.ess_bulk),
            f("mala_acceptance", &|r| r.estimate.mala_acceptance.unwrap_or(f64::NAN)),
            s("flags", &|r| r.estimate.flag_summary()),
        ],
    )?;
    let settings: Vec<&SgldConfig> = results.iter().map(|r| &r.settings).collect();
    let meta = BTreeMap::from([("settings".to_string(), serde_json::to_string(&settings)?)]);
    write_parquet(&mut df, &LLC_VALIDATION, path, &meta)
}
