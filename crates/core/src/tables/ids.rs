//! The columns that identify a run and a checkpoint in every per-run table: their schema
//! ([`RUN_ID_COLUMNS`], [`STEP`], [`CHECKPOINT`]), written from [`RunIdent`] and [`RowKey`] and
//! read back into them here and nowhere else.

use std::path::Path;

use anyhow::Result;
use polars::prelude::{Column as PlColumn, DataFrame};

use super::{col_f64, col_i64, col_str, col, ColType::*, Column};
use crate::run::{RowKey, RunIdent};

/// Columns that identify a run in every per-run table (the fields of [`RunIdent`]).
pub const RUN_ID_COLUMNS: &[Column] = &[
    col("run", Str, "run id from the grid, e.g. `alpha0_seed1`"),
    col("p", I64, "modulus"),
    col("alpha", F64, "attention rate α"),
    col("seed", I64, "initialisation seed"),
    col("weight_decay", F64, "AdamW weight decay"),
    col("train_frac", F64, "training fraction"),
    col("d_model", I64, "residual width"),
];

/// The `run` column alone, for the tables keyed by run name only.
pub const RUN: Column = RUN_ID_COLUMNS[0];

/// The checkpoint's step ([`RowKey::step`]).
pub const STEP: Column = col("step", I64, "optimizer steps of the checkpoint; for a released (foreign) checkpoint the paper's `epoch`, else -1");

/// The checkpoint's file ([`RowKey::checkpoint`]).
pub const CHECKPOINT: Column = col("checkpoint", Str, "checkpoint file as given (run directories expanded to their files)");

/// The [`RUN_ID_COLUMNS`] of rows with these identities.
pub(super) fn ident_columns<'a>(ids: impl Iterator<Item = &'a RunIdent> + Clone) -> Vec<PlColumn> {
    vec![
        PlColumn::new("run".into(), ids.clone().map(|i| i.run.as_str()).collect::<Vec<_>>()),
        PlColumn::new("p".into(), ids.clone().map(|i| i.p).collect::<Vec<_>>()),
        PlColumn::new("alpha".into(), ids.clone().map(|i| i.alpha).collect::<Vec<_>>()),
        PlColumn::new("seed".into(), ids.clone().map(|i| i.seed).collect::<Vec<_>>()),
        PlColumn::new("weight_decay".into(), ids.clone().map(|i| i.weight_decay).collect::<Vec<_>>()),
        PlColumn::new("train_frac".into(), ids.clone().map(|i| i.train_frac).collect::<Vec<_>>()),
        PlColumn::new("d_model".into(), ids.map(|i| i.d_model).collect::<Vec<_>>()),
    ]
}

/// The key columns ([`RUN_ID_COLUMNS`], `step`, `checkpoint`) of rows with these keys.
pub(super) fn key_columns<'a>(keys: impl Iterator<Item = &'a RowKey> + Clone) -> Vec<PlColumn> {
    let mut cols = ident_columns(keys.clone().map(|k| &k.ident));
    cols.push(PlColumn::new("step".into(), keys.clone().map(|k| k.step).collect::<Vec<_>>()));
    cols.push(PlColumn::new("checkpoint".into(), keys.map(|k| k.checkpoint.as_str()).collect::<Vec<_>>()));
    cols
}

/// The [`RunIdent`] of every row of a table that has the [`RUN_ID_COLUMNS`].
pub(super) fn read_idents(df: &DataFrame, path: &Path) -> Result<Vec<RunIdent>> {
    let run = col_str(df, "run", path)?;
    let (p, alpha, seed) = (col_i64(df, "p", path)?, col_f64(df, "alpha", path)?, col_i64(df, "seed", path)?);
    let (wd, tf, d) = (col_f64(df, "weight_decay", path)?, col_f64(df, "train_frac", path)?, col_i64(df, "d_model", path)?);
    Ok(run
        .into_iter()
        .enumerate()
        .map(|(i, run)| RunIdent { run, p: p[i], alpha: alpha[i], seed: seed[i], weight_decay: wd[i], train_frac: tf[i], d_model: d[i] })
        .collect())
}

/// The [`RowKey`] of every row of a table that has the key columns.
pub(super) fn read_keys(df: &DataFrame, path: &Path) -> Result<Vec<RowKey>> {
    let step = col_i64(df, "step", path)?;
    let checkpoint = col_str(df, "checkpoint", path)?;
    Ok(read_idents(df, path)?
        .into_iter()
        .zip(step.into_iter().zip(checkpoint))
        .map(|(ident, (step, checkpoint))| RowKey { ident, step, checkpoint })
        .collect())
}
