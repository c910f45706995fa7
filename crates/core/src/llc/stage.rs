/*!
The `llc estimate` and `llc calibrate` stages: transformer checkpoints in, tables out
(`tables::llc`); see `docs/llc.md` for the method, the settings and what the columns mean.

**Settings.** The SGLD settings are the experiment file's `llc:` section ([`parse_settings`]: an
[`SgldConfig`], unknown keys are errors with the nearest valid key), with `--set llc.x=v`
overrides through the normal config path; the data (dataset, split, hence the rows and `n`) come
from each checkpoint's own `pizza_config` ([`super::transformer::TrainingRows`]). When the grid
varies `llc.*` keys, each checkpoint takes the settings of the grid run with its run id
([`SettingsSource`]).

**Resume.** After each checkpoint the rows so far are rewritten (atomically) to
`<stem>.partial.parquet` and `<stem>_trace.partial.parquet` beside the output. A rerun reuses a
partial row when its checkpoint path, `settings_hash` (the settings, threads excluded) and
`checkpoint_hash` (the file's bytes) all match, so an interrupted stage redoes only unfinished
checkpoints; the final tables are written only at the end (trace first, then the summary that
`make` waits for) and the partial files are removed. Because every estimate is a deterministic
function of its checkpoint and settings, the final bytes equal those of an uninterrupted run.
*/

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use polars::prelude::{Column, DataFrame};
use serde_yaml_ng::Value;

use super::transformer::{TrainingRows, TransformerTarget};
use super::{estimate, CalibrationGrid, CalibrationPoint, LlcEstimate, NBeta, RecommendCriteria, Recommendation, SgldConfig};
use crate::ckpt::{self, Checkpoint};
use crate::config::{self, Config};
use crate::metrics::{self, RowKey};
use crate::tables::{self, llc as schema};
use crate::{fsio, interrupt};

// ---------------------------------------------------------------------------------------------
// Settings

/// Parses an `llc:` section into [`SgldConfig`] and validates it. An absent or empty section is
/// [`SgldConfig::default()`]; an unknown key is an error with the nearest valid key.
pub fn parse_settings(section: &Value) -> Result<SgldConfig> {
    let settings = match section {
        Value::Null => SgldConfig::default(),
        Value::Mapping(m) if m.is_empty() => SgldConfig::default(),
        Value::Mapping(_) => {
            // Through text, like the rest of the config, so errors carry the key's path.
            let text = serde_yaml_ng::to_string(section).context("re-serializing the llc section")?;
            serde_yaml_ng::from_str::<SgldConfig>(&text).map_err(|e| {
                let msg = e.to_string();
                let msg = match msg.rfind(" at line ") {
                    Some(i) => msg[..i].to_string(),
                    None => msg,
                };
                match config::unknown_field_hint(&msg) {
                    Some(hint) => anyhow::anyhow!("llc: {msg} ({hint})"),
                    None => anyhow::anyhow!("llc: {msg}"),
                }
            })?
        }
        other => bail!("llc must be a mapping of SGLD settings (epsilon, gamma, nbeta, …), got {other:?}"),
    };
    settings.validate().context("in section llc")?;
    Ok(settings)
}

/// Where each checkpoint's settings come from (see the module docs).
#[derive(Debug, Clone)]
pub enum SettingsSource {
    /// The same settings for every checkpoint.
    Fixed(SgldConfig),
    /// The grid varies `llc.*` keys: the settings of the grid run with the checkpoint's run id.
    PerRun(BTreeMap<String, SgldConfig>),
}

impl SettingsSource {
    /// From an experiment config: with `run`, that grid run's `llc:` section; else the file's,
    /// unless the grid varies `llc.*` keys.
    pub fn from_config(cfg: &Config, run: Option<&str>) -> Result<SettingsSource> {
        if let Some(id) = run {
            let r = cfg.run(Some(id))?;
            return Ok(SettingsSource::Fixed(parse_settings(&r.config.llc).with_context(|| format!("run {id}"))?));
        }
        if cfg.grid.keys().any(|k| k.starts_with("llc.")) {
            let mut by_run = BTreeMap::new();
            for r in cfg.runs()? {
                let s = parse_settings(&r.config.llc).with_context(|| format!("run {}", r.id))?;
                by_run.insert(r.id, s);
            }
            return Ok(SettingsSource::PerRun(by_run));
        }
        Ok(SettingsSource::Fixed(parse_settings(&cfg.llc)?))
    }

    /// The settings for one checkpoint.
    pub fn for_checkpoint(&self, ckpt: &Checkpoint) -> Result<SgldConfig> {
        match self {
            SettingsSource::Fixed(s) => Ok(s.clone()),
            SettingsSource::PerRun(by_run) => {
                let id = ckpt.run_label();
                by_run.get(&id).cloned().with_context(|| {
                    format!(
                        "{}: the grid varies llc.* settings, but this checkpoint's run `{id}` is not one of the grid's runs ({}); pass --run to choose",
                        ckpt.path.display(),
                        by_run.keys().cloned().collect::<Vec<_>>().join(", ")
                    )
                })
            }
        }
    }
}

/// The settings with the thread count zeroed (it changes no number), as JSON.
pub fn settings_json(s: &SgldConfig) -> Result<String> {
    Ok(serde_json::to_string(&SgldConfig { threads: 0, ..s.clone() })?)
}

/// FNV-1a of [`settings_json`], as 16 hex digits.
pub fn settings_hash(s: &SgldConfig) -> Result<String> {
    Ok(format!("{:016x}", config::fnv1a(settings_json(s)?.as_bytes())))
}

// ---------------------------------------------------------------------------------------------
// Checkpoint selection

/// The checkpoints of the inputs: run directories expanded in step order (with `every`, each
/// directory's checkpoints at positions 0, N, 2N, … plus its last; with `steps`, only those
/// steps), checkpoint files kept as given whatever the filters.
pub fn select_checkpoints(inputs: &[PathBuf], every: Option<usize>, steps: Option<&[u64]>) -> Result<Vec<PathBuf>> {
    if every == Some(0) {
        bail!("--every must be at least 1");
    }
    let mut out = Vec::new();
    for input in inputs {
        if !input.is_dir() {
            out.extend(ckpt::expand_inputs(std::slice::from_ref(input))?);
            continue;
        }
        let found = ckpt::list_run(input)?;
        if found.is_empty() {
            bail!("{}: no checkpoints (expected files named step_NNNNNNN.safetensors)", input.display());
        }
        let last = found.len() - 1;
        let mut kept: Vec<&(u64, PathBuf)> = found
            .iter()
            .enumerate()
            .filter(|(i, _)| every.is_none_or(|n| i % n == 0 || *i == last))
            .map(|(_, c)| c)
            .collect();
        if let Some(steps) = steps {
            kept.retain(|(s, _)| steps.contains(s));
            let missing: Vec<String> = steps.iter().filter(|s| !found.iter().any(|(f, _)| f == *s)).map(u64::to_string).collect();
            if !missing.is_empty() {
                tracing::warn!("{}: no checkpoint at step(s) {}", input.display(), missing.join(", "));
            }
        }
        out.extend(kept.into_iter().map(|(_, p)| p.clone()));
    }
    if out.is_empty() {
        bail!("no checkpoint selected (check --steps and --every against the run directories)");
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Health beyond the estimator's own flags

/// Split R-hat above this marks chains that disagree (Vehtari et al. 2021 recommend 1.01 for
/// final inferences; 1.1 is the classic looser bound, fitting the short chains a stage can
/// afford). On the p = 59 models, chains at γ ≤ 30 or with too small a burn-in exceed it.
pub const R_HAT_MAX: f64 = 1.1;

/// Mean MALA acceptance below this marks a step size with a large discretisation error. On the
/// p = 59 models the estimate moved by ≥ 10 % once the acceptance fell below ~0.9, and chains
/// spiked or diverged below ~0.7 (docs/llc.md); 0.8 is the line between the two.
pub const MALA_MIN: f64 = 0.8;

/// A chain is spiking when its largest per-draw estimate lies more than this many robust
/// standard deviations (1.4826 × the median absolute deviation of all surviving chains' draws)
/// above their median. On the p = 59 models healthy chains stay within 10 and chains whose step
/// size is too large for the checkpoint (thrown out of the basin and pulled back by γ, without
/// reaching the divergence threshold) reach 140–770; R-hat, being rank-based, does not see them.
pub const SPIKE_Z: f64 = 30.0;

/// The chains that spike (see [`SPIKE_Z`]), with the largest per-draw estimate and the median.
pub fn spiking_chains(e: &LlcEstimate) -> (Vec<usize>, f64, f64) {
    let per_chain: Vec<(usize, Vec<f64>)> =
        e.chains.iter().filter(|c| !c.flags.diverged).map(|c| (c.chain, e.draw_estimates(c.chain))).collect();
    let mut all: Vec<f64> = per_chain.iter().flat_map(|(_, d)| d.iter().copied()).filter(|x| x.is_finite()).collect();
    if all.len() < 8 {
        return (Vec::new(), f64::NAN, f64::NAN);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) }
    };
    let med = median(&mut all);
    let mut dev: Vec<f64> = all.iter().map(|x| (x - med).abs()).collect();
    let mad = 1.4826 * median(&mut dev);
    if mad.is_nan() || mad <= 0.0 {
        return (Vec::new(), f64::NAN, med);
    }
    let mut worst = f64::NEG_INFINITY;
    let mut chains = Vec::new();
    for (c, d) in &per_chain {
        let max = d.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if max > med + SPIKE_Z * mad {
            chains.push(*c);
            worst = worst.max(max);
        }
    }
    (chains, worst, med)
}

/// Whether R-hat is above [`R_HAT_MAX`].
pub fn r_hat_flagged(e: &LlcEstimate) -> bool {
    e.r_hat.is_finite() && e.r_hat > R_HAT_MAX
}

/// Whether the MALA acceptance is below [`MALA_MIN`].
pub fn mala_flagged(e: &LlcEstimate) -> bool {
    e.mala_acceptance.is_some_and(|a| a.is_finite() && a < MALA_MIN)
}

/// Every health flag of an estimate in words (the estimator's, then R-hat, MALA and spikes);
/// empty when healthy.
pub fn flag_text(e: &LlcEstimate) -> String {
    let mut parts = Vec::new();
    if e.flags.any() {
        parts.push(e.flag_summary());
    }
    if r_hat_flagged(e) {
        parts.push(format!("R-hat {:.4} > {R_HAT_MAX} (chains disagree: more burn-in or larger γ)", e.r_hat));
    }
    if mala_flagged(e) {
        parts.push(format!("MALA acceptance {:.4} < {MALA_MIN} (ε too large)", e.mala_acceptance.unwrap_or(f64::NAN)));
    }
    let (spiking, worst, med) = spiking_chains(e);
    if !spiking.is_empty() {
        let ids: Vec<String> = spiking.iter().map(usize::to_string).collect();
        parts.push(format!(
            "{}/{} chains spiked (chains {}; largest per-draw estimate {worst:.0} against a median of {med:.1}: ε too large for this checkpoint)",
            spiking.len(),
            e.chains.len(),
            ids.join(",")
        ));
    }
    parts.join("; ")
}

// ---------------------------------------------------------------------------------------------
// Rows

/// One summary row of `llc.parquet` ([`schema::LLC_SUMMARY`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryRow {
    /// Run identity, step and checkpoint.
    pub key: RowKey,
    /// `train_split` or `all_pairs`.
    pub rows_used: String,
    /// Rows n.
    pub n_train: i64,
    /// Parameters d.
    pub n_params: i64,
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
    /// See [`super::EstimateFlags`].
    pub n_negative: i64,
    /// See [`super::EstimateFlags`].
    pub n_not_converged: i64,
    /// See [`super::EstimateFlags`].
    pub negative_mean: bool,
    /// R-hat above [`R_HAT_MAX`].
    pub flag_r_hat: bool,
    /// MALA acceptance below [`MALA_MIN`].
    pub flag_mala: bool,
    /// Some chain spiked ([`SPIKE_Z`]).
    pub flag_spikes: bool,
    /// Flags in words, empty when healthy.
    pub flags: String,
    /// The settings used, with `threads` zeroed and `batch_size` left out (the resolved batch size
    /// is [`SummaryRow::batch_size`]).
    pub settings: SgldConfig,
    /// Batch size used.
    pub batch_size: i64,
    /// Divergence threshold used.
    pub divergence_loss: f64,
    /// Resume keys.
    pub settings_hash: String,
    /// See [`schema::LLC_SUMMARY`].
    pub checkpoint_hash: String,
}

/// One row of `llc_trace.parquet`.
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
    fn of(key: RowKey, rows_used: &str, est: &LlcEstimate, settings_hash: String, checkpoint_hash: String) -> SummaryRow {
        let used = (est.chains.len() - est.flags.diverged) as i64;
        SummaryRow {
            key,
            rows_used: rows_used.to_string(),
            n_train: est.n_train as i64,
            n_params: est.n_params as i64,
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
            flag_r_hat: r_hat_flagged(est),
            flag_mala: mala_flagged(est),
            flag_spikes: !spiking_chains(est).0.is_empty(),
            flags: flag_text(est),
            settings: SgldConfig { threads: 0, batch_size: None, ..est.config.clone() },
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

    /// One line for logs and warnings.
    pub fn line(&self) -> String {
        let mala = if self.mala_acceptance.is_nan() { "n/a".to_string() } else { format!("{:.3}", self.mala_acceptance) };
        format!(
            "{} step {}: LLC {:.3} ± {:.3} (sd over {} chains), R-hat {:.3}, ESS {:.0}, MALA {mala}{}",
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

fn summary_frame(rows: &[SummaryRow]) -> Result<DataFrame> {
    let n = rows.len();
    let mut cols = metrics::key_columns(rows.iter().map(|r| &r.key));
    let f = |name: &str, g: &dyn Fn(&SummaryRow) -> f64| Column::new(name.into(), rows.iter().map(g).collect::<Vec<f64>>());
    let i = |name: &str, g: &dyn Fn(&SummaryRow) -> i64| Column::new(name.into(), rows.iter().map(g).collect::<Vec<i64>>());
    let s = |name: &str, g: &dyn Fn(&SummaryRow) -> String| Column::new(name.into(), rows.iter().map(g).collect::<Vec<String>>());
    let b = |name: &str, g: &dyn Fn(&SummaryRow) -> bool| Column::new(name.into(), rows.iter().map(g).collect::<Vec<bool>>());
    cols.extend([
        s("rows_used", &|r| r.rows_used.clone()),
        i("n_train", &|r| r.n_train),
        i("n_params", &|r| r.n_params),
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
        f("epsilon", &|r| r.settings.epsilon),
        f("gamma", &|r| r.settings.gamma),
        s("nbeta_setting", &|r| r.settings.nbeta.to_string()),
        i("batch_size", &|r| r.batch_size),
        i("chains", &|r| r.settings.chains as i64),
        i("draws", &|r| r.settings.draws as i64),
        i("burn_in", &|r| r.settings.burn_in as i64),
        i("steps_between_draws", &|r| r.settings.steps_between_draws as i64),
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
            Column::new("run".into(), rows.iter().map(|(s, _)| s.key.ident.run.as_str()).collect::<Vec<_>>()),
            Column::new("step".into(), rows.iter().map(|(s, _)| s.key.step).collect::<Vec<_>>()),
            Column::new("checkpoint".into(), rows.iter().map(|(s, _)| s.key.checkpoint.as_str()).collect::<Vec<_>>()),
            Column::new("chain".into(), rows.iter().map(|(_, t)| t.chain).collect::<Vec<_>>()),
            Column::new("draw".into(), rows.iter().map(|(_, t)| t.draw).collect::<Vec<_>>()),
            Column::new("loss".into(), rows.iter().map(|(_, t)| t.loss).collect::<Vec<_>>()),
        ],
    )?)
}

/// Reads back the rows of a summary table (the partial file of an interrupted stage).
pub fn read_summary(path: &Path) -> Result<Vec<SummaryRow>> {
    let df = tables::read_parquet(path, &schema::LLC_SUMMARY)?;
    let s = |n: &str| tables::col_str(&df, n, path);
    let f = |n: &str| tables::col_f64(&df, n, path);
    let i = |n: &str| tables::col_i64(&df, n, path);
    let b = |n: &str| tables::col_bool(&df, n, path);
    let (run, p, alpha, seed, wd, tf, d_model, step, checkpoint) =
        (s("run")?, i("p")?, f("alpha")?, i("seed")?, f("weight_decay")?, f("train_frac")?, i("d_model")?, i("step")?, s("checkpoint")?);
    let (rows_used, n_train, n_params) = (s("rows_used")?, i("n_train")?, i("n_params")?);
    let (mean, std, se, r_hat, ess, mala, lw, nbeta) =
        (f("llc_mean")?, f("llc_std")?, f("llc_se")?, f("r_hat")?, f("ess_bulk")?, f("mala_acceptance")?, f("loss_at_wstar")?, f("nbeta")?);
    let (used, div, neg, nc, negm, flags) = (i("chains_used")?, i("n_diverged")?, i("n_negative")?, i("n_not_converged")?, b("negative_mean")?, s("flags")?);
    let (fr, fm, fs) = (b("flag_r_hat")?, b("flag_mala")?, b("flag_spikes")?);
    let (eps, gamma, nbs, batch, chains, draws, burn, thin, sseed) =
        (f("epsilon")?, f("gamma")?, s("nbeta_setting")?, i("batch_size")?, i("chains")?, i("draws")?, i("burn_in")?, i("steps_between_draws")?, i("sgld_seed")?);
    let (lwm, lwb, mala_every, dfac, dloss, rms, rms_a, rms_e) =
        (s("loss_at_wstar_mode")?, i("loss_at_wstar_batches")?, i("mala_every")?, f("divergence_factor")?, f("divergence_loss")?, b("rmsprop")?, f("rmsprop_alpha")?, f("rmsprop_eps")?);
    let (sh, ch) = (s("settings_hash")?, s("checkpoint_hash")?);
    let mut out = Vec::with_capacity(df.height());
    for k in 0..df.height() {
        let nbeta_setting: NBeta = nbs[k].parse().map_err(|e: String| anyhow::anyhow!("{}: row {k}: {e}", path.display()))?;
        let loss_at_wstar = lwm[k].parse().map_err(|e: String| anyhow::anyhow!("{}: row {k}: {e}", path.display()))?;
        let settings = SgldConfig {
            epsilon: eps[k],
            gamma: gamma[k],
            nbeta: nbeta_setting,
            batch_size: None,
            chains: chains[k] as usize,
            draws: draws[k] as usize,
            burn_in: burn[k] as usize,
            steps_between_draws: thin[k] as usize,
            seed: sseed[k] as u64,
            loss_at_wstar,
            loss_at_wstar_batches: lwb[k] as usize,
            mala_every: mala_every[k] as usize,
            divergence_factor: dfac[k],
            rmsprop: rms[k],
            rmsprop_alpha: rms_a[k],
            rmsprop_eps: rms_e[k],
            threads: 0,
        };
        out.push(SummaryRow {
            key: RowKey {
                ident: metrics::RunIdent {
                    run: run[k].clone(),
                    p: p[k],
                    alpha: alpha[k],
                    seed: seed[k],
                    weight_decay: wd[k],
                    train_frac: tf[k],
                    d_model: d_model[k],
                },
                step: step[k],
                checkpoint: checkpoint[k].clone(),
            },
            rows_used: rows_used[k].clone(),
            n_train: n_train[k],
            n_params: n_params[k],
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
            settings,
            batch_size: batch[k],
            divergence_loss: dloss[k],
            settings_hash: sh[k].clone(),
            checkpoint_hash: ch[k].clone(),
        });
    }
    Ok(out)
}

/// Reads back a trace table, grouped by checkpoint.
pub fn read_trace(path: &Path) -> Result<BTreeMap<String, Vec<TraceRow>>> {
    let df = tables::read_parquet(path, &schema::LLC_TRACE)?;
    let checkpoint = tables::col_str(&df, "checkpoint", path)?;
    let chain = tables::col_i64(&df, "chain", path)?;
    let draw = tables::col_i64(&df, "draw", path)?;
    let loss = tables::col_f64(&df, "loss", path)?;
    let mut out: BTreeMap<String, Vec<TraceRow>> = BTreeMap::new();
    for k in 0..df.height() {
        out.entry(checkpoint[k].clone()).or_default().push(TraceRow { chain: chain[k], draw: draw[k], loss: loss[k] });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The estimate stage

/// Output files of the estimate stage for `out` = `DIR/NAME.parquet`.
#[derive(Debug, Clone)]
pub struct EstimatePaths {
    /// `DIR/NAME.parquet`: the summary.
    pub summary: PathBuf,
    /// `DIR/NAME_trace.parquet`.
    pub trace: PathBuf,
    /// `DIR/NAME.partial.parquet`: the summary so far, while running.
    pub partial_summary: PathBuf,
    /// `DIR/NAME_trace.partial.parquet`.
    pub partial_trace: PathBuf,
}

impl EstimatePaths {
    /// The files for a summary path.
    pub fn new(out: &Path) -> EstimatePaths {
        let trace = metrics::sibling(out, "trace");
        EstimatePaths {
            summary: out.to_path_buf(),
            partial_summary: out.with_extension("partial.parquet"),
            partial_trace: trace.with_extension("partial.parquet"),
            trace,
        }
    }
}

/// How the estimate stage runs.
#[derive(Debug, Clone, Default)]
pub struct EstimateOptions {
    /// Draw a progress bar over checkpoints (hidden anyway when stderr is not a terminal).
    pub progress: bool,
    /// Stop (as if interrupted) after computing this many checkpoints in this call: the hook the
    /// resume test uses in place of Ctrl-C.
    pub stop_after: Option<usize>,
}

/// What the estimate stage did.
#[derive(Debug, Clone)]
pub struct EstimateOutcome {
    /// Every finished checkpoint, in input order (computed or reused).
    pub done: Vec<CheckpointLlc>,
    /// Checkpoints computed in this call.
    pub computed: usize,
    /// Checkpoints reused from the partial files of an earlier call.
    pub reused: usize,
    /// Whether every checkpoint is done and the final tables were written.
    pub complete: bool,
    /// The checkpoints asked for.
    pub total: usize,
}

/// Estimates the LLC of every checkpoint in `paths` (in order) into `out` and its trace table,
/// resuming from the partial files of an interrupted earlier call (see the module docs).
pub fn estimate_stage(paths: &[PathBuf], out: &Path, settings: &SettingsSource, opts: &EstimateOptions) -> Result<EstimateOutcome> {
    interrupt::stop_at_safe_points();
    let files = EstimatePaths::new(out);
    if let Some(dir) = out.parent().filter(|d| d.is_dir()) {
        fsio::remove_stale_temps(dir)?;
    }
    let mut earlier = load_partial(&files);
    let bar = if opts.progress { indicatif::ProgressBar::new(paths.len() as u64) } else { indicatif::ProgressBar::hidden() };
    bar.set_style(
        indicatif::ProgressStyle::with_template("llc [{elapsed_precise}] {bar:40} {pos}/{len} checkpoints (eta {eta}) {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut done: Vec<CheckpointLlc> = Vec::with_capacity(paths.len());
    let (mut computed, mut reused) = (0usize, 0usize);
    let mut all_settings: BTreeMap<String, String> = BTreeMap::new();
    for path in paths {
        if interrupt::requested() || opts.stop_after.is_some_and(|k| computed >= k) {
            bar.finish_and_clear();
            tracing::warn!(
                "stopped after {} of {} checkpoints; the finished ones are kept in {} and a rerun resumes from there",
                done.len(),
                paths.len(),
                files.partial_summary.display()
            );
            return Ok(EstimateOutcome { done, computed, reused, complete: false, total: paths.len() });
        }
        let ckpt = ckpt::load(path)?;
        let s = settings.for_checkpoint(&ckpt)?;
        let s_hash = settings_hash(&s)?;
        all_settings.insert(s_hash.clone(), settings_json(&s)?);
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let c_hash = format!("{:016x}", config::fnv1a(&bytes));
        let key = RowKey::of(&ckpt);
        if let Some(prev) = earlier.remove(&(key.checkpoint.clone(), s_hash.clone(), c_hash.clone())) {
            tracing::debug!(checkpoint = %path.display(), "reusing the estimate of an earlier, interrupted call");
            done.push(prev);
            reused += 1;
            bar.inc(1);
            continue;
        }
        let started = Instant::now();
        let result = estimate_checkpoint(&ckpt, &s, s_hash, c_hash).with_context(|| format!("llc estimate: {}", path.display()))?;
        tracing::info!(seconds = started.elapsed().as_secs_f64(), "{}", result.summary.line());
        bar.set_message(format!("step {}: λ = {:.2}", result.summary.key.step, result.summary.llc_mean));
        bar.inc(1);
        done.push(result);
        computed += 1;
        write_tables(&done, &files.partial_summary, &files.partial_trace, paths, &all_settings)?;
    }
    bar.finish_and_clear();
    write_tables(&done, &files.summary, &files.trace, paths, &all_settings)?;
    for p in [&files.partial_summary, &files.partial_trace] {
        if p.exists() {
            std::fs::remove_file(p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    let flagged: Vec<&CheckpointLlc> = done.iter().filter(|c| c.summary.flagged()).collect();
    if !flagged.is_empty() {
        eprintln!(
            "warning: {} of {} LLC estimates are flagged (see the `flags` column of {}):",
            flagged.len(),
            done.len(),
            files.summary.display()
        );
        for c in &flagged {
            eprintln!("  {}", c.summary.line());
        }
    }
    Ok(EstimateOutcome { done, computed, reused, complete: true, total: paths.len() })
}

/// One checkpoint's estimate, as its table rows.
pub fn estimate_checkpoint(ckpt: &Checkpoint, settings: &SgldConfig, settings_hash: String, checkpoint_hash: String) -> Result<CheckpointLlc> {
    let est = estimate_raw(ckpt, settings)?;
    let rows_used = TrainingRows::of(ckpt)?.used.as_str();
    let summary = SummaryRow::of(RowKey::of(ckpt), rows_used, &est, settings_hash, checkpoint_hash);
    let trace = est
        .trace_rows()
        .map(|(chain, draw, loss)| TraceRow { chain: chain as i64, draw: draw as i64, loss })
        .collect();
    Ok(CheckpointLlc { summary, trace })
}

/// The [`LlcEstimate`] of one checkpoint with these settings: one [`TransformerTarget`] per chain
/// over the checkpoint's rows.
pub fn estimate_raw(ckpt: &Checkpoint, settings: &SgldConfig) -> Result<LlcEstimate> {
    let rows = Arc::new(TrainingRows::of(ckpt)?);
    let factory = |_chain: usize| TransformerTarget::new(&ckpt.params, &ckpt.model, rows.clone());
    Ok(estimate(factory, settings)?)
}

type PartialKey = (String, String, String);

/// The finished checkpoints of an earlier, interrupted call, by (checkpoint, settings hash,
/// checkpoint hash). Unreadable partial files are ignored (and later overwritten).
fn load_partial(files: &EstimatePaths) -> BTreeMap<PartialKey, CheckpointLlc> {
    if !files.partial_summary.exists() {
        return BTreeMap::new();
    }
    let read = || -> Result<BTreeMap<PartialKey, CheckpointLlc>> {
        let rows = read_summary(&files.partial_summary)?;
        let mut traces = if files.partial_trace.exists() { read_trace(&files.partial_trace)? } else { BTreeMap::new() };
        let mut out = BTreeMap::new();
        for r in rows {
            // The trace partial is written before the summary partial, so every summary row has
            // its trace there (possibly empty, when every chain diverged at once).
            let trace = traces.remove(&r.key.checkpoint).unwrap_or_default();
            out.insert((r.key.checkpoint.clone(), r.settings_hash.clone(), r.checkpoint_hash.clone()), CheckpointLlc { summary: r, trace });
        }
        Ok(out)
    };
    match read() {
        Ok(m) => {
            tracing::info!("found {} finished checkpoint(s) of an interrupted run in {}", m.len(), files.partial_summary.display());
            m
        }
        Err(e) => {
            tracing::warn!("ignoring unreadable partial results: {e:#}");
            BTreeMap::new()
        }
    }
}

fn write_tables(done: &[CheckpointLlc], summary: &Path, trace: &Path, inputs: &[PathBuf], settings: &BTreeMap<String, String>) -> Result<()> {
    let rows: Vec<SummaryRow> = done.iter().map(|c| c.summary.clone()).collect();
    let settings_text = if settings.len() == 1 {
        settings.values().next().cloned().unwrap_or_default()
    } else {
        serde_json::to_string(settings)?
    };
    let meta = metrics::table_meta("llc estimate", inputs, &[("llc_settings", settings_text)]);
    tables::write_parquet(&mut trace_frame(done)?, &schema::LLC_TRACE, trace, &meta)?;
    tables::write_parquet(&mut summary_frame(&rows)?, &schema::LLC_SUMMARY, summary, &meta)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The calibration stage

/// One grid point of a calibration, with the batch size it used and its verdict.
#[derive(Debug, Clone)]
pub struct CalibrationCell {
    /// Settings of the point.
    pub settings: SgldConfig,
    /// Its estimate.
    pub estimate: LlcEstimate,
    /// Healthy by the recommendation's criteria.
    pub healthy: bool,
    /// |Δ llc_mean| / llc_mean from the next smaller ε of the same series (NaN for the first).
    pub relative_change: f64,
    /// Whether this is the recommended point of its batch size.
    pub recommended: bool,
}

/// What `llc calibrate` found.
#[derive(Debug, Clone)]
pub struct CalibrationOutcome {
    /// The checkpoint's key.
    pub key: RowKey,
    /// Every grid point, γ outermost, then batch size, nβ, ε.
    pub cells: Vec<CalibrationCell>,
    /// The recommendation for each (γ, batch size) series (`None`: no point qualified).
    pub recommendations: Vec<SeriesRecommendation>,
}

/// The recommendation of one (γ, batch size) series of a calibration.
#[derive(Debug, Clone, Copy)]
pub struct SeriesRecommendation {
    /// Localisation strength of the series.
    pub gamma: f64,
    /// Batch size of the series (resolved).
    pub batch_size: usize,
    /// The largest flat, healthy ε of the series, if any.
    pub recommendation: Option<Recommendation>,
}

/// How `llc calibrate` runs beyond the grid itself.
#[derive(Debug, Clone, Default)]
pub struct CalibrateOptions {
    /// Batch sizes to sweep (`None` is full batch); empty: the base settings' batch size.
    pub batch_sizes: Vec<Option<usize>>,
    /// Compare step sizes at equal sampling *time* rather than equal step counts: for each ε,
    /// `burn_in` and `steps_between_draws` are scaled by `ε_ref/ε` (rounded, at least 1 for the
    /// thinning), so that every ε runs the chains for the same `ε × steps` as the base settings do
    /// at `ε_ref`. Without it a small ε is compared after fewer relaxation times than a large one,
    /// and looks smaller because its chains have not yet levelled off, not because of the
    /// discretisation.
    pub equal_time_at: Option<f64>,
    /// What counts as flat and healthy.
    pub criteria: RecommendCriteria,
}

/// Whether an estimate is healthy for a recommendation: no flag of the estimator, a finite
/// estimate, R-hat at most [`R_HAT_MAX`], no spiking chain, and MALA acceptance within the
/// criteria's bounds. (The
/// estimator's own [`super::Calibration::recommend`] does not look at R-hat; on the transformer
/// the series with nβ = B/ln B reached R-hat 1.15 at the ε it would have picked.)
pub fn healthy(e: &LlcEstimate, criteria: &RecommendCriteria) -> bool {
    let acceptance_ok = e.mala_acceptance.is_none_or(|a| a >= criteria.min_acceptance && a <= criteria.max_acceptance);
    !e.flags.any() && e.llc_mean.is_finite() && acceptance_ok && !r_hat_flagged(e) && spiking_chains(e).0.is_empty()
}

/// The largest ε whose estimate is flat (relative change from the next smaller ε of the same nβ
/// and γ at most `flat_tolerance`) with both points [`healthy`]; ties in ε go to the flattest.
/// The rule of [`super::Calibration::recommend`], with R-hat added to health.
pub fn recommend(points: &[CalibrationPoint], criteria: &RecommendCriteria) -> Option<Recommendation> {
    let mut best: Option<Recommendation> = None;
    for (i, p) in points.iter().enumerate() {
        let Some(prev) = points[..i].iter().rev().find(|q| q.gamma == p.gamma && q.nbeta == p.nbeta && q.epsilon < p.epsilon) else {
            continue;
        };
        if !(healthy(&p.estimate, criteria) && healthy(&prev.estimate, criteria)) {
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

/// The settings of one calibration cell: `base` at step size `epsilon`, with the step counts
/// scaled for equal sampling time when asked (see [`CalibrateOptions::equal_time_at`]).
pub fn cell_settings(base: &SgldConfig, epsilon: f64, equal_time_at: Option<f64>) -> SgldConfig {
    let mut s = SgldConfig { epsilon, ..base.clone() };
    if let Some(eps_ref) = equal_time_at {
        let factor = eps_ref / epsilon;
        s.burn_in = (base.burn_in as f64 * factor).round() as usize;
        s.steps_between_draws = ((base.steps_between_draws as f64 * factor).round() as usize).max(1);
    }
    s
}

/// Sweeps `grid` (× the batch sizes of `opts`) on one checkpoint, writes the calibration table
/// to `out` and returns the cells with a recommendation per (γ, batch size) series.
pub fn calibrate_stage(path: &Path, out: &Path, base: &SgldConfig, grid: &CalibrationGrid, opts: &CalibrateOptions) -> Result<CalibrationOutcome> {
    if grid.epsilons.is_empty() {
        bail!("the calibration grid has no step sizes");
    }
    if let Some(e) = opts.equal_time_at {
        if !(e.is_finite() && e > 0.0) {
            bail!("the reference step size for equal sampling time must be positive, got {e}");
        }
    }
    interrupt::stop_at_safe_points();
    let ckpt = ckpt::load(path)?;
    let rows = Arc::new(TrainingRows::of(&ckpt)?);
    let factory = |_chain: usize| TransformerTarget::new(&ckpt.params, &ckpt.model, rows.clone());
    let batches: Vec<Option<usize>> = if opts.batch_sizes.is_empty() { vec![base.batch_size] } else { opts.batch_sizes.clone() };
    let gammas = if grid.gammas.is_empty() { vec![base.gamma] } else { grid.gammas.clone() };
    let nbetas = if grid.nbetas.is_empty() { vec![base.nbeta] } else { grid.nbetas.clone() };
    let mut epsilons = grid.epsilons.clone();
    epsilons.sort_by(f64::total_cmp);
    let mut cells = Vec::new();
    let mut recommendations = Vec::new();
    for &gamma in &gammas {
        for &batch in &batches {
            let mut points = Vec::new();
            let mut settings = Vec::new();
            for &nbeta in &nbetas {
                for &epsilon in &epsilons {
                    if interrupt::requested() {
                        bail!("interrupted; nothing written");
                    }
                    let base_b = SgldConfig { batch_size: batch, gamma, nbeta, ..base.clone() };
                    let s = cell_settings(&base_b, epsilon, opts.equal_time_at);
                    let est = estimate(factory, &s).with_context(|| format!("calibrating {}", path.display()))?;
                    tracing::info!(epsilon, %nbeta, gamma, batch = est.batch_size, burn_in = s.burn_in, thin = s.steps_between_draws, "{}", est.summary());
                    points.push(CalibrationPoint { epsilon, nbeta, gamma, estimate: est });
                    settings.push(s);
                }
            }
            let rec = recommend(&points, &opts.criteria);
            let b = SgldConfig { batch_size: batch, ..base.clone() }.resolved_batch_size(rows.len())?;
            recommendations.push(SeriesRecommendation { gamma, batch_size: b, recommendation: rec });
            let mut prev: Option<(NBeta, f64)> = None;
            for (pt, s) in points.into_iter().zip(settings) {
                let rel = match prev {
                    Some((nb, m)) if nb == pt.nbeta => ((pt.estimate.llc_mean - m) / m).abs(),
                    _ => f64::NAN,
                };
                prev = Some((pt.nbeta, pt.estimate.llc_mean));
                let is_rec = rec.is_some_and(|r| r.epsilon == pt.epsilon && r.nbeta == pt.nbeta && r.gamma == pt.gamma);
                cells.push(CalibrationCell {
                    settings: s,
                    healthy: healthy(&pt.estimate, &opts.criteria),
                    relative_change: rel,
                    recommended: is_rec,
                    estimate: pt.estimate,
                });
            }
        }
    }
    let key = RowKey::of(&ckpt);
    let mut df = calibration_frame(&key, &cells)?;
    let meta = metrics::table_meta(
        "llc calibrate",
        &[path.to_path_buf()],
        &[
            ("llc_settings", settings_json(base)?),
            ("grid", serde_json::to_string(grid)?),
            ("criteria", serde_json::to_string(&opts.criteria)?),
            ("equal_time_at", opts.equal_time_at.map_or(String::new(), |e| e.to_string())),
        ],
    );
    tables::write_parquet(&mut df, &schema::LLC_CALIBRATION, out, &meta)?;
    Ok(CalibrationOutcome { key, cells, recommendations })
}

fn calibration_frame(key: &RowKey, cells: &[CalibrationCell]) -> Result<DataFrame> {
    let n = cells.len();
    let f = |name: &str, g: &dyn Fn(&CalibrationCell) -> f64| Column::new(name.into(), cells.iter().map(g).collect::<Vec<f64>>());
    let i = |name: &str, g: &dyn Fn(&CalibrationCell) -> i64| Column::new(name.into(), cells.iter().map(g).collect::<Vec<i64>>());
    let s = |name: &str, g: &dyn Fn(&CalibrationCell) -> String| Column::new(name.into(), cells.iter().map(g).collect::<Vec<String>>());
    let b = |name: &str, g: &dyn Fn(&CalibrationCell) -> bool| Column::new(name.into(), cells.iter().map(g).collect::<Vec<bool>>());
    Ok(DataFrame::new(
        n,
        vec![
            s("run", &|_| key.ident.run.clone()),
            i("step", &|_| key.step),
            s("checkpoint", &|_| key.checkpoint.clone()),
            f("epsilon", &|c| c.settings.epsilon),
            f("gamma", &|c| c.settings.gamma),
            s("nbeta_setting", &|c| c.settings.nbeta.to_string()),
            f("nbeta", &|c| c.estimate.nbeta),
            i("batch_size", &|c| c.estimate.batch_size as i64),
            i("chains", &|c| c.settings.chains as i64),
            i("draws", &|c| c.settings.draws as i64),
            i("burn_in", &|c| c.settings.burn_in as i64),
            i("steps_between_draws", &|c| c.settings.steps_between_draws as i64),
            f("llc_mean", &|c| c.estimate.llc_mean),
            f("llc_std", &|c| c.estimate.llc_std),
            f("r_hat", &|c| c.estimate.r_hat),
            f("ess_bulk", &|c| c.estimate.ess_bulk),
            f("mala_acceptance", &|c| c.estimate.mala_acceptance.unwrap_or(f64::NAN)),
            f("loss_at_wstar", &|c| c.estimate.loss_at_wstar),
            i("n_diverged", &|c| c.estimate.flags.diverged as i64),
            i("n_negative", &|c| c.estimate.flags.negative as i64),
            i("n_not_converged", &|c| c.estimate.flags.not_converged as i64),
            s("flags", &|c| flag_text(&c.estimate)),
            b("healthy", &|c| c.healthy),
            f("relative_change", &|c| c.relative_change),
            b("recommended", &|c| c.recommended),
        ],
    )?)
}

#[cfg(test)]
mod tests;
