//! The calibration stage: a grid of estimates on one checkpoint, the table, and a
//! recommendation per (γ, batch size) series.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use super::settings::settings_json;
use crate::ckpt;
use crate::interrupt;
use crate::llc::transformer::{TrainingRows, TransformerTarget};
use crate::llc::{estimate, recommend, CalibrationGrid, CalibrationPoint, LlcEstimate, NBeta, RecommendCriteria, Recommendation, SgldConfig, StepCount};
use crate::run::RowKey;
use crate::tables;

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

/// What `llc calibrate` found. Its `Display` is the table `llc calibrate` prints: one line per
/// cell, then the recommendation of each (γ, batch size) series.
#[derive(Debug, Clone)]
pub struct CalibrationOutcome {
    /// The checkpoint's key.
    pub key: RowKey,
    /// Every grid point, γ outermost, then batch size, nβ, ε.
    pub cells: Vec<CalibrationCell>,
    /// The recommendation for each (γ, batch size) series (`None`: no point qualified).
    pub recommendations: Vec<SeriesRecommendation>,
    /// How the sweep ran (for the advice when nothing qualified).
    pub options: CalibrateOptions,
}

impl fmt::Display for CalibrationOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:>6} {:>6} {:>10} {:>9} {:>6} {:>5} {:>10} {:>8} {:>7} {:>7} {:>6}  flags",
            "gamma", "batch", "nbeta", "epsilon", "burnin", "thin", "llc", "std", "R-hat", "ESS", "MALA"
        )?;
        for c in &self.cells {
            let e = &c.estimate;
            writeln!(
                f,
                "{:>6} {:>6} {:>10.2} {:>9.1e} {:>6} {:>5} {:>10.3} {:>8.3} {:>7.3} {:>7.0} {:>6} {}{}",
                c.settings.gamma,
                e.batch_size,
                e.nbeta,
                e.schedule.epsilon,
                e.schedule.burn_in,
                e.schedule.steps_between_draws,
                e.llc_mean,
                e.llc_std,
                e.r_hat,
                e.ess_bulk,
                e.mala_acceptance.map_or("n/a".into(), |a| format!("{a:.3}")),
                if e.flags.chains_flagged() { e.flag_summary() } else { "-".into() },
                if c.recommended { "   <= recommended" } else { "" }
            )?;
        }
        for s in &self.recommendations {
            let (gamma, batch) = (s.gamma, s.batch_size);
            match s.recommendation {
                Some(r) => writeln!(
                    f,
                    "recommendation (gamma {gamma}, batch {batch}): epsilon = {:e}, nbeta = {} (LLC {:.3}, {:.1} % from the next smaller epsilon)",
                    r.epsilon,
                    r.nbeta,
                    r.llc_mean,
                    100.0 * r.relative_change
                )?,
                None => writeln!(
                    f,
                    "recommendation (gamma {gamma}, batch {batch}): none — no two neighbouring step sizes are both healthy and within {:.0} % of each other; widen or refine the grid{}",
                    100.0 * self.options.criteria.flat_tolerance,
                    if self.options.equal_time_at.is_none() { ", or compare at equal sampling time (--equal-time-at)" } else { "" }
                )?,
            }
        }
        Ok(())
    }
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

/// A batch size as `llc calibrate --batch-sizes` takes it: rows, or `full` (`None`).
pub fn parse_batch_size(s: &str) -> Result<Option<usize>, String> {
    match s {
        "full" => Ok(None),
        n => n.parse::<usize>().map(Some).map_err(|_| format!("batch size must be a number or `full`, got {n:?}")),
    }
}

/// The settings of one calibration cell: `base` at step size `epsilon`, with the step counts
/// scaled for equal sampling time when asked (see [`CalibrateOptions::equal_time_at`]).
pub fn cell_settings(base: &SgldConfig, epsilon: f64, equal_time_at: Option<f64>) -> SgldConfig {
    let mut s = SgldConfig { epsilon: epsilon.into(), ..base.clone() };
    if let Some(eps_ref) = equal_time_at {
        // Counts in relaxation times are at equal time already; counts in steps are scaled.
        let factor = eps_ref / epsilon;
        let scale = |c: StepCount, min: usize| match c {
            StepCount::Steps(n) => StepCount::Steps(((n as f64 * factor).round() as usize).max(min)),
            relaxations => relaxations,
        };
        s.burn_in = scale(base.burn_in, 0);
        s.steps_between_draws = scale(base.steps_between_draws, 1);
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
    if !crate::llc::restrict::is_default_groups(&base.restrict) {
        tracing::warn!("llc calibrate samples the whole model: llc.restrict applies to llc estimate only");
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
                    tracing::info!(epsilon, %nbeta, gamma, batch = est.batch_size, burn_in = est.schedule.burn_in, thin = est.schedule.steps_between_draws, "{}", est.summary());
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
                    healthy: pt.estimate.healthy(&opts.criteria),
                    relative_change: rel,
                    recommended: is_rec,
                    estimate: pt.estimate,
                });
            }
        }
    }
    let key = RowKey::of(&ckpt);
    let meta = tables::meta(
        "llc calibrate",
        &[path.to_path_buf()],
        &[
            ("llc_settings", settings_json(base)?),
            ("grid", serde_json::to_string(grid)?),
            ("criteria", serde_json::to_string(&opts.criteria)?),
            ("equal_time_at", opts.equal_time_at.map_or(String::new(), |e| e.to_string())),
        ],
    );
    tables::llc::write_calibration(&key, &cells, out, &meta)?;
    tracing::info!("wrote {}", out.display());
    Ok(CalibrationOutcome { key, cells, recommendations, options: opts.clone() })
}
