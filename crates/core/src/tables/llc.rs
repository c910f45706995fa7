//! Schemas of the LLC tables: `llc estimate` (one summary row per checkpoint, [`LLC_SUMMARY`],
//! and the long per-draw trace, [`LLC_TRACE`]) and `llc calibrate` ([`LLC_CALIBRATION`]). The
//! per-run tables start with the same key columns as the analysis tables
//! ([`super::schemas::RUN_ID_COLUMNS`], `step`, `checkpoint`); `docs/llc.md` documents how each
//! value is computed. (`llc validate --out` writes `llc::analytic::VALIDATION_SCHEMA`.)

use super::schemas::RUN_ID_COLUMNS as ID;
use super::{ColType::*, Column, Schema};

const fn col(name: &'static str, dtype: super::ColType, doc: &'static str) -> Column {
    Column { name, dtype, doc }
}

const STEP: Column = col("step", I64, "optimizer steps of the checkpoint; for a released (foreign) checkpoint the paper's `epoch`, else -1");
const CHECKPOINT: Column = col("checkpoint", Str, "checkpoint file as given (run directories expanded to their files)");
const RUN: Column = ID[0];

/// `llc.parquet` (llc estimate): one row per checkpoint.
pub const LLC_SUMMARY: Schema = Schema {
    name: "llc",
    columns: &[
        ID[0], ID[1], ID[2], ID[3], ID[4], ID[5], ID[6], STEP, CHECKPOINT,
        col("rows_used", Str, "`train_split` (the run's training rows) or `all_pairs` (a foreign checkpoint: every one of the p² pairs)"),
        col("n_train", I64, "rows n the loss is measured on"),
        col("n_params", I64, "number of sampled parameters d"),
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
        col("flag_r_hat", Bool, "r_hat above 1.1: the chains disagree (more burn-in, or a larger γ)"),
        col("flag_mala", Bool, "mala_acceptance below 0.8: ε is too large (discretisation error)"),
        col("flag_spikes", Bool, "a chain's largest per-draw estimate is > 30 robust sds (1.4826·MAD) above the median of all draws: thrown out of the basin and pulled back (ε too large); R-hat does not see this"),
        col("flags", Str, "every flag in words (which chains, and why); empty when healthy"),
        col("epsilon", F64, "SGLD step size ε"),
        col("gamma", F64, "localisation strength γ"),
        col("nbeta_setting", Str, "nβ as configured: `n_over_ln_n`, `b_over_ln_b` or a number"),
        col("batch_size", I64, "rows per minibatch (n for full batch)"),
        col("chains", I64, "chains run"),
        col("draws", I64, "recorded draws per chain"),
        col("burn_in", I64, "SGLD steps before the first draw"),
        col("steps_between_draws", I64, "SGLD steps per draw (thinning)"),
        col("sgld_seed", I64, "seed of the sampling noise and minibatches (llc.seed)"),
        col("loss_at_wstar_mode", Str, "`full_training_set` (mean loss over all n rows at w*) or `first_batches` (devinterp 1.3)"),
        col("loss_at_wstar_batches", I64, "minibatches averaged for `first_batches` (0: one per chain)"),
        col("mala_every", I64, "MALA acceptance measured every k-th step after burn-in (0: never)"),
        col("divergence_factor", F64, "a chain diverges when its loss exceeds L(w*) + factor·(abs(L(w*)) + d/(2nβ))"),
        col("divergence_loss", F64, "that threshold, resolved"),
        col("rmsprop", Bool, "RMSProp-preconditioned SGLD (pSGLD)"),
        col("rmsprop_alpha", F64, "RMSProp decay (when rmsprop)"),
        col("rmsprop_eps", F64, "RMSProp δ (when rmsprop)"),
        col("settings_hash", Str, "FNV-1a hash of the SGLD settings (threads excluded): the resume key, with checkpoint_hash"),
        col("checkpoint_hash", Str, "FNV-1a hash of the checkpoint file's bytes"),
    ],
};

/// `llc_trace.parquet` (beside `llc.parquet`): one row per checkpoint, chain and draw.
pub const LLC_TRACE: Schema = Schema {
    name: "llc_trace",
    columns: &[
        RUN, STEP, CHECKPOINT,
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
        col("healthy", Bool, "no flag of the estimator, a finite estimate, R-hat ≤ 1.1, no spiking chain and MALA acceptance within the recommendation's bounds"),
        col("relative_change", F64, "relative change of llc_mean, in absolute value, from the next smaller ε of the same γ, batch and nβ (NaN for the smallest)"),
        col("recommended", Bool, "the point `llc calibrate` recommends (largest ε in the flat, healthy region)"),
    ],
};

/// Every LLC schema, for documentation and tests.
pub const ALL: &[&Schema] = &[&LLC_SUMMARY, &LLC_TRACE, &LLC_CALIBRATION];
