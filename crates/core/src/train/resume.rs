/*!
Where a run continues from, and when there is nothing left to do.

A run resumes from the newer of
- the newest scheduled checkpoint `checkpoints/step_NNNNNNN.safetensors` that has its optimizer
  state beside it (what a run killed at any moment, even by SIGKILL, always has), and
- the **resume point** that a run stopped by a signal writes at the step it stopped at
  ([`save`]): `<run>/resume.safetensors` (the weights, with the usual metadata and `step`),
  `<run>/resume.optim.safetensors` (the AdamW moments) and the metrics so far in
  `metrics.partial.parquet`.

The resume point lives outside `checkpoints/` and is not named `step_*`: the checkpoints of a run
are exactly its schedule's, since the analysis stages read every one of them and their bytes must
not depend on where a run was interrupted. It is removed as soon as a scheduled checkpoint after
it is written ([`discard`]). Its files are written metrics first, weights last, each atomically,
and it is used only when the optimizer file's step equals the weights' and is newer than every
scheduled checkpoint; a resume point killed half-way through writing is ignored.

Either way the resumed run's bytes equal an uninterrupted run's: a step is a deterministic function
of the weights, the moments and the step number.
*/

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{read_partial, summarize, write_frame, Summary};
use crate::run::RunDir;
use crate::tables::train::MetricsRow;
use crate::ckpt;
use crate::config::Config;
use crate::model::Params;
use crate::optim::AdamW;

/// The resume point's weights file (its optimizer state is [`ckpt::optim_path`] of it).
pub fn path(dir: &RunDir) -> PathBuf {
    dir.dir.join("resume.safetensors")
}

/// Writes the resume point at step `t` (the weights after `t` updates, before update `t`) with
/// the metrics rows so far, and returns its path.
#[allow(clippy::too_many_arguments)]
pub(super) fn save(dir: &RunDir, cfg: &Config, run_id: &str, meta: &BTreeMap<String, String>, t: u64, params: &Params, opt: &AdamW, rows: &[MetricsRow]) -> Result<PathBuf> {
    let weights = path(dir);
    write_frame(rows, cfg, run_id, &dir.partial_metrics(), meta)?;
    ckpt::write_safetensors(&ckpt::optim_path(&weights), &opt.state()?, &BTreeMap::from([("step".to_string(), t.to_string())]))?;
    let mut meta = meta.clone();
    meta.insert("step".into(), t.to_string());
    ckpt::save(&weights, params, &cfg.model_config(), &meta)?;
    Ok(weights)
}

/// Removes the resume point (once a scheduled checkpoint after it exists, or the run finished).
pub(super) fn discard(dir: &RunDir) -> Result<()> {
    let weights = path(dir);
    for p in [weights.clone(), ckpt::optim_path(&weights)] {
        if p.exists() {
            std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    Ok(())
}

/// The step and weights file to resume from, if any (see the module docs); every candidate is
/// checked to belong to this config.
pub(super) fn point(dir: &RunDir, cfg: &Config) -> Result<Option<(u64, PathBuf)>> {
    let scheduled = newest_scheduled(dir, cfg)?;
    let weights = path(dir);
    if !weights.is_file() {
        return Ok(scheduled);
    }
    let meta = match ckpt::read_safetensors(&weights) {
        Ok((_, meta)) => meta,
        Err(e) => {
            tracing::warn!("ignoring an unreadable resume point: {e:#}");
            discard(dir)?;
            return Ok(scheduled);
        }
    };
    check_config(&weights, &meta, cfg, dir)?;
    let step = meta.get("step").and_then(|s| s.parse::<u64>().ok());
    let optim_step = ckpt::read_safetensors(&ckpt::optim_path(&weights)).ok().and_then(|(_, m)| m.get("step").and_then(|s| s.parse::<u64>().ok()));
    match (step, optim_step) {
        (Some(s), Some(o)) if s == o && scheduled.as_ref().is_none_or(|(k, _)| s > *k) => Ok(Some((s, weights))),
        _ => {
            tracing::info!("ignoring the resume point {} (incomplete, or older than the newest checkpoint)", weights.display());
            discard(dir)?;
            Ok(scheduled)
        }
    }
}

/// Newest scheduled checkpoint with optimizer state.
fn newest_scheduled(dir: &RunDir, cfg: &Config) -> Result<Option<(u64, PathBuf)>> {
    if !dir.checkpoints().is_dir() {
        return Ok(None);
    }
    for (step, path) in ckpt::list_run(&dir.checkpoints())?.into_iter().rev() {
        if !ckpt::optim_path(&path).is_file() {
            continue;
        }
        let (_, meta) = ckpt::read_safetensors(&path)?;
        check_config(&path, &meta, cfg, dir)?;
        return Ok(Some((step, path)));
    }
    Ok(None)
}

fn check_config(path: &Path, meta: &BTreeMap<String, String>, cfg: &Config, dir: &RunDir) -> Result<()> {
    let differ = differing_sections(meta, cfg);
    if !differ.is_empty() {
        bail!(
            "{} was written by a run with other training settings ({} differ); delete {} or choose another --out",
            path.display(),
            differ.join(", "),
            dir.dir.display()
        );
    }
    Ok(())
}

/// The sections of [`Config::training_part`] in which the config stored in a checkpoint's
/// metadata differs from `cfg` (all of them when it has none or it does not parse). Only these
/// decide whether a checkpoint belongs to the run: the `llc:` and `analysis:` sections, which the
/// same checkpoint also records, may have been edited since.
fn differing_sections(meta: &BTreeMap<String, String>, cfg: &Config) -> Vec<&'static str> {
    let theirs = meta.get("pizza_config").and_then(|j| Config::from_json(j).ok()).map(|c| c.training_part());
    let ours = cfg.training_part();
    ["data", "model", "train"].into_iter().filter(|k| theirs.as_ref().is_none_or(|t| t.get(k) != ours.get(k))).collect()
}

/// The summary of a run that already finished with this config (`metrics.parquet` and the last
/// scheduled checkpoint with these training settings), after tidying what an interrupted final write may
/// have left (the partial metrics, a resume point); `None` when there is training left to do.
pub(super) fn finished(cfg: &Config, dir: &RunDir) -> Result<Option<Summary>> {
    let last = dir.checkpoints().join(ckpt::checkpoint_name(cfg.train.steps));
    if !dir.metrics().is_file() || !last.is_file() {
        return Ok(None);
    }
    let (_, meta) = ckpt::read_safetensors(&last)?;
    if !differing_sections(&meta, cfg).is_empty() {
        return Ok(None);
    }
    let rows = read_partial(&dir.metrics(), cfg.train.steps + 1)?;
    if dir.partial_metrics().exists() {
        std::fs::remove_file(dir.partial_metrics()).with_context(|| format!("removing {}", dir.partial_metrics().display()))?;
    }
    discard(dir)?;
    Ok(Some(summarize(&rows, cfg.train.steps)))
}
