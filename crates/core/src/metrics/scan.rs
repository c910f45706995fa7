/*!
The `checkpoint-scan` stage: per checkpoint, losses and accuracies recomputed from the weights,
parameter norms, the Fourier spectrum of the operand token embeddings, its key frequencies and
Nanda's restricted and excluded losses.

Output: the main table (`tables::analysis::SCAN`, one row per checkpoint) at `--out`, and two
long detail tables beside it (see [`tables::sibling`]): `<stem>_spectrum.parquet`
(`SCAN_SPECTRUM`, one row per checkpoint and frequency) and `<stem>_norms.parquet`
(`SCAN_NORMS`, one row per checkpoint and tensor). The detail tables are written first and the
main table last, so a present main table means a complete set.
*/

use std::path::{Path, PathBuf};

use anyhow::Result;
use polars::prelude::{Column, DataFrame};

use super::{fourier, operand_embeddings, Evaluation};
use crate::ckpt::Checkpoint;
use crate::run::{map_checkpoints, RowKey, StageOptions};
use crate::tables::{self, analysis, ids::key_columns, sibling};

/// Everything `checkpoint-scan` measures on one checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanRecord {
    /// Row key.
    pub key: RowKey,
    /// (loss, accuracy) on the training rows; NaN for a foreign checkpoint.
    pub train: (f64, f64),
    /// (loss, accuracy) on the validation rows; NaN for a foreign checkpoint or an empty split.
    pub val: (f64, f64),
    /// (loss, accuracy) on all pairs.
    pub all: (f64, f64),
    /// L2 norm of all parameters.
    pub param_norm: f64,
    /// L2 norm of each tensor, by name.
    pub tensor_norms: Vec<(String, f64)>,
    /// Energy of each frequency `k = 0..=⌊p/2⌋` of the operand token embeddings.
    pub spectrum: Vec<f64>,
    /// Key frequencies (see [`fourier::key_frequencies`]).
    pub key_freqs: Vec<usize>,
    /// Loss on all pairs of the restricted logits.
    pub restricted_loss: f64,
    /// Loss on the training rows (all pairs if foreign) of the excluded logits.
    pub excluded_loss: f64,
}

impl ScanRecord {
    /// Share of the non-constant energy held by the key frequencies.
    pub fn key_energy_share(&self) -> f64 {
        let s = fourier::shares(&self.spectrum);
        self.key_freqs.iter().map(|&k| s[k]).sum()
    }
}

/// Measures one checkpoint.
pub fn scan_checkpoint(ckpt: &Checkpoint) -> Result<ScanRecord> {
    let ev = Evaluation::new(ckpt)?;
    let m = &ckpt.model;
    let all_rows = ev.data.all_rows();
    let nan = (f64::NAN, f64::NAN);
    let (train, val) = if ev.has_split {
        (ev.loss_accuracy(&ev.logits, &ev.data.train), ev.loss_accuracy(&ev.logits, &ev.data.val))
    } else {
        (nan, nan)
    };
    let all = ev.loss_accuracy(&ev.logits, &all_rows);

    let (_, w_e) = operand_embeddings(ckpt)?;
    let spectrum = fourier::embedding_spectrum(&w_e, m.d_model, m.vocab, m.p);
    let key_freqs = fourier::key_frequencies(&spectrum);
    let (restricted, excluded) = fourier::ablate_sum_frequencies(&ev.logits, ev.vocab, m.p, &key_freqs);
    let excluded_rows = if ev.has_split { &ev.data.train } else { &all_rows };
    Ok(ScanRecord {
        key: RowKey::of(ckpt),
        train,
        val,
        all,
        param_norm: ckpt.params.norm()?,
        tensor_norms: ckpt.params.norms()?,
        spectrum,
        restricted_loss: ev.loss_accuracy(&restricted, &all_rows).0,
        excluded_loss: ev.loss_accuracy(&excluded, excluded_rows).0,
        key_freqs,
    })
}

/// The three scan tables.
#[derive(Debug, Clone)]
pub struct ScanTables {
    /// `SCAN`: one row per checkpoint.
    pub main: DataFrame,
    /// `SCAN_SPECTRUM`: one row per checkpoint and frequency.
    pub spectrum: DataFrame,
    /// `SCAN_NORMS`: one row per checkpoint and tensor.
    pub norms: DataFrame,
}

/// Builds the tables from records (in record order).
pub fn frames(records: &[ScanRecord]) -> Result<ScanTables> {
    let n = records.len();
    let f = |g: fn(&ScanRecord) -> f64| records.iter().map(g).collect::<Vec<f64>>();
    let mut cols = key_columns(records.iter().map(|r| &r.key));
    cols.extend([
        Column::new("train_loss".into(), f(|r| r.train.0)),
        Column::new("train_accuracy".into(), f(|r| r.train.1)),
        Column::new("val_loss".into(), f(|r| r.val.0)),
        Column::new("val_accuracy".into(), f(|r| r.val.1)),
        Column::new("all_loss".into(), f(|r| r.all.0)),
        Column::new("all_accuracy".into(), f(|r| r.all.1)),
        Column::new("param_norm".into(), f(|r| r.param_norm)),
        Column::new("key_freqs".into(), records.iter().map(|r| super::freq_list(&r.key_freqs)).collect::<Vec<_>>()),
        Column::new("n_key_freqs".into(), records.iter().map(|r| r.key_freqs.len() as i64).collect::<Vec<_>>()),
        Column::new("key_energy_share".into(), f(ScanRecord::key_energy_share)),
        Column::new("restricted_loss".into(), f(|r| r.restricted_loss)),
        Column::new("excluded_loss".into(), f(|r| r.excluded_loss)),
    ]);
    let main = DataFrame::new(n, cols)?;

    let mut keys = Vec::new();
    let (mut k, mut norm, mut share, mut is_key) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in records {
        let s = fourier::shares(&r.spectrum);
        for (freq, e) in r.spectrum.iter().enumerate() {
            keys.push(&r.key);
            k.push(freq as i64);
            norm.push(e.sqrt());
            share.push(s[freq]);
            is_key.push(r.key_freqs.contains(&freq));
        }
    }
    let len = keys.len();
    let mut cols = key_columns(keys.into_iter());
    cols.extend([
        Column::new("k".into(), k),
        Column::new("norm".into(), norm),
        Column::new("share".into(), share),
        Column::new("is_key".into(), is_key),
    ]);
    let spectrum = DataFrame::new(len, cols)?;

    let mut keys = Vec::new();
    let (mut tensor, mut tnorm) = (Vec::new(), Vec::new());
    for r in records {
        for (name, v) in &r.tensor_norms {
            keys.push(&r.key);
            tensor.push(name.as_str());
            tnorm.push(*v);
        }
    }
    let len = keys.len();
    let mut cols = key_columns(keys.into_iter());
    cols.extend([Column::new("tensor".into(), tensor), Column::new("norm".into(), tnorm)]);
    let norms = DataFrame::new(len, cols)?;
    Ok(ScanTables { main, spectrum, norms })
}

/// Paths of the three tables for a main table at `out`: (main, spectrum, norms).
pub fn output_paths(out: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (out.to_path_buf(), sibling(out, "spectrum"), sibling(out, "norms"))
}

/// The whole stage: expands `inputs` (run directories or checkpoint files), scans every
/// checkpoint and writes the tables (detail tables first, the main table at `out` last).
pub fn run(inputs: &[PathBuf], out: &Path, opts: &StageOptions) -> Result<Vec<ScanRecord>> {
    let paths = crate::ckpt::expand_inputs(inputs)?;
    tracing::info!(checkpoints = paths.len(), out = %out.display(), "checkpoint-scan");
    let records = map_checkpoints(&paths, opts, "checkpoint-scan", scan_checkpoint)?;
    let mut t = frames(&records)?;
    let meta = tables::meta("checkpoint-scan", &paths, &[("key_factor", fourier::KEY_FACTOR.to_string())]);
    let (main, spectrum, norms) = output_paths(out);
    tables::write_parquet(&mut t.spectrum, &analysis::SCAN_SPECTRUM, &spectrum, &meta)?;
    tables::write_parquet(&mut t.norms, &analysis::SCAN_NORMS, &norms, &meta)?;
    tables::write_parquet(&mut t.main, &analysis::SCAN, &main, &meta)?;
    Ok(records)
}
