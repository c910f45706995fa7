/*!
Speed measurements for `make bench`: milliseconds per full-batch training step (fast path and
autograd reference) and SGLD steps per second, with the FLOPs the factored computation needs and
the fraction of the machine's float32 peak they reach; the PyTorch and devinterp yardsticks
measured in the same run ([`reference`]); runs per hour of a sweep ([`runs`]); and each
measurement's peak memory, taken from a process of its own ([`process`]). Benchmarks print and
record; no test asserts a time.
*/

pub mod child;
pub mod process;
pub mod reference;
pub mod runs;

use std::time::Instant;

use anyhow::Result;

use crate::config;
use crate::data::Dataset;
use crate::model::{self, ModelConfig, Params};
use crate::optim::AdamW;

/// One line of the benchmark table (see [`crate::tables::bench::BENCH`], which writes it). It crosses from the measuring
/// child process to the bench binary as one JSON line.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Row {
    /// What was measured, e.g. `train_step_full_batch`.
    pub name: String,
    /// Whose code: `pizza` (this pipeline), `pytorch` or `devinterp` (the yardsticks).
    pub implementation: String,
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
    /// Peak resident memory of the process that made the measurement, in MB (0: not measured).
    pub peak_rss_mb: f64,
}

impl Row {
    /// Our row for a step timed once per repetition (`times`, milliseconds) that needs `gflop`
    /// GFLOP (0: not counted); the peak memory is filled in by the parent process.
    fn ours(name: String, p: u64, rows: usize, threads: usize, times: Vec<f64>, gflop: f64) -> Row {
        let (ms, ms_min) = median_min(times);
        let gflops = gflop / (ms / 1e3);
        Row {
            name,
            implementation: "pizza".into(),
            p,
            rows,
            threads,
            ms_per_step: ms,
            ms_min,
            gflop_per_step: gflop,
            gflops,
            peak_fraction: gflops / peak_gflops(threads),
            peak_rss_mb: 0.0,
        }
    }
}

/// The SGLD rows' name: `sgld_step_b<B>`, or `sgld_step_full_batch` when the batch is the whole
/// training split of `n` rows.
pub fn sgld_row_name(batch: usize, n: usize) -> String {
    if batch < n {
        format!("sgld_step_b{batch}")
    } else {
        "sgld_step_full_batch".into()
    }
}

/// FLOPs (2 per multiply-add) of one forward+backward of the one-layer model on `b` rows, as
/// `model::fast` computes it (see its docs for the notation; `R = M + V`, `V + T` embedding
/// rows, `P = 3·H·dh + R` projection columns). Per pair: the `U` products `V·M` (forward, and
/// twice backward), the weighted sums of table rows (`H·T·R` forward, the same again to sum
/// the gradients back by token, and `H·T·R` more for the attention weights' gradient), the two
/// bias-and-skip terms `2·R`, and the scores (`H·T·dh`, three times). Per token the table
/// products, which do not grow with the batch. At α = 0 the attention weights are constant and
/// their backward (`H·T·R + 2·H·T·dh` per pair, the products through `W_Q`, `W_K`) is skipped. The
/// element-wise sums that build and fold the tables (about 1 % more) are not counted.
pub fn flops_factored(cfg: &ModelConfig, b: usize) -> f64 {
    let (v, t, d, h, dh, m) = (cfg.vocab as f64, cfg.n_ctx as f64, cfg.d_model as f64, cfg.n_heads as f64, cfg.d_head as f64, cfg.d_mlp as f64);
    let (hd, r, rows) = (h * dh, m + v, v + t);
    let p = 3.0 * hd + r;
    let scores = cfg.alpha != 0.0;
    let per_pair = 3.0 * v * m + 2.0 * h * t * r + 2.0 * r + h * t * dh + if scores { h * t * r + 2.0 * h * t * dh } else { 0.0 };
    // Forward: X·Lᵀ, Gᵀ = W_Oᵀ·Rdᵀ, the values read out, U = W_Uᵀ·W_out, c = W_Uᵀ·b_out.
    let forward = rows * d * p + hd * d * r + rows * hd * r + v * d * m + v * d;
    // Backward: dGᵀ and dV, dW_O and dRd, the readers' gradients and dX (without W_Q, W_K at
    // α = 0), dW_out and dW_U from dU, and the two from dc.
    let readers = if scores { p } else { p - 2.0 * hd };
    let backward = 2.0 * rows * hd * r + 2.0 * d * hd * r + 2.0 * readers * rows * d + 2.0 * d * v * m + 2.0 * d * v;
    2.0 * (b as f64 * per_pair + forward + backward)
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

/// Milliseconds of each of `reps` whole LLC estimates with `settings` on the freshly initialised
/// model at modulus `p`, with the model's shape and the number of training rows.
fn time_estimates(p: u64, settings: &crate::llc::SgldConfig, reps: usize) -> Result<(ModelConfig, usize, Vec<f64>)> {
    let (mc, params, rows) = sampling_setup(p)?;
    let mut times = Vec::new();
    for _ in 0..reps.max(1) {
        let t0 = Instant::now();
        crate::llc::estimate(|_| crate::llc::transformer::TransformerTarget::new(&params, &mc, rows.clone()), settings)?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    Ok((mc, rows.len(), times))
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
    let name = if autograd { "train_step_autograd_reference" } else { "train_step_full_batch" };
    Ok(Row::ours(name.into(), p, y.len(), threads, times, flops_factored(&mc, y.len()) / 1e9))
}

/// Times SGLD on the transformer at modulus `p` (train fraction 0.8, `d_model` 128, freshly
/// initialised weights: the cost of a step does not depend on the weights): `chains` chains of
/// `steps` steps each on `threads` worker threads, one chain per thread at a time, minibatches of
/// `batch` rows (`None`: full batch), no MALA checks and no burn-in. The whole run is repeated
/// `reps` times; `ms_per_step` is the median over repetitions of wall time / (chains·steps), so
/// `1000 / ms_per_step` is the throughput in SGLD steps per second over all chains, and `ms_min`
/// the best repetition.
pub fn sgld_step(p: u64, batch: Option<usize>, chains: usize, threads: usize, steps: usize, reps: usize) -> Result<Row> {
    let settings = crate::llc::SgldConfig {
        batch_size: batch,
        chains,
        draws: steps,
        burn_in: 0.into(),
        mala_every: 0,
        threads,
        ..crate::llc::SgldConfig::plain()
    };
    let (mc, n, times) = time_estimates(p, &settings, reps)?;
    let times = times.into_iter().map(|ms| ms / (chains * steps) as f64).collect();
    let b = batch.unwrap_or(n).min(n);
    Ok(Row::ours(sgld_row_name(b, n), p, b, threads, times, flops_factored(&mc, b) / 1e9))
}

/// Wall time of one checkpoint's `llc estimate` at modulus `p` with `settings` (e.g. the
/// experiment's `llc:` section) on freshly initialised weights, as a row named
/// `llc_estimate_checkpoint` whose `ms_per_step` and `ms_min` are the milliseconds of the whole
/// estimate (median and best of `reps`), `rows` the batch size.
pub fn llc_checkpoint(p: u64, settings: &crate::llc::SgldConfig, reps: usize) -> Result<Row> {
    let (_, n, times) = time_estimates(p, settings, reps)?;
    let threads = match settings.threads {
        0 => rayon::current_num_threads(),
        t => t,
    };
    Ok(Row::ours("llc_estimate_checkpoint".into(), p, settings.batch_size.unwrap_or(n).min(n), threads, times, 0.0))
}

/// The table as aligned text, followed by our speed-up over each yardstick row measured in the
/// same run (same name and p).
pub fn format(rows: &[Row]) -> String {
    let mut s = format!(
        "{:<38} {:<9} {:>5} {:>6} {:>3} {:>10} {:>10} {:>8} {:>8} {:>6} {:>8}\n",
        "name", "impl", "p", "rows", "thr", "ms/step", "min ms", "GFLOP", "GFLOP/s", "%peak", "RSS MB"
    );
    for r in rows {
        s.push_str(&format!(
            "{:<38} {:<9} {:>5} {:>6} {:>3} {:>10.2} {:>10.2} {:>8.3} {:>8.1} {:>6.1} {:>8.0}\n",
            r.name, r.implementation, r.p, r.rows, r.threads, r.ms_per_step, r.ms_min, r.gflop_per_step, r.gflops, 100.0 * r.peak_fraction, r.peak_rss_mb
        ));
    }
    for (ours, theirs) in speedups(rows) {
        s.push_str(&format!(
            "{} p = {}: {:.2} ms here vs {:.2} ms {} -> {:.1}x\n",
            ours.name, ours.p, ours.ms_per_step, theirs.ms_per_step, theirs.implementation, theirs.ms_per_step / ours.ms_per_step
        ));
    }
    s
}

/// Pairs each of our rows with the yardstick rows of the same name and modulus.
pub fn speedups(rows: &[Row]) -> Vec<(&Row, &Row)> {
    let ours = rows.iter().filter(|r| r.implementation == "pizza");
    ours.flat_map(|o| rows.iter().filter(move |t| t.implementation != "pizza" && t.name == o.name && t.p == o.p).map(move |t| (o, t)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, implementation: &str, p: u64, ms: f64) -> Row {
        Row { name: name.into(), implementation: implementation.into(), p, ms_per_step: ms, ..Row::default() }
    }

    #[test]
    fn speedups_pair_rows_of_the_same_name_and_p() {
        let rows = [
            row("train_step_full_batch", "pizza", 113, 150.0),
            row("train_step_full_batch", "pytorch", 59, 270.0),
            row("train_step_full_batch", "pytorch", 113, 900.0),
            row("sgld_step_b512", "pizza", 59, 5.0),
            row("sgld_step_b512", "devinterp", 59, 25.0),
        ];
        let pairs: Vec<_> = speedups(&rows).into_iter().map(|(o, t)| (o.p, t.implementation.as_str(), t.ms_per_step / o.ms_per_step)).collect();
        assert_eq!(pairs, vec![(113, "pytorch", 6.0), (59, "devinterp", 5.0)]);
        assert!(format(&rows).contains("train_step_full_batch p = 113: 150.00 ms here vs 900.00 ms pytorch -> 6.0x"));
    }

    /// The factored FLOP count by hand for a toy shape: V = 3, T = 2, D = 4, H = 2, dh = 2, M = 8,
    /// so R = 11, V + T = 5 rows, H·dh = 4 and P = 3·4 + 11 = 23 columns.
    #[test]
    fn flops_by_hand() {
        let base = ModelConfig { vocab: 3, n_ctx: 2, d_model: 4, n_heads: 2, d_head: 2, d_mlp: 8, ..config::load_str("", &[]).unwrap().model_config() };
        // Per pair, α ≠ 0: 3·3·8 = 72; (3·2·2 + 2)·11 = 154; 3·2·2·2 = 24: 250.
        // Per token, forward: 5·4·23 = 460, 4·4·11 = 176, 5·4·11 = 220, 3·4·8 = 96, 3·4 = 12: 964;
        // backward: 2·5·4·11 = 440, 2·4·4·11 = 352, 23·5·4 = 460, 5·23·4 = 460, 2·4·3·8 = 192,
        // 2·4·3 = 24: 1928.
        let clock = ModelConfig { alpha: 0.5, ..base.clone() };
        assert_eq!(flops_factored(&clock, 10), 2.0 * (10.0 * 250.0 + 964.0 + 1928.0));
        // α = 0: per pair 72 + (2·2·2 + 2)·11 + 2·2·2 = 190; the readers' gradients and dX
        // without W_Q, W_K: (23 − 8)·5·4 = 300 each instead of 460, so the backward is 1608.
        let pizza = ModelConfig { alpha: 0.0, ..base };
        assert_eq!(flops_factored(&pizza, 10), 2.0 * (10.0 * 190.0 + 964.0 + 1608.0));
    }
}
