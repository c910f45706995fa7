//! `llc reference`: each checkpoint's estimate with the run's settings (the step ladder's choice)
//! against a reference from long chains at the same γ and nβ, the check of issue 12 that the
//! chosen step does not bias the number (docs/llc.md, "Checking an estimate against long chains").

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};

use super::estimate::estimate_restricted;
use super::select::Job;
use super::settings::{settings_json, SettingsSource};
use crate::ckpt;
use crate::llc::restrict::Restriction;
use crate::llc::transformer::TrainingRows;
use crate::llc::{LlcEstimate, SgldConfig, StepCount};
use crate::run::RowKey;
use crate::tables::{self, llc::{ReferenceRow, SummaryRow}};
use crate::interrupt;

/// Chains of the reference estimate.
pub const REFERENCE_CHAINS: usize = 8;
/// The reference's draws per chain, as a multiple of the chosen rung's.
pub const REFERENCE_DRAWS_FACTOR: usize = 4;
/// The reference's burn-in in relaxation times 2/(εγ) at its (half) step: twice the time that
/// was enough wherever it was measured.
pub const REFERENCE_RELAXATIONS: f64 = 2.0;
/// An estimate agrees with its reference within this fraction of the reference (or within
/// [`REFERENCE_SE`] combined standard errors, whichever is larger).
pub const REFERENCE_TOLERANCE: f64 = 0.05;
/// See [`REFERENCE_TOLERANCE`].
pub const REFERENCE_SE: f64 = 2.0;

/// The reference's settings for an estimate `ours` (the ladder's last rung): the same γ, nβ,
/// batch size and seed, [`REFERENCE_CHAINS`] chains, [`REFERENCE_DRAWS_FACTOR`]× the draws, half
/// the chosen step, thinning doubled (the same sampling time per draw), a burn-in of
/// [`REFERENCE_RELAXATIONS`] relaxation times at the half step, and no ladder.
pub fn reference_settings(ours: &LlcEstimate) -> SgldConfig {
    let s = &ours.schedule;
    SgldConfig {
        epsilon: (s.epsilon / 2.0).into(),
        chains: REFERENCE_CHAINS,
        draws: s.draws * REFERENCE_DRAWS_FACTOR,
        burn_in: StepCount::Relaxations(REFERENCE_RELAXATIONS),
        steps_between_draws: StepCount::Steps(2 * s.steps_between_draws),
        halvings: 0,
        lengthenings: 0,
        ..ours.config.clone()
    }
}

/// Whether an estimate agrees with its reference: `|ours − reference| ≤ max(5 % of the
/// reference, 2·sqrt(se_ours² + se_ref²))` (issue 12's goal).
pub fn agrees(ours: f64, ours_se: f64, reference: f64, reference_se: f64) -> bool {
    let tolerance = (REFERENCE_TOLERANCE * reference.abs()).max(REFERENCE_SE * (ours_se.powi(2) + reference_se.powi(2)).sqrt());
    (ours - reference).abs() <= tolerance
}

/// What `llc reference` found; its `Display` is the table the command prints.
#[derive(Debug, Clone)]
pub struct ReferenceOutcome {
    /// One row per checkpoint, in job order.
    pub rows: Vec<ReferenceRow>,
}

impl fmt::Display for ReferenceOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:<16} {:>6} {:>9} {:>9} {:>5} {:>9} {:>9} {:>9} {:>9} {:>7}  agrees", "run", "step", "epsilon", "ours", "se", "reference", "se", "diff", "rel", "rungs")?;
        for r in &self.rows {
            writeln!(
                f,
                "{:<16} {:>6} {:>9.2e} {:>9.2} {:>5.1} {:>9.2} {:>9.1} {:>9.2} {:>8.1}% {:>7}  {}{}",
                r.key.ident.run,
                r.key.step,
                r.ours_epsilon,
                r.ours_mean,
                r.ours_se,
                r.reference_mean,
                r.reference_se,
                r.difference,
                100.0 * r.relative_difference,
                r.ours_step_rungs,
                if r.agrees { "yes" } else { "NO" },
                if r.ours_flags.is_empty() && r.reference_flags.is_empty() { String::new() } else { format!("  (flags: ours [{}], reference [{}])", r.ours_flags, r.reference_flags) }
            )?;
        }
        let n = self.rows.iter().filter(|r| r.agrees).count();
        writeln!(f, "{n} of {} estimates agree with their reference", self.rows.len())
    }
}

/// Estimates every job's checkpoint (the whole model) with its settings, then the reference
/// ([`reference_settings`]), writes the table to `out` and returns the rows.
pub fn reference_stage(jobs: &[Job], out: &Path, settings: &SettingsSource) -> Result<ReferenceOutcome> {
    interrupt::stop_at_safe_points();
    let mut rows = Vec::with_capacity(jobs.len());
    let mut all_settings = Vec::new();
    for job in jobs {
        if interrupt::requested() {
            anyhow::bail!("interrupted; nothing written");
        }
        let started = Instant::now();
        let ckpt = ckpt::load(&job.path)?;
        let s = settings.for_checkpoint(&ckpt)?;
        if job.groups.iter().any(|g| *g != Restriction::all()) {
            tracing::warn!("llc reference compares whole-model estimates only: llc.restrict's other groups are skipped");
        }
        let training = Arc::new(TrainingRows::of(&ckpt)?);
        let key = RowKey::of(&ckpt);
        let what = || format!("llc reference: {}", job.path.display());
        let ours = estimate_restricted(&ckpt, &training, &Restriction::all(), &s).with_context(what)?;
        let ref_settings = reference_settings(&ours);
        let reference = estimate_restricted(&ckpt, &training, &Restriction::all(), &ref_settings).with_context(what)?;
        let row = |e: &LlcEstimate| SummaryRow::of(key.clone(), "all", training.used.as_str(), ckpt.model.n_params(), e, String::new(), String::new());
        let r = ReferenceRow::of(&row(&ours), &row(&reference));
        tracing::info!(seconds = started.elapsed().as_secs_f64(), "{} step {}: ours {:.2} ± {:.2} at ε {:.2e}, reference {:.2} ± {:.2} at ε {:.2e}: {}", r.key.ident.run, r.key.step, r.ours_mean, r.ours_se, r.ours_epsilon, r.reference_mean, r.reference_se, r.reference_epsilon, if r.agrees { "agree" } else { "DISAGREE" });
        all_settings.push(settings_json(&s)?);
        rows.push(r);
    }
    all_settings.dedup();
    let inputs: Vec<_> = jobs.iter().map(|j| j.path.clone()).collect();
    let meta = tables::meta("llc reference", &inputs, &[("llc_settings", all_settings.join("\n"))]);
    tables::llc::write_reference(&rows, out, &meta)?;
    tracing::info!("wrote {}", out.display());
    Ok(ReferenceOutcome { rows })
}
