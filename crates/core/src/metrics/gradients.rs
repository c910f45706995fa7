/*!
Gradients of class logits with respect to the two operand token embeddings, and the gradient
symmetry built from them (reference section 4).

For a batch of pairs `(a, b)` and a set of classes per pair, [`GradientEngine::grads`] returns
`∂Q_c/∂e_a` and `∂Q_c/∂e_b`, where `Q_c` is the logit of class `c` at the last position and
`e_a`, `e_b` are the token embeddings at positions 0 and 1 *before* the positional embedding is
added (so a pair with `a = b` still has two separate gradients, one per position).

Two engines compute the same thing:

- [`GradientEngine::ClosedForm`] (one-layer models, the paper's): a hand-written reverse pass for
  all classes at once, batched over pairs. One forward pass per chunk of pairs; the per-class
  work is a few large matrix products (the MLP's `(B·K, d_mlp) × (d_mlp, d_model)` dominates).
- [`GradientEngine::Autograd`] (any depth): candle's autograd with the embeddings as a `Var`;
  one forward per chunk, then one backward per class over the whole chunk (pairs are independent,
  so the gradient of `Σ_pairs Q_c` with respect to a pair's embeddings is that pair's gradient).

The tests check both against each other and against central finite differences in float64.
*/

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use crate::model::Activation;
use crate::model::{ModelConfig, Params, Transformer};

/// Which classes to differentiate for each row of a batch.
#[derive(Debug, Clone, Copy)]
pub enum Classes<'a> {
    /// Every answer class `0..p` for every row (`K = p`).
    All,
    /// One class per row (`K = 1`), e.g. for sampled triples.
    PerRow(&'a [u32]),
}

/// The weights of a one-layer model, in the layout the closed form needs, plus precomputed
/// products that do not depend on the input.
#[derive(Debug, Clone)]
pub struct OneLayer {
    w_pos: Tensor, // (T, d)
    w_q: Tensor,   // (H·dh, d)
    w_k: Tensor,   // (H·dh, d)
    w_v: Tensor,   // (H·dh, d)
    w_o: Tensor,   // (d, H·dh)
    w_in: Tensor,  // (m, d)
    b_in: Tensor,  // (m)
    /// Unembedding rows of the answer classes: `W_U[:, :p]ᵀ`, (p, d).
    u: Tensor,
    /// `W_U[:, :p]ᵀ · W_out`, (p, m): the MLP output's contribution to each class.
    r: Tensor,
    /// Per head, `W_K,h` and `W_Q,h` as (H, dh, d), for the score path.
    w_k_heads: Tensor,
    w_q_heads: Tensor,
    /// `W_O,hᵀ` per head, (H, dh, d): maps a head's value to the residual stream.
    w_o_heads: Tensor,
    /// `W_O·W_V`, (d, d): with α = 0 every attention weight is 1, so the value path of every
    /// position is `∂Q/∂h · W_O·W_V` (as rows).
    w_ov: Tensor,
    n_heads: usize,
    d_head: usize,
    alpha: f64,
    act: Activation,
    p: usize,
}

impl OneLayer {
    /// Extracts the weights of a one-layer model (as `dtype`, usually F32; F64 for the tests).
    pub fn new(params: &Params, cfg: &ModelConfig, dtype: DType) -> Result<OneLayer> {
        if cfg.n_layers != 1 {
            bail!("the closed-form gradients need a one-layer model, this one has {} layers", cfg.n_layers);
        }
        let get = |name: &str| -> Result<Tensor> {
            let v = params.get(name).with_context(|| format!("parameter `{name}` is missing"))?;
            Ok(v.as_tensor().detach().to_dtype(dtype)?)
        };
        let (h, dh, d, p) = (cfg.n_heads, cfg.d_head, cfg.d_model, cfg.p);
        let w_q = get("blocks.0.attn.W_Q")?.reshape((h * dh, d))?;
        let w_k = get("blocks.0.attn.W_K")?.reshape((h * dh, d))?;
        let w_v = get("blocks.0.attn.W_V")?.reshape((h * dh, d))?;
        let w_out = get("blocks.0.mlp.W_out")?; // (d, m)
        let u = get("unembed.W_U")?.narrow(1, 0, p)?.t()?.contiguous()?; // (p, d)
        let r = u.matmul(&w_out)?; // (p, m)
        let w_o = get("blocks.0.attn.W_O")?; // (d, H·dh)
        let w_o_heads = w_o.t()?.contiguous()?.reshape((h, dh, d))?;
        let w_ov = w_o.matmul(&w_v)?;
        Ok(OneLayer {
            w_o_heads,
            w_ov,
            w_pos: get("pos_embed.W_pos")?,
            w_k_heads: w_k.reshape((h, dh, d))?,
            w_q_heads: w_q.reshape((h, dh, d))?,
            w_q,
            w_k,
            w_v,
            w_o,
            w_in: get("blocks.0.mlp.W_in")?,
            b_in: get("blocks.0.mlp.b_in")?,
            u,
            r,
            n_heads: h,
            d_head: dh,
            alpha: cfg.alpha,
            act: cfg.act,
            p,
        })
    }

    /// `(∂Q/∂e_0, ∂Q/∂e_1)` for token embeddings `emb` (B, T, d), each (B, K, d).
    fn grads(&self, emb: &Tensor, classes: Classes) -> Result<(Tensor, Tensor)> {
        let (b, t, d) = emb.dims3()?;
        let (h, dh) = (self.n_heads, self.d_head);
        let hd = h * dh;
        let scale = 1.0 / (dh as f64).sqrt();

        // Forward, keeping what the reverse pass needs.
        let r = emb.broadcast_add(&self.w_pos)?; // (B, T, d)
        let rt = r.narrow(1, t - 1, 1)?.squeeze(1)?; // (B, d)
        let q = rt.matmul(&self.w_q.t()?)?.reshape((b, 1, h, dh))?;
        let r2 = r.reshape((b * t, d))?;
        let k = r2.matmul(&self.w_k.t()?)?.reshape((b, t, h, dh))?;
        let v = r2.matmul(&self.w_v.t()?)?.reshape((b, t, h, dh))?;
        let s = (k.broadcast_mul(&q)?.sum(3)? * scale)?; // (B, T, H)
        let probs = candle_nn::ops::softmax(&s, 1)?; // over key positions
        let attn = probs.affine(self.alpha, 1.0 - self.alpha)?; // (B, T, H)
        let z = attn.unsqueeze(3)?.broadcast_mul(&v)?.sum(1)?; // (B, H, dh)
        let hres = (&rt + z.reshape((b, hd))?.matmul(&self.w_o.t()?)?)?; // (B, d)
        let pre = hres.matmul(&self.w_in.t()?)?.broadcast_add(&self.b_in)?; // (B, m)
        let dact = match self.act {
            // PyTorch's convention: the derivative at exactly 0 is 0.
            Activation::Relu => pre.gt(0.0)?.to_dtype(pre.dtype())?,
            Activation::Gelu => {
                // Φ(x) + x·φ(x)
                let cdf = ((&pre * std::f64::consts::FRAC_1_SQRT_2)?.erf()? + 1.0)? * 0.5;
                let pdf = ((pre.sqr()? * -0.5)?.exp()? * (1.0 / (2.0 * std::f64::consts::PI).sqrt()))?;
                (cdf? + (&pre * pdf)?)?
            }
        };

        // The classes: U (·, K, d) unembedding rows and R (·, K, m) their MLP-side vectors.
        let (u, rr, kk) = match classes {
            Classes::All => (self.u.unsqueeze(0)?, self.r.unsqueeze(0)?, self.p),
            Classes::PerRow(cls) => {
                if cls.len() != b {
                    bail!("{} classes for {} rows", cls.len(), b);
                }
                let idx = Tensor::from_slice(cls, b, emb.device())?;
                (self.u.index_select(&idx, 0)?.unsqueeze(1)?, self.r.index_select(&idx, 0)?.unsqueeze(1)?, 1)
            }
        };

        // ∂Q_c/∂h = u_c + W_inᵀ (act'(pre) ⊙ r_c), for every row and class: (B, K, d).
        let x = dact.unsqueeze(1)?.broadcast_mul(&rr)?; // (B, K, m)
        let m = x.dim(2)?;
        let gh = x.reshape((b * kk, m))?.matmul(&self.w_in)?.reshape((b, kk, d))?.broadcast_add(&u)?;
        if self.alpha == 0.0 {
            // Every attention weight is 1: ∂Q/∂r_j = ∂Q/∂h · W_O·W_V for both positions (plus the
            // residual at the last position); no score path.
            let vg = gh.reshape((b * kk, d))?.matmul(&self.w_ov)?.reshape((b, kk, d))?;
            let ga = if t - 1 == 0 { (&vg + &gh)? } else { vg.clone() };
            let gb = if t - 1 == 1 { (vg + &gh)? } else { vg };
            return Ok((ga, gb));
        }

        // ∂Q/∂z: (B, K, H, dh).
        let y = gh.reshape((b * kk, d))?.matmul(&self.w_o)?.reshape((b, kk, h, dh))?;
        // Value path: ∂Q/∂r_j += Σ_h A_{j,h} W_V,hᵀ y_h.
        let mut out = Vec::with_capacity(2);
        for j in 0..2 {
            let aj = attn.narrow(1, j, 1)?.reshape((b, 1, h, 1))?;
            let mut g = y.broadcast_mul(&aj)?.reshape((b * kk, hd))?.matmul(&self.w_v)?.reshape((b, kk, d))?;
            if j == t - 1 {
                g = (g + &gh)?;
            }
            out.push(g);
        }

        // Score path: softmax backward, then through keys and the query.
        // ∂Q/∂P_i = α · y_h · v_{i,h} = α · (∂Q/∂h) · (W_O,h v_{i,h}): (B, K, T·H) by one batched
        // product with ov (B, d, T·H), ov[:, :, (i, h)] = W_O,h v_{i,h}.
        let ov = v.reshape((b * t, h, dh))?.transpose(0, 1)?.contiguous()?.matmul(&self.w_o_heads)?; // (H, B·T, d)
        let ov = ov.reshape((h, b, t, d))?.permute((1, 3, 2, 0))?.contiguous()?.reshape((b, d, t * h))?;
        let dp = (gh.contiguous()?.matmul(&ov)? * self.alpha)?.reshape((b, kk, t, h))?;
        let pk = probs.unsqueeze(1)?; // (B, 1, T, H)
        let mean = dp.broadcast_mul(&pk)?.sum_keepdim(2)?; // (B, K, 1, H)
        let ds = (dp.broadcast_sub(&mean)?.broadcast_mul(&pk)? * scale)?; // ∂Q/∂(q·k_i): (B, K, T, H)
        // Keys: ∂(q_h·k_i,h)/∂r_i = W_K,hᵀ q_h. kq: (B, H, d), one product per head.
        let qh = q.reshape((b, h, dh))?.transpose(0, 1)?.contiguous()?; // (H, B, dh)
        let kq = qh.matmul(&self.w_k_heads)?.transpose(0, 1)?.contiguous()?; // (B, H, d)
        // Query: ∂(q_h·k_i,h)/∂r_t = W_Q,hᵀ k_i,h. qk: (B, T·H, d).
        let kh = k.reshape((b * t, h, dh))?.transpose(0, 1)?.contiguous()?; // (H, B·T, dh)
        let qk = kh.matmul(&self.w_q_heads)?.transpose(0, 1)?.contiguous()?.reshape((b, t * h, d))?;
        for (j, g) in out.iter_mut().enumerate() {
            let dsj = ds.narrow(2, j, 1)?.squeeze(2)?.contiguous()?; // (B, K, H)
            *g = (&*g + dsj.matmul(&kq)?)?;
            if j == t - 1 {
                let all = ds.reshape((b, kk, t * h))?;
                *g = (&*g + all.matmul(&qk)?)?;
            }
        }
        let gb = out.pop().context("two gradients")?;
        let ga = out.pop().context("two gradients")?;
        Ok((ga, gb))
    }
}

/// How embedding gradients are computed for one model.
#[derive(Debug, Clone)]
pub enum GradientEngine {
    /// The hand-written reverse pass (one-layer models).
    ClosedForm(Box<OneLayer>),
    /// candle autograd over a model built on detached weights (any depth).
    Autograd {
        /// The model.
        model: Box<Transformer>,
        /// Number of answer classes.
        p: usize,
    },
}

/// A model over detached copies of `params` (as `dtype`), so that running it records no
/// gradient history for the weights.
pub fn detached_model(params: &Params, cfg: &ModelConfig, dtype: DType) -> Result<Transformer> {
    let map = params
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.as_tensor().detach().to_dtype(dtype)?)))
        .collect::<Result<std::collections::HashMap<_, _>>>()?;
    let vb = VarBuilder::from_tensors(map, dtype, &Device::Cpu);
    Ok(Transformer::new(vb, cfg)?)
}

impl GradientEngine {
    /// The closed form for one-layer models, autograd otherwise.
    pub fn new(params: &Params, cfg: &ModelConfig, dtype: DType) -> Result<GradientEngine> {
        if cfg.n_layers == 1 {
            Ok(GradientEngine::ClosedForm(Box::new(OneLayer::new(params, cfg, dtype)?)))
        } else {
            GradientEngine::autograd(params, cfg, dtype)
        }
    }

    /// Always the autograd engine (the closed form's cross-check).
    pub fn autograd(params: &Params, cfg: &ModelConfig, dtype: DType) -> Result<GradientEngine> {
        Ok(GradientEngine::Autograd { model: Box::new(detached_model(params, cfg, dtype)?), p: cfg.p })
    }

    /// `(∂Q_c/∂e_a, ∂Q_c/∂e_b)` for token embeddings `emb` (B, T, d): each (B, K, d), with `K = p`
    /// for [`Classes::All`] and `K = 1` for [`Classes::PerRow`].
    pub fn grads(&self, emb: &Tensor, classes: Classes) -> Result<(Tensor, Tensor)> {
        match self {
            GradientEngine::ClosedForm(w) => w.grads(emb, classes),
            GradientEngine::Autograd { model, p } => {
                let var = Var::from_tensor(&emb.detach())?;
                let logits = model.forward_embedded(var.as_tensor())?; // (B, vocab)
                let b = logits.dim(0)?;
                let take = |q: Tensor| -> Result<(Tensor, Tensor)> {
                    let grads = q.sum_all()?.backward()?;
                    let g = grads.get(var.as_tensor()).context("no gradient for the embeddings")?;
                    Ok((g.narrow(1, 0, 1)?, g.narrow(1, 1, 1)?)) // (B, 1, d) each
                };
                match classes {
                    Classes::All => {
                        let mut ga = Vec::with_capacity(*p);
                        let mut gb = Vec::with_capacity(*p);
                        for c in 0..*p {
                            let (a, bb) = take(logits.narrow(1, c, 1)?)?;
                            ga.push(a);
                            gb.push(bb);
                        }
                        Ok((Tensor::cat(&ga, 1)?, Tensor::cat(&gb, 1)?))
                    }
                    Classes::PerRow(cls) => {
                        if cls.len() != b {
                            bail!("{} classes for {} rows", cls.len(), b);
                        }
                        let idx = Tensor::from_slice(cls, (b, 1), logits.device())?;
                        take(logits.gather(&idx, 1)?)
                    }
                }
            }
        }
    }
}

/// Result of [`gradient_symmetry`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GradientSymmetry {
    /// Mean cosine between `∂Q_c/∂e_a` and `∂Q_c/∂e_b` over the triples.
    pub value: f64,
    /// Whether all `p³` triples were used (else a seeded uniform sample).
    pub exact: bool,
    /// Number of triples averaged.
    pub triples: u64,
}

/// Per-row cosines between the two gradients, (B, K); 0 where either gradient is exactly zero.
fn cosines(ga: &Tensor, gb: &Tensor) -> Result<Vec<f64>> {
    let dot = (ga * gb)?.sum(D::Minus1)?.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let na = ga.sqr()?.sum(D::Minus1)?.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let nb = gb.sqr()?.sum(D::Minus1)?.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    Ok(dot
        .iter()
        .zip(na.iter().zip(&nb))
        .map(|(d, (a, b))| if *a > 0.0 && *b > 0.0 { d / (a * b).sqrt() } else { 0.0 })
        .collect())
}

/// Token sequences of `rows` of a dataset-like token table (`n_ctx` tokens per row).
fn embed_rows(w_e_t: &Tensor, tokens: &[u32], n_ctx: usize, rows: &[u32]) -> Result<Tensor> {
    let mut toks = Vec::with_capacity(rows.len() * n_ctx);
    for &r in rows {
        let r = r as usize;
        toks.extend_from_slice(&tokens[r * n_ctx..(r + 1) * n_ctx]);
    }
    let idx = Tensor::from_vec(toks, rows.len() * n_ctx, w_e_t.device())?;
    let d = w_e_t.dim(1)?;
    Ok(w_e_t.index_select(&idx, 0)?.reshape((rows.len(), n_ctx, d))?)
}

/// What [`gradient_symmetry`] averages over.
#[derive(Debug, Clone)]
pub enum Triples {
    /// All `p²` pairs × all `p` classes.
    All,
    /// Explicit triples: rows of the dataset (pair `a·p + b`) and classes.
    Sample {
        /// Dataset rows.
        rows: Vec<u32>,
        /// One class per row.
        classes: Vec<u32>,
    },
}

impl Triples {
    /// All triples when `p³ ≤ max_exact`, else `n` triples drawn uniformly (with replacement)
    /// from the `triples` stream of `seed`.
    pub fn choose(p: usize, max_exact: u64, n: usize, seed: u64) -> Triples {
        use rand::Rng;
        if (p as u64).pow(3) <= max_exact {
            return Triples::All;
        }
        let mut rng = crate::rng::stream(seed, "triples");
        let mut rows = Vec::with_capacity(n);
        let mut classes = Vec::with_capacity(n);
        for _ in 0..n {
            let a = rng.random_range(0..p as u32);
            let b = rng.random_range(0..p as u32);
            rows.push(a * p as u32 + b);
            classes.push(rng.random_range(0..p as u32));
        }
        Triples::Sample { rows, classes }
    }
}

/// Upper bound on `B·K·d_mlp` elements of the largest intermediate per chunk (≈ 32 MB in F32).
const CHUNK_ELEMS: usize = 8 << 20;

/// Mean cosine between `∂Q_c/∂e_a` and `∂Q_c/∂e_b` over `triples` (reference section 4).
///
/// `tokens` is the dataset's token table (`p² × n_ctx`, row `a·p + b`), `w_e` the embedding
/// `embed.W_E` (d, vocab). Chunks of rows are processed in parallel with rayon.
pub fn gradient_symmetry(
    engine: &GradientEngine,
    cfg: &ModelConfig,
    w_e: &Tensor,
    tokens: &[u32],
    triples: &Triples,
) -> Result<GradientSymmetry> {
    let p = cfg.p;
    let w_e_t = w_e.t()?.contiguous()?; // (vocab, d)
    // The closed form holds (rows × classes × d_mlp) at once; autograd holds one forward pass
    // (rows × n_ctx × d_mlp per layer) and walks it once per class, so it wants big chunks.
    let per_row = match (engine, triples) {
        (GradientEngine::Autograd { .. }, _) => cfg.n_ctx * cfg.n_layers,
        (_, Triples::All) => p,
        (_, Triples::Sample { .. }) => 1,
    };
    let chunk = (CHUNK_ELEMS / (per_row * cfg.d_mlp.max(cfg.d_model)).max(1)).clamp(1, 8192);
    let rows: Vec<u32> = match triples {
        Triples::All => (0..(p * p) as u32).collect(),
        Triples::Sample { rows, .. } => rows.clone(),
    };
    if rows.is_empty() {
        bail!("no triples to average: analysis.sample_triples must be positive when p³ exceeds analysis.max_exact_triples");
    }
    let starts: Vec<usize> = (0..rows.len()).step_by(chunk).collect();
    let parts = starts
        .par_iter()
        .map(|&s| -> Result<(f64, u64)> {
            let e = (s + chunk).min(rows.len());
            let emb = embed_rows(&w_e_t, tokens, cfg.n_ctx, &rows[s..e])?;
            let classes = match triples {
                Triples::All => Classes::All,
                Triples::Sample { classes, .. } => Classes::PerRow(&classes[s..e]),
            };
            let (ga, gb) = engine.grads(&emb, classes)?;
            let cos = cosines(&ga, &gb)?;
            Ok((cos.iter().sum(), cos.len() as u64))
        })
        .collect::<Result<Vec<_>>>()?;
    let (sum, n) = parts.iter().fold((0.0, 0u64), |(s, n), (a, b)| (s + a, n + b));
    Ok(GradientSymmetry { value: sum / n as f64, exact: matches!(triples, Triples::All), triples: n })
}
