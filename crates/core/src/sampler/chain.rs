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

/// A chain in progress: its sampler, minibatch schedule and trace, and the next step to take.
/// Kept between [`advance`](ChainState::advance) calls, so a longer plan continues a chain rather
/// than redoing it: the noise and the minibatches are streams that do not depend on how long the
/// chain will run, so a chain advanced to a plan's end in two calls has exactly the trace of one
/// run of that plan (tested).
struct ChainState {
    sgld: Sgld,
    batches: Minibatches,
    trace: ChainTrace,
    step: usize,
}

impl ChainState {
    fn new<T: SgldTarget + ?Sized>(target: &T, plan: &ChainPlan, chain: usize) -> Result<ChainState, SamplerError> {
        let n = target.n_train();
        if plan.batch_size == 0 || plan.batch_size > n {
            return Err(SamplerError::InvalidPlan(format!(
                "batch size {} is not in 1..={n}",
                plan.batch_size
            )));
        }
        let sgld = Sgld::new(target.params().to_vec(), plan.sgld_params(chain)).map_err(|source| SamplerError::Candle { chain, source })?;
        Ok(ChainState {
            sgld,
            batches: Minibatches::new(n, plan.batch_size, plan.seed, 2 * chain as u64 + 1),
            trace: ChainTrace { chain, draw_losses: Vec::with_capacity(plan.draws), mala_accept: Vec::new(), divergence: None },
            step: 0,
        })
    }

    /// Takes the steps from where the chain stands to the end of `plan` (none once it diverged).
    ///
    /// Each step computes the minibatch loss at the current point, checks it for divergence,
    /// records it if the step is a draw, then moves. A diverged chain is stopped, not an error.
    fn advance<T: SgldTarget + ?Sized>(&mut self, target: &T, plan: &ChainPlan) -> Result<(), SamplerError> {
        let chain = self.trace.chain;
        let wrap = |source| SamplerError::Candle { chain, source };
        while self.step < plan.total_steps() && self.trace.divergence.is_none() {
            let step = self.step;
            let rows = self.batches.next_batch();
            let (loss, grads) = target.loss_and_grads(rows).map_err(wrap)?;
            if !loss.is_finite() || loss > plan.divergence_loss {
                self.trace.divergence = Some(Divergence { step, loss });
                tracing::warn!(chain, step, loss, "SGLD chain diverged");
                break;
            }
            if plan.is_mala(step) {
                let outcome = self.sgld.step_with_mala(loss, &grads, || target.loss_and_grads(rows)).map_err(wrap)?;
                self.trace.mala_accept.push(outcome.accept_prob);
            } else {
                self.sgld.step(&grads).map_err(wrap)?;
            }
            if plan.is_draw(step) {
                self.trace.draw_losses.push(loss);
            }
            self.step += 1;
        }
        tracing::debug!(chain, draws = self.trace.draw_losses.len(), "SGLD chain advanced");
        Ok(())
    }
}

/// Runs one chain on `target` (which must be at `w*`) and returns its trace.
pub fn run_chain<T: SgldTarget + ?Sized>(
    target: &T,
    plan: &ChainPlan,
    chain: usize,
) -> Result<ChainTrace, SamplerError> {
    let mut state = ChainState::new(target, plan, chain)?;
    state.advance(target, plan)?;
    Ok(state.trace)
}

/// A chain that owns its target, so that it can be continued under a longer plan
/// ([`advance_chains`]); [`run_chains_kept`] starts them.
pub struct Chain<T> {
    target: T,
    state: ChainState,
    /// The plan it last ran under.
    plan: ChainPlan,
}

impl<T> Chain<T> {
    /// What the chain has recorded so far.
    pub fn trace(&self) -> &ChainTrace {
        &self.state.trace
    }

    /// The plan it last ran under.
    pub fn plan(&self) -> &ChainPlan {
        &self.plan
    }
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
    Ok(run_chains_kept(factory, plan, chains, threads, first)?.into_iter().map(|c| c.state.trace).collect())
}

/// [`run_chains`], keeping each chain (its target and sampler state) so that a longer plan can
/// continue it ([`advance_chains`]).
pub fn run_chains_kept<T, F>(
    factory: &F,
    plan: &ChainPlan,
    chains: usize,
    threads: usize,
    first: Option<T>,
) -> Result<Vec<Chain<T>>, SamplerError>
where
    T: SgldTarget,
    F: Fn(usize) -> anyhow::Result<T> + Sync,
{
    let mut first = first;
    let jobs: Vec<Option<T>> = (0..chains).map(|i| if i == 0 { first.take() } else { None }).collect();
    on_workers(jobs, threads, |i, prebuilt| {
        let target = match prebuilt {
            Some(t) => t,
            None => factory(i).map_err(|source| SamplerError::Target { chain: i, source })?,
        };
        let mut state = ChainState::new(&target, plan, i)?;
        state.advance(&target, plan)?;
        Ok(Chain { target, state, plan: plan.clone() })
    })
}

/// Continues kept chains to the end of `plan`, which must extend the plan they ran under by
/// draws alone (same step size, burn-in, thinning and seed): the result is what
/// [`run_chains_kept`] under `plan` would have given, at the cost of the new steps only.
pub fn advance_chains<T: SgldTarget>(chains: Vec<Chain<T>>, plan: &ChainPlan, threads: usize) -> Result<Vec<Chain<T>>, SamplerError> {
    for c in &chains {
        let same_but_draws = ChainPlan { draws: plan.draws, ..c.plan.clone() } == *plan;
        if !same_but_draws || plan.draws < c.plan.draws {
            return Err(SamplerError::InvalidPlan(format!("chain {} cannot be continued under {plan:?}: it ran under {:?}, and only more draws may differ", c.state.trace.chain, c.plan)));
        }
    }
    let jobs: Vec<Option<Chain<T>>> = chains.into_iter().map(Some).collect();
    on_workers(jobs, threads, |_, chain| {
        let mut chain = chain.expect("every job carries its chain");
        chain.state.advance(&chain.target, plan)?;
        chain.plan = plan.clone();
        Ok(chain)
    })
}

/// Runs `work(i, job)` for every job on up to `threads` worker threads (0: `RAYON_NUM_THREADS`,
/// else one per core), taking jobs in order, and returns the results in job order. The first
/// error stops workers from starting new jobs; the error of the lowest-numbered failing job is
/// returned.
fn on_workers<J: Send, R: Send>(
    jobs: Vec<Option<J>>,
    threads: usize,
    work: impl Fn(usize, Option<J>) -> Result<R, SamplerError> + Sync,
) -> Result<Vec<R>, SamplerError> {
    let count = jobs.len();
    let threads = match threads {
        // RAYON_NUM_THREADS when set (the Makefile divides the cores among parallel jobs).
        0 => rayon::current_num_threads(),
        t => t,
    }
    .clamp(1, count.max(1));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let jobs: Vec<Mutex<Option<J>>> = jobs.into_iter().map(Mutex::new).collect();
    let results: Mutex<Vec<Option<Result<R, SamplerError>>>> = Mutex::new((0..count).map(|_| None).collect());

    let worker = || loop {
        if failed.load(Ordering::SeqCst) {
            break;
        }
        let i = next.fetch_add(1, Ordering::SeqCst);
        if i >= count {
            break;
        }
        let job = jobs[i].lock().ok().and_then(|mut j| j.take());
        let result = work(i, job);
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
    // Jobs never started after a failure are simply absent.
    let mut out = Vec::with_capacity(count);
    for r in results {
        match r {
            Some(Ok(t)) => out.push(t),
            Some(Err(e)) => return Err(e),
            None => {}
        }
    }
    if out.len() != count {
        return Err(SamplerError::Panicked);
    }
    Ok(out)
}
