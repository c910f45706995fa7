//! `bench`: the speed table behind `make bench` (printed and written as parquet).
//!
//! Each measurement runs in a child process (this binary again, with the hidden `--child`), so
//! that its row carries the peak memory of that measurement alone.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use pizza_core::bench::child::{ChildSettings, Measurement};
use pizza_core::bench::reference::{self, Yardsticks};
use pizza_core::bench::{self, runs};
use pizza_core::{cli, tables};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Measure training and SGLD speed (and peak memory) on this machine, optionally side by side
/// with the PyTorch and devinterp yardsticks.
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
    /// Runs in the sweep timed three ways (one process; one process per run, all at once; two
    /// at a time) for runs per hour; 0 skips it.
    #[arg(long, default_value_t = 8)]
    runs: usize,
    /// Training steps per run of that sweep.
    #[arg(long, default_value_t = 100)]
    runs_steps: usize,
    /// Modulus of that sweep.
    #[arg(long, default_value_t = 59)]
    runs_p: u64,
    /// A Python with torch, numpy and devinterp 1.3.2 (a throwaway virtualenv): when given, the
    /// yardsticks in --reference-dir are measured in the same run and the speed-ups printed.
    #[arg(long, value_name = "PYTHON")]
    reference_python: Option<PathBuf>,
    /// Folder of torch_reference.py and devinterp_reference.py.
    #[arg(long, value_name = "DIR", default_value = "../shared/bench")]
    reference_dir: PathBuf,
    /// devinterp draws per chain for the minibatch rows (a fifth of it, at least 10, at full batch).
    #[arg(long, default_value_t = 50)]
    reference_draws: usize,
    /// Internal: run one measurement (`bench::child::Measurement`: `train:P`, `autograd:P`,
    /// `sgld:P:B`, `sgld:P:full`, `llc:P`) and print its row as JSON.
    #[arg(long, hide = true, value_name = "SPEC")]
    child: Option<String>,
}

impl Args {
    fn threads(&self) -> usize {
        self.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    fn child(&self) -> ChildSettings {
        ChildSettings {
            threads: self.threads(),
            steps: self.steps,
            sgld_chains: self.sgld_chains,
            sgld_steps: self.sgld_steps,
            sgld_reps: self.sgld_reps,
            llc_config: self.llc_config.clone(),
        }
    }
}

fn run(args: Args) -> Result<()> {
    let child = args.child();
    if let Some(spec) = &args.child {
        println!("{}", bench::child::answer(&spec.parse::<Measurement>()?.measure(&child)?)?);
        return Ok(());
    }
    let exe = std::env::current_exe().context("locating the bench binary")?;
    let mut rows = Vec::new();
    for m in bench::child::plan(&args.p, args.autograd, (!args.no_sgld).then_some(args.sgld_batch), args.llc_config.is_some()) {
        let r = m.in_child(&exe, &child)?;
        match m {
            Measurement::Sgld { .. } => tracing::info!("{} p = {}: {:.0} SGLD steps/s over {} chains on {} threads", r.name, r.p, 1e3 / r.ms_per_step, args.sgld_chains, r.threads),
            Measurement::Llc { p } => {
                let with = child.llc_config.as_deref().map_or(String::new(), |c| format!(" with {}", c.display()));
                tracing::info!("one checkpoint's llc estimate at p = {p}{with}: {:.1} s", r.ms_per_step / 1e3)
            }
            _ => {}
        }
        rows.push(r);
    }
    if args.runs > 0 {
        let work = args.out.parent().unwrap_or(Path::new(".")).join("sweep");
        rows.extend(runs::sweep_rows(exe.with_file_name("train"), work, args.runs_p, args.runs, args.runs_steps, child.threads)?);
    }
    if let Some(python) = &args.reference_python {
        let y = Yardsticks { python, dir: &args.reference_dir, threads: child.threads };
        let sgld = (!args.no_sgld).then_some((args.sgld_batch, args.sgld_chains, args.reference_draws));
        rows.extend(reference::yardstick_rows(&y, &args.p, args.steps, sgld, &rows));
    }
    print!("{}", bench::format(&rows));
    tables::bench::write(&rows, &args.out)?;
    tracing::info!("wrote {}", args.out.display());
    Ok(())
}

fn main() -> ExitCode {
    cli::one_candle_thread();
    cli::init_logging();
    cli::exit("bench", run(Args::parse()))
}
