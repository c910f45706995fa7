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
    #[arg(long, value_name = "PARQUET", required_unless_present = "plan")]
    out: Option<PathBuf>,
    /// Print the experiment's plan as make variables (EXP, RUNS) instead of writing data, and
    /// refresh the per-stage config fragments under ROOT/<exp>/.config/ (the Makefile includes
    /// the plan to know its targets; stage targets depend on the fragments).
    #[arg(long, value_name = "ROOT", num_args = 0..=1, default_missing_value = "data")]
    plan: Option<PathBuf>,
}

fn run(args: Args) -> Result<()> {
    let cfg = args.config.load()?;
    if let Some(root) = &args.plan {
        print!("{}", pizza_core::plan::write(&cfg, root)?);
        return Ok(());
    }
    let Some(out) = args.out else { anyhow::bail!("--out is required (unless --plan)") };
    let Some(_lock) = pizza_core::lock::output(&out)? else { return Ok(()) };
    let data = Dataset::generate(&cfg.data);
    let meta = [("config".to_string(), cfg.to_json()?), ("config_hash".to_string(), cfg.hash()?)].into();
    data.write(&out, &meta)?;
    tracing::info!(
        rows = data.len(),
        train = data.train.len(),
        val = data.val.len(),
        "wrote {}",
        out.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    cli::init_logging();
    cli::exit("gen-data", run(Args::parse()))
}
