/*!
Speed measurements for `make bench`: milliseconds per full-batch training step (fast path and
autograd reference) and SGLD steps per second, with the FLOPs the factored computation needs and
the fraction of the machine's float32 peak they reach. Benchmarks print and record; no test
asserts a time.
*/

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use polars::prelude::{Column, DataFrame};

use crate::config;
use crate::data::Dataset;
use crate::model::{self, ModelConfig, Params};
use crate::optim::AdamW;
use crate::tables::{self, schemas};

/// One line of the benchmark table (see [`schemas::BENCH`]).
#[derive(Debug, Clone)]
pub struct Row {
    /// What was measured, e.g. `train_step_full_batch`.
    pub name: String,
    /// Modulus.
    pub p: u64,
    /// Rows per step (batch size).
    pub rows: usize,
    /// Threads used.
    pub threads: usize,
    /// Median milliseconds per step.
    pub ms_per_step: f64,
    /// Fastest step.
    pub ms_min: f64,
    /// FLOPs per step of the factored computation (0 where not counted).
    pub gflop_per_step: f64,
    /// Achieved GFLOP/s.
    pub gflops: f64,
    /// Achieved fraction of the float32 peak of `threads` cores.
    pub peak_fraction: f64,
}

/// FLOPs (2 per multiply-add) of one forward+backward of the factored one-layer model on `b`
/// rows: per pair the attention (`H·T·(dh + D)` forward), the MLP and unembedding products
/// (`D·M + M·D + D·V`), each product three times (forward, two backward); per token the tables.
pub fn flops_factored(cfg: &ModelConfig, b: usize) -> f64 {
    let (v, t, d, h, dh, m) = (cfg.vocab as f64, cfg.n_ctx as f64, cfg.d_model as f64, cfg.n_heads as f64, cfg.d_head as f64, cfg.d_mlp as f64);
    let per_pair = 3.0 * (d * m + m * d + d * v) + 3.0 * h * t * (dh + d);
    let tables = 3.0 * (t * 2.0 * v * d * h * dh + v * d * h * dh + t * v * h * dh * d);
    2.0 * (b as f64 * per_pair + tables)
}

/// Float32 peak of `threads` cores: AVX2 with two 256-bit FMA units (32 FLOP per cycle) at the
/// clock `/proc/cpuinfo` reports.
pub fn peak_gflops(threads: usize) -> f64 {
    let mhz = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("cpu MHz")).and_then(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok()))
        .unwrap_or(3000.0);
    threads as f64 * 32.0 * mhz / 1000.0
}

fn median_min(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0])
}

/// The paper's model at modulus `p` (train fraction 0.8), freshly initialised, with its training
/// rows as the SGLD benchmarks sample them: the cost of a step does not depend on the weights.
fn sampling_setup(p: u64) -> Result<(ModelConfig, Params, std::sync::Arc<crate::llc::transformer::TrainingRows>)> {
    let cfg = config::load_str("", &[format!("data.p={p}")])?;
    let mc = cfg.model_config();
    let data = Dataset::generate(&cfg.data);
    let params = Params::init(&mc, 0, &candle_core::Device::Cpu)?;
    let (tokens, labels) = data.gather(&data.train);
    let rows = std::sync::Arc::new(crate::llc::transformer::TrainingRows {
        tokens,
        labels,
        n_ctx: data.n_ctx,
        used: crate::llc::transformer::RowsUsed::TrainSplit,
    });
    Ok((mc, params, rows))
}

/// Times full-batch training steps (loss, gradients, AdamW) at modulus `p`, train fraction 0.8,
/// `d_model` 128; `autograd` picks candle's autograd through the textbook forward instead of
/// the fast path.
pub fn train_step(p: u64, threads: usize, steps: usize, autograd: bool) -> Result<Row> {
    let cfg = config::load_str("", &[format!("data.p={p}")])?;
    let mc = cfg.model_config();
    let data = Dataset::generate(&cfg.data);
    let params = Params::init(&mc, 0, &candle_core::Device::Cpu)?;
    let mut opt = AdamW::new(&params, &cfg.train)?;
    let (x, y) = data.gather(&data.train);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
    let mut times = Vec::new();
    pool.install(|| -> Result<()> {
        let model = crate::model::Transformer::new(params.var_builder(), &mc)?;
        let (tx, ty) = data.batch(&data.train, &candle_core::Device::Cpu)?;
        for i in 0..steps + 2 {
            let t0 = Instant::now();
            if autograd {
                let loss = model::cross_entropy_f64(&model.forward_reference(&tx)?, &ty)?;
                opt.step(&loss.backward()?)?;
            } else {
                let out = model::loss_and_grad(&params, &mc, &x, &y, true, threads)?;
                opt.step_flat(out.grads.as_ref().expect("asked for gradients"))?;
            }
            if i >= 2 {
                times.push(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
        Ok(())
    })?;
    let (ms, ms_min) = median_min(times);
    let gflop = flops_factored(&mc, y.len()) / 1e9;
    Ok(Row {
        name: if autograd { "train_step_autograd_reference" } else { "train_step_full_batch" }.into(),
        p,
        rows: y.len(),
        threads,
        ms_per_step: ms,
        ms_min,
        gflop_per_step: gflop,
        gflops: gflop / (ms / 1e3),
        peak_fraction: gflop / (ms / 1e3) / peak_gflops(threads),
    })
}

/// Times SGLD on the transformer at modulus `p` (train fraction 0.8, `d_model` 128, freshly
/// initialised weights: the cost of a step does not depend on the weights): `chains` chains of
/// `steps` steps each on `threads` worker threads, one chain per thread at a time, minibatches of
/// `batch` rows (`None`: full batch), no MALA checks and no burn-in. The whole run is repeated
/// `reps` times; `ms_per_step` is the median over repetitions of wall time / (chains·steps), so
/// `1000 / ms_per_step` is the throughput in SGLD steps per second over all chains, and `ms_min`
/// the best repetition.
pub fn sgld_step(p: u64, batch: Option<usize>, chains: usize, threads: usize, steps: usize, reps: usize) -> Result<Row> {
    let (mc, params, rows) = sampling_setup(p)?;
    let settings = crate::llc::SgldConfig {
        batch_size: batch,
        chains,
        draws: steps,
        burn_in: 0,
        mala_every: 0,
        threads,
        ..crate::llc::SgldConfig::default()
    };
    let n = rows.len();
    let mut times = Vec::new();
    for _ in 0..reps.max(1) {
        let t0 = Instant::now();
        crate::llc::estimate(|_| crate::llc::transformer::TransformerTarget::new(&params, &mc, rows.clone()), &settings)?;
        times.push(t0.elapsed().as_secs_f64() * 1e3 / (chains * steps) as f64);
    }
    let (ms, ms_min) = median_min(times);
    let b = batch.unwrap_or(n).min(n);
    let gflop = flops_factored(&mc, b) / 1e9;
    Ok(Row {
        name: if batch.is_some_and(|b| b < n) { format!("sgld_step_b{b}") } else { "sgld_step_full_batch".into() },
        p,
        rows: b,
        threads,
        ms_per_step: ms,
        ms_min,
        gflop_per_step: gflop,
        gflops: gflop / (ms / 1e3),
        peak_fraction: gflop / (ms / 1e3) / peak_gflops(threads),
    })
}

/// Wall time of one checkpoint's `llc estimate` at modulus `p` with `settings` (e.g. the
/// experiment's `llc:` section) on freshly initialised weights, as a row named
/// `llc_estimate_checkpoint` whose `ms_per_step` and `ms_min` are the milliseconds of the whole
/// estimate (median and best of `reps`), `rows` the batch size.
pub fn llc_checkpoint(p: u64, settings: &crate::llc::SgldConfig, reps: usize) -> Result<Row> {
    let (mc, params, rows) = sampling_setup(p)?;
    let n = rows.len();
    let mut times = Vec::new();
    for _ in 0..reps.max(1) {
        let t0 = Instant::now();
        crate::llc::estimate(|_| crate::llc::transformer::TransformerTarget::new(&params, &mc, rows.clone()), settings)?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let (ms, ms_min) = median_min(times);
    let threads = match settings.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        t => t,
    };
    Ok(Row {
        name: "llc_estimate_checkpoint".into(),
        p,
        rows: settings.batch_size.unwrap_or(n).min(n),
        threads,
        ms_per_step: ms,
        ms_min,
        gflop_per_step: 0.0,
        gflops: 0.0,
        peak_fraction: 0.0,
    })
}

/// Writes the table and prints it.
pub fn write(rows: &[Row], path: &Path) -> Result<()> {
    let n = rows.len();
    let mut df = DataFrame::new(
        n,
        vec![
            Column::new("name".into(), rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>()),
            Column::new("p".into(), rows.iter().map(|r| r.p as i64).collect::<Vec<_>>()),
            Column::new("rows".into(), rows.iter().map(|r| r.rows as i64).collect::<Vec<_>>()),
            Column::new("threads".into(), rows.iter().map(|r| r.threads as i64).collect::<Vec<_>>()),
            Column::new("ms_per_step".into(), rows.iter().map(|r| r.ms_per_step).collect::<Vec<_>>()),
            Column::new("ms_min".into(), rows.iter().map(|r| r.ms_min).collect::<Vec<_>>()),
            Column::new("gflop_per_step".into(), rows.iter().map(|r| r.gflop_per_step).collect::<Vec<_>>()),
            Column::new("gflops".into(), rows.iter().map(|r| r.gflops).collect::<Vec<_>>()),
            Column::new("peak_fraction".into(), rows.iter().map(|r| r.peak_fraction).collect::<Vec<_>>()),
        ],
    )?;
    tables::write_parquet(&mut df, &schemas::BENCH, path, &BTreeMap::new())
}

/// The table as aligned text.
pub fn format(rows: &[Row]) -> String {
    let mut s = format!("{:<32} {:>5} {:>6} {:>3} {:>10} {:>10} {:>8} {:>8} {:>6}\n", "name", "p", "rows", "thr", "ms/step", "min ms", "GFLOP", "GFLOP/s", "%peak");
    for r in rows {
        s.push_str(&format!(
            "{:<32} {:>5} {:>6} {:>3} {:>10.2} {:>10.2} {:>8.3} {:>8.1} {:>6.1}\n",
            r.name, r.p, r.rows, r.threads, r.ms_per_step, r.ms_min, r.gflop_per_step, r.gflops, 100.0 * r.peak_fraction
        ));
    }
    s
}
