//! `report`: turns an experiment's parquet tables (and final checkpoints) into a self-contained
//! HTML page with every figure as SVG and PNG. All the work is in `pizza_core::report`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Parser;
use pizza_core::{cli, report};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Write the HTML report of an experiment: index.html with every figure beside it as SVG and PNG.
///
/// Tables are found by file name: metrics.parquet, scan_spectrum.parquet, symmetry.parquet,
/// llc.parquet, llc_trace.parquet, llc_calibration.parquet and released*.parquet. A figure whose
/// table is missing is skipped with a note in the page.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// Experiment directory: reads DIR/*.parquet, DIR/released/*.parquet and
    /// DIR/runs/*/*.parquet, and checkpoints from DIR/runs/<run>/checkpoints/.
    #[arg(long, value_name = "DIR", help_heading = "Inputs")]
    dir: Option<PathBuf>,
    /// More table files, recognised by file name (in addition to those found under --dir).
    #[arg(value_name = "TABLE", help_heading = "Inputs")]
    tables: Vec<PathBuf>,
    /// The released checkpoints' symmetry table, drawn as reference points (default: the
    /// reference values of the paper's Model A and Model B).
    #[arg(long, value_name = "PARQUET", help_heading = "Inputs")]
    released: Option<PathBuf>,
    /// Do not load checkpoints (skips the correct-logit tables and the spectrum fallback).
    #[arg(long, help_heading = "Inputs")]
    no_checkpoints: bool,
    /// Output directory (default: DIR/report).
    #[arg(long, value_name = "DIR", help_heading = "Output")]
    out: Option<PathBuf>,
    /// Checkpoints per run shown in the SGLD trace figures.
    #[arg(long, value_name = "N", default_value_t = 4, help_heading = "Output")]
    traces_per_run: usize,
    /// Compare Pizza against the other runs at the checkpoint of this step (default: each run's
    /// last checkpoint).
    #[arg(long, value_name = "STEP", help_heading = "Output")]
    compare_step: Option<i64>,
}

fn run(args: Args) -> Result<()> {
    let out = match (&args.out, &args.dir) {
        (Some(o), _) => o.clone(),
        (None, Some(d)) => d.join("report"),
        (None, None) => bail!("give --out DIR (or --dir, to write DIR/report)"),
    };
    if args.dir.is_none() && args.tables.is_empty() {
        bail!("nothing to report on: give --dir DIR and/or table files");
    }
    let opts = report::Options {
        dir: args.dir,
        tables: args.tables,
        released: args.released,
        out,
        traces_per_run: args.traces_per_run,
        no_checkpoints: args.no_checkpoints,
        compare_at: args.compare_step.map_or(report::compare::CompareAt::Last, report::compare::CompareAt::Step),
    };
    let o = report::run(&opts)?;
    for (what, why) in &o.skipped {
        tracing::info!("skipped {what}: {why}");
    }
    println!("{}", o.index.display());
    Ok(())
}

fn main() -> ExitCode {
    cli::init_logging();
    cli::exit("report", run(Args::parse()))
}

#[test]
fn every_flag_is_documented() {
    cli::assert_documented(&<Args as clap::CommandFactory>::command());
}
