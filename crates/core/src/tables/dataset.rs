//! `dataset.parquet` (gen-data): one row per pair `(a, b)`, written from a [`Dataset`] and read
//! back as its split and labels (which `Dataset::read_checked` compares with the config).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use polars::prelude::{Column as PlColumn, DataFrame};

use super::{col_i64, col_str, read_parquet, write_parquet, col, ColType::*, Schema};
use crate::data::{Dataset, Split};

/// `dataset.parquet` (gen-data): one row per pair `(a, b)`.
pub const DATASET: Schema = Schema {
    name: "dataset",
    columns: &[
        col("row", I64, "row index, a·p + b"),
        col("a", I64, "first operand"),
        col("b", I64, "second operand"),
        col("c", I64, "label, op(a, b) mod p"),
        col("split", Str, "`train` or `val`"),
        col("x0", I64, "token at position 0 (a)"),
        col("x1", I64, "token at position 1 (b, or b+p with separate vocabularies); x2 = p when the `=` token is on"),
    ],
};

/// Writes the dataset's table with `meta` as its metadata.
pub fn write(data: &Dataset, path: &Path, meta: &BTreeMap<String, String>) -> Result<()> {
    let p = data.config.p as i64;
    let n = data.len();
    let mut split = vec![Split::Val; n];
    for &r in &data.train {
        split[r as usize] = Split::Train;
    }
    let mut cols = vec![
        PlColumn::new("row".into(), (0..n as i64).collect::<Vec<_>>()),
        PlColumn::new("a".into(), (0..n as i64).map(|i| i / p).collect::<Vec<_>>()),
        PlColumn::new("b".into(), (0..n as i64).map(|i| i % p).collect::<Vec<_>>()),
        PlColumn::new("c".into(), data.labels.iter().map(|&c| c as i64).collect::<Vec<_>>()),
        PlColumn::new("split".into(), split.iter().map(|s| s.as_str()).collect::<Vec<_>>()),
    ];
    for pos in 0..data.n_ctx {
        let name = format!("x{pos}");
        let v: Vec<i64> = (0..n).map(|i| data.tokens[i * data.n_ctx + pos] as i64).collect();
        cols.push(PlColumn::new(name.as_str().into(), v));
    }
    write_parquet(&mut DataFrame::new(n, cols)?, &DATASET, path, meta)
}

/// The split and the label of every row of a dataset table.
pub fn read(path: &Path) -> Result<(Vec<Split>, Vec<i64>)> {
    let df = read_parquet(path, &DATASET)?;
    let split = col_str(&df, "split", path)?
        .iter()
        .enumerate()
        .map(|(i, s)| s.parse().with_context(|| format!("{}: row {i} of column `split`", path.display())))
        .collect::<Result<Vec<Split>>>()?;
    Ok((split, col_i64(&df, "c", path)?))
}
