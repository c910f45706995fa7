//! `train`: trains one run of an experiment, with checkpoints and a per-step metrics table.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use pizza_core::{cli, data::Dataset, train};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Train one run (one point of the experiment's grid); resumes if OUT holds its checkpoints.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
    #[command(flatten)]
    config: cli::ConfigArgs,
    /// Which run of the grid, e.g. `alpha0_seed1` (needed when the grid has several).
    #[arg(long, value_name = "ID")]
    run: Option<String>,
    /// Dataset table from gen-data; checked against the config. Generated in memory when absent.
    #[arg(long, value_name = "PARQUET")]
    data: Option<PathBuf>,
    /// Run directory (checkpoints/, metrics.parquet, config.resolved.yaml).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

fn run(args: Args) -> Result<()> {
    let run = args.config.load_run(args.run.as_deref())?;
    train::check_memory(&run.config)?;
    let data = match &args.data {
        Some(path) => Dataset::read_checked(path, &run.config.data)?,
        None => Dataset::generate(&run.config.data),
    };
    tracing::info!(run = %run.id, p = run.config.data.p, alpha = run.config.model.alpha, steps = run.config.train.steps, "training");
    let started = std::time::Instant::now();
    let s = train::run(&run.config, &run.id, &data, &train::RunDir::new(&args.out))?;
    tracing::info!(
        first_train_acc_1 = ?s.first_train_acc_1,
        first_val_acc_1 = ?s.first_val_acc_1,
        final_val_acc = s.final_val_acc,
        resumed_from = s.resumed_from,
        seconds = started.elapsed().as_secs_f64(),
        "finished {}",
        args.out.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    cli::init_logging();
    cli::exit("train", run(Args::parse()))
}
