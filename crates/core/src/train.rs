/*!
One training run: seeded initialisation, AdamW with warm-up, full-batch (or minibatch) steps,
checkpoints on the configured schedule and the per-step metrics table.

Step numbering: the metrics row and the checkpoint labelled `step = t` both describe the weights
after `t` optimizer updates, i.e. *before* update `t` is applied. Step 0 is the initialisation and
the last step is the final weights.

A run directory holds `checkpoints/step_NNNNNNN.safetensors` (+ `.optim.safetensors` beside the
newest), `metrics.partial.parquet` while running, and at the end `metrics.parquet` and
`config.resolved.yaml`. Resuming restarts from the newest checkpoint that has its optimizer
state, or from the resume point a run stopped by a signal wrote ([`resume`]); because every step
is a deterministic function of the weights, the moments and the step number, a resumed run is
byte-identical to one that was never interrupted. A run holds the lock of its directory
(`crate::lock::run_dir`) while it writes there.
*/

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Device;
use tracing::info;

use crate::ckpt;
use crate::config::Config;
use crate::data::{Dataset, Split};
use crate::model::{self, Params};
use crate::optim::AdamW;
use crate::rng;
use crate::run::{RunDir, RunIdent};
use crate::tables::train::{read_metrics, write_metrics, MetricsRow};

pub mod resume;

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct Summary {
    /// First step with validation accuracy 1.0, if any.
    pub first_val_acc_1: Option<u64>,
    /// First step with training accuracy 1.0, if any.
    pub first_train_acc_1: Option<u64>,
    /// Final validation accuracy.
    pub final_val_acc: f64,
    /// Step the run resumed from (0 for a fresh run).
    pub resumed_from: u64,
}

/// Bytes a training step needs at most: the dataset, the per-pair buffers of a full-batch step
/// (activations, gradients, logits) and the per-token tables, with a factor 2 of headroom for
/// allocator slack. Used to refuse a `p` that cannot fit before any work is done.
pub fn memory_estimate(cfg: &Config) -> u64 {
    let mc = cfg.model_config();
    let rows = cfg.data.p * cfg.data.p;
    let batch = cfg.train.batch_size.map_or(rows, |b| (b as u64).min(rows));
    let (v, t, d, m, hd, h) = (mc.vocab as u64, mc.n_ctx as u64, mc.d_model as u64, mc.d_mlp as u64, (mc.n_heads * mc.d_head) as u64, mc.n_heads as u64);
    let per_pair = 3 * m + 4 * d + 2 * v + 2 * h * t + t + 1;
    let tables = t * v * (3 * d + 3 * hd + 2 * h * d) * (1 + batch.div_ceil(crate::model::fast::CHUNK as u64).min(64));
    let params = 4 * mc.n_params() as u64;
    2 * 4 * (rows * (t + 3) + batch * per_pair + tables) + params
}

/// Available memory from `/proc/meminfo` (`MemAvailable`), if readable.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Refuses, with the numbers, a config whose training step cannot fit in available memory.
pub fn check_memory(cfg: &Config) -> Result<()> {
    let need = memory_estimate(cfg);
    if let Some(avail) = available_memory() {
        if need > avail {
            bail!(
                "p = {} needs about {:.1} GiB for a training step but only {:.1} GiB is available; use a smaller data.p or set train.batch_size",
                cfg.data.p,
                need as f64 / (1u64 << 30) as f64,
                avail as f64 / (1u64 << 30) as f64
            );
        }
    }
    Ok(())
}

/// Trains one run into `dir` (resuming if it holds checkpoints of the same config), using all
/// of rayon's threads for each step.
pub fn run(cfg: &Config, run_id: &str, data: &Dataset, dir: &RunDir) -> Result<Summary> {
    run_with_threads(cfg, run_id, data, dir, rayon::current_num_threads())
}

/// Trains several runs of one dataset at once, one run per thread on `threads` threads. For a
/// sweep of small models this beats one process per run (no per-step thread synchronisation),
/// and since a step's result does not depend on its thread count, every run's outputs are the
/// bytes it would have alone.
pub fn run_many(runs: &[(Config, String, RunDir)], data: &Dataset, threads: usize) -> Result<Vec<Summary>> {
    use rayon::prelude::*;
    for (cfg, id, _) in runs {
        if cfg.data != data.config {
            bail!("run {id}: its data settings differ from the dataset's; runs trained together must share one dataset");
        }
    }
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads.max(1)).build()?;
    pool.install(|| runs.par_iter().map(|(cfg, id, dir)| run_with_threads(cfg, id, data, dir, 1)).collect())
}

fn run_with_threads(cfg: &Config, run_id: &str, data: &Dataset, dir: &RunDir, threads: usize) -> Result<Summary> {
    let device = Device::Cpu;
    check_memory(cfg)?;
    crate::interrupt::stop_at_safe_points();
    let _lock = crate::lock::run_dir(&dir.dir)?;
    let model_cfg = cfg.model_config();
    let t_cfg = &cfg.train;
    let schedule = t_cfg.checkpoints.steps(t_cfg.steps);
    let hash = cfg.hash()?; // provenance only: resuming compares the training part (`resume`)
    let mut meta = BTreeMap::from([
        ("pizza_config".to_string(), cfg.to_json()?),
        ("config_hash".to_string(), hash.clone()),
        ("run".to_string(), run_id.to_string()),
        ("seed".to_string(), t_cfg.seed.to_string()),
        ("git_sha".to_string(), ckpt::git_sha()),
    ]);

    for folder in [&dir.dir, &dir.checkpoints()] {
        let n = crate::fsio::remove_stale_temps(folder)?;
        if n > 0 {
            info!("removed {n} partly written file(s) left by an interrupted run in {}", folder.display());
        }
    }
    if let Some(done) = resume::finished(cfg, dir)? {
        info!("{} already holds the finished run; nothing to do", dir.dir.display());
        return Ok(done);
    }
    let (params, mut opt, mut rows, start) = match resume::point(dir, cfg)? {
        Some((step, path)) => {
            let c = ckpt::load(&path)?;
            let mut opt = AdamW::new(&c.params, t_cfg)?;
            let opath = ckpt::optim_path(&path);
            let (state, _) = ckpt::read_safetensors(&opath)?;
            opt.load_state(&state, step, &opath.display().to_string())?;
            let rows = read_partial(&dir.partial_metrics(), step)?;
            info!(step, "resuming from {}", path.display());
            (c.params, opt, rows, step)
        }
        None => {
            let params = Params::init(&model_cfg, t_cfg.seed, &device)?;
            let opt = AdamW::new(&params, t_cfg)?;
            (params, opt, Vec::new(), 0)
        }
    };
    let (val_x, val_y) = data.gather(&data.val);
    let full = t_cfg.batch_size.is_none_or(|b| b >= data.train.len());
    let (full_x, full_y) = data.gather(&data.train);

    let bar = crate::cli::progress_bar(t_cfg.steps, "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}", true);
    bar.set_prefix(run_id.to_string());
    bar.set_position(start);
    let mut last_saved: Option<PathBuf> = None;
    for t in start..=t_cfg.steps {
        let batch;
        let (x, y) = if full {
            (&full_x, &full_y)
        } else {
            batch = minibatch(data, t_cfg.batch_size.unwrap_or(1), t_cfg.seed, t);
            (&batch.0, &batch.1)
        };
        let out = model::loss_and_grad(&params, &model_cfg, x, y, t < t_cfg.steps, threads)?;
        if !out.loss.is_finite() {
            bail!(
                "training loss became {} at step {t}; the last good checkpoint is kept in {} (try a smaller train.lr)",
                out.loss,
                dir.checkpoints().display()
            );
        }
        let lr = opt.lr_at(t);
        let norm = params.norm()?;
        let accuracy = out.correct as f64 / y.len() as f64;
        rows.push(MetricsRow { step: t as i64, split: Split::Train, loss: out.loss, accuracy, lr, param_norm: norm });
        if (t % t_cfg.eval_every == 0 || t == t_cfg.steps) && !data.val.is_empty() {
            let v = model::loss_and_grad(&params, &model_cfg, &val_x, &val_y, false, threads)?;
            let vacc = v.correct as f64 / val_y.len() as f64;
            rows.push(MetricsRow { step: t as i64, split: Split::Val, loss: v.loss, accuracy: vacc, lr, param_norm: norm });
            bar.set_message(format!("train {:.3e} val {:.3e} acc {vacc:.3}", out.loss, v.loss));
        }
        if schedule.binary_search(&t).is_ok() {
            let path = dir.checkpoints().join(ckpt::checkpoint_name(t));
            write_frame(&rows, cfg, run_id, &dir.partial_metrics(), &meta)?;
            ckpt::write_safetensors(&ckpt::optim_path(&path), &opt.state()?, &BTreeMap::from([("step".to_string(), t.to_string())]))?;
            meta.insert("step".into(), t.to_string());
            ckpt::save(&path, &params, &model_cfg, &meta)?;
            meta.remove("step");
            if let Some(prev) = last_saved.replace(path.clone()) {
                let _ = std::fs::remove_file(ckpt::optim_path(&prev));
            }
            prune_optim(dir, t)?;
            resume::discard(dir)?;
            if bar.is_hidden() {
                // No bar in a log file or under srun: a line per checkpoint says how far a long
                // run has come.
                tracing::info!(run = run_id, step = t, of = t_cfg.steps, train_loss = out.loss, train_acc = accuracy, "checkpoint written");
            }
        }
        if let Some(grads) = &out.grads {
            if crate::interrupt::requested() {
                bar.abandon();
                let kept = match last_saved.as_ref().filter(|_| schedule.binary_search(&t).is_ok()) {
                    Some(scheduled) => scheduled.clone(),
                    None => resume::save(dir, cfg, run_id, &meta, t, &params, &opt, &rows)?,
                };
                bail!("stopped at step {t} of {}: kept {} with its optimizer state and the metrics so far; run the same command again to continue from step {t}", t_cfg.steps, kept.display());
            }
            opt.step_flat(grads)?;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    crate::fsio::write_bytes_atomic(&dir.resolved_config(), cfg.to_yaml()?.as_bytes())?;
    write_frame(&rows, cfg, run_id, &dir.metrics(), &meta)?;
    let _ = std::fs::remove_file(dir.partial_metrics());
    Ok(summarize(&rows, start))
}

/// The minibatch of step `t`: epochs are seeded permutations of the training rows.
fn minibatch(data: &Dataset, b: usize, seed: u64, t: u64) -> (Vec<u32>, Vec<u32>) {
    let n = data.train.len();
    let per_epoch = n.div_ceil(b) as u64;
    let (epoch, k) = (t / per_epoch, (t % per_epoch) as usize);
    let perm = rng::permutation(&mut rng::stream(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15), "minibatch"), n);
    let rows: Vec<u32> = perm[k * b..((k + 1) * b).min(n)].iter().map(|&i| data.train[i]).collect();
    data.gather(&rows)
}

/// Removes optimizer files of checkpoints other than `keep_step` (left by an interrupted run).
fn prune_optim(dir: &RunDir, keep_step: u64) -> Result<()> {
    for (step, path) in ckpt::list_run(&dir.checkpoints())? {
        if step != keep_step {
            let o = ckpt::optim_path(&path);
            if o.exists() {
                std::fs::remove_file(&o).with_context(|| format!("removing {}", o.display()))?;
            }
        }
    }
    Ok(())
}

fn read_partial(path: &Path, before: u64) -> Result<Vec<MetricsRow>> {
    let rows: Vec<MetricsRow> = read_metrics(path)
        .with_context(|| format!("resuming needs the metrics written with the checkpoint: {}", path.display()))?
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| (r.step as u64) < before)
        .collect();
    if before > 0 && rows.last().map(|r| r.step as u64 + 1) != Some(before) {
        bail!("{}: metrics stop before step {before}, the checkpoint to resume from", path.display());
    }
    Ok(rows)
}

fn write_frame(rows: &[MetricsRow], cfg: &Config, run_id: &str, path: &Path, meta: &BTreeMap<String, String>) -> Result<()> {
    write_metrics(&RunIdent::from_config(cfg, run_id), rows, path, meta)
}

fn summarize(rows: &[MetricsRow], start: u64) -> Summary {
    let first = |split: Split| rows.iter().find(|r| r.split == split && r.accuracy >= 1.0).map(|r| r.step as u64);
    Summary {
        first_val_acc_1: first(Split::Val),
        first_train_acc_1: first(Split::Train),
        final_val_acc: rows.iter().rev().find(|r| r.split == Split::Val).map_or(f64::NAN, |r| r.accuracy),
        resumed_from: start,
    }
}
