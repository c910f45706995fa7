//! `symmetry`: per checkpoint, the measures that tell Pizza from Clock (gradient symmetry,
//! distance irrelevance, circularity, logit FVEs) and a `solution` label. The work is
//! `pizza_core::metrics::symmetry::run`; tables are documented in docs/tables-analysis.md.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use pizza_core::{cli, metrics, run};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Pizza/Clock measures of checkpoints (run directories or files), one row per checkpoint.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// Run directories (all their checkpoints, in step order) or checkpoint files.
    #[arg(required = true, value_name = "CHECKPOINT_OR_RUN_DIR")]
    inputs: Vec<PathBuf>,
    /// Main table; <stem>_freqs.parquet (per-frequency FVEs) goes beside it.
    #[arg(long, value_name = "PARQUET")]
    out: PathBuf,
    /// Experiment config: its `analysis` section (all p³ triples or a seeded sample).
    #[command(flatten)]
    config: cli::ConfigArgs,
    /// Checkpoints analysed at once (1: one at a time, each on every core).
    #[arg(long, default_value_t = 1, value_name = "N", help_heading = "Performance")]
    jobs: usize,
    /// Do not draw a progress bar.
    #[arg(long, help_heading = "Performance")]
    no_progress: bool,
}

fn run(args: Args) -> Result<()> {
    let cfg = args.config.load()?;
    let Some(_lock) = pizza_core::lock::output(&args.out)? else { return Ok(()) };
    let opts = run::StageOptions { jobs: args.jobs.max(1), progress: !args.no_progress };
    metrics::symmetry::run(&args.inputs, &args.out, &cfg.analysis, &opts).map(|_| ())
}

fn main() -> ExitCode {
    cli::init_logging();
    cli::exit("symmetry", run(Args::parse()))
}
