//! The estimate stage: one summary row and a trace per checkpoint and restriction group,
//! resumable at that granularity (see the parent module's docs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};

use super::select::Job;
use super::settings::{settings_hash, settings_json, SettingsSource};
use crate::ckpt::{self, Checkpoint};
use crate::llc::restrict::Restriction;
use crate::llc::transformer::{TrainingRows, TransformerTarget};
use crate::llc::{estimate_ladder, LlcEstimate, SgldConfig};
use crate::run::RowKey;
use crate::tables::{self, llc::{CheckpointLlc, SummaryRow, TraceRow}};
use crate::{fsio, interrupt};

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
        let trace = tables::sibling(out, "trace");
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

/// What the estimate stage did. Counts are of estimates: one per checkpoint and group.
#[derive(Debug, Clone)]
pub struct EstimateOutcome {
    /// Every finished estimate, in job order and, within a checkpoint, group order (computed or
    /// reused).
    pub done: Vec<CheckpointLlc>,
    /// Estimates computed in this call.
    pub computed: usize,
    /// Estimates reused from an earlier call (its output or its partial files).
    pub reused: usize,
    /// Whether every estimate is done and the final tables were written.
    pub complete: bool,
    /// The estimates asked for.
    pub total: usize,
}

/// Estimates the LLC of every job's checkpoint for each of its groups (in order) into `out` and
/// its trace table, reusing what an earlier call finished (see the module docs).
pub fn estimate_stage(jobs: &[Job], out: &Path, settings: &SettingsSource, opts: &EstimateOptions) -> Result<EstimateOutcome> {
    interrupt::stop_at_safe_points();
    let files = EstimatePaths::new(out);
    if let Some(dir) = out.parent().filter(|d| d.is_dir()) {
        fsio::remove_stale_temps(dir)?;
    }
    let mut earlier = load_earlier(&files);
    let total: usize = jobs.iter().map(|j| j.groups.len()).sum();
    let inputs: Vec<PathBuf> = jobs.iter().map(|j| j.path.clone()).collect();
    let bar = crate::cli::progress_bar(total as u64, "llc [{elapsed_precise}] {bar:40} {pos}/{len} estimates (eta {eta}) {msg}", opts.progress);
    let mut done: Vec<CheckpointLlc> = Vec::with_capacity(total);
    let (mut computed, mut reused) = (0usize, 0usize);
    let mut all_settings: BTreeMap<String, String> = BTreeMap::new();
    for job in jobs {
        let path = &job.path;
        let ckpt = ckpt::load(path)?;
        let s = settings.for_checkpoint(&ckpt)?;
        let s_hash = settings_hash(&s)?;
        all_settings.insert(s_hash.clone(), settings_json(&s)?);
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let c_hash = crate::hash::hex(&bytes);
        let key = RowKey::of(&ckpt);
        let rows = Arc::new(TrainingRows::of(&ckpt)?);
        for group in &job.groups {
            if interrupt::requested() || opts.stop_after.is_some_and(|k| computed >= k) {
                bar.finish_and_clear();
                tracing::warn!(
                    "stopped after {} of {total} estimates; the finished ones are kept in {} and a rerun resumes from there",
                    done.len(),
                    files.partial_summary.display()
                );
                return Ok(EstimateOutcome { done, computed, reused, complete: false, total });
            }
            if let Some(mut prev) = earlier.remove(&partial_key(&key, group.name(), &s_hash, &c_hash)) {
                tracing::debug!(checkpoint = %path.display(), restriction = %group, "reusing the estimate of an earlier call");
                // The same bytes may have moved (a data directory copied off a cluster's scratch).
                prev.summary.key.checkpoint = key.checkpoint.clone();
                done.push(prev);
                reused += 1;
                bar.inc(1);
                continue;
            }
            let started = Instant::now();
            let result = estimate_group(&ckpt, &rows, group, &s, s_hash.clone(), c_hash.clone())
                .with_context(|| format!("llc estimate: {} (restriction {group})", path.display()))?;
            tracing::info!(seconds = started.elapsed().as_secs_f64(), "{}", result.summary.line());
            bar.set_message(format!("step {} {group}: λ = {:.2}", result.summary.key.step, result.summary.llc_mean));
            bar.inc(1);
            done.push(result);
            computed += 1;
            write_tables(&done, &files.partial_summary, &files.partial_trace, &inputs, &all_settings)?;
        }
    }
    bar.finish_and_clear();
    write_tables(&done, &files.summary, &files.trace, &inputs, &all_settings)?;
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
    Ok(EstimateOutcome { done, computed, reused, complete: true, total })
}

/// `llc estimate`: [`estimate_stage`], logged, and an error when it was interrupted (the finished
/// estimates are kept for the rerun).
pub fn run_estimate(jobs: &[Job], out: &Path, settings: &SettingsSource, opts: &EstimateOptions) -> Result<()> {
    // Another process is writing this table: wait for it, and stop if it wrote it meanwhile.
    let Some(_lock) = crate::lock::output(out)? else { return Ok(()) };
    if let SettingsSource::Fixed(s) = settings {
        let groups: Vec<String> = s.restrict.iter().map(|g| g.name()).collect();
        tracing::info!(checkpoints = jobs.len(), restrict = %groups.join(", "), out = %out.display(), "llc estimate with {}", settings_json(s)?);
    }
    let started = Instant::now();
    let outcome = estimate_stage(jobs, out, settings, opts)?;
    if !outcome.complete {
        anyhow::bail!(
            "interrupted after {} of {} estimates; they are kept, and running the same command again resumes",
            outcome.done.len(),
            outcome.total
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        estimates = outcome.total,
        computed = outcome.computed,
        reused = outcome.reused,
        seconds,
        per_estimate = seconds / outcome.computed.max(1) as f64,
        "wrote {}",
        out.display()
    );
    Ok(())
}

/// One checkpoint's whole-model estimate, as its table rows (the group `all`).
pub fn estimate_checkpoint(ckpt: &Checkpoint, settings: &SgldConfig, settings_hash: String, checkpoint_hash: String) -> Result<CheckpointLlc> {
    let rows = Arc::new(TrainingRows::of(ckpt)?);
    estimate_group(ckpt, &rows, &Restriction::all(), settings, settings_hash, checkpoint_hash)
}

/// One checkpoint's estimate restricted to `group`, as its table rows.
fn estimate_group(ckpt: &Checkpoint, rows: &Arc<TrainingRows>, group: &Restriction, settings: &SgldConfig, settings_hash: String, checkpoint_hash: String) -> Result<CheckpointLlc> {
    let est = estimate_restricted(ckpt, rows, group, settings)?;
    let summary = SummaryRow::of(RowKey::of(ckpt), &group.name(), rows.used.as_str(), ckpt.model.n_params(), &est, settings_hash, checkpoint_hash);
    let trace = est
        .trace_rows()
        .map(|(chain, draw, loss)| TraceRow { chain: chain as i64, draw: draw as i64, loss })
        .collect();
    Ok(CheckpointLlc { summary, trace })
}

/// The whole-model [`LlcEstimate`] of one checkpoint with these settings (the step ladder's last
/// rung, [`estimate_ladder`]): one
/// [`TransformerTarget`] per chain over the checkpoint's rows.
pub fn estimate_raw(ckpt: &Checkpoint, settings: &SgldConfig) -> Result<LlcEstimate> {
    estimate_restricted(ckpt, &Arc::new(TrainingRows::of(ckpt)?), &Restriction::all(), settings)
}

/// The [`LlcEstimate`] of one checkpoint with SGLD moving only the tensors of `group`, from the
/// step ladder ([`estimate_ladder`]: at most `settings.halvings` step halvings and
/// `settings.lengthenings` draw doublings).
pub fn estimate_restricted(ckpt: &Checkpoint, rows: &Arc<TrainingRows>, group: &Restriction, settings: &SgldConfig) -> Result<LlcEstimate> {
    let factory = |_chain: usize| TransformerTarget::new(&ckpt.params, &ckpt.model, rows.clone())?.restrict(group);
    Ok(estimate_ladder(factory, settings)?)
}

/// (run, step, restriction, settings hash, checkpoint hash): by content, not by path, so that a
/// data directory moved or copied elsewhere still resumes.
type PartialKey = (String, i64, String, String, String);

/// The resume key of an estimate of the checkpoint `key` names, for one group, settings hash and
/// checkpoint hash.
fn partial_key(key: &RowKey, restriction: String, settings_hash: &str, checkpoint_hash: &str) -> PartialKey {
    (key.ident.run.clone(), key.step, restriction, settings_hash.to_string(), checkpoint_hash.to_string())
}

/// Finished estimates a rerun can reuse: the rows of the last complete call (the output and its
/// trace, e.g. before a group was added to `llc.restrict` or a step to `llc.steps`) and those of an
/// interrupted one (the partial files, which win where both hold a row). A row is reused only
/// when its run, step, group, settings hash and checkpoint hash all match, so reuse changes no
/// byte of the result but the `checkpoint` path, which is the file's present place.
fn load_earlier(files: &EstimatePaths) -> BTreeMap<PartialKey, CheckpointLlc> {
    let mut out = load_rows(&files.summary, &files.trace, "estimate(s) of an earlier, complete run");
    out.extend(load_rows(&files.partial_summary, &files.partial_trace, "finished estimate(s) of an interrupted run"));
    out
}

/// The estimates of one summary table and its trace table (none when the summary is absent or
/// unreadable, e.g. written by an older version: then everything is recomputed).
fn load_rows(summary: &Path, trace: &Path, what: &str) -> BTreeMap<PartialKey, CheckpointLlc> {
    if !summary.exists() {
        return BTreeMap::new();
    }
    let read = || -> Result<BTreeMap<PartialKey, CheckpointLlc>> {
        let rows = tables::llc::read_summary(summary)?;
        let mut traces: BTreeMap<(String, String), Vec<TraceRow>> = BTreeMap::new();
        if trace.exists() {
            for (key, row) in tables::llc::read_trace(trace)? {
                traces.entry((key.checkpoint, key.restriction)).or_default().push(row);
            }
        }
        let mut out = BTreeMap::new();
        for r in rows {
            // The trace table is written before the summary, so every summary row has its trace
            // there (possibly empty, when every chain diverged at once).
            let trace = traces.remove(&(r.key.checkpoint.clone(), r.restriction.clone())).unwrap_or_default();
            out.insert(partial_key(&r.key, r.restriction.clone(), &r.settings_hash, &r.checkpoint_hash), CheckpointLlc { summary: r, trace });
        }
        Ok(out)
    };
    match read() {
        Ok(m) => {
            tracing::info!("found {} {what} in {}", m.len(), summary.display());
            m
        }
        Err(e) => {
            tracing::warn!("ignoring unreadable earlier results in {}: {e:#}", summary.display());
            BTreeMap::new()
        }
    }
}

fn write_tables(done: &[CheckpointLlc], summary: &Path, trace: &Path, inputs: &[PathBuf], settings: &BTreeMap<String, String>) -> Result<()> {
    let settings_text = if settings.len() == 1 {
        settings.values().next().cloned().unwrap_or_default()
    } else {
        serde_json::to_string(settings)?
    };
    let meta = tables::meta("llc estimate", inputs, &[("llc_settings", settings_text)]);
    tables::llc::write_estimates(done, summary, trace, &meta)
}
