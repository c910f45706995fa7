//! The analysis tables: `checkpoint-scan` (main table plus the spectrum and parameter-norm
//! detail tables, written from [`ScanRecord`]s) and `symmetry` (main table plus the per-frequency
//! table, from [`SymmetryRecord`]s), with the readers the report uses ([`read_spectrum`],
//! [`read_symmetry`]). Every table starts with the same key columns (`super::ids`);
//! `docs/tables-analysis.md` documents how each value is computed. The detail tables are written
//! first and the main table last, so a present main table means a complete set.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use polars::prelude::{Column as PlColumn, DataFrame};

use super::ids::{key_columns, read_keys, CHECKPOINT, RUN_ID_COLUMNS as ID, STEP};
use super::{col_bool, col_f64, col_i64, col_list_i64, col_str, list_i64, read_parquet, sibling, write_parquet, col, ColType::*, Schema};
use crate::metrics::fourier;
use crate::metrics::scan::ScanRecord;
use crate::metrics::symmetry::{FreqFve, SymmetryRecord};
use crate::run::RowKey;

/// `scan.parquet` (checkpoint-scan): one row per checkpoint.
pub const SCAN: Schema = Schema {
    name: "scan",
    columns: &[
        ID[0], ID[1], ID[2], ID[3], ID[4], ID[5], ID[6], STEP, CHECKPOINT,
        col("train_loss", F64, "mean cross-entropy (float64) on the run's training rows; NaN for a foreign checkpoint"),
        col("train_accuracy", F64, "accuracy on the training rows; NaN for a foreign checkpoint"),
        col("val_loss", F64, "mean cross-entropy on the validation rows; NaN for a foreign checkpoint or an empty split"),
        col("val_accuracy", F64, "accuracy on the validation rows; NaN for a foreign checkpoint or an empty split"),
        col("all_loss", F64, "mean cross-entropy on all p² pairs"),
        col("all_accuracy", F64, "accuracy on all p² pairs"),
        col("param_norm", F64, "L2 norm of all parameters together"),
        col("key_freqs", ListI64, "key frequencies of the token embedding, ascending (empty list: none)"),
        col("n_key_freqs", I64, "number of key frequencies"),
        col("key_energy_share", F64, "share of the embedding's non-constant Fourier energy in the key frequencies"),
        col("restricted_loss", F64, "loss on all pairs of the logits restricted to the key frequencies' cos/sin(w(a+b)) components plus each class's mean"),
        col("excluded_loss", F64, "loss on the training rows (all pairs if foreign) of the logits with those components removed"),
    ],
};

/// `scan_spectrum.parquet` (beside `scan.parquet`): one row per checkpoint and frequency.
pub const SCAN_SPECTRUM: Schema = Schema {
    name: "scan_spectrum",
    columns: &[
        ID[0], ID[1], ID[2], ID[3], ID[4], ID[5], ID[6], STEP, CHECKPOINT,
        col("k", I64, "frequency, 0..=floor(p/2), of the operand token embeddings along the token axis"),
        col("norm", F64, "norm of frequency k: sqrt of the energy in the unit cos_k and sin_k directions, summed over d_model"),
        col("share", F64, "share of the non-constant energy (0 for k = 0)"),
        col("is_key", Bool, "k is a key frequency"),
    ],
};

/// `scan_norms.parquet` (beside `scan.parquet`): one row per checkpoint and parameter tensor.
pub const SCAN_NORMS: Schema = Schema {
    name: "scan_norms",
    columns: &[
        ID[0], ID[1], ID[2], ID[3], ID[4], ID[5], ID[6], STEP, CHECKPOINT,
        col("tensor", Str, "parameter name (the released checkpoints' names, e.g. `blocks.0.mlp.W_in`)"),
        col("norm", F64, "L2 (Frobenius) norm of the tensor"),
    ],
};

/// `symmetry.parquet` (symmetry): one row per checkpoint.
pub const SYMMETRY: Schema = Schema {
    name: "symmetry",
    columns: &[
        ID[0], ID[1], ID[2], ID[3], ID[4], ID[5], ID[6], STEP, CHECKPOINT,
        col("accuracy", F64, "accuracy on all p² pairs"),
        col("gradient_symmetry", F64, "mean cosine between dQ_c/de_a and dQ_c/de_b over the triples (a, b, c)"),
        col("gradient_symmetry_exact", Bool, "true: all p³ triples; false: a seeded uniform sample"),
        col("gradient_symmetry_triples", I64, "number of triples averaged (p³ when exact, analysis.sample_triples otherwise)"),
        col("distance_irrelevance", F64, "distance irrelevance of the correct-class logit"),
        col("distance_irrelevance_top_wrong", F64, "distance irrelevance of the largest wrong logit"),
        col("circularity", F64, "mean circle score of the first four principal components of the operand token embeddings"),
        col("fve_clock", F64, "fraction of variance of the (per-pair centred) logits explained by cos(w(a+b-c)) at the key frequencies"),
        col("fve_pizza", F64, "the same for the Pizza form 2|cos(w(a-b)/2)|(|cos(w(a+b-c)/2)|-|sin(w(a+b-c)/2)|)"),
        col("key_freqs", ListI64, "key frequencies used for the FVEs (same rule as checkpoint-scan), ascending"),
        col("n_key_freqs", I64, "number of key frequencies"),
        col("solution", Str, "`pizza`, `clock`, `non-circular` or `unclear` (thresholds in docs/tables-analysis.md)"),
    ],
};

/// `symmetry_freqs.parquet` (beside `symmetry.parquet`): one row per checkpoint and frequency
/// `k = 1..=floor(p/2)`.
pub const SYMMETRY_FREQS: Schema = Schema {
    name: "symmetry_freqs",
    columns: &[
        ID[0], ID[1], ID[2], ID[3], ID[4], ID[5], ID[6], STEP, CHECKPOINT,
        col("k", I64, "frequency"),
        col("share", F64, "share of the embedding's non-constant Fourier energy"),
        col("is_key", Bool, "k is a key frequency"),
        col("fve_clock", F64, "FVE of the centred logits by the Clock form at this frequency alone"),
        col("fve_pizza", F64, "FVE of the centred logits by the Pizza form at this frequency alone"),
    ],
};

/// Every analysis schema, for documentation and tests.
pub const ALL: &[&Schema] = &[&SCAN, &SCAN_SPECTRUM, &SCAN_NORMS, &SYMMETRY, &SYMMETRY_FREQS];

/// Paths of the three scan tables for a main table at `out`: (main, spectrum, norms).
pub fn scan_paths(out: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (out.to_path_buf(), sibling(out, "spectrum"), sibling(out, "norms"))
}

/// Paths of the two symmetry tables for a main table at `out`: (main, freqs).
pub fn symmetry_paths(out: &Path) -> (PathBuf, PathBuf) {
    (out.to_path_buf(), sibling(out, "freqs"))
}

fn freqs(v: &[usize]) -> Vec<i64> {
    v.iter().map(|&k| k as i64).collect()
}

/// Writes the three scan tables of `records` (in record order) for a main table at `out`.
pub fn write_scan(records: &[ScanRecord], out: &Path, meta: &BTreeMap<String, String>) -> Result<()> {
    let n = records.len();
    let f = |g: fn(&ScanRecord) -> f64| records.iter().map(g).collect::<Vec<f64>>();
    let mut cols = key_columns(records.iter().map(|r| &r.key));
    cols.extend([
        PlColumn::new("train_loss".into(), f(|r| r.train.0)),
        PlColumn::new("train_accuracy".into(), f(|r| r.train.1)),
        PlColumn::new("val_loss".into(), f(|r| r.val.0)),
        PlColumn::new("val_accuracy".into(), f(|r| r.val.1)),
        PlColumn::new("all_loss".into(), f(|r| r.all.0)),
        PlColumn::new("all_accuracy".into(), f(|r| r.all.1)),
        PlColumn::new("param_norm".into(), f(|r| r.param_norm)),
        list_i64("key_freqs", records.iter().map(|r| freqs(&r.key_freqs))),
        PlColumn::new("n_key_freqs".into(), records.iter().map(|r| r.key_freqs.len() as i64).collect::<Vec<_>>()),
        PlColumn::new("key_energy_share".into(), f(ScanRecord::key_energy_share)),
        PlColumn::new("restricted_loss".into(), f(|r| r.restricted_loss)),
        PlColumn::new("excluded_loss".into(), f(|r| r.excluded_loss)),
    ]);
    let mut main = DataFrame::new(n, cols)?;

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
        PlColumn::new("k".into(), k),
        PlColumn::new("norm".into(), norm),
        PlColumn::new("share".into(), share),
        PlColumn::new("is_key".into(), is_key),
    ]);
    let mut spectrum = DataFrame::new(len, cols)?;

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
    cols.extend([PlColumn::new("tensor".into(), tensor), PlColumn::new("norm".into(), tnorm)]);
    let mut norms = DataFrame::new(len, cols)?;

    let (main_path, spectrum_path, norms_path) = scan_paths(out);
    write_parquet(&mut spectrum, &SCAN_SPECTRUM, &spectrum_path, meta)?;
    write_parquet(&mut norms, &SCAN_NORMS, &norms_path, meta)?;
    write_parquet(&mut main, &SCAN, &main_path, meta)
}

/// Writes the two symmetry tables of `records` (in record order) for a main table at `out`.
pub fn write_symmetry(records: &[SymmetryRecord], out: &Path, meta: &BTreeMap<String, String>) -> Result<()> {
    let n = records.len();
    let f = |g: fn(&SymmetryRecord) -> f64| records.iter().map(g).collect::<Vec<f64>>();
    let mut cols = key_columns(records.iter().map(|r| &r.key));
    cols.extend([
        PlColumn::new("accuracy".into(), f(|r| r.accuracy)),
        PlColumn::new("gradient_symmetry".into(), f(|r| r.gradient_symmetry.value)),
        PlColumn::new("gradient_symmetry_exact".into(), records.iter().map(|r| r.gradient_symmetry.exact).collect::<Vec<_>>()),
        PlColumn::new("gradient_symmetry_triples".into(), records.iter().map(|r| r.gradient_symmetry.triples as i64).collect::<Vec<_>>()),
        PlColumn::new("distance_irrelevance".into(), f(|r| r.distance_irrelevance)),
        PlColumn::new("distance_irrelevance_top_wrong".into(), f(|r| r.distance_irrelevance_top_wrong)),
        PlColumn::new("circularity".into(), f(|r| r.circularity)),
        PlColumn::new("fve_clock".into(), f(|r| r.fve_clock)),
        PlColumn::new("fve_pizza".into(), f(|r| r.fve_pizza)),
        list_i64("key_freqs", records.iter().map(|r| freqs(&r.key_freqs))),
        PlColumn::new("n_key_freqs".into(), records.iter().map(|r| r.key_freqs.len() as i64).collect::<Vec<_>>()),
        PlColumn::new("solution".into(), records.iter().map(|r| r.solution.as_str()).collect::<Vec<_>>()),
    ]);
    let mut main = DataFrame::new(n, cols)?;

    let rows: Vec<(&RowKey, &FreqFve)> = records.iter().flat_map(|r| r.freqs.iter().map(move |f| (&r.key, f))).collect();
    let mut cols = key_columns(rows.iter().map(|(k, _)| *k));
    cols.extend([
        PlColumn::new("k".into(), rows.iter().map(|(_, f)| f.k as i64).collect::<Vec<_>>()),
        PlColumn::new("share".into(), rows.iter().map(|(_, f)| f.share).collect::<Vec<_>>()),
        PlColumn::new("is_key".into(), rows.iter().map(|(_, f)| f.is_key).collect::<Vec<_>>()),
        PlColumn::new("fve_clock".into(), rows.iter().map(|(_, f)| f.fve_clock).collect::<Vec<_>>()),
        PlColumn::new("fve_pizza".into(), rows.iter().map(|(_, f)| f.fve_pizza).collect::<Vec<_>>()),
    ]);
    let mut freqs = DataFrame::new(rows.len(), cols)?;

    let (main_path, freqs_path) = symmetry_paths(out);
    write_parquet(&mut freqs, &SYMMETRY_FREQS, &freqs_path, meta)?;
    write_parquet(&mut main, &SYMMETRY, &main_path, meta)
}

/// One row of [`SCAN_SPECTRUM`].
#[derive(Debug, Clone, PartialEq)]
pub struct SpectrumRow {
    /// Run, step and checkpoint.
    pub key: RowKey,
    /// Frequency.
    pub k: i64,
    /// Norm of the frequency.
    pub norm: f64,
    /// Share of the non-constant energy.
    pub share: f64,
    /// Whether `k` is a key frequency.
    pub is_key: bool,
}

/// Every row of a `scan_spectrum` table.
pub fn read_spectrum(path: &Path) -> Result<Vec<SpectrumRow>> {
    let df = read_parquet(path, &SCAN_SPECTRUM)?;
    let (k, norm) = (col_i64(&df, "k", path)?, col_f64(&df, "norm", path)?);
    let (share, is_key) = (col_f64(&df, "share", path)?, col_bool(&df, "is_key", path)?);
    Ok(read_keys(&df, path)?
        .into_iter()
        .enumerate()
        .map(|(i, key)| SpectrumRow { key, k: k[i], norm: norm[i], share: share[i], is_key: is_key[i] })
        .collect())
}

/// One row of [`SYMMETRY`] as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct SymmetryRow {
    /// Run, step and checkpoint.
    pub key: RowKey,
    /// Accuracy on all pairs.
    pub accuracy: f64,
    /// Gradient symmetry.
    pub gradient_symmetry: f64,
    /// Whether it was averaged over all triples.
    pub gradient_symmetry_exact: bool,
    /// Triples averaged.
    pub gradient_symmetry_triples: i64,
    /// Distance irrelevance of the correct logit.
    pub distance_irrelevance: f64,
    /// Distance irrelevance of the largest wrong logit.
    pub distance_irrelevance_top_wrong: f64,
    /// Circularity.
    pub circularity: f64,
    /// Clock-form FVE.
    pub fve_clock: f64,
    /// Pizza-form FVE.
    pub fve_pizza: f64,
    /// Key frequencies, ascending.
    pub key_freqs: Vec<i64>,
    /// `pizza`, `clock`, `non-circular` or `unclear`.
    pub solution: String,
}

/// Every row of a `symmetry` table.
pub fn read_symmetry(path: &Path) -> Result<Vec<SymmetryRow>> {
    let df = read_parquet(path, &SYMMETRY)?;
    let f = |n: &str| col_f64(&df, n, path);
    let (acc, gs, exact, triples) = (f("accuracy")?, f("gradient_symmetry")?, col_bool(&df, "gradient_symmetry_exact", path)?, col_i64(&df, "gradient_symmetry_triples", path)?);
    let (di, dit, circ, clock, pizza) = (f("distance_irrelevance")?, f("distance_irrelevance_top_wrong")?, f("circularity")?, f("fve_clock")?, f("fve_pizza")?);
    let (mut key_freqs, solution) = (col_list_i64(&df, "key_freqs", path)?, col_str(&df, "solution", path)?);
    Ok(read_keys(&df, path)?
        .into_iter()
        .enumerate()
        .map(|(i, key)| SymmetryRow {
            key,
            accuracy: acc[i],
            gradient_symmetry: gs[i],
            gradient_symmetry_exact: exact[i],
            gradient_symmetry_triples: triples[i],
            distance_irrelevance: di[i],
            distance_irrelevance_top_wrong: dit[i],
            circularity: circ[i],
            fve_clock: clock[i],
            fve_pizza: pizza[i],
            key_freqs: std::mem::take(&mut key_freqs[i]),
            solution: solution[i].clone(),
        })
        .collect())
}
