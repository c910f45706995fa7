//! `llc`: Local Learning Coefficient estimates. `estimate` runs SGLD on every checkpoint of run
//! directories (one summary row per checkpoint plus the per-draw trace), `calibrate` sweeps the
//! step size against nβ (and γ, batch size) on one checkpoint and recommends settings, and
//! `validate` checks the estimator on models with a known LLC. The work is
//! `pizza_core::llc::stage`; the method and the tables are documented in docs/llc.md.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use pizza_core::cli;
use pizza_core::llc::analytic::{self, AnalyticModel};
use pizza_core::llc::stage::{self, EstimateOptions, SettingsSource};
use pizza_core::llc::{CalibrationGrid, LossAtWstar, NBeta, RecommendCriteria, SgldConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Estimate Local Learning Coefficients with SGLD.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Estimate the LLC of a model whose LLC is known, and print both.
    Validate(Box<ValidateArgs>),
    /// Estimate the LLC of transformer checkpoints: one row per checkpoint in --out, the per-draw
    /// losses in <stem>_trace.parquet beside it. Resumes after an interruption.
    Estimate(EstimateArgs),
    /// Sweep ε × nβ (× γ, batch size) on one checkpoint, write the grid and print a recommendation.
    Calibrate(CalibrateArgs),
}

/// Which analytic model `validate` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ModelKind {
    /// f(x) = x·Π w_i^k_i at w* = 0 (needs --powers).
    Polynomial,
    /// Reduced-rank regression y = B·A·x (needs --m, --h, --n).
    Rrr,
    /// Full-rank linear regression (needs --d).
    Linear,
    /// Every reference case: polynomials [1,1], [2,2], [3,3]; RRR (5,3,5), (5,4,5), (4,3,8),
    /// (8,3,4), (3,8,4); linear d = 4.
    All,
}

#[derive(Debug, clap::Args)]
struct ValidateArgs {
    /// The model with a known LLC.
    #[arg(long, value_enum)]
    model: ModelKind,
    /// Polynomial powers k_i, comma-separated, e.g. `1,1`.
    #[arg(long, value_delimiter = ',', value_name = "K,..")]
    powers: Vec<u32>,
    /// RRR input dimension M.
    #[arg(long, value_name = "M")]
    m: Option<usize>,
    /// RRR hidden dimension (rank) H.
    #[arg(long, value_name = "H")]
    h: Option<usize>,
    /// RRR output dimension N.
    #[arg(long, value_name = "N")]
    n: Option<usize>,
    /// Number of weights of the linear model.
    #[arg(long, value_name = "D")]
    d: Option<usize>,
    /// Write the results as a parquet table (model, true_llc, llc_mean, llc_std, settings).
    #[arg(long, value_name = "PARQUET")]
    out: Option<PathBuf>,
    /// Start from devinterp's test settings instead of the recommended ones.
    #[arg(long)]
    devinterp: bool,
    #[command(flatten)]
    sampler: SamplerFlags,
}

/// Overrides of the sampler settings; each one left out keeps its default.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Sampler")]
struct SamplerFlags {
    /// SGLD step size ε.
    #[arg(long)]
    epsilon: Option<f64>,
    /// Localisation strength γ.
    #[arg(long)]
    gamma: Option<f64>,
    /// nβ: `n_over_ln_n`, `b_over_ln_b` or a number.
    #[arg(long)]
    nbeta: Option<NBeta>,
    /// Rows per minibatch (full batch when left out).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Number of chains.
    #[arg(long)]
    chains: Option<usize>,
    /// Recorded draws per chain.
    #[arg(long)]
    draws: Option<usize>,
    /// SGLD steps before the first draw.
    #[arg(long)]
    burn_in: Option<usize>,
    /// SGLD steps per draw (thinning).
    #[arg(long)]
    steps_between_draws: Option<usize>,
    /// Sampling seed.
    #[arg(long)]
    seed: Option<u64>,
    /// How L(w*) is computed: `full_training_set` or `first_batches`.
    #[arg(long)]
    loss_at_wstar: Option<LossAtWstar>,
    /// Minibatches averaged for `first_batches` (0 = one per chain).
    #[arg(long)]
    loss_at_wstar_batches: Option<usize>,
    /// Measure MALA acceptance every k-th step (0 = never).
    #[arg(long)]
    mala_every: Option<usize>,
    /// Stop a chain when its loss exceeds L* + factor·(|L*| + d/(2nβ)).
    #[arg(long)]
    divergence_factor: Option<f64>,
    /// Precondition the steps RMSProp-style (pSGLD).
    #[arg(long)]
    rmsprop: bool,
    /// RMSProp decay of the running mean of squared drifts.
    #[arg(long)]
    rmsprop_alpha: Option<f64>,
    /// RMSProp δ: the preconditioner is 1/(√V + δ).
    #[arg(long)]
    rmsprop_eps: Option<f64>,
    /// Worker threads for the chains (default: `RAYON_NUM_THREADS`, else one per core).
    #[arg(long)]
    threads: Option<usize>,
}

impl SamplerFlags {
    fn apply(&self, mut c: SgldConfig) -> SgldConfig {
        macro_rules! set {
            ($($field:ident),*) => { $(if let Some(v) = self.$field { c.$field = v; })* };
        }
        set!(
            epsilon,
            gamma,
            nbeta,
            chains,
            draws,
            burn_in,
            steps_between_draws,
            seed
        );
        set!(
            loss_at_wstar,
            loss_at_wstar_batches,
            mala_every,
            divergence_factor,
            threads
        );
        set!(rmsprop_alpha, rmsprop_eps);
        c.rmsprop |= self.rmsprop;
        if self.batch_size.is_some() {
            c.batch_size = self.batch_size;
        }
        c
    }
}

#[derive(Debug, clap::Args)]
struct EstimateArgs {
    /// Run directories (all their checkpoints, in step order) or checkpoint files.
    #[arg(required = true, value_name = "CHECKPOINT_OR_RUN_DIR")]
    inputs: Vec<PathBuf>,
    /// Summary table (one row per checkpoint); <stem>_trace.parquet goes beside it.
    #[arg(long, value_name = "PARQUET")]
    out: PathBuf,
    /// Experiment file whose `llc:` section holds the SGLD settings (defaults when absent; the
    /// data always come from each checkpoint's own config). `--set llc.epsilon=1e-4` overrides.
    #[command(flatten)]
    config: cli::ConfigArgs,
    /// Take the `llc:` settings of this grid run (needed only when the grid varies llc.* keys
    /// and the checkpoints are not from the grid's runs).
    #[arg(long, value_name = "ID")]
    run: Option<String>,
    /// Only every N-th checkpoint of each run directory (positions 0, N, 2N, …, and the last).
    #[arg(long, value_name = "N")]
    every: Option<usize>,
    /// Only the checkpoints at these steps, e.g. `--steps 0,500,1500` (run directories only).
    #[arg(long, value_delimiter = ',', value_name = "STEP,..")]
    steps: Option<Vec<u64>>,
    /// Do not draw a progress bar.
    #[arg(long)]
    no_progress: bool,
}

/// `full` or a number of rows.
fn parse_batch(s: &str) -> Result<Option<usize>, String> {
    match s {
        "full" => Ok(None),
        n => n.parse::<usize>().map(Some).map_err(|_| format!("batch size must be a number or `full`, got {n:?}")),
    }
}

#[derive(Debug, clap::Args)]
struct CalibrateArgs {
    /// The checkpoint to calibrate on (usually a run's last).
    #[arg(value_name = "CHECKPOINT")]
    checkpoint: PathBuf,
    /// Output table: one row per grid point.
    #[arg(long, value_name = "PARQUET")]
    out: PathBuf,
    /// Experiment file whose `llc:` section gives every setting not swept.
    #[command(flatten)]
    config: cli::ConfigArgs,
    /// Take the `llc:` settings of this grid run.
    #[arg(long, value_name = "ID")]
    run: Option<String>,
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
    #[arg(long, value_delimiter = ',', value_name = "B,..", value_parser = parse_batch)]
    batch_sizes: Vec<Option<usize>>,
    /// Largest relative change of the estimate from the next smaller ε that counts as flat.
    #[arg(long, default_value_t = RecommendCriteria::default().flat_tolerance)]
    flat_tolerance: f64,
    /// Lowest acceptable mean MALA acceptance probability.
    #[arg(long, default_value_t = RecommendCriteria::default().min_acceptance)]
    min_acceptance: f64,
    /// Compare step sizes at equal sampling time: scale burn-in and thinning by EPS/ε, so every
    /// ε runs as long (in ε × steps) as the settings do at EPS. Recommended: a smaller ε
    /// otherwise looks different only because its chains have not levelled off yet.
    #[arg(long, value_name = "EPS")]
    equal_time_at: Option<f64>,
}

fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Validate(v) => validate(&v),
        Command::Estimate(a) => estimate(&a),
        Command::Calibrate(a) => calibrate(&a),
    }
}

/// `llc estimate`: settings from the experiment file, checkpoints from the inputs.
fn estimate(args: &EstimateArgs) -> Result<()> {
    let cfg = args.config.load()?;
    let Some(_lock) = pizza_core::lock::output(&args.out)? else { return Ok(()) };
    let settings = SettingsSource::from_config(&cfg, args.run.as_deref())?;
    let paths = stage::select_checkpoints(&args.inputs, args.every, args.steps.as_deref())?;
    if let SettingsSource::Fixed(s) = &settings {
        tracing::info!(checkpoints = paths.len(), out = %args.out.display(), "llc estimate with {}", stage::settings_json(s)?);
    }
    let started = std::time::Instant::now();
    let opts = EstimateOptions { progress: !args.no_progress, stop_after: None };
    let outcome = stage::estimate_stage(&paths, &args.out, &settings, &opts)?;
    if !outcome.complete {
        bail!(
            "interrupted after {} of {} checkpoints; they are kept, and running the same command again resumes",
            outcome.done.len(),
            outcome.total
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        checkpoints = outcome.total,
        computed = outcome.computed,
        reused = outcome.reused,
        seconds,
        per_checkpoint = seconds / outcome.computed.max(1) as f64,
        "wrote {}",
        args.out.display()
    );
    Ok(())
}

/// `llc calibrate`: the grid on one checkpoint, the table, and the recommendation.
fn calibrate(args: &CalibrateArgs) -> Result<()> {
    let cfg = args.config.load()?;
    let base = match args.run.as_deref() {
        Some(id) => stage::parse_settings(&cfg.run(Some(id))?.config.llc)?,
        None => stage::parse_settings(&cfg.llc)?,
    };
    let grid = CalibrationGrid { epsilons: args.epsilons.clone(), nbetas: args.nbetas.clone(), gammas: args.gammas.clone() };
    let criteria = RecommendCriteria { flat_tolerance: args.flat_tolerance, min_acceptance: args.min_acceptance, ..RecommendCriteria::default() };
    let opts = stage::CalibrateOptions { batch_sizes: args.batch_sizes.clone(), equal_time_at: args.equal_time_at, criteria };
    let out = stage::calibrate_stage(&args.checkpoint, &args.out, &base, &grid, &opts)?;
    println!(
        "{:>6} {:>6} {:>10} {:>9} {:>6} {:>5} {:>10} {:>8} {:>7} {:>7} {:>6}  flags",
        "gamma", "batch", "nbeta", "epsilon", "burnin", "thin", "llc", "std", "R-hat", "ESS", "MALA"
    );
    for c in &out.cells {
        let e = &c.estimate;
        println!(
            "{:>6} {:>6} {:>10.2} {:>9.1e} {:>6} {:>5} {:>10.3} {:>8.3} {:>7.3} {:>7.0} {:>6} {}{}",
            c.settings.gamma,
            e.batch_size,
            e.nbeta,
            c.settings.epsilon,
            c.settings.burn_in,
            c.settings.steps_between_draws,
            e.llc_mean,
            e.llc_std,
            e.r_hat,
            e.ess_bulk,
            e.mala_acceptance.map_or("n/a".into(), |a| format!("{a:.3}")),
            if e.flags.any() { e.flag_summary() } else { "-".into() },
            if c.recommended { "   <= recommended" } else { "" }
        );
    }
    for s in &out.recommendations {
        let (gamma, batch) = (s.gamma, s.batch_size);
        match s.recommendation {
            Some(r) => println!(
                "recommendation (gamma {gamma}, batch {batch}): epsilon = {:e}, nbeta = {} (LLC {:.3}, {:.1} % from the next smaller epsilon)",
                r.epsilon,
                r.nbeta,
                r.llc_mean,
                100.0 * r.relative_change
            ),
            None => println!(
                "recommendation (gamma {gamma}, batch {batch}): none — no two neighbouring step sizes are both healthy and within {:.0} % of each other; widen or refine the grid{}",
                100.0 * opts.criteria.flat_tolerance,
                if opts.equal_time_at.is_none() { ", or compare at equal sampling time (--equal-time-at)" } else { "" }
            ),
        }
    }
    tracing::info!("wrote {}", args.out.display());
    Ok(())
}

/// Runs `validate` on the chosen model(s), prints estimate against truth, writes the table.
fn validate(args: &ValidateArgs) -> Result<()> {
    let mut results = Vec::new();
    for model in models(args)? {
        let base = if args.devinterp {
            model.devinterp_settings()
        } else {
            model.recommended_settings()
        };
        let settings = args.sampler.apply(base);
        let started = std::time::Instant::now();
        let r = analytic::validate(&model, &settings)
            .with_context(|| format!("validating on {}", model.label()))?;
        println!(
            "{:<18} true {:>8.4}  estimate {:>8.4} ± {:<7.4} relative error {:+6.1}%  ({:.1} s)",
            r.model,
            r.true_llc,
            r.llc_mean,
            r.llc_std,
            100.0 * r.relative_error,
            started.elapsed().as_secs_f64()
        );
        if r.estimate.flags.any() {
            eprintln!("warning: {}: {}", r.model, r.estimate.summary());
        } else {
            tracing::info!("{}: {}", r.model, r.estimate.summary());
        }
        results.push(r);
    }
    if let Some(out) = &args.out {
        analytic::write_validation_table(&results, out)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

/// The analytic models selected by the flags.
fn models(args: &ValidateArgs) -> Result<Vec<AnalyticModel>> {
    Ok(match args.model {
        ModelKind::Polynomial => {
            if args.powers.is_empty() {
                bail!("--model polynomial needs --powers, e.g. --powers 1,1");
            }
            vec![AnalyticModel::Polynomial {
                powers: args.powers.clone(),
            }]
        }
        ModelKind::Rrr => match (args.m, args.h, args.n) {
            (Some(m), Some(h), Some(n)) => vec![AnalyticModel::ReducedRank { m, h, n }],
            _ => bail!("--model rrr needs --m, --h and --n"),
        },
        ModelKind::Linear => match args.d {
            Some(d) => vec![AnalyticModel::Linear { d }],
            None => bail!("--model linear needs --d"),
        },
        ModelKind::All => analytic::reference_cases(),
    })
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
    cli::exit("llc", run(Args::parse()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_flag_is_documented_and_the_definition_is_valid() {
        Args::command().debug_assert();
        for sub in Args::command().get_subcommands() {
            for arg in sub.get_arguments() {
                let documented = arg.get_help().is_some() || arg.get_id() == "help";
                assert!(
                    documented,
                    "`llc {} --{}` has no doc",
                    sub.get_name(),
                    arg.get_id()
                );
            }
        }
    }

    #[test]
    fn sampler_flags_override_only_what_they_name() {
        let args = Args::try_parse_from([
            "llc",
            "validate",
            "--model",
            "linear",
            "--d",
            "3",
            "--epsilon",
            "1e-3",
            "--nbeta",
            "b_over_ln_b",
            "--batch-size",
            "100",
            "--loss-at-wstar",
            "first_batches",
        ])
        .expect("parse");
        let Command::Validate(v) = args.command else {
            panic!("not validate")
        };
        let base = AnalyticModel::Linear { d: 3 }.recommended_settings();
        let s = v.sampler.apply(base.clone());
        assert_eq!(s.epsilon, 1e-3);
        assert_eq!(s.nbeta, NBeta::Rule(pizza_core::llc::NBetaRule::BOverLnB));
        assert_eq!(s.batch_size, Some(100));
        assert_eq!(s.loss_at_wstar, LossAtWstar::FirstBatches);
        assert_eq!(
            SgldConfig {
                epsilon: base.epsilon,
                nbeta: base.nbeta,
                batch_size: None,
                loss_at_wstar: base.loss_at_wstar,
                ..s
            },
            base
        );
        assert!(
            Args::try_parse_from(["llc", "validate", "--model", "linear", "--nbeta", "lots"])
                .is_err()
        );
    }
}
