//! `llc`: Local Learning Coefficient estimates. `validate` checks the estimator on models with a
//! known LLC; `estimate` and `calibrate` (on the transformer's checkpoints) are not wired yet.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use pizza_core::cli;
use pizza_core::llc::analytic::{self, AnalyticModel};
use pizza_core::llc::{LossAtWstar, NBeta, SgldConfig};

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
    /// Estimate the LLC of transformer checkpoints (not wired yet).
    Estimate(PipelineArgs),
    /// Sweep ε × nβ on a transformer checkpoint and recommend settings (not wired yet).
    Calibrate(PipelineArgs),
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
    /// Worker threads for the chains (0 = one per core).
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
struct PipelineArgs {
    #[command(flatten)]
    config: cli::ConfigArgs,
    /// Which run of the grid, e.g. `alpha0_seed1`.
    #[arg(long, value_name = "ID")]
    run: Option<String>,
    /// Output table.
    #[arg(long, value_name = "PARQUET")]
    out: Option<PathBuf>,
    /// Run directories or checkpoint files.
    #[arg(value_name = "INPUT")]
    inputs: Vec<PathBuf>,
}

fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Validate(v) => validate(&v),
        Command::Estimate(_) => bail!("`llc estimate` is not yet wired to the transformer"),
        Command::Calibrate(_) => bail!("`llc calibrate` is not yet wired to the transformer"),
    }
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
