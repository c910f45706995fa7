//! The one-layer (or n-layer) transformer of the paper: embedding, attention with rate α, MLP,
//! unembedding; no LayerNorm, no causal mask, logits read at the last position.

use candle_core::{Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use super::{Activation, ModelConfig};

/// Multi-head attention with attention rate α: `A = α·softmax(QKᵀ/√d_head) + (1−α)·J`, where `J`
/// is all ones (so at α = 0 every position receives the plain *sum* of the values).
#[derive(Debug, Clone)]
struct Attention {
    w_q: Tensor, // (n_heads·d_head, d_model)
    w_k: Tensor,
    w_v: Tensor,
    w_o: Tensor, // (d_model, n_heads·d_head)
    n_heads: usize,
    d_head: usize,
    alpha: f64,
}

impl Attention {
    fn load(vb: VarBuilder, cfg: &ModelConfig) -> Result<Self> {
        let (h, dh, d) = (cfg.n_heads, cfg.d_head, cfg.d_model);
        let get = |name: &str| vb.get((h, dh, d), name)?.reshape((h * dh, d));
        Ok(Attention {
            w_q: get("W_Q")?,
            w_k: get("W_K")?,
            w_v: get("W_V")?,
            w_o: vb.get((d, h * dh), "W_O")?,
            n_heads: h,
            d_head: dh,
            alpha: cfg.alpha,
        })
    }

    /// (B, T, d_model) → (B, T, H, d_head): `einsum('ihd,bpd->bpih')`.
    fn project(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        x.reshape((b * t, d))?.matmul(&w.t()?)?.reshape((b, t, self.n_heads, self.d_head))
    }

    /// Mixes attention probabilities with the all-ones matrix.
    fn rate(&self, probs: &Tensor) -> Result<Tensor> {
        if self.alpha == 1.0 {
            Ok(probs.clone())
        } else {
            probs.affine(self.alpha, 1.0 - self.alpha)
        }
    }

    /// Output at every position: (B, T, d_model) → (B, T, d_model).
    fn forward_all(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let q = self.project(x, &self.w_q)?.transpose(1, 2)?.contiguous()?; // (B, H, T, dh)
        let k = self.project(x, &self.w_k)?.transpose(1, 2)?.contiguous()?;
        let v = self.project(x, &self.w_v)?.transpose(1, 2)?.contiguous()?;
        let scores = (q.matmul(&k.t()?)? / (self.d_head as f64).sqrt())?; // (B, H, Tq, Tk)
        let attn = self.rate(&candle_nn::ops::softmax(&scores, D::Minus1)?)?;
        let z = attn.matmul(&v)?; // (B, H, T, dh)
        let z = z.transpose(1, 2)?.reshape((b * t, self.n_heads * self.d_head))?;
        z.matmul(&self.w_o.t()?)?.reshape((b, t, d))
    }

    /// Output at the last position only: (B, T, d_model) → (B, d_model). With a handful of
    /// positions, scores are a broadcast product and a sum, cheaper in candle than a batched matmul
    /// of 1×d_head by d_head×T matrices.
    fn forward_last(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, _d) = x.dims3()?;
        let last = x.narrow(1, t - 1, 1)?; // (B, 1, d_model)
        let q = self.project(&last, &self.w_q)?; // (B, 1, H, dh)
        let k = self.project(x, &self.w_k)?; // (B, T, H, dh)
        let v = self.project(x, &self.w_v)?;
        let scores = (k.broadcast_mul(&q)?.sum_keepdim(3)? / (self.d_head as f64).sqrt())?; // (B, T, H, 1)
        let attn = self.rate(&candle_nn::ops::softmax(&scores, 1)?)?; // over the key positions
        let z = attn.broadcast_mul(&v)?.sum(1)?; // (B, H, dh)
        z.reshape((b, self.n_heads * self.d_head))?.matmul(&self.w_o.t()?)
    }
}

/// The MLP: `W_out · act(W_in · x + b_in) + b_out`.
#[derive(Debug, Clone)]
struct Mlp {
    w_in: Tensor,  // (d_mlp, d_model)
    b_in: Tensor,  // (d_mlp)
    w_out: Tensor, // (d_model, d_mlp)
    b_out: Tensor, // (d_model)
    act: Activation,
}

impl Mlp {
    fn load(vb: VarBuilder, cfg: &ModelConfig) -> Result<Self> {
        let (d, m) = (cfg.d_model, cfg.d_mlp);
        Ok(Mlp {
            w_in: vb.get((m, d), "W_in")?,
            b_in: vb.get(m, "b_in")?,
            w_out: vb.get((d, m), "W_out")?,
            b_out: vb.get(d, "b_out")?,
            act: cfg.act,
        })
    }
}

impl Module for Mlp {
    /// (N, d_model) → (N, d_model).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let pre = x.matmul(&self.w_in.t()?)?.broadcast_add(&self.b_in)?;
        let post = match self.act {
            Activation::Relu => pre.relu()?,
            Activation::Gelu => pre.gelu_erf()?,
        };
        post.matmul(&self.w_out.t()?)?.broadcast_add(&self.b_out)
    }
}

/// One residual block: `h += Attn(h); h += MLP(h)`.
#[derive(Debug, Clone)]
struct Block {
    attn: Attention,
    mlp: Mlp,
}

impl Block {
    fn load(vb: VarBuilder, cfg: &ModelConfig) -> Result<Self> {
        Ok(Block { attn: Attention::load(vb.pp("attn"), cfg)?, mlp: Mlp::load(vb.pp("mlp"), cfg)? })
    }

    /// (B, T, d_model) → (B, T, d_model).
    fn forward_all(&self, h: &Tensor) -> Result<Tensor> {
        let (b, t, d) = h.dims3()?;
        let h = (h + self.attn.forward_all(h)?)?;
        let m = self.mlp.forward(&h.reshape((b * t, d))?)?.reshape((b, t, d))?;
        h + m
    }

    /// (B, T, d_model) → (B, d_model), the residual stream at the last position.
    fn forward_last(&self, h: &Tensor) -> Result<Tensor> {
        let t = h.dim(1)?;
        let last = (h.narrow(1, t - 1, 1)?.squeeze(1)? + self.attn.forward_last(h)?)?;
        &last + self.mlp.forward(&last)?
    }
}

/// The whole model. Weights are loaded by their released-checkpoint names.
#[derive(Debug, Clone)]
pub struct Transformer {
    w_e: Tensor,   // (d_model, vocab)
    w_pos: Tensor, // (n_ctx, d_model)
    blocks: Vec<Block>,
    w_u: Tensor, // (d_model, vocab)
    cfg: ModelConfig,
}

impl Transformer {
    /// Builds the model over the weights in `vb` (see [`super::Params::var_builder`]).
    pub fn new(vb: VarBuilder, cfg: &ModelConfig) -> Result<Self> {
        let blocks = (0..cfg.n_layers)
            .map(|l| Block::load(vb.pp(format!("blocks.{l}")), cfg))
            .collect::<Result<Vec<_>>>()?;
        Ok(Transformer {
            w_e: vb.get((cfg.d_model, cfg.vocab), "embed.W_E")?,
            w_pos: vb.get((cfg.n_ctx, cfg.d_model), "pos_embed.W_pos")?,
            blocks,
            w_u: vb.get((cfg.d_model, cfg.vocab), "unembed.W_U")?,
            cfg: cfg.clone(),
        })
    }

    /// The model's shape.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Token embeddings before the positional embedding: (B, T) u32 → (B, T, d_model).
    pub fn embed(&self, tokens: &Tensor) -> Result<Tensor> {
        let (b, t) = tokens.dims2()?;
        let table = self.w_e.t()?.contiguous()?; // (vocab, d_model)
        table.index_select(&tokens.flatten_all()?, 0)?.reshape((b, t, self.cfg.d_model))
    }

    /// Logits at the last position: (B, T) u32 → (B, vocab).
    pub fn forward(&self, tokens: &Tensor) -> Result<Tensor> {
        self.forward_embedded(&self.embed(tokens)?)
    }

    /// Logits at the last position from token embeddings (before the positional embedding is
    /// added), so that gradients with respect to `e_a`, `e_b` can be taken: (B, T, d) → (B, vocab).
    pub fn forward_embedded(&self, emb: &Tensor) -> Result<Tensor> {
        let mut h = emb.broadcast_add(&self.w_pos)?;
        let (last, rest) = self.blocks.split_last().expect("a model has at least one block");
        for block in rest {
            h = block.forward_all(&h)?;
        }
        last.forward_last(&h)?.matmul(&self.w_u)
    }

    /// The textbook computation: every position through every block, then the last position's
    /// logits. It is the reference the cheaper [`Transformer::forward`] is tested against.
    pub fn forward_reference(&self, tokens: &Tensor) -> Result<Tensor> {
        let mut h = self.embed(tokens)?.broadcast_add(&self.w_pos)?;
        for block in &self.blocks {
            h = block.forward_all(&h)?;
        }
        let t = h.dim(1)?;
        h.narrow(1, t - 1, 1)?.squeeze(1)?.matmul(&self.w_u)
    }
}

/// Mean cross-entropy computed in float64 from float32 logits (float32 log-softmax underflows
/// on confident predictions and gives the loss spikes the journal saw): (B, V), (B,) → scalar F64.
pub fn cross_entropy_f64(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(&logits.to_dtype(candle_core::DType::F64)?, D::Minus1)?;
    let picked = logp.gather(&labels.unsqueeze(1)?, 1)?; // (B, 1)
    picked.mean_all()?.neg()
}

/// Fraction of rows whose largest logit is the label.
pub fn accuracy(logits: &Tensor, labels: &Tensor) -> Result<f64> {
    let pred = logits.argmax(D::Minus1)?;
    let hits = pred.eq(labels)?.to_dtype(candle_core::DType::F64)?.sum_all()?.to_scalar::<f64>()?;
    Ok(hits / labels.dim(0)? as f64)
}
