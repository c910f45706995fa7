//! `gen-data`: writes the modular-arithmetic dataset of an experiment as parquet.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use pizza_core::{cli, data::Dataset};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Write every pair (a, b), its label and its train/validation split as a parquet table.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
    #[command(flatten)]
    config: cli::ConfigArgs,
    /// Output table, e.g. data/default-p59/dataset.parquet.
    #[arg(long, value_name = "PARQUET")]
    out: PathBuf,
}

fn run(args: Args) -> Result<()> {
    let cfg = args.config.load()?;
    let data = Dataset::generate(&cfg.data);
    let meta = [("config".to_string(), cfg.to_json()?), ("config_hash".to_string(), cfg.hash()?)].into();
    data.write(&args.out, &meta)?;
    tracing::info!(
        rows = data.len(),
        train = data.train.len(),
        val = data.val.len(),
        "wrote {}",
        args.out.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    cli::init_logging();
    cli::exit("gen-data", run(Args::parse()))
}
