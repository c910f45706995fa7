//! The transformer target and the LLC stages: the adapter against the PyTorch goldens and against
//! candle's autograd, thread-count independence, the tables' schemas and row counts on a tiny
//! trained model, resume after an interruption (byte-identical to an uninterrupted run), refusal
//! of a checkpoint holding a NaN, and diverging chains.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::*;
use crate::ckpt;
use crate::llc::{CalibrationGrid, Epsilon, RecommendCriteria, Rung, StepCount};
use crate::tables::{self, llc::{read_summary, SummaryRow}};
use crate::data::DataConfig;
use crate::data::Dataset;
use crate::llc::restrict::Restriction;
use crate::llc::transformer::{GradMode, RowsUsed, TrainingRows, TransformerTarget};
use crate::llc::{estimate, SgldConfig};
use crate::model::{ModelConfig, Params};
use crate::sampler::SgldTarget;
use crate::tables::llc as schema;
use crate::testing::{fixture, rel_err};
use crate::run::{RowKey, RunDir, RunIdent};
use crate::train;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("llc-stage-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A tiny run (p = 11, d_model = 16, 30 steps, checkpoints at 0, 10, 20, 30) trained into `dir`.
fn tiny_run(dir: &Path, alpha: f64) -> PathBuf {
    let yaml = "data: {p: 11, train_frac: 0.8}\nmodel: {d_model: 16, n_heads: 4}\ntrain: {steps: 30, checkpoints: {log_points: 0, segments: [{every: 10}]}}\n";
    let cfg = crate::config::load_str(yaml, &[format!("model.alpha={alpha}")]).unwrap();
    let data = Dataset::generate(&cfg.data);
    let run = dir.join(format!("alpha{alpha}"));
    train::run(&cfg, &format!("alpha{alpha}"), &data, &RunDir::new(&run)).unwrap();
    run
}

fn tiny_settings() -> SgldConfig {
    SgldConfig {
        epsilon: 1e-3.into(),
        gamma: 100.0,
        batch_size: Some(32),
        chains: 2,
        draws: 12,
        burn_in: 4.into(),
        mala_every: 3,
        threads: 2,
        ..SgldConfig::plain()
    }
}

fn quiet() -> EstimateOptions {
    EstimateOptions { progress: false, stop_after: None }
}

/// What `llc estimate` computes for `inputs` with these settings and no selection flags.
fn jobs(inputs: &[PathBuf], settings: &SettingsSource) -> Vec<Job> {
    Selection::default().plan(inputs, settings).unwrap()
}

/// The checkpoint steps (file names' numbers) of some jobs, with their groups' names.
fn steps_and_groups(jobs: &[Job]) -> Vec<(u64, String)> {
    jobs.iter()
        .flat_map(|j| {
            let name = j.path.file_name().unwrap().to_string_lossy().into_owned();
            let step: u64 = name.trim_start_matches("step_").trim_end_matches(".safetensors").parse().unwrap();
            j.groups.iter().map(move |g| (step, g.name()))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The target

/// The golden model (p = 11, d_model = 16) at its initial weights, with its training rows.
fn golden(alpha: &str) -> (ModelConfig, Params, Arc<TrainingRows>, f64, std::collections::BTreeMap<String, candle_core::Tensor>) {
    let path = fixture(&format!("golden/golden_p11_d16_alpha{alpha}.safetensors"));
    let (tensors, meta) = ckpt::read_safetensors(&path).unwrap();
    let cfg = ModelConfig::from_paper_json(&meta["config"]).unwrap();
    let group = |prefix: &str| -> std::collections::BTreeMap<String, candle_core::Tensor> {
        tensors.iter().filter_map(|(k, v)| k.strip_prefix(prefix).map(|n| (n.to_string(), v.clone()))).collect()
    };
    let params = Params::from_tensors(&cfg, group("init."), "golden").unwrap();
    let data = Dataset::generate(&DataConfig { p: 11, train_frac: 1.0, ..DataConfig::default() });
    let train: Vec<u32> = tensors["train_idx"].to_vec1::<i64>().unwrap().into_iter().map(|i| i as u32).collect();
    let (tokens, labels) = data.gather(&train);
    let rows = Arc::new(TrainingRows { tokens, labels, n_ctx: data.n_ctx, used: RowsUsed::TrainSplit });
    let loss0: f64 = meta["loss0"].parse().unwrap();
    (cfg, params, rows, loss0, group("grad."))
}

/// Both gradient modes of the target reproduce the PyTorch golden loss and gradients on the
/// training rows: an independent check of the adapter (row gathering, gradient keying).
#[test]
fn target_matches_the_pytorch_goldens_in_both_modes() {
    for alpha in ["0.0", "1.0"] {
        let (cfg, params, rows, loss0, want) = golden(alpha);
        let all: Vec<u32> = (0..rows.len() as u32).collect();
        for mode in [GradMode::Fast, GradMode::Autograd] {
            let t = TransformerTarget::with_mode(&params, &cfg, rows.clone(), mode).unwrap();
            let (loss, grads) = t.loss_and_grads(&all).unwrap();
            assert!(((loss - loss0) / loss0).abs() < 1e-6, "α {alpha} {mode:?}: loss {loss} vs {loss0}");
            assert!(((t.loss_value(&all).unwrap() - loss0) / loss0).abs() < 1e-6);
            for (name, var) in t.weights().iter() {
                let g = grads.get(var.as_tensor()).cloned().unwrap_or_else(|| var.as_tensor().zeros_like().unwrap());
                let w = &want[name];
                let scale = w.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                if scale == 0.0 {
                    assert_eq!(g.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap(), 0.0, "{name}");
                } else {
                    let e = rel_err(&g, w);
                    assert!(e < 1e-4, "α {alpha} {mode:?}: grad {name} rel err {e}");
                }
            }
        }
    }
}

/// The fast target and the autograd target run the same chain: same minibatches, same noise,
/// and losses equal up to float32 rounding over a few dozen steps (MALA checks included).
#[test]
fn fast_and_autograd_targets_give_the_same_chain() {
    let (cfg, params, rows, _, _) = golden("1.0");
    let settings = SgldConfig { threads: 1, draws: 25, ..tiny_settings() };
    let run = |mode| {
        estimate(|_| TransformerTarget::with_mode(&params, &cfg, rows.clone(), mode), &settings).unwrap()
    };
    let fast = run(GradMode::Fast);
    let auto = run(GradMode::Autograd);
    assert!(((fast.loss_at_wstar - auto.loss_at_wstar) / auto.loss_at_wstar).abs() < 1e-6);
    for (a, b) in fast.chains.iter().zip(&auto.chains) {
        assert_eq!(a.draw_losses.len(), 25);
        assert_eq!(a.draw_losses.len(), b.draw_losses.len());
        for (x, y) in a.draw_losses.iter().zip(&b.draw_losses) {
            assert!(((x - y) / y).abs() < 1e-4, "chain {}: {x} vs {y}", a.chain);
        }
        let (ma, mb) = (a.mala_acceptance.unwrap(), b.mala_acceptance.unwrap());
        assert!((ma - mb).abs() < 1e-3, "MALA {ma} vs {mb}");
    }
    assert!((fast.llc_mean - auto.llc_mean).abs() < 1e-3 * auto.llc_mean.abs().max(1.0), "{} vs {}", fast.llc_mean, auto.llc_mean);
}

/// A chain's numbers do not depend on how many threads run the chains.
#[test]
fn transformer_chains_do_not_depend_on_thread_count() {
    let (cfg, params, rows, _, _) = golden("0.0");
    let settings = SgldConfig { chains: 3, ..tiny_settings() };
    let run = |threads| {
        let mut e = estimate(|_| TransformerTarget::new(&params, &cfg, rows.clone()), &SgldConfig { threads, ..settings.clone() }).unwrap();
        e.config.threads = 0;
        e
    };
    let one = run(1);
    assert_eq!(one, run(2));
    assert_eq!(one, run(3));
    assert_eq!(one.trace_rows().count(), 3 * 12);
}

/// The ladder's R-hat retry continues the rejected rung's chains: on the transformer (fast
/// path, MALA checks, three chains on two threads) the continued rung is the fresh rung with twice
/// the draws, bit for bit, twice over, and only more draws may differ.
#[test]
fn a_lengthened_rung_continues_its_chains_to_a_fresh_rungs_numbers() {
    use crate::llc::config::Rung;
    use crate::llc::estimate::Sampled;
    let (cfg, params, rows, _, _) = golden("1.0");
    let settings = SgldConfig { chains: 3, ..tiny_settings() };
    let factory = |_| TransformerTarget::new(&params, &cfg, rows.clone());
    let rung = |lengthened| Rung { halved: 0, lengthened };
    let fresh = |lengthened| Sampled::at(&factory, &settings, rung(lengthened)).unwrap().estimate;
    let continued = Sampled::at(&factory, &settings, rung(0)).unwrap().lengthen(&settings, rung(1)).unwrap();
    assert_eq!(continued.estimate, fresh(1));
    assert_eq!(continued.estimate.schedule.draws, 24);
    assert_eq!(continued.lengthen(&settings, rung(2)).unwrap().estimate, fresh(2));
    // A halved step is a different chain: refused, not continued.
    let halved = Rung { halved: 1, lengthened: 1 };
    let err = Sampled::at(&factory, &settings, rung(0)).unwrap().lengthen(&settings, halved).err().expect("refused").to_string();
    assert!(err.contains("cannot be continued"), "{err}");
}

/// On a released p = 59 checkpoint over all 3,481 pairs (14 chunks of the fast path) and over a
/// 512-row minibatch, the fast target's loss and gradients equal candle's autograd (in float64:
/// at this trained model float32 autograd's own `b_in` gradient is 2.5e-3 off): the MALA check
/// and the chain rely on the gradient being the loss's.
#[test]
fn fast_gradients_equal_autograd_on_a_released_checkpoint() {
    let c = ckpt::load(&fixture("pizza/2k4ohj6bhd.safetensors")).unwrap();
    let rows = Arc::new(TrainingRows::of(&c).unwrap());
    let fast = TransformerTarget::with_mode(&c.params, &c.model, rows.clone(), GradMode::Fast).unwrap();
    let all: Vec<u32> = (0..rows.len() as u32).collect();
    let batch: Vec<u32> = (0..512).map(|i| (i * 7 % rows.len()) as u32).collect();
    for sel in [&all, &batch] {
        let (lf, gf) = fast.loss_and_grads(sel).unwrap();
        let (toks, labs) = rows.gather(sel);
        let (la, ga) = crate::testing::autograd_f64(&c.params, &c.model, &toks, &labs);
        assert!(((lf - la) / la).abs() < 1e-4, "loss {lf} vs {la}");
        for (name, vf) in fast.weights().iter() {
            let (a, b) = (gf.get(vf.as_tensor()).unwrap(), &ga[name]);
            let e = rel_err(a, b);
            assert!(e < 1e-3, "{} rows, {name}: gradient rel err {e}", sel.len());
        }
    }
}

/// A released checkpoint carries no split: every pair is used, and the table says so.
#[test]
fn foreign_checkpoints_use_all_pairs() {
    let path = fixture("pizza/f5dh675z97.safetensors");
    let c = ckpt::load(&path).unwrap();
    assert!(c.run.is_none());
    let rows = TrainingRows::of(&c).unwrap();
    assert_eq!(rows.used, RowsUsed::AllPairs);
    assert_eq!(rows.len(), c.model.p * c.model.p);
    let dir = temp_dir("foreign");
    let out = dir.join("llc.parquet");
    let s = SgldConfig { chains: 1, draws: 3, burn_in: 0.into(), batch_size: Some(16), mala_every: 0, epsilon: 1e-6.into(), ..SgldConfig::plain() };
    let settings = SettingsSource::Fixed(s);
    estimate_stage(&jobs(std::slice::from_ref(&path), &settings), &out, &settings, &quiet()).unwrap();
    let rows_back = read_summary(&out).unwrap();
    assert_eq!(rows_back.len(), 1);
    assert_eq!(rows_back[0].rows_used, "all_pairs");
    assert_eq!(rows_back[0].n_train as usize, c.model.p * c.model.p);
    assert_eq!(rows_back[0].key.ident.seed, -1);
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Settings

#[test]
fn the_settings_hash_ignores_the_thread_count_and_nothing_else() {
    let base = SgldConfig::default();
    assert_eq!(settings_hash(&base).unwrap(), settings_hash(&SgldConfig { threads: 7, ..base.clone() }).unwrap());
    assert_ne!(settings_hash(&base).unwrap(), settings_hash(&SgldConfig { epsilon: 2e-4.into(), ..base }).unwrap());
}

/// Every shipped experiment file's `llc:` section parses and validates.
#[test]
fn shipped_pipelines_have_valid_llc_sections() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipelines");
    let mut paths: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "yaml")).collect();
    paths.sort();
    assert!(paths.len() >= 6, "pipelines/ holds {} files", paths.len());
    for path in paths {
        let name = path.display();
        let cfg = crate::config::load(&path, &[]).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let source = SettingsSource::from_config(&cfg, None).unwrap();
        let SettingsSource::Fixed(s) = source else { panic!("{name}: per-run settings") };
        assert!(s.gamma > 0.0 && s.chains >= 2, "{name}: {s:?}");
    }
    // default.yaml's settings serve p = 59 and p = 113 alike: ε = 8.8e-3/nβ, burn-in 2.5
    // relaxation times 2/(εγ) (no per_p llc entries any more).
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipelines/default.yaml");
    let at = |sets: &[String]| match SettingsSource::from_config(&crate::config::load(&path, sets).unwrap(), None).unwrap() {
        SettingsSource::Fixed(s) => s,
        SettingsSource::PerRun(_) => panic!("per-run settings"),
    };
    let (p59, p113) = (at(&[]), at(&["data.p=113".into()]));
    assert_eq!(p59, p113);
    assert_eq!((p59.epsilon, p59.burn_in), (Epsilon::PerNBeta(8.8e-3), StepCount::Relaxations(2.5)));
    // At p = 59 (n = 2785 training rows, nβ = n/ln n ≈ 351.0) that is ε ≈ 2.5e-5; at γ = 100 the
    // relaxation time 2/(εγ) is 797.7 steps, so 1995 steps of burn-in and draws ceil(3.99) = 4
    // steps apart; at p = 113 (n = 6384, nβ ≈ 728.3) ε ≈ 1.2e-5.
    let nbeta = |n: f64| n / n.ln();
    let s59 = p59.schedule(nbeta(2785.0), Rung::default());
    assert!((s59.epsilon - 2.507e-5).abs() < 1e-8, "{s59:?}");
    assert_eq!((p59.gamma, s59.burn_in, s59.steps_between_draws, s59.draws), (100.0, 1995, 4, 100));
    assert!((p113.schedule(nbeta(6384.0), Rung::default()).epsilon - 1.208e-5).abs() < 1e-8);
}

#[test]
fn grid_runs_with_their_own_llc_settings() {
    let cfg = crate::config::load_str("grid:\n  llc.gamma: [1, 100]\n", &[]).unwrap();
    let SettingsSource::PerRun(by_run) = SettingsSource::from_config(&cfg, None).unwrap() else { panic!("per run") };
    assert_eq!(by_run["gamma1"].gamma, 1.0);
    assert_eq!(by_run["gamma100"].gamma, 100.0);
    let SettingsSource::Fixed(s) = SettingsSource::from_config(&cfg, Some("gamma1")).unwrap() else { panic!("fixed") };
    assert_eq!(s.gamma, 1.0);
}

// ---------------------------------------------------------------------------------------------
// The estimate stage

#[test]
fn estimate_stage_writes_one_row_per_checkpoint_and_the_trace() {
    let dir = temp_dir("tables");
    let run = tiny_run(&dir, 1.0);
    let out = dir.join("llc.parquet");
    let settings = SettingsSource::Fixed(tiny_settings());
    let paths = jobs(std::slice::from_ref(&run), &settings);
    assert_eq!(paths.len(), 4);
    let outcome = estimate_stage(&paths, &out, &settings, &quiet()).unwrap();
    assert!(outcome.complete && outcome.computed == 4 && outcome.reused == 0);
    let df = tables::read_parquet(&out, &schema::LLC_SUMMARY).unwrap();
    assert_eq!(df.height(), 4);
    assert_eq!(df.width(), schema::LLC_SUMMARY.columns.len());
    let steps = tables::col_i64(&df, "step", &out).unwrap();
    assert_eq!(steps, vec![0, 10, 20, 30]);
    assert_eq!(tables::col_str(&df, "run", &out).unwrap(), vec!["alpha1"; 4]);
    assert_eq!(tables::col_str(&df, "rows_used", &out).unwrap(), vec!["train_split"; 4]);
    assert_eq!(tables::col_str(&df, "restriction", &out).unwrap(), vec!["all"; 4]);
    let n_params = tables::col_i64(&df, "n_params", &out).unwrap();
    assert_eq!(n_params, tables::col_i64(&df, "n_params_model", &out).unwrap());
    assert_eq!(tables::col_i64(&df, "n_train", &out).unwrap(), vec![97; 4]);
    assert_eq!(tables::col_i64(&df, "batch_size", &out).unwrap(), vec![32; 4]);
    assert_eq!(tables::col_f64(&df, "epsilon", &out).unwrap(), vec![1e-3; 4]);
    assert_eq!(tables::col_str(&df, "nbeta_setting", &out).unwrap(), vec!["n_over_ln_n"; 4]);
    let nbeta = tables::col_f64(&df, "nbeta", &out).unwrap();
    assert!((nbeta[0] - 97.0 / 97f64.ln()).abs() < 1e-9);
    for r in read_summary(&out).unwrap() {
        let any = r.n_diverged + r.n_negative + r.n_not_converged > 0 || r.negative_mean || r.flag_r_hat || r.flag_mala || r.flag_spikes;
        assert_eq!(r.flags.is_empty(), !any, "{}", r.line());
    }
    let trace_path = dir.join("llc_trace.parquet");
    let trace = tables::read_parquet(&trace_path, &schema::LLC_TRACE).unwrap();
    assert_eq!(trace.height(), 4 * 2 * 12);
    assert!(tables::col_f64(&trace, "loss", &trace_path).unwrap().iter().all(|l| l.is_finite()));
    // The report's reader accepts it.
    assert!(read_summary(&out).unwrap().iter().all(|r| r.chains_used == 2));
    assert!(!EstimatePaths::new(&out).partial_summary.exists());
    assert_eq!(tables::col_str(&trace, "restriction", &trace_path).unwrap(), vec!["all"; 4 * 2 * 12]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Interrupted after one checkpoint, a rerun computes only the others, and the final tables are
/// byte-identical to those of an uninterrupted run. Changed settings are not reused.
#[test]
fn an_interrupted_estimate_resumes_and_matches_an_uninterrupted_one() {
    let dir = temp_dir("resume");
    let run = tiny_run(&dir, 0.0);
    let settings = SettingsSource::Fixed(tiny_settings());
    let paths = jobs(&[run], &settings);

    let whole = dir.join("whole/llc.parquet");
    estimate_stage(&paths, &whole, &settings, &quiet()).unwrap();

    let part = dir.join("part/llc.parquet");
    let files = EstimatePaths::new(&part);
    let first = estimate_stage(&paths, &part, &settings, &EstimateOptions { progress: false, stop_after: Some(1) }).unwrap();
    assert!(!first.complete && first.computed == 1 && first.done.len() == 1);
    assert!(!part.exists() && !files.trace.exists(), "final tables must appear only at the end");
    assert!(files.partial_summary.exists() && files.partial_trace.exists());
    let second = estimate_stage(&paths, &part, &settings, &quiet()).unwrap();
    assert!(second.complete);
    assert_eq!((second.reused, second.computed), (1, 3));
    assert_eq!(std::fs::read(&whole).unwrap(), std::fs::read(&part).unwrap(), "summary bytes differ");
    assert_eq!(
        std::fs::read(EstimatePaths::new(&whole).trace).unwrap(),
        std::fs::read(&files.trace).unwrap(),
        "trace bytes differ"
    );
    assert!(!files.partial_summary.exists() && !files.partial_trace.exists());

    // Interrupted again, then rerun with other settings: nothing is reused.
    estimate_stage(&paths, &part, &settings, &EstimateOptions { progress: false, stop_after: Some(2) }).unwrap();
    let other = SettingsSource::Fixed(SgldConfig { epsilon: 5e-4.into(), ..tiny_settings() });
    let third = estimate_stage(&paths, &part, &other, &quiet()).unwrap();
    assert_eq!((third.reused, third.computed), (0, 4));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A NaN in a checkpoint's weights is refused with the file and the tensor named, before any
/// sampling (when the estimates are planned), and nothing is written.
#[test]
fn a_checkpoint_holding_a_nan_is_refused_naming_file_and_tensor() {
    let dir = temp_dir("nan");
    let run = tiny_run(&dir, 1.0);
    let good = ckpt::list_run(&run).unwrap().pop().unwrap().1;
    let (mut tensors, meta) = ckpt::read_safetensors(&good).unwrap();
    let w = &tensors["blocks.0.mlp.W_in"];
    let mut v = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    v[5] = f32::NAN;
    let bad_t = candle_core::Tensor::from_vec(v, w.shape(), w.device()).unwrap();
    tensors.insert("blocks.0.mlp.W_in".into(), bad_t);
    let bad = dir.join("bad.safetensors");
    ckpt::write_safetensors(&bad, &tensors, &meta).unwrap();
    let out = dir.join("out/llc.parquet");
    let err = Selection::default().plan(&[good, bad.clone()], &SettingsSource::Fixed(tiny_settings())).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains(&bad.display().to_string()) && msg.contains("blocks.0.mlp.W_in") && msg.contains("non-finite"), "{msg}");
    assert!(!out.exists() && !EstimatePaths::new(&out).trace.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A step size far too large makes every chain diverge: the row is flagged, the trace holds only
/// the finite losses recorded before divergence, and the undefined statistics say so.
#[test]
fn diverging_chains_are_flagged_and_leave_no_nan_in_the_trace() {
    let dir = temp_dir("diverge");
    let run = tiny_run(&dir, 1.0);
    let last = ckpt::list_run(&run).unwrap().pop().unwrap().1;
    let out = dir.join("llc.parquet");
    let s = SgldConfig { epsilon: 50.0.into(), burn_in: 0.into(), ..tiny_settings() };
    let settings = SettingsSource::Fixed(s);
    let outcome = estimate_stage(&jobs(&[last], &settings), &out, &settings, &quiet()).unwrap();
    let row = &outcome.done[0].summary;
    assert_eq!(row.n_diverged, 2, "{}", row.line());
    assert_eq!(row.chains_used, 0);
    assert!(row.flagged() && row.flags.contains("2/2 chains diverged"), "{}", row.flags);
    assert!(row.llc_mean.is_nan() && row.negative_mean, "no chain survived, so there is no estimate");
    let trace_path = dir.join("llc_trace.parquet");
    let trace = tables::read_parquet(&trace_path, &schema::LLC_TRACE).unwrap();
    assert!(trace.height() < 2 * 12);
    assert!(tables::col_f64(&trace, "loss", &trace_path).unwrap().iter().all(|l| l.is_finite()));
    let back = read_summary(&out).unwrap();
    assert!(back[0].loss_at_wstar.is_finite() && back[0].divergence_loss.is_finite());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Disagreeing chains (R-hat) and a too-large step (MALA acceptance) are flagged in words and in
/// their own columns, even when the estimator itself raised no flag.
#[test]
fn high_r_hat_and_low_mala_acceptance_are_flagged() {
    let (cfg, params, rows, _, _) = golden("1.0");
    let mut est = estimate(|_| TransformerTarget::new(&params, &cfg, rows.clone()), &tiny_settings()).unwrap();
    est.flags = Default::default();
    est.r_hat = 1.0;
    est.mala_acceptance = Some(0.95);
    est.diagnose();
    assert_eq!(est.flag_text(), "");
    est.r_hat = 1.5;
    est.mala_acceptance = Some(0.3);
    est.diagnose();
    let text = est.flag_text();
    assert!(text.contains("R-hat 1.5000 > 1.05") && text.contains("MALA acceptance 0.3000 < 0.8"), "{text}");
    let key = RowKey { ident: RunIdent::from_config(&crate::config::Config::default(), "x"), step: 1, checkpoint: "c".into() };
    let row = SummaryRow::of(key, "all", "train_split", 0, &est, String::new(), String::new());
    assert!(row.flag_r_hat && row.flag_mala && row.flagged());
    assert!(!row.flag_spikes);
    // A chain thrown far up and back is flagged as spiking (R-hat, rank-based, would not see it).
    est.r_hat = 1.0;
    est.mala_acceptance = Some(0.95);
    est.diagnose();
    assert!(est.spiking_chains().chains.is_empty());
    let lw = est.loss_at_wstar;
    let nb = est.nbeta;
    est.chains[1].draw_losses[5] = lw + 1e4 / nb;
    est.diagnose();
    let spikes = est.spiking_chains();
    assert_eq!(spikes.chains, vec![1]);
    let worst = spikes.worst;
    assert!((worst - 1e4).abs() < 1e-6 * 1e4, "{worst}");
    assert!(est.flag_text().contains("1/2 chains spiked (chains 1;"), "{}", est.flag_text());
    assert!(!est.healthy(&RecommendCriteria::default()));
    est.chains[1].draw_losses[5] = est.chains[1].draw_losses[4];
    est.diagnose();
    assert!(est.healthy(&RecommendCriteria::default()));
    // Healthy for a recommendation needs R-hat too.
    est.r_hat = 1.5;
    est.diagnose();
    assert!(!est.healthy(&RecommendCriteria::default()));
    est.r_hat = 1.02;
    est.diagnose();
    assert!(est.healthy(&RecommendCriteria::default()));
}

// ---------------------------------------------------------------------------------------------
// The calibration stage

#[test]
fn calibration_writes_the_grid_and_marks_the_recommendation() {
    let dir = temp_dir("calibrate");
    let run = tiny_run(&dir, 0.0);
    let last = ckpt::list_run(&run).unwrap().pop().unwrap().1;
    let out = dir.join("cal.parquet");
    let base = SgldConfig { draws: 40, burn_in: 20.into(), ..tiny_settings() };
    let grid = CalibrationGrid { epsilons: vec![1e-4, 3e-4, 1e-3], nbetas: vec![], gammas: vec![] };
    let criteria = RecommendCriteria { min_acceptance: 0.0, flat_tolerance: 10.0, ..RecommendCriteria::default() };
    let opts = CalibrateOptions { batch_sizes: vec![Some(32), None], equal_time_at: Some(1e-3), criteria };
    let res = calibrate_stage(&last, &out, &base, &grid, &opts).unwrap();
    assert_eq!(res.cells.len(), 6);
    let df = tables::read_parquet(&out, &schema::LLC_CALIBRATION).unwrap();
    assert_eq!(df.height(), 6);
    assert_eq!(tables::col_i64(&df, "batch_size", &out).unwrap(), vec![32, 32, 32, 97, 97, 97]);
    let rel = tables::col_f64(&df, "relative_change", &out).unwrap();
    assert!(rel[0].is_nan() && rel[3].is_nan() && rel[1].is_finite());
    // Equal sampling time: ε = 1e-4 runs 10× the burn-in and thinning of ε = 1e-3.
    assert_eq!(tables::col_i64(&df, "burn_in", &out).unwrap()[..3], [200, 67, 20]);
    assert_eq!(tables::col_i64(&df, "steps_between_draws", &out).unwrap()[..3], [10, 3, 1]);
    assert_eq!(res.recommendations.len(), 2);
    let marked = tables::col_bool(&df, "recommended", &out).unwrap().iter().filter(|b| **b).count();
    assert_eq!(marked, res.recommendations.iter().filter(|r| r.recommendation.is_some()).count());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// docs/llc.md documents every column of the LLC tables (it holds `Schema::markdown()` of each).
#[test]
fn docs_list_every_llc_column() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/llc.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for s in schema::ALL {
        assert!(doc.contains(&s.markdown()), "docs/llc.md does not hold the current column table of `{}`:\n{}", s.name, s.markdown());
    }
}


// ---------------------------------------------------------------------------------------------
// Restriction and selection

/// Restricted to a group, SGLD moves exactly the group's tensors: the others end a chain at w*
/// bit for bit, the group's have moved, and the group's gradients are the whole model's (the loss
/// still reads every weight), for every preset: the fast path computes only the group's gradients
/// and must give the same bits as the full backward.
#[test]
fn a_restricted_target_moves_only_its_group() {
    let (cfg, params, rows, _, _) = golden("1.0");
    let whole = TransformerTarget::new(&params, &cfg, rows.clone()).unwrap();
    let batch: Vec<u32> = (0..32).collect();
    let (lw, gw) = whole.loss_and_grads(&batch).unwrap();
    for preset in ["embed", "attn", "mlp", "unembed"] {
        let target = TransformerTarget::new(&params, &cfg, rows.clone()).unwrap().restrict(&Restriction::parse(preset).unwrap()).unwrap();
        let (lr, gr) = target.loss_and_grads(&batch).unwrap();
        assert_eq!(lw.to_bits(), lr.to_bits(), "{preset}");
        for (name, v) in target.free().iter().zip(target.params()) {
            let a = gr.get(v.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let b = gw.get(whole.weights().get(name).unwrap().as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(a, b, "{preset}: {name}");
        }
    }
    let group = Restriction::parse("attn").unwrap();
    let target = TransformerTarget::new(&params, &cfg, rows.clone()).unwrap().restrict(&group).unwrap();
    let free = ["blocks.0.attn.W_K", "blocks.0.attn.W_O", "blocks.0.attn.W_Q", "blocks.0.attn.W_V"];
    assert_eq!(target.free(), free);
    assert_eq!(target.params().len(), 4);
    let d: usize = target.params().iter().map(|v| v.elem_count()).sum();
    assert_eq!(d, 4 * 16 * 16, "four matrices of d_model² = 256 weights");
    let plan = crate::sampler::ChainPlan {
        epsilon: 1e-3,
        gamma: 100.0,
        nbeta: 20.0,
        batch_size: 32,
        burn_in: 0,
        draws: 10,
        steps_between_draws: 1,
        mala_every: 0,
        divergence_loss: f64::INFINITY,
        seed: 0,
        rmsprop: None,
    };
    let trace = crate::sampler::run_chain(&target, &plan, 0).unwrap();
    assert_eq!(trace.draw_losses.len(), 10);
    let start = params.flat().unwrap();
    for (name, now) in target.weights().flat().unwrap() {
        if free.contains(&name.as_str()) {
            assert_ne!(now, start[&name], "{name} did not move");
        } else {
            assert_eq!(now, start[&name], "{name} moved");
        }
    }
}

/// Which estimates the stage plans: by the flags, by `llc.steps` (for every group) and
/// `llc.trajectory` (every other checkpoint, for the first group), flags overriding the file.
#[test]
fn estimates_are_selected_by_the_flags_or_by_llc_steps_and_trajectory() {
    let dir = temp_dir("select");
    let run = tiny_run(&dir, 1.0);
    let inputs = std::slice::from_ref(&run);
    let at = |s: &SgldConfig, sel: &Selection| sel.plan(inputs, &SettingsSource::Fixed(s.clone()));
    let all = |steps: &[u64]| steps.iter().map(|&s| (s, "all".to_string())).collect::<Vec<_>>();
    let base = tiny_settings();
    // No selection: every checkpoint.
    assert_eq!(steps_and_groups(&at(&base, &Selection::default()).unwrap()), all(&[0, 10, 20, 30]));
    // The flags, as before; `last` among the steps.
    let every = Selection { every: Some(3), steps: None };
    assert_eq!(steps_and_groups(&at(&base, &every).unwrap()), all(&[0, 30]));
    let steps = |s: &[CheckpointStep]| Selection { every: None, steps: Some(s.to_vec()) };
    assert_eq!(steps_and_groups(&at(&base, &steps(&[CheckpointStep::At(10), CheckpointStep::At(20)])).unwrap()), all(&[10, 20]));
    assert_eq!(steps_and_groups(&at(&base, &steps(&[CheckpointStep::At(0), CheckpointStep::Last])).unwrap()), all(&[0, 30]));
    assert!(at(&base, &steps(&[CheckpointStep::At(7)])).is_err(), "nothing selected");
    // The file's steps, for every group; a trajectory run also at every other checkpoint for
    // the first group.
    let two = vec![Restriction::all(), Restriction::parse("attn").unwrap()];
    let file = SgldConfig { restrict: two, steps: Some(vec![CheckpointStep::At(0), CheckpointStep::Last]), ..base.clone() };
    let both = |s: u64| [(s, "all".to_string()), (s, "attn".to_string())];
    let want: Vec<(u64, String)> = both(0).into_iter().chain(both(30)).collect();
    assert_eq!(steps_and_groups(&at(&file, &Selection::default()).unwrap()), want);
    let other = SgldConfig { trajectory: vec!["*_seed0".into()], ..file.clone() };
    assert_eq!(steps_and_groups(&at(&other, &Selection::default()).unwrap()), want, "alpha1 is not a trajectory run");
    let traj = SgldConfig { trajectory: vec!["alpha?".into()], ..file.clone() };
    let want_traj: Vec<(u64, String)> = both(0).into_iter().chain([(10, "all".into()), (20, "all".into())]).chain(both(30)).collect();
    assert_eq!(steps_and_groups(&at(&traj, &Selection::default()).unwrap()), want_traj);
    // llc.first_group_steps: every run also at those checkpoints, for the first group only.
    let check = SgldConfig { first_group_steps: vec![CheckpointStep::At(20)], ..file.clone() };
    let want_check: Vec<(u64, String)> = both(0).into_iter().chain([(20, "all".into())]).chain(both(30)).collect();
    assert_eq!(steps_and_groups(&at(&check, &Selection::default()).unwrap()), want_check);
    let absent = SgldConfig { first_group_steps: vec![CheckpointStep::At(25)], ..file.clone() };
    let msg = format!("{:#}", at(&absent, &Selection::default()).unwrap_err());
    assert!(msg.contains("llc.first_group_steps lists step 25"), "{msg}");
    // A flag replaces the file's selection (every group at what the flag selects).
    let flagged = steps_and_groups(&at(&traj, &every).unwrap());
    assert_eq!(flagged, want);
    // A step of llc.steps the run directory lacks is an error naming the directory and the step.
    let missing = SgldConfig { steps: Some(vec![CheckpointStep::At(40)]), ..base };
    let msg = format!("{:#}", at(&missing, &Selection::default()).unwrap_err());
    assert!(msg.contains(&run.display().to_string()) && msg.contains("step 40") && msg.contains("last is step 30"), "{msg}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A group that matches none of a checkpoint's tensors is refused when the estimates are
/// planned, naming the file, the group and the tensors there are; nothing is written.
#[test]
fn a_group_that_matches_no_tensor_is_refused_before_sampling() {
    let dir = temp_dir("nomatch");
    let run = tiny_run(&dir, 0.0);
    let bad = SgldConfig { restrict: vec![Restriction::all(), Restriction::parse("blocks.1.*").unwrap()], ..tiny_settings() };
    let err = Selection::default().plan(std::slice::from_ref(&run), &SettingsSource::Fixed(bad)).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("step_0000000.safetensors") && msg.contains("`blocks.1.*` matches no tensor") && msg.contains("blocks.0.attn.W_Q"), "{msg}");
    // One pattern of a list that matches nothing is as much a mistake as a whole group.
    let typo = Restriction::tensors(["blocks.0.attn.W_Q", "blocks.0.mlp.W_inn"]).unwrap();
    let (cfg, params, rows, _, _) = golden("0.0");
    let msg = TransformerTarget::new(&params, &cfg, rows).unwrap().restrict(&typo).unwrap_err().to_string();
    assert!(msg.contains("its pattern `blocks.0.mlp.W_inn`"), "{msg}");
    assert!(!dir.join("llc.parquet").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// One row per checkpoint and group, keyed by both: the `restriction` column, the group's
/// number of sampled parameters beside the model's, a resume that reuses finished (checkpoint,
/// group) rows and ends byte-identical to an uninterrupted run.
#[test]
fn restricted_estimates_are_rows_keyed_by_checkpoint_and_group() {
    let dir = temp_dir("groups");
    let run = tiny_run(&dir, 1.0);
    let groups = vec![Restriction::all(), Restriction::parse("embed").unwrap(), Restriction::tensors(["blocks.0.mlp.W_in", "unembed.*"]).unwrap()];
    let s = SgldConfig { restrict: groups, steps: Some(vec![CheckpointStep::At(0), CheckpointStep::Last]), ..tiny_settings() };
    let settings = SettingsSource::Fixed(s.clone());
    let planned = jobs(std::slice::from_ref(&run), &settings);
    let whole = dir.join("whole/llc.parquet");
    let outcome = estimate_stage(&planned, &whole, &settings, &quiet()).unwrap();
    assert_eq!((outcome.total, outcome.computed), (6, 6));
    let rows = read_summary(&whole).unwrap();
    let names: Vec<(i64, &str)> = rows.iter().map(|r| (r.key.step, r.restriction.as_str())).collect();
    assert_eq!(names, [(0, "all"), (0, "embed"), (0, "blocks.0.mlp.W_in+unembed.*"), (30, "all"), (30, "embed"), (30, "blocks.0.mlp.W_in+unembed.*")]);
    // W_E (d_model, vocab) + W_pos (n_ctx, d_model); W_in (d_mlp, d_model) + W_U (d_model, vocab).
    let model = ckpt::load(&planned[0].path).unwrap().model;
    assert_eq!((model.vocab, model.n_ctx, model.d_model, model.d_mlp), (11, 2, 16, 64));
    for r in &rows {
        let want = match r.restriction.as_str() {
            "all" => model.n_params() as i64,
            "embed" => 16 * 11 + 2 * 16,
            _ => 64 * 16 + 16 * 11,
        };
        assert_eq!(r.n_params, want, "{}", r.restriction);
        assert_eq!(r.n_params_model, model.n_params() as i64);
        assert!(r.llc_mean.is_finite() && r.divergence_loss.is_finite(), "{}", r.line());
    }
    assert!(rows[1].llc_mean != rows[0].llc_mean && rows[2].llc_mean != rows[0].llc_mean);
    let trace = tables::llc::read_trace(&EstimatePaths::new(&whole).trace).unwrap();
    assert_eq!(trace.len(), 6 * 2 * 12);
    assert_eq!(trace.iter().filter(|(k, _)| k.restriction == "embed" && k.step == 30).count(), 2 * 12);

    // Interrupted after two estimates (the first two groups of step 0), then resumed.
    let part = dir.join("part/llc.parquet");
    let first = estimate_stage(&planned, &part, &settings, &EstimateOptions { progress: false, stop_after: Some(2) }).unwrap();
    assert!(!first.complete && first.done.len() == 2);
    let second = estimate_stage(&planned, &part, &settings, &quiet()).unwrap();
    assert_eq!((second.reused, second.computed), (2, 4));
    assert_eq!(std::fs::read(&whole).unwrap(), std::fs::read(&part).unwrap(), "summary bytes differ");
    assert_eq!(std::fs::read(EstimatePaths::new(&whole).trace).unwrap(), std::fs::read(EstimatePaths::new(&part).trace).unwrap(), "trace bytes differ");

    // Finished with the whole model alone, then groups added to `llc.restrict`: the rerun reuses
    // the finished rows and estimates only the new groups, ending with the same bytes.
    let grown = dir.join("grown/llc.parquet");
    let only_all = SettingsSource::Fixed(SgldConfig { restrict: vec![Restriction::all()], ..s });
    let before = estimate_stage(&jobs(std::slice::from_ref(&run), &only_all), &grown, &only_all, &quiet()).unwrap();
    assert!(before.complete && before.computed == 2);
    let after = estimate_stage(&planned, &grown, &settings, &quiet()).unwrap();
    assert_eq!((after.reused, after.computed), (2, 4));
    assert_eq!(std::fs::read(&whole).unwrap(), std::fs::read(&grown).unwrap(), "summary bytes differ");
    assert_eq!(std::fs::read(EstimatePaths::new(&whole).trace).unwrap(), std::fs::read(EstimatePaths::new(&grown).trace).unwrap(), "trace bytes differ");

    // The run and its table moved elsewhere (a data directory copied off a cluster's scratch):
    // the rerun reuses every row by content and says where the checkpoints are now.
    let moved_run = dir.join("moved-run");
    std::fs::rename(&run, &moved_run).unwrap();
    let moved = dir.join("moved/llc.parquet");
    std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
    for (from, to) in [(&grown, &moved), (&EstimatePaths::new(&grown).trace, &EstimatePaths::new(&moved).trace)] {
        std::fs::rename(from, to).unwrap();
    }
    let again = estimate_stage(&jobs(std::slice::from_ref(&moved_run), &settings), &moved, &settings, &quiet()).unwrap();
    assert_eq!((again.reused, again.computed), (6, 0));
    let rows = read_summary(&moved).unwrap();
    assert!(rows.iter().all(|r| r.key.checkpoint.starts_with(&*moved_run.to_string_lossy())), "{:?}", rows[0].key.checkpoint);
    assert_eq!(rows.iter().map(|r| r.llc_mean.to_bits()).collect::<Vec<_>>(), read_summary(&whole).unwrap().iter().map(|r| r.llc_mean.to_bits()).collect::<Vec<_>>());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// With the group `all`, the stage's rows equal those of the unrestricted code path (a
/// `TransformerTarget` over every weight, as the stage computed before restrictions existed) bit
/// for bit, in every column of the summary and the trace; `all` listed after another group too.
#[test]
fn the_group_all_reproduces_the_unrestricted_estimates_bit_for_bit() {
    let dir = temp_dir("bitwise");
    let run = tiny_run(&dir, 0.0);
    let base = tiny_settings();
    let s = SgldConfig { restrict: vec![Restriction::parse("mlp").unwrap(), Restriction::all()], ..base.clone() };
    let settings = SettingsSource::Fixed(s.clone());
    let out = dir.join("llc.parquet");
    estimate_stage(&jobs(std::slice::from_ref(&run), &settings), &out, &settings, &quiet()).unwrap();
    let got: Vec<SummaryRow> = read_summary(&out).unwrap().into_iter().filter(|r| r.restriction == "all").collect();
    let trace = tables::llc::read_trace(&EstimatePaths::new(&out).trace).unwrap();
    assert_eq!(got.len(), 4);
    assert_eq!(settings_hash(&s).unwrap(), settings_hash(&base).unwrap(), "restrict is not part of the settings hash");
    for (path, row) in ckpt::list_run(&run).unwrap().into_iter().map(|(_, p)| p).zip(&got) {
        let c = ckpt::load(&path).unwrap();
        let rows = Arc::new(TrainingRows::of(&c).unwrap());
        let est = estimate(|_| TransformerTarget::new(&c.params, &c.model, rows.clone()), &base).unwrap();
        let c_hash = crate::hash::hex(&std::fs::read(&path).unwrap());
        let want = SummaryRow::of(RowKey::of(&c), "all", rows.used.as_str(), c.model.n_params(), &est, settings_hash(&base).unwrap(), c_hash);
        // Debug prints every f64 in its shortest round-trip form, so equal text is equal bits
        // (NaNs included, which `==` would not call equal).
        assert_eq!(format!("{row:?}"), format!("{want:?}"), "step {}", row.key.step);
        let mine: Vec<(i64, i64, u64)> =
            trace.iter().filter(|(k, _)| k.restriction == "all" && k.step == row.key.step).map(|(_, t)| (t.chain, t.draw, t.loss.to_bits())).collect();
        let theirs: Vec<(i64, i64, u64)> = est.trace_rows().map(|(c, d, l)| (c as i64, d as i64, l.to_bits())).collect();
        assert_eq!(mine, theirs, "trace of step {}", row.key.step);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issue 12's regression: the initial checkpoint of default.yaml's alpha0_seed0 (step 0, no
/// training) is flagged with the fixed settings shipped before the ladder (ε = 5e-5, burn-in 400,
/// 2 chains × 100 draws, B = 256: MALA acceptance 0.793 in `make all`) and healthy with the new
/// defaults, the ladder included.
#[test]
fn the_initial_checkpoint_flagged_by_the_old_settings_is_healthy_with_the_defaults() {
    let dir = temp_dir("step0");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipelines/default.yaml");
    // No training, so only step 0 is scheduled: `llc.steps` (later checkpoints) is dropped.
    let cfg = crate::config::load(&path, &["train.steps=0".into(), "llc.steps=null".into()]).unwrap();
    let run = cfg.run(Some("alpha0_seed0")).unwrap();
    let data = Dataset::generate(&run.config.data);
    let run_dir = dir.join("alpha0_seed0");
    train::run(&run.config, "alpha0_seed0", &data, &RunDir::new(&run_dir)).unwrap();
    let (step, file) = ckpt::list_run(&run_dir).unwrap().remove(0);
    assert_eq!(step, 0);
    let c = ckpt::load(&file).unwrap();
    let old = SgldConfig { epsilon: 5e-5.into(), burn_in: 400.into(), chains: 2, draws: 100, batch_size: Some(256), mala_every: 10, ..SgldConfig::plain() };
    let before = estimate_raw(&c, &old).unwrap();
    eprintln!("old settings: {}", before.summary());
    assert!(before.flags.mala, "{}", before.summary());
    let after = estimate_raw(&c, &run.config.llc).unwrap();
    eprintln!("defaults: ε {:e}, burn-in {}, thinning {}, {} rung(s) ({}): {}", after.schedule.epsilon, after.schedule.burn_in, after.schedule.steps_between_draws, after.rejected.len() + 1, crate::llc::ladder::rejected_text(&after.rejected), after.summary());
    assert_eq!(run.config.llc.sampling(), SgldConfig::default(), "default.yaml samples with the defaults");
    assert!(!after.flags.flagged(), "{}", after.summary());
    std::fs::remove_dir_all(&dir).unwrap();
}
