//! `bench.parquet` (make bench): one row per measurement ([`crate::bench::Row`]).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use polars::prelude::{Column as PlColumn, DataFrame};

use super::{write_parquet, col, ColType::*, Schema};
use crate::bench::Row;

/// `bench.parquet` (make bench): one row per measurement.
pub const BENCH: Schema = Schema {
    name: "bench",
    columns: &[
        col("name", Str, "what was measured: train_step_full_batch, train_step_autograd_reference, sgld_step_b512, sgld_step_full_batch, llc_estimate_checkpoint, train_8_runs_one_process, …"),
        col("implementation", Str, "whose code: pizza (this pipeline), pytorch (torch_reference.py) or devinterp (devinterp_reference.py), measured in the same run"),
        col("p", I64, "modulus"),
        col("rows", I64, "rows per step (batch size)"),
        col("threads", I64, "threads used"),
        col("ms_per_step", F64, "median milliseconds per step (SGLD: wall time over chains × steps; a sweep: wall time over runs × steps; llc_estimate_checkpoint: the whole estimate)"),
        col("ms_min", F64, "fastest step"),
        col("gflop_per_step", F64, "FLOPs per step the factored computation needs (0 where not counted)"),
        col("gflops", F64, "achieved GFLOP/s"),
        col("peak_fraction", F64, "achieved fraction of the float32 peak of `threads` cores"),
        col("peak_rss_mb", F64, "peak resident memory of the process that made the measurement (the largest process of a sweep), MB"),
    ],
};

/// Writes the table.
pub fn write(rows: &[Row], path: &Path) -> Result<()> {
    let n = rows.len();
    let mut df = DataFrame::new(
        n,
        vec![
            PlColumn::new("name".into(), rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>()),
            PlColumn::new("implementation".into(), rows.iter().map(|r| r.implementation.as_str()).collect::<Vec<_>>()),
            PlColumn::new("p".into(), rows.iter().map(|r| r.p as i64).collect::<Vec<_>>()),
            PlColumn::new("rows".into(), rows.iter().map(|r| r.rows as i64).collect::<Vec<_>>()),
            PlColumn::new("threads".into(), rows.iter().map(|r| r.threads as i64).collect::<Vec<_>>()),
            PlColumn::new("ms_per_step".into(), rows.iter().map(|r| r.ms_per_step).collect::<Vec<_>>()),
            PlColumn::new("ms_min".into(), rows.iter().map(|r| r.ms_min).collect::<Vec<_>>()),
            PlColumn::new("gflop_per_step".into(), rows.iter().map(|r| r.gflop_per_step).collect::<Vec<_>>()),
            PlColumn::new("gflops".into(), rows.iter().map(|r| r.gflops).collect::<Vec<_>>()),
            PlColumn::new("peak_fraction".into(), rows.iter().map(|r| r.peak_fraction).collect::<Vec<_>>()),
            PlColumn::new("peak_rss_mb".into(), rows.iter().map(|r| r.peak_rss_mb).collect::<Vec<_>>()),
        ],
    )?;
    write_parquet(&mut df, &BENCH, path, &BTreeMap::new())
}
