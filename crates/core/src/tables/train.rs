//! `metrics.parquet` (train): one row per step and split, with the run's identity.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use polars::prelude::{Column as PlColumn, DataFrame};

use super::ids::{ident_columns, read_idents, RUN_ID_COLUMNS as ID};
use super::{col_f64, col_i64, col_str, read_parquet, write_parquet, col, ColType::*, Schema};
use crate::data::Split;
use crate::run::RunIdent;

/// `metrics.parquet` (train): one row per (step, split).
pub const TRAIN_METRICS: Schema = Schema {
    name: "train_metrics",
    columns: &[
        ID[0], ID[1], ID[2], ID[3], ID[4], ID[5], ID[6],
        col("step", I64, "optimizer steps taken before these weights (checkpoint `step` is the same weights)"),
        col("split", Str, "`train` or `val`"),
        col("loss", F64, "mean cross-entropy (float64) on the split"),
        col("accuracy", F64, "fraction of rows whose argmax logit is the label"),
        col("lr", F64, "learning rate applied at this step (warm-up included)"),
        col("param_norm", F64, "L2 norm of all parameters"),
    ],
};

/// One row of [`TRAIN_METRICS`] (the run's identity aside).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsRow {
    /// Optimizer steps taken.
    pub step: i64,
    /// The rows the loss is measured on.
    pub split: Split,
    /// Mean cross-entropy.
    pub loss: f64,
    /// Accuracy.
    pub accuracy: f64,
    /// Learning rate of this step.
    pub lr: f64,
    /// L2 norm of all parameters.
    pub param_norm: f64,
}

/// Writes one run's rows.
pub fn write_metrics(ident: &RunIdent, rows: &[MetricsRow], path: &Path, meta: &BTreeMap<String, String>) -> Result<()> {
    let n = rows.len();
    let mut cols = ident_columns(std::iter::repeat_n(ident, n));
    cols.extend([
        PlColumn::new("step".into(), rows.iter().map(|r| r.step).collect::<Vec<_>>()),
        PlColumn::new("split".into(), rows.iter().map(|r| r.split.as_str()).collect::<Vec<_>>()),
        PlColumn::new("loss".into(), rows.iter().map(|r| r.loss).collect::<Vec<_>>()),
        PlColumn::new("accuracy".into(), rows.iter().map(|r| r.accuracy).collect::<Vec<_>>()),
        PlColumn::new("lr".into(), rows.iter().map(|r| r.lr).collect::<Vec<_>>()),
        PlColumn::new("param_norm".into(), rows.iter().map(|r| r.param_norm).collect::<Vec<_>>()),
    ]);
    write_parquet(&mut DataFrame::new(n, cols)?, &TRAIN_METRICS, path, meta)
}

/// Every row of a metrics table, with its run's identity.
pub fn read_metrics(path: &Path) -> Result<Vec<(RunIdent, MetricsRow)>> {
    let df = read_parquet(path, &TRAIN_METRICS)?;
    let (step, split) = (col_i64(&df, "step", path)?, col_str(&df, "split", path)?);
    let (loss, acc) = (col_f64(&df, "loss", path)?, col_f64(&df, "accuracy", path)?);
    let (lr, norm) = (col_f64(&df, "lr", path)?, col_f64(&df, "param_norm", path)?);
    read_idents(&df, path)?
        .into_iter()
        .enumerate()
        .map(|(i, id)| {
            let split = split[i].parse().with_context(|| format!("{}: row {i} of column `split`", path.display()))?;
            Ok((id, MetricsRow { step: step[i], split, loss: loss[i], accuracy: acc[i], lr: lr[i], param_norm: norm[i] }))
        })
        .collect()
}
