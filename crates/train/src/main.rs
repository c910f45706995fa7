//! `train`: trains one run of an experiment, with checkpoints and a per-step metrics table.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use pizza_core::run::RunDir;
use pizza_core::{cli, data::Dataset, train};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Train one run (one point of the experiment's grid); resumes if OUT holds its checkpoints.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
    #[command(flatten)]
    config: cli::ConfigArgs,
    /// Which run of the grid, e.g. `alpha0_seed1` (needed when the grid has several). Repeat it,
    /// or give `all`, to train several runs at once in one process, one run per thread; each
    /// then goes to OUT/<id>.
    #[arg(long, value_name = "ID")]
    run: Vec<String>,
    /// Dataset table from gen-data; checked against the config. Generated in memory when absent.
    #[arg(long, value_name = "PARQUET")]
    data: Option<PathBuf>,
    /// Run directory (checkpoints/, metrics.parquet, config.resolved.yaml); with several runs,
    /// the folder that holds one directory per run.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Threads for training several runs at once (default: all cores).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
}

fn run(args: Args) -> Result<()> {
    if args.run.len() > 1 || args.run.first().is_some_and(|r| r == "all") {
        return run_many(args);
    }
    let run = args.config.load_run(args.run.first().map(String::as_str))?;
    train::check_memory(&run.config)?;
    let data = match &args.data {
        Some(path) => Dataset::read_checked(path, &run.config.data)?,
        None => Dataset::generate(&run.config.data),
    };
    tracing::info!(run = %run.id, p = run.config.data.p, alpha = run.config.model.alpha, steps = run.config.train.steps, "training");
    let started = std::time::Instant::now();
    let s = train::run(&run.config, &run.id, &data, &RunDir::new(&args.out))?;
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

fn run_many(args: Args) -> Result<()> {
    let cfg = args.config.load()?;
    let all = cfg.runs()?;
    let picked: Vec<_> = if args.run.iter().any(|r| r == "all") {
        all
    } else {
        args.run.iter().map(|id| cfg.run(Some(id))).collect::<Result<_>>()?
    };
    for r in &picked {
        train::check_memory(&r.config)?;
    }
    let data = match &args.data {
        Some(path) => Dataset::read_checked(path, &cfg.data)?,
        None => Dataset::generate(&cfg.data),
    };
    let jobs: Vec<_> = picked.into_iter().map(|r| {
        let dir = RunDir::new(args.out.join(&r.id));
        (r.config, r.id, dir)
    }).collect();
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    tracing::info!(runs = jobs.len(), threads, "training several runs at once");
    let started = std::time::Instant::now();
    let summaries = train::run_many(&jobs, &data, threads)?;
    for ((_, id, _), s) in jobs.iter().zip(&summaries) {
        tracing::info!(run = %id, first_val_acc_1 = ?s.first_val_acc_1, final_val_acc = s.final_val_acc, "finished");
    }
    tracing::info!(seconds = started.elapsed().as_secs_f64(), "all runs finished");
    Ok(())
}

fn main() -> ExitCode {
    cli::init_logging();
    cli::exit("train", run(Args::parse()))
}
