/*!
SGLD sampling localised at a point `w*`, independent of the model being sampled.

This module is responsible for *moving the parameters*: the SGLD update rule ([`Sgld`], a
`candle_nn::Optimizer`), the minibatch schedule ([`Minibatches`]), running one chain and recording
its per-draw losses ([`run_chain`]), and running several chains on threads ([`run_chains`]; kept
and continued under a longer plan by [`run_chains_kept`] and [`advance_chains`]). It
knows nothing about learning coefficients: turning traces into an LLC estimate, diagnostics and
flags is the job of [`crate::llc`].

Anything implementing [`SgldTarget`] can be sampled: the transformer and the small analytic models
of [`crate::llc::analytic`] alike.

Architecture invariant: the numbers a chain produces depend only on its target, its
[`ChainPlan`] and its chain index; never on thread scheduling or on how many chains run at once.
All randomness comes from ChaCha8 streams derived from `(plan.seed, chain index)`, never from
candle's global `randn`.
*/

mod batches;
mod chain;
mod normals;
mod sgld;
#[cfg(test)]
mod tests;

pub use batches::Minibatches;
pub use chain::{advance_chains, run_chain, run_chains, run_chains_kept, Chain, ChainPlan, ChainTrace, Divergence};
pub use sgld::{mala_log_acceptance, MalaOutcome, RmsProp, Sgld, SgldParams};

/// A model plus training data that SGLD can sample: the parameters, and the mean loss over any
/// subset of the training rows.
///
/// Each chain gets its own instance (built by a factory closure), so that the parameters of one
/// chain are never touched by another; the instance must start at `w*`.
pub trait SgldTarget: Send {
    /// Parameters to sample, in a fixed (name-sorted) order: the noise is drawn parameter by
    /// parameter in this order, so the order is part of what makes a run reproducible.
    fn params(&self) -> &[candle_core::Var];
    /// Number of training rows n.
    fn n_train(&self) -> usize;
    /// Mean loss over the given training rows, as a scalar F64 tensor connected to the params'
    /// graph (so that `backward` gives the gradient with respect to every parameter).
    fn loss(&self, rows: &[u32]) -> candle_core::Result<candle_core::Tensor>;

    /// The mean loss over the rows and its gradient for every parameter, keyed as
    /// `loss.backward()` keys them (by the parameter's tensor). This is what the sampler calls
    /// on every step. The default differentiates [`SgldTarget::loss`] with candle's autograd; a
    /// target with a hand-written backward pass overrides it, filling a `GradStore::default()`
    /// with `insert(var.as_tensor(), gradient)`.
    fn loss_and_grads(
        &self,
        rows: &[u32],
    ) -> candle_core::Result<(f64, candle_core::backprop::GradStore)> {
        let loss = self.loss(rows)?;
        Ok((scalar(&loss)?, loss.backward()?))
    }

    /// The mean loss over the rows, without gradients (used for `L(w*)`). The default is the
    /// value of [`SgldTarget::loss`].
    fn loss_value(&self, rows: &[u32]) -> candle_core::Result<f64> {
        scalar(&self.loss(rows)?)
    }
}

/// The value of a scalar loss tensor as f64, whatever its float dtype.
fn scalar(t: &candle_core::Tensor) -> candle_core::Result<f64> {
    match t.dtype() {
        candle_core::DType::F64 => t.to_scalar::<f64>(),
        _ => t.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>(),
    }
}

/// Errors raised while sampling. Divergence of a chain is *not* an error: it is recorded in
/// [`ChainTrace::divergence`] and the other chains carry on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SamplerError {
    /// A tensor operation failed (shape or dtype mismatch in the target, for instance).
    #[error("chain {chain}: tensor operation failed")]
    Candle {
        /// Index of the chain that failed.
        chain: usize,
        /// The underlying candle error.
        #[source]
        source: candle_core::Error,
    },
    /// The factory could not build the target for a chain.
    #[error("chain {chain}: could not build the sampling target")]
    Target {
        /// Index of the chain whose target could not be built.
        chain: usize,
        /// What the factory reported.
        #[source]
        source: anyhow::Error,
    },
    /// The plan is unusable for this target (for instance a batch larger than the data).
    #[error("invalid sampling plan: {0}")]
    InvalidPlan(String),
    /// A worker thread panicked; this is a bug in the target or in this module.
    #[error("a sampling thread panicked")]
    Panicked,
}
