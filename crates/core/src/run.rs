/*!
A run and what identifies it: the run directory `train` writes ([`RunDir`]), the identity every
per-run table row carries ([`RunIdent`], [`RowKey`]; their columns are `tables::ids`), the dataset
a checkpoint was trained on ([`dataset_for`]), and the loop the per-checkpoint stages share
([`map_checkpoints`]).

A checkpoint is either ours (it carries its run config, so its identity and its training split
are exact) or one of the paper's released files ("foreign": the paper's config JSON only; no
seed, no split, so every pair is used and unknown values are −1 or NaN).
*/

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;

use crate::ckpt::{self, Checkpoint};
use crate::config::Config;
use crate::data::{DataConfig, Dataset, Operation};

/// Files of one run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    /// The directory.
    pub dir: PathBuf,
}

impl RunDir {
    /// Wraps a path.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        RunDir { dir: dir.into() }
    }
    /// `checkpoints/`.
    pub fn checkpoints(&self) -> PathBuf {
        self.dir.join("checkpoints")
    }
    /// The final metrics table (written last: its presence means the run finished).
    pub fn metrics(&self) -> PathBuf {
        self.dir.join("metrics.parquet")
    }
    /// Metrics so far, rewritten at every checkpoint, for resuming.
    pub fn partial_metrics(&self) -> PathBuf {
        self.dir.join("metrics.partial.parquet")
    }
    /// The resolved config.
    pub fn resolved_config(&self) -> PathBuf {
        self.dir.join("config.resolved.yaml")
    }
}

/// The run-identifying values of one checkpoint: the `RUN_ID_COLUMNS` of every per-run table.
#[derive(Debug, Clone, PartialEq)]
pub struct RunIdent {
    /// Run id (ours), else the file stem (the released files' run ids).
    pub run: String,
    /// Modulus.
    pub p: i64,
    /// Attention rate α.
    pub alpha: f64,
    /// Initialisation seed; −1 for a foreign checkpoint (the paper's seeds are unknown).
    pub seed: i64,
    /// AdamW weight decay; from the paper's config JSON (`weight_decay`) for a foreign
    /// checkpoint, NaN when absent.
    pub weight_decay: f64,
    /// Training fraction; the paper's `frac` for a foreign checkpoint, NaN when absent.
    pub train_frac: f64,
    /// Residual width.
    pub d_model: i64,
}

impl RunIdent {
    /// An id known only by name (tables without the id columns).
    pub fn named(run: &str) -> RunIdent {
        RunIdent { run: run.to_string(), p: 0, alpha: f64::NAN, seed: -1, weight_decay: f64::NAN, train_frac: f64::NAN, d_model: 0 }
    }

    /// The identity of one of our runs, from its config.
    pub fn from_config(cfg: &Config, run: &str) -> RunIdent {
        RunIdent {
            run: run.to_string(),
            p: cfg.data.p as i64,
            alpha: cfg.model.alpha,
            seed: cfg.train.seed as i64,
            weight_decay: cfg.train.weight_decay,
            train_frac: cfg.data.train_frac,
            d_model: cfg.model.d_model as i64,
        }
    }

    /// Identity of any checkpoint (see the field docs for foreign checkpoints).
    pub fn of(ckpt: &Checkpoint) -> RunIdent {
        match &ckpt.run {
            Some(cfg) => RunIdent::from_config(cfg, &ckpt.run_label()),
            None => {
                let paper = paper_config(ckpt);
                let num = |k: &str| paper.as_ref().and_then(|v| v.get(k)).and_then(serde_json::Value::as_f64).unwrap_or(f64::NAN);
                RunIdent {
                    run: ckpt.run_label(),
                    p: ckpt.model.p as i64,
                    alpha: ckpt.model.alpha,
                    seed: -1,
                    weight_decay: num("weight_decay"),
                    train_frac: num("frac"),
                    d_model: ckpt.model.d_model as i64,
                }
            }
        }
    }
}

/// The paper-style config JSON of a checkpoint (metadata `config`), parsed.
fn paper_config(ckpt: &Checkpoint) -> Option<serde_json::Value> {
    ckpt.meta.get("config").and_then(|s| serde_json::from_str(s).ok())
}

/// The `step` key of a checkpoint: our step; for a foreign checkpoint the paper's `epoch` (the
/// released files are the final weights after that many full-batch steps), else −1.
pub fn step_of(ckpt: &Checkpoint) -> i64 {
    match ckpt.step {
        Some(s) => s as i64,
        None => paper_config(ckpt)
            .and_then(|v| v.get("epoch").and_then(serde_json::Value::as_i64))
            .unwrap_or(-1),
    }
}

/// The key of one row of an analysis table.
#[derive(Debug, Clone, PartialEq)]
pub struct RowKey {
    /// Run identity.
    pub ident: RunIdent,
    /// See [`step_of`].
    pub step: i64,
    /// The checkpoint file as given (directories expanded to their files).
    pub checkpoint: String,
}

impl RowKey {
    /// The key of a loaded checkpoint.
    pub fn of(ckpt: &Checkpoint) -> RowKey {
        RowKey { ident: RunIdent::of(ckpt), step: step_of(ckpt), checkpoint: ckpt.path.display().to_string() }
    }
}

/// The dataset a checkpoint was trained on (regenerated from its run config), or all pairs.
pub fn dataset_for(ckpt: &Checkpoint) -> Result<(Dataset, bool)> {
    match &ckpt.run {
        Some(cfg) => {
            if cfg.data.operation != Operation::Add {
                tracing::warn!(
                    "{}: operation is `{}`; the Pizza/Clock measures assume addition",
                    ckpt.path.display(),
                    cfg.data.operation.name()
                );
            }
            Ok((Dataset::generate(&cfg.data), true))
        }
        None => {
            let layout = ckpt.model.layout();
            if layout.separate_vocab && layout.eq_token {
                bail!("{}: a model with both separate vocabularies and the `=` token is not supported", ckpt.path.display());
            }
            Ok((Dataset::generate(&DataConfig::all_pairs(layout)), false))
        }
    }
}

/// How a stage runs over its checkpoints.
#[derive(Debug, Clone)]
pub struct StageOptions {
    /// Checkpoints analysed at once (1: one after the other, each using every core through
    /// rayon; more: that many in parallel, for many small models).
    pub jobs: usize,
    /// Show a progress bar on stderr (hidden anyway when stderr is not a terminal).
    pub progress: bool,
}

impl Default for StageOptions {
    fn default() -> Self {
        StageOptions { jobs: 1, progress: true }
    }
}

/// A stage over checkpoints (`checkpoint-scan`, `symmetry`): expands `inputs` (run directories
/// or checkpoint files), applies `f` to each checkpoint ([`map_checkpoints`]), has `write` write
/// the tables to `out` from the checkpoint files and the results, and logs what it wrote and how
/// long it took.
pub fn checkpoint_stage<R: Send>(
    inputs: &[PathBuf],
    out: &Path,
    opts: &StageOptions,
    stage: &str,
    f: impl Fn(&Checkpoint) -> Result<R> + Sync,
    write: impl FnOnce(&[PathBuf], &[R]) -> Result<()>,
) -> Result<Vec<R>> {
    let started = Instant::now();
    let paths = ckpt::expand_inputs(inputs)?;
    tracing::info!(checkpoints = paths.len(), out = %out.display(), "{stage}");
    let results = map_checkpoints(&paths, opts, stage, f)?;
    write(&paths, &results)?;
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(checkpoints = results.len(), seconds, per_checkpoint = seconds / results.len().max(1) as f64, "wrote {}", out.display());
    Ok(results)
}

/// Loads each checkpoint in turn (or `jobs` at a time) and applies `f`, keeping the input order.
/// Fails on the first checkpoint that cannot be loaded or analysed, naming its file.
pub fn map_checkpoints<R: Send>(
    paths: &[PathBuf],
    opts: &StageOptions,
    stage: &str,
    f: impl Fn(&Checkpoint) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let bar = crate::cli::progress_bar(paths.len() as u64, "{prefix} [{elapsed_precise}] {bar:40} {pos}/{len} checkpoints (eta {eta})", opts.progress);
    bar.set_prefix(stage.to_string());
    let one = |path: &PathBuf| -> Result<R> {
        let started = Instant::now();
        let ckpt = ckpt::load(path)?;
        let r = f(&ckpt).with_context(|| format!("{stage}: analysing {}", path.display()))?;
        tracing::debug!(checkpoint = %path.display(), seconds = started.elapsed().as_secs_f64(), "{stage} done");
        bar.inc(1);
        Ok(r)
    };
    let out = if opts.jobs <= 1 {
        paths.iter().map(one).collect::<Result<Vec<_>>>()
    } else {
        let mut out = Vec::with_capacity(paths.len());
        for group in paths.chunks(opts.jobs) {
            out.extend(group.par_iter().map(one).collect::<Result<Vec<_>>>()?);
        }
        Ok(out)
    };
    bar.finish_and_clear();
    out
}
