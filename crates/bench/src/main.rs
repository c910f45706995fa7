//! `bench`: the speed table behind `make bench` (printed and written as parquet).
//!
//! Each measurement runs in a child process (this binary again, with the hidden `--child`), so
//! that its row carries the peak memory of that measurement alone.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};
use clap::Parser;
use pizza_core::bench::{self, process, reference::Yardsticks, runs, Row};
use pizza_core::cli;

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
    /// Internal: run one measurement (`train:P`, `autograd:P`, `sgld:P:B`, `sgld:P:full`,
    /// `llc:P`) and print its row as JSON.
    #[arg(long, hide = true, value_name = "SPEC")]
    child: Option<String>,
}

impl Args {
    fn threads(&self) -> usize {
        self.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// The child's side: one measurement in this process.
    fn measure(&self, spec: &str) -> Result<Row> {
        let threads = self.threads();
        let parts: Vec<&str> = spec.split(':').collect();
        let p = |s: &str| s.parse::<u64>().with_context(|| format!("--child {spec}: bad modulus"));
        match parts.as_slice() {
            ["train", m] => bench::train_step(p(m)?, threads, self.steps, false),
            ["autograd", m] => bench::train_step(p(m)?, threads, self.steps.min(5), true),
            ["sgld", m, b] => {
                let batch = if *b == "full" { None } else { Some(b.parse().with_context(|| format!("--child {spec}: bad batch"))?) };
                bench::sgld_step(p(m)?, batch, self.sgld_chains, threads, self.sgld_steps, self.sgld_reps)
            }
            ["llc", m] => {
                let path = self.llc_config.as_ref().context("--child llc needs --llc-config")?;
                let cfg = pizza_core::config::load(path, &[])?;
                bench::llc_checkpoint(p(m)?, &pizza_core::llc::SgldConfig { threads, ..cfg.llc }, 1)
            }
            _ => bail!("--child {spec}: unknown measurement"),
        }
    }

    /// The parent's side: runs `spec` in a child and records its peak memory.
    fn in_child(&self, spec: &str) -> Result<Row> {
        let mut cmd = Command::new(std::env::current_exe().context("locating the bench binary")?);
        cmd.args(["--child", spec, "--threads", &self.threads().to_string(), "--steps", &self.steps.to_string()]);
        cmd.args(["--sgld-chains", &self.sgld_chains.to_string(), "--sgld-steps", &self.sgld_steps.to_string()]);
        cmd.args(["--sgld-reps", &self.sgld_reps.to_string()]);
        if let Some(path) = &self.llc_config {
            cmd.arg("--llc-config").arg(path);
        }
        let m = process::run(cmd, &format!("bench --child {spec}"))?;
        let line = m.stdout.lines().last().unwrap_or_default();
        let row: Row = serde_json::from_str(line).with_context(|| format!("bench --child {spec} printed {:?}", m.stdout))?;
        Ok(Row { peak_rss_mb: m.peak_rss_mb, ..row })
    }
}

fn run(args: Args) -> Result<()> {
    if let Some(spec) = &args.child {
        println!("{}", serde_json::to_string(&args.measure(spec)?)?);
        return Ok(());
    }
    let threads = args.threads();
    let mut rows = Vec::new();
    for &p in &args.p {
        rows.push(args.in_child(&format!("train:{p}"))?);
        if args.autograd {
            rows.push(args.in_child(&format!("autograd:{p}"))?);
        }
    }
    if !args.no_sgld {
        for &p in &args.p {
            rows.push(args.in_child(&format!("sgld:{p}:{}", args.sgld_batch))?);
            rows.push(args.in_child(&format!("sgld:{p}:full"))?);
        }
        for r in rows.iter().filter(|r| r.name.starts_with("sgld_step")) {
            tracing::info!("{} p = {}: {:.0} SGLD steps/s over {} chains on {} threads", r.name, r.p, 1e3 / r.ms_per_step, args.sgld_chains, r.threads);
        }
    }
    if let Some(path) = &args.llc_config {
        for &p in &args.p {
            let r = args.in_child(&format!("llc:{p}"))?;
            tracing::info!("one checkpoint's llc estimate at p = {p} with {}: {:.1} s", path.display(), r.ms_per_step / 1e3);
            rows.push(r);
        }
    }
    if args.runs > 0 {
        rows.extend(sweep_rows(&args, threads)?);
    }
    if let Some(python) = &args.reference_python {
        rows.extend(yardstick_rows(&args, python, &rows, threads));
    }
    print!("{}", bench::format(&rows));
    pizza_core::tables::bench::write(&rows, &args.out)?;
    tracing::info!("wrote {}", args.out.display());
    Ok(())
}

/// The same sweep trained in one process and in one process per run.
fn sweep_rows(args: &Args, threads: usize) -> Result<Vec<Row>> {
    let exe = std::env::current_exe().context("locating the bench binary")?;
    let sweep = runs::Sweep {
        train_bin: exe.with_file_name("train"),
        work: args.out.parent().unwrap_or(Path::new(".")).join("sweep"),
        p: args.runs_p,
        runs: args.runs,
        steps: args.runs_steps,
        threads,
    };
    let mut rows = Vec::new();
    let mut layouts = vec![runs::Layout::OneProcess, runs::Layout::Processes(args.runs)];
    if threads < args.runs {
        layouts.push(runs::Layout::Processes(threads));
    }
    for layout in layouts {
        let r = sweep.measure(layout)?;
        tracing::info!("{}: {:.0} runs of {} steps per hour", r.name, runs::runs_per_hour(&r, args.runs_steps), args.runs_steps);
        rows.push(r);
    }
    std::fs::remove_dir_all(&sweep.work).with_context(|| format!("removing {}", sweep.work.display()))?;
    Ok(rows)
}

/// The PyTorch training step and devinterp's SGLD at the same moduli and batch sizes as ours. A
/// yardstick that fails (say, devinterp is not installed) is reported and skipped, so that our own
/// rows are still written.
fn yardstick_rows(args: &Args, python: &Path, ours: &[Row], threads: usize) -> Vec<Row> {
    let y = Yardsticks { python, dir: &args.reference_dir, threads };
    let mut rows = Vec::new();
    let mut keep = |row: Result<Row>| match row {
        Ok(row) => rows.push(row),
        Err(e) => tracing::warn!("yardstick skipped: {e:#}"),
    };
    for &p in &args.p {
        keep(y.torch_train_step(p, args.steps));
    }
    if !args.no_sgld {
        for r in ours.iter().filter(|r| r.name == "train_step_full_batch") {
            let full_draws = (args.reference_draws / 5).max(10);
            keep(y.devinterp_sgld(r.p, Some(args.sgld_batch), r.rows, args.sgld_chains, args.reference_draws));
            keep(y.devinterp_sgld(r.p, None, r.rows, args.sgld_chains, full_draws));
        }
    }
    rows
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
