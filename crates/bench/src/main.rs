//! `bench`: the speed table behind `make bench` (printed and written as parquet).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use pizza_core::{bench, cli};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Measure training and SGLD speed on this machine.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// Output table.
    #[arg(long, value_name = "PARQUET", default_value = "data/bench/bench.parquet")]
    out: PathBuf,
    /// Moduli to measure.
    #[arg(long, value_delimiter = ',', default_value = "59,113")]
    p: Vec<u64>,
    /// Timed steps per measurement (after two warm-up steps).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Also time candle's autograd through the textbook forward (slow).
    #[arg(long)]
    autograd: bool,
}

fn run(args: Args) -> Result<()> {
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut rows = Vec::new();
    for &p in &args.p {
        rows.push(bench::train_step(p, threads, args.steps, false)?);
        if args.autograd {
            rows.push(bench::train_step(p, threads, args.steps.min(5), true)?);
        }
    }
    print!("{}", bench::format(&rows));
    bench::write(&rows, &args.out)?;
    tracing::info!("wrote {}", args.out.display());
    Ok(())
}

fn main() -> ExitCode {
    cli::init_logging();
    cli::exit("bench", run(Args::parse()))
}
