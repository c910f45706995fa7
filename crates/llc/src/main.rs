//! `llc`: Local Learning Coefficient estimates (`estimate`), their check against long chains
//! (`reference`), calibration (`calibrate`) and check on models of known LLC (`validate`). The work
//! is `pizza_core::llc`, documented in docs/llc.md. SGLD settings are the experiment's `llc:`
//! section, overridden with `--set llc.x=v` (the only way to change one on the command line).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use pizza_core::llc::analytic;
use pizza_core::llc::stage::{self, CalibrateOptions, EstimateOptions, SettingsSource};
use pizza_core::llc::{CalibrationGrid, NBeta, RecommendCriteria};
use pizza_core::{cli, tables};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Estimate Local Learning Coefficients with SGLD.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
enum Command {
    /// Estimate the LLC of transformer checkpoints (per group of llc.restrict) into --out and <stem>_trace.parquet; resumable.
    Estimate(EstimateArgs),
    /// Sweep ε × nβ (× γ, batch size) on one checkpoint, write the grid and print a recommendation.
    Calibrate(CalibrateArgs),
    /// Estimate each checkpoint as `estimate` does and against long chains (8 chains, 4× draws, ε/2); write and print the comparison.
    Reference(EstimateArgs),
    /// Estimate the LLC of a model whose LLC is known, and print both.
    Validate(ValidateArgs),
}

/// Where the SGLD settings come from.
#[derive(Debug, clap::Args)]
struct Settings {
    #[command(flatten)]
    config: cli::ConfigArgs,
    /// Take the `llc:` settings of this grid run (needed only when the grid varies llc.* keys and
    /// the checkpoints are not the grid's runs').
    #[arg(long, value_name = "ID")] run: Option<String>,
}

#[derive(Debug, clap::Args)]
struct EstimateArgs {
    /// Run directories (all their checkpoints, in step order) or checkpoint files.
    #[arg(required = true, value_name = "CHECKPOINT_OR_RUN_DIR")]
    inputs: Vec<PathBuf>,
    /// Output table: estimate, one row per checkpoint and restriction group (<stem>_trace.parquet beside it); reference, one per checkpoint.
    #[arg(long, value_name = "PARQUET")]
    out: PathBuf,
    #[command(flatten)]
    settings: Settings,
    #[command(flatten)]
    select: stage::Selection,
    /// Do not draw a progress bar.
    #[arg(long)] no_progress: bool,
}

#[derive(Debug, clap::Args)]
struct CalibrateArgs {
    /// The checkpoint to calibrate on (usually a run's last).
    #[arg(value_name = "CHECKPOINT")]
    checkpoint: PathBuf,
    /// Output table: one row per grid point.
    #[arg(long, value_name = "PARQUET")]
    out: PathBuf,
    #[command(flatten)]
    settings: Settings,
    /// Step sizes ε to sweep.
    #[arg(long, value_delimiter = ',', value_name = "EPS,..", default_value = "1e-5,3e-5,1e-4,3e-4,1e-3")]
    epsilons: Vec<f64>,
    /// nβ values or rules (`n_over_ln_n`, `b_over_ln_b`, numbers); default: the settings' nβ.
    #[arg(long, value_delimiter = ',', value_name = "NBETA,..")]
    nbetas: Vec<NBeta>,
    /// Localisation strengths γ; default: the settings' γ.
    #[arg(long, value_delimiter = ',', value_name = "GAMMA,..")]
    gammas: Vec<f64>,
    /// Minibatch sizes (numbers or `full`); default: the settings' batch size.
    #[arg(long, value_delimiter = ',', value_name = "B,..", value_parser = stage::parse_batch_size)]
    batch_sizes: Vec<Option<usize>>,
    /// Largest relative change of the estimate from the next smaller ε that counts as flat.
    #[arg(long, default_value_t = RecommendCriteria::default().flat_tolerance)] flat_tolerance: f64,
    /// Lowest acceptable mean MALA acceptance probability.
    #[arg(long, default_value_t = RecommendCriteria::default().min_acceptance)] min_acceptance: f64,
    /// Compare step sizes at equal sampling time: burn-in and thinning scaled by EPS/ε, so every ε
    /// runs as long (ε × steps) as the settings at EPS (recommended: see docs/llc.md).
    #[arg(long, value_name = "EPS")] equal_time_at: Option<f64>,
}

#[derive(Debug, clap::Args)]
struct ValidateArgs {
    /// The model with a known LLC.
    #[arg(long, value_enum)]
    model: analytic::Family,
    /// Polynomial powers k_i, comma-separated, e.g. `1,1`.
    #[arg(long, value_delimiter = ',', value_name = "K,..")]
    powers: Vec<u32>,
    /// RRR input, hidden (rank) and output dimensions; or the linear model's number of weights.
    #[arg(long)] m: Option<usize>,
    /// See --m.
    #[arg(long)] h: Option<usize>,
    /// See --m.
    #[arg(long)] n: Option<usize>,
    /// See --m.
    #[arg(long)] d: Option<usize>,
    /// Start from devinterp's test settings instead of the recommended ones.
    #[arg(long)] devinterp: bool,
    /// Override a sampler setting, e.g. `--set llc.epsilon=1e-3` (repeatable).
    #[arg(long = "set", value_name = "llc.KEY=VALUE")]
    sets: Vec<String>,
    /// Write the results as a parquet table (model, true_llc, llc_mean, llc_std, settings).
    #[arg(long, value_name = "PARQUET")]
    out: Option<PathBuf>,
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Estimate(a) => {
            let settings = SettingsSource::from_config(&a.settings.config.load()?, a.settings.run.as_deref())?;
            let jobs = a.select.plan(&a.inputs, &settings)?;
            stage::run_estimate(&jobs, &a.out, &settings, &EstimateOptions { progress: !a.no_progress, stop_after: None })
        }
        Command::Reference(a) => {
            let settings = SettingsSource::from_config(&a.settings.config.load()?, a.settings.run.as_deref())?;
            Ok(print!("{}", stage::reference_stage(&a.select.plan(&a.inputs, &settings)?, &a.out, &settings)?))
        }
        Command::Calibrate(a) => {
            let base = SettingsSource::one(&a.settings.config.load()?, a.settings.run.as_deref())?;
            let grid = CalibrationGrid { epsilons: a.epsilons, nbetas: a.nbetas, gammas: a.gammas };
            let criteria = RecommendCriteria { flat_tolerance: a.flat_tolerance, min_acceptance: a.min_acceptance, ..RecommendCriteria::default() };
            let opts = CalibrateOptions { batch_sizes: a.batch_sizes, equal_time_at: a.equal_time_at, criteria };
            Ok(print!("{}", stage::calibrate_stage(&a.checkpoint, &a.out, &base, &grid, &opts)?))
        }
        Command::Validate(a) => {
            let results = analytic::validate_all(&analytic::models(a.model, &a.powers, (a.m, a.h, a.n), a.d)?, a.devinterp, &a.sets, |r, seconds| println!("{r}  ({seconds:.1} s)"))?;
            a.out.as_ref().map_or(Ok(()), |out| tables::llc::write_validation(&results, out).with_context(|| format!("writing {}", out.display())))
        }
    }
}

fn main() -> ExitCode {
    cli::one_candle_thread();
    cli::init_logging();
    cli::exit("llc", run(Command::parse()))
}

#[test]
fn every_flag_is_documented() {
    cli::assert_documented(&<Command as clap::CommandFactory>::command());
}
