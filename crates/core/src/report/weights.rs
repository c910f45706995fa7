//! The figures that need a model's weights: the correct-logit table over all pairs, and the
//! embedding spectrum when no `scan_spectrum` table was given.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};

use crate::ckpt;
use crate::metrics::fourier;
use crate::run;

/// The correct-class logit of every pair, arranged by `(a + b) mod p` (rows) and
/// `(a − b) mod p` (columns): the layout of the paper's distance-irrelevance table.
#[derive(Debug, Clone, PartialEq)]
pub struct LogitTable {
    /// Modulus.
    pub p: usize,
    /// Step of the checkpoint, when known.
    pub step: Option<u64>,
    /// Row-major `p × p`: `values[((a + b) mod p) · p + (a − b) mod p]`.
    pub values: Vec<f64>,
    /// The dataset's operation (the table's layout is meant for addition).
    pub operation: String,
}

/// The newest checkpoint of a run directory (`None` when it has none).
pub fn final_checkpoint(run_dir: &Path) -> Result<Option<PathBuf>> {
    let folder = run_dir.join("checkpoints");
    if !folder.is_dir() && !run_dir.is_dir() {
        return Ok(None);
    }
    Ok(ckpt::list_run(run_dir)?.pop().map(|(_, p)| p))
}

/// Loads a checkpoint and tabulates its correct-class logits over all `p²` pairs.
pub fn correct_logit_table(path: &Path) -> Result<LogitTable> {
    let c = ckpt::load(path)?;
    let model = c.transformer()?;
    let (data, _) = run::dataset_for(&c)?;
    let p = c.model.p;
    if data.len() != p * p {
        bail!("{}: the dataset has {} rows, expected p² = {}", path.display(), data.len(), p * p);
    }
    let (x, _) = data.batch(&data.all_rows(), &Device::Cpu)?;
    let logits = model
        .forward(&x)
        .and_then(|l| l.to_dtype(DType::F64))
        .and_then(|l| l.to_vec2::<f64>())
        .with_context(|| format!("{}: forward pass over all pairs", path.display()))?;
    let mut values = vec![f64::NAN; p * p];
    for (i, row) in logits.iter().enumerate() {
        let (a, b) = (i / p, i % p);
        let label = data.labels[i] as usize;
        values[((a + b) % p) * p + (a + p - b) % p] = row[label];
    }
    Ok(LogitTable { p, step: c.step, values, operation: data.config.operation.name().to_string() })
}

/// An embedding spectrum: shares of the non-constant energy for `k = 1..=⌊p/2⌋`.
#[derive(Debug, Clone, PartialEq)]
pub struct Spectrum {
    /// Step of the checkpoint (−1 when unknown).
    pub step: i64,
    /// `(k, share, is_key)`, by increasing `k`.
    pub entries: Vec<(i64, f64, bool)>,
}

/// The embedding spectrum of a checkpoint (the same functions checkpoint-scan uses).
pub fn spectrum_from_checkpoint(path: &Path) -> Result<Spectrum> {
    let c = ckpt::load(path)?;
    let w = c
        .params
        .get("embed.W_E")
        .with_context(|| format!("{}: no tensor embed.W_E", path.display()))?;
    let (d, vocab) = w.as_tensor().dims2()?;
    let flat: Vec<f64> = w.as_tensor().to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let energy = fourier::embedding_spectrum(&flat, d, vocab, c.model.p);
    let shares = fourier::shares(&energy);
    let key = fourier::key_frequencies(&energy);
    Ok(Spectrum {
        step: c.step.map_or(-1, |s| s as i64),
        entries: (1..shares.len()).map(|k| (k as i64, shares[k], key.contains(&k))).collect(),
    })
}
