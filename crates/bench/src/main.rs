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
    /// SGLD: chains in total (run one per thread at a time).
    #[arg(long, default_value_t = 8)]
    sgld_chains: usize,
    /// SGLD: steps per chain in each timed run.
    #[arg(long, default_value_t = 20)]
    sgld_steps: usize,
    /// SGLD: timed repetitions (median and best are reported).
    #[arg(long, default_value_t = 3)]
    sgld_reps: usize,
    /// SGLD: minibatch size of the `sgld_step_b<B>` rows.
    #[arg(long, default_value_t = 512)]
    sgld_batch: usize,
    /// Skip the SGLD rows.
    #[arg(long)]
    no_sgld: bool,
    /// Also time one checkpoint's `llc estimate` with the `llc:` settings of this experiment
    /// file (e.g. pipelines/default.yaml), at each p.
    #[arg(long, value_name = "YAML")]
    llc_config: Option<PathBuf>,
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
    if !args.no_sgld {
        for &p in &args.p {
            for batch in [Some(args.sgld_batch), None] {
                rows.push(bench::sgld_step(p, batch, args.sgld_chains, threads, args.sgld_steps, args.sgld_reps)?);
            }
        }
        for r in rows.iter().filter(|r| r.name.starts_with("sgld_step")) {
            tracing::info!("{} p = {}: {:.0} SGLD steps/s over {} chains on {} threads", r.name, r.p, 1e3 / r.ms_per_step, args.sgld_chains, r.threads);
        }
    }
    if let Some(path) = &args.llc_config {
        let cfg = pizza_core::config::load(path, &[])?;
        let settings = pizza_core::llc::stage::parse_settings(&cfg.llc)?;
        for &p in &args.p {
            let settings = pizza_core::llc::SgldConfig { threads, ..settings.clone() };
            let r = bench::llc_checkpoint(p, &settings, 1)?;
            tracing::info!("one checkpoint's llc estimate at p = {p} with {}: {:.1} s", path.display(), r.ms_per_step / 1e3);
            rows.push(r);
        }
    }
    print!("{}", bench::format(&rows));
    bench::write(&rows, &args.out)?;
    tracing::info!("wrote {}", args.out.display());
    Ok(())
}

fn main() -> ExitCode {
    // SGLD runs one chain per core; candle's own pool for element-wise ops on large tensors
    // (≥ 64k elements: the SGLD update of W_in and W_out) would only fight the chains for the
    // cores (it made the update 2–7× slower with two chains on two cores). It must be set before
    // candle first uses the pool; it changes no number (element-wise results do not depend on it).
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    cli::init_logging();
    cli::exit("bench", run(Args::parse()))
}
