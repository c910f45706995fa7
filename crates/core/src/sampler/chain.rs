/*!
Running SGLD chains: the step loop of one chain (what is recorded and when), and several chains
on worker threads.
*/

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use candle_nn::Optimizer;

use super::{Minibatches, RmsProp, SamplerError, Sgld, SgldParams, SgldTarget};

/// Everything one chain needs to know, already resolved to numbers (no "n/ln n" rules here).
#[derive(Debug, Clone, PartialEq)]
pub struct ChainPlan {
    /// Step size ε.
    pub epsilon: f64,
    /// Localisation strength γ.
    pub gamma: f64,
    /// Inverse temperature times n.
    pub nbeta: f64,
    /// Rows per minibatch, `1..=n`.
    pub batch_size: usize,
    /// Steps before the first draw.
    pub burn_in: usize,
    /// Number of recorded draws.
    pub draws: usize,
    /// Steps per draw (thinning); at least 1.
    pub steps_between_draws: usize,
    /// Measure the MALA acceptance probability on every k-th step after burn-in; 0 = never.
    pub mala_every: usize,
    /// A minibatch loss above this value (or a non-finite one) stops the chain as diverged.
    pub divergence_loss: f64,
    /// Seed of all of the chain's randomness (noise and minibatches).
    pub seed: u64,
    /// RMSProp preconditioning; `None` is plain SGLD.
    pub rmsprop: Option<RmsProp>,
}

impl ChainPlan {
    /// Total number of SGLD steps: burn-in plus one thinning interval per draw.
    pub fn total_steps(&self) -> usize {
        self.burn_in + self.draws * self.steps_between_draws
    }

    /// Whether the loss computed at step `step` (before its update) is recorded as a draw.
    /// Mirrors devinterp: with thinning `k`, the draws are steps `burn_in + k − 1`,
    /// `burn_in + 2k − 1`, …; with `k = 1` every step from `burn_in` on.
    #[allow(clippy::manual_is_multiple_of)] // `is_multiple_of` needs Rust 1.87; MSRV is 1.85.
    pub fn is_draw(&self, step: usize) -> bool {
        step >= self.burn_in && (step + 1 - self.burn_in) % self.steps_between_draws.max(1) == 0
    }

    /// Whether step `step` is a MALA-checked step.
    #[allow(clippy::manual_is_multiple_of)]
    pub fn is_mala(&self, step: usize) -> bool {
        self.mala_every > 0 && step >= self.burn_in && (step - self.burn_in) % self.mala_every == 0
    }

    /// Sampler settings of chain `chain`: noise on ChaCha8 stream `2·chain` of the plan's seed,
    /// minibatches on stream `2·chain + 1`.
    pub fn sgld_params(&self, chain: usize) -> SgldParams {
        SgldParams {
            epsilon: self.epsilon,
            gamma: self.gamma,
            nbeta: self.nbeta,
            seed: self.seed,
            stream: 2 * chain as u64,
            rmsprop: self.rmsprop,
        }
    }
}

/// Where and why a chain was stopped.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Divergence {
    /// The step whose loss was non-finite or above the plan's `divergence_loss`.
    pub step: usize,
    /// That loss (may be NaN or infinite).
    pub loss: f64,
}

/// What one chain recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainTrace {
    /// Chain index.
    pub chain: usize,
    /// Minibatch loss `L_B(w_t)` at each draw, in draw order (shorter than `plan.draws` if the
    /// chain diverged).
    pub draw_losses: Vec<f64>,
    /// MALA acceptance probability of each checked step, in step order.
    pub mala_accept: Vec<f64>,
    /// Set when the chain was stopped early.
    pub divergence: Option<Divergence>,
}

/// Runs one chain on `target` (which must be at `w*`) and returns its trace.
///
/// Each step computes the minibatch loss at the current point, checks it for divergence, records
/// it if the step is a draw, then moves. A diverged chain is stopped and returned, not an error.
pub fn run_chain<T: SgldTarget + ?Sized>(
    target: &T,
    plan: &ChainPlan,
    chain: usize,
) -> Result<ChainTrace, SamplerError> {
    let wrap = |source| SamplerError::Candle { chain, source };
    let n = target.n_train();
    if plan.batch_size == 0 || plan.batch_size > n {
        return Err(SamplerError::InvalidPlan(format!(
            "batch size {} is not in 1..={n}",
            plan.batch_size
        )));
    }
    let mut sgld = Sgld::new(target.params().to_vec(), plan.sgld_params(chain)).map_err(wrap)?;
    let mut batches = Minibatches::new(n, plan.batch_size, plan.seed, 2 * chain as u64 + 1);
    let mut trace = ChainTrace {
        chain,
        draw_losses: Vec::with_capacity(plan.draws),
        mala_accept: Vec::new(),
        divergence: None,
    };
    for step in 0..plan.total_steps() {
        let rows = batches.next_batch();
        let (loss, grads) = target.loss_and_grads(rows).map_err(wrap)?;
        if !loss.is_finite() || loss > plan.divergence_loss {
            trace.divergence = Some(Divergence { step, loss });
            break;
        }
        if plan.is_mala(step) {
            let outcome = sgld
                .step_with_mala(loss, &grads, || target.loss_and_grads(rows))
                .map_err(wrap)?;
            trace.mala_accept.push(outcome.accept_prob);
        } else {
            sgld.step(&grads).map_err(wrap)?;
        }
        if plan.is_draw(step) {
            trace.draw_losses.push(loss);
        }
    }
    if let Some(d) = trace.divergence {
        tracing::warn!(chain, step = d.step, loss = d.loss, "SGLD chain diverged");
    } else {
        tracing::debug!(
            chain,
            draws = trace.draw_losses.len(),
            "SGLD chain finished"
        );
    }
    Ok(trace)
}

/// Runs `chains` chains on up to `threads` worker threads (0 = one per available core) and
/// returns their traces in chain order.
///
/// Chain `i` samples `factory(i)`, built on the worker thread that runs it; if `first` is given
/// it is used as chain 0's target instead (callers that already built one to inspect `w*` avoid
/// building it twice). The first error stops workers from starting new chains and is returned.
///
/// candle's CPU kernels (matmul in particular) use their own rayon pool on top of these
/// threads; with one chain per core, `RAYON_NUM_THREADS=1` avoids oversubscription (see the
/// performance notes). Neither setting changes any number.
pub fn run_chains<T, F>(
    factory: &F,
    plan: &ChainPlan,
    chains: usize,
    threads: usize,
    first: Option<T>,
) -> Result<Vec<ChainTrace>, SamplerError>
where
    T: SgldTarget,
    F: Fn(usize) -> anyhow::Result<T> + Sync,
{
    let threads = match threads {
        // RAYON_NUM_THREADS when set (the Makefile divides the cores among parallel jobs).
        0 => rayon::current_num_threads(),
        t => t,
    }
    .clamp(1, chains.max(1));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first = Mutex::new(first);
    let results: Mutex<Vec<Option<Result<ChainTrace, SamplerError>>>> =
        Mutex::new((0..chains).map(|_| None).collect());

    let worker = || loop {
        if failed.load(Ordering::SeqCst) {
            break;
        }
        let i = next.fetch_add(1, Ordering::SeqCst);
        if i >= chains {
            break;
        }
        let prebuilt = if i == 0 {
            first.lock().ok().and_then(|mut f| f.take())
        } else {
            None
        };
        let target = match prebuilt {
            Some(t) => Ok(t),
            None => factory(i).map_err(|source| SamplerError::Target { chain: i, source }),
        };
        let result = target.and_then(|t| run_chain(&t, plan, i));
        if result.is_err() {
            failed.store(true, Ordering::SeqCst);
        }
        if let Ok(mut r) = results.lock() {
            r[i] = Some(result);
        }
    };
    let joined: Vec<std::thread::Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads).map(|_| s.spawn(worker)).collect();
        handles.into_iter().map(|h| h.join()).collect()
    });
    if joined.iter().any(|j| j.is_err()) {
        return Err(SamplerError::Panicked);
    }
    let results = results.into_inner().map_err(|_| SamplerError::Panicked)?;
    // Report the error of the lowest-numbered failing chain; chains never started after a failure
    // are simply absent.
    let mut traces = Vec::with_capacity(chains);
    for r in results {
        match r {
            Some(Ok(t)) => traces.push(t),
            Some(Err(e)) => return Err(e),
            None => {}
        }
    }
    if traces.len() != chains {
        return Err(SamplerError::Panicked);
    }
    Ok(traces)
}
