/*!
Pizza/Clock metrics and the two analysis stages built on them.

The measures (each in its own file, each a pure function of plain slices or tensors):

- [`gradients`]: `∂Q_c/∂e_a`, `∂Q_c/∂e_b` (closed form for one-layer models, autograd otherwise)
  and the gradient symmetry over all `p³` triples or a seeded sample.
- [`distance`]: distance irrelevance of the correct and of the largest wrong logit.
- [`circularity`]: PCA of the operand token embeddings and the circle score of the first four
  components.
- [`fourier`]: the embedding's Fourier spectrum, key frequencies, Nanda's restricted/excluded
  logits and the Clock/Pizza logit fractions of variance explained.

The stages (one row per checkpoint, keyed by the run's identifying columns, `step` and
`checkpoint`; schemas in `tables::analysis`, documented in `docs/tables-analysis.md`):

- [`scan`]: losses and accuracies on the train/validation/all pairs, parameter norms, the
  embedding spectrum, key frequencies, restricted and excluded loss (`checkpoint-scan`).
- [`symmetry`]: gradient symmetry, distance irrelevance, circularity, logit FVEs and the
  `solution` label (`symmetry`).

Inputs are checkpoints of our runs (with their run config, so the training split is regenerated)
or the paper's released files ("foreign": no run config, no split; every pair is used). This
module shares the per-checkpoint evaluation ([`Evaluation`]) and the stage driver
([`map_checkpoints`]) between the two stages.
*/

pub mod circularity;
pub mod distance;
pub mod fourier;
pub mod gradients;
pub mod scan;
pub mod symmetry;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use polars::prelude::Column;
use rayon::prelude::*;

use crate::ckpt::{self, Checkpoint};
use crate::config::Config;
use crate::data::{DataConfig, Dataset, Operation};

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

    /// The same values as `train::id_columns` for one of our runs.
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

/// Key columns (`RUN_ID_COLUMNS`, `step`, `checkpoint`) for rows with these keys.
pub fn key_columns<'a>(keys: impl Iterator<Item = &'a RowKey> + Clone) -> Vec<Column> {
    let id = keys.clone().map(|k| &k.ident);
    vec![
        Column::new("run".into(), id.clone().map(|i| i.run.as_str()).collect::<Vec<_>>()),
        Column::new("p".into(), id.clone().map(|i| i.p).collect::<Vec<_>>()),
        Column::new("alpha".into(), id.clone().map(|i| i.alpha).collect::<Vec<_>>()),
        Column::new("seed".into(), id.clone().map(|i| i.seed).collect::<Vec<_>>()),
        Column::new("weight_decay".into(), id.clone().map(|i| i.weight_decay).collect::<Vec<_>>()),
        Column::new("train_frac".into(), id.clone().map(|i| i.train_frac).collect::<Vec<_>>()),
        Column::new("d_model".into(), id.map(|i| i.d_model).collect::<Vec<_>>()),
        Column::new("step".into(), keys.clone().map(|k| k.step).collect::<Vec<_>>()),
        Column::new("checkpoint".into(), keys.map(|k| k.checkpoint.as_str()).collect::<Vec<_>>()),
    ]
}

/// A checkpoint's model evaluated on every pair: what both stages start from.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The dataset: the run's (with its split) or, for a foreign checkpoint, every pair with the
    /// model's token layout and no split.
    pub data: Dataset,
    /// Whether `data.train`/`data.val` are the run's real split (false for foreign checkpoints).
    pub has_split: bool,
    /// Logits at the last position, row-major `p² × vocab`, in float64 (computed in float32).
    pub logits: Vec<f64>,
    /// Width of a logit row.
    pub vocab: usize,
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

/// Rows per forward pass when evaluating all pairs.
const EVAL_CHUNK: usize = 8192;

impl Evaluation {
    /// Runs the model (float32, as trained) on every pair.
    pub fn new(ckpt: &Checkpoint) -> Result<Evaluation> {
        let (data, has_split) = dataset_for(ckpt)?;
        let model = gradients::detached_model(&ckpt.params, &ckpt.model, DType::F32)?;
        let vocab = ckpt.model.vocab;
        let rows = data.all_rows();
        let mut logits = Vec::with_capacity(rows.len() * vocab);
        for chunk in rows.chunks(EVAL_CHUNK) {
            let (x, _) = data.batch(chunk, &Device::Cpu)?;
            let l = model.forward(&x)?.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
            logits.extend(l);
        }
        Ok(Evaluation { data, has_split, logits, vocab })
    }

    /// Mean cross-entropy (float64, over the whole vocabulary, as in training) and accuracy on
    /// `rows`, for these logits or replacement logits of the same layout.
    pub fn loss_accuracy(&self, logits: &[f64], rows: &[u32]) -> (f64, f64) {
        loss_accuracy(logits, self.vocab, &self.data.labels, rows)
    }
}

/// Mean cross-entropy and accuracy of row-major logits (`vocab` wide) on `rows`; NaN for no rows.
/// The argmax takes the first of tied maxima.
pub fn loss_accuracy(logits: &[f64], vocab: usize, labels: &[u32], rows: &[u32]) -> (f64, f64) {
    if rows.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let (mut loss, mut hits) = (0.0, 0usize);
    for &r in rows {
        let r = r as usize;
        let row = &logits[r * vocab..(r + 1) * vocab];
        let (arg, max) = row.iter().enumerate().fold((0, f64::NEG_INFINITY), |(i, m), (j, &x)| if x > m { (j, x) } else { (i, m) });
        let lse = max + row.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
        loss += lse - row[labels[r] as usize];
        hits += usize::from(arg == labels[r] as usize);
    }
    (loss / rows.len() as f64, hits as f64 / rows.len() as f64)
}

/// The first `p` columns of `embed.W_E` (the operand tokens) as a row-major `p × d_model` matrix
/// in float64, and `embed.W_E` itself row-major `d_model × vocab`.
pub fn operand_embeddings(ckpt: &Checkpoint) -> Result<(Vec<f64>, Vec<f64>)> {
    let w_e = ckpt.params.get("embed.W_E").context("parameter `embed.W_E` is missing")?.as_tensor();
    let full = w_e.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let tokens = w_e.narrow(1, 0, ckpt.model.p)?.t()?.to_dtype(DType::F64)?.contiguous()?.flatten_all()?.to_vec1::<f64>()?;
    Ok((tokens, full))
}

/// `embed.W_E` as a detached tensor.
pub fn w_e_tensor(ckpt: &Checkpoint) -> Result<Tensor> {
    Ok(ckpt.params.get("embed.W_E").context("parameter `embed.W_E` is missing")?.as_tensor().detach())
}

/// Key frequencies as text, e.g. `"4,11,17"` (empty when there are none).
pub fn freq_list(freqs: &[usize]) -> String {
    freqs.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
}

/// A detail table beside a stage's main table: `DIR/NAME.parquet` → `DIR/NAME_<suffix>.parquet`.
pub fn sibling(out: &Path, suffix: &str) -> PathBuf {
    let stem = out.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "table".into());
    out.with_file_name(format!("{stem}_{suffix}.parquet"))
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

/// Loads each checkpoint in turn (or `jobs` at a time) and applies `f`, keeping the input order.
/// Fails on the first checkpoint that cannot be loaded or analysed, naming its file.
pub fn map_checkpoints<R: Send>(
    paths: &[PathBuf],
    opts: &StageOptions,
    stage: &str,
    f: impl Fn(&Checkpoint) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let bar = if opts.progress { indicatif::ProgressBar::new(paths.len() as u64) } else { indicatif::ProgressBar::hidden() };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{elapsed_precise}] {bar:40} {pos}/{len} checkpoints (eta {eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
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

/// Parquet key-value metadata shared by the analysis tables.
pub fn table_meta(stage: &str, inputs: &[PathBuf], extra: &[(&str, String)]) -> BTreeMap<String, String> {
    let mut meta = BTreeMap::new();
    meta.insert("stage".into(), stage.to_string());
    meta.insert("git_sha".into(), ckpt::git_sha());
    meta.insert("inputs".into(), inputs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join("\n"));
    for (k, v) in extra {
        meta.insert((*k).to_string(), v.clone());
    }
    meta
}
