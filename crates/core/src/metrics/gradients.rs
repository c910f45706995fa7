/*!
Gradients of class logits with respect to the two operand token embeddings, and the gradient
symmetry built from them (reference section 4).

For a batch of pairs `(a, b)` and a set of classes per pair, [`GradientEngine::grads`] returns
`∂Q_c/∂e_a` and `∂Q_c/∂e_b`, where `Q_c` is the logit of class `c` at the last position and
`e_a`, `e_b` are the token embeddings at positions 0 and 1 *before* the positional embedding is
added (so a pair with `a = b` still has two separate gradients, one per position).

Three engines compute the same thing:

- [`GradientEngine::Factored`] (one-layer ReLU models in float32, the paper's): the fast path's
  forward (`fast::Forward`: per-token tables, per pair the attention weights and the
  activation), then the reverse pass of every class at once as a few matrix products per chunk
  of pairs. `∂Q_c/∂resid = W_inᵀ·(mask ⊙ U[c]) + W_U[:, c]` for all classes is one product of
  the pairs' ReLU masks with the table `U[c, m]·W_in[m, :]` (`d_mlp × p·d_model`), the cost
  that dominates; the score path uses `W_K,hᵀ·q` and `W_Q,hᵀ·k` tables per token.
- [`GradientEngine::ClosedForm`] (one-layer models, any activation and dtype; the float64
  reference for the factored engine): the same reverse pass in candle tensor operations.
- [`GradientEngine::Autograd`] (any depth): candle's autograd with the embeddings as a `Var`;
  one forward per chunk, then one backward per class over the whole chunk (pairs are independent,
  so the gradient of `Σ_pairs Q_c` with respect to a pair's embeddings is that pair's gradient).

The tests check them against each other and against central finite differences in float64.
*/

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::VarBuilder;
use gemm::Parallelism;
use rayon::prelude::*;

use crate::model::fast::{self, gemm, mat};
use crate::model::names::Param;
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
        let w_q = get(Param::WQ.name())?.reshape((h * dh, d))?;
        let w_k = get(Param::WK.name())?.reshape((h * dh, d))?;
        let w_v = get(Param::WV.name())?.reshape((h * dh, d))?;
        let w_out = get(Param::WOut.name())?; // (d, m)
        let u = get(Param::WU.name())?.narrow(1, 0, p)?.t()?.contiguous()?; // (p, d)
        let r = u.matmul(&w_out)?; // (p, m)
        let w_o = get(Param::WO.name())?; // (d, H·dh)
        let w_o_heads = w_o.t()?.contiguous()?.reshape((h, dh, d))?;
        let w_ov = w_o.matmul(&w_v)?;
        Ok(OneLayer {
            w_o_heads,
            w_ov,
            w_pos: get(Param::WPos.name())?,
            w_k_heads: w_k.reshape((h, dh, d))?,
            w_q_heads: w_q.reshape((h, dh, d))?,
            w_q,
            w_k,
            w_v,
            w_o,
            w_in: get(Param::WIn.name())?,
            b_in: get(Param::BIn.name())?,
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

/// The factored engine (see the module docs): the fast path's forward and per-token tables,
/// plus the products that do not depend on the input.
pub struct Factored {
    cfg: ModelConfig,
    fwd: fast::Forward,
    w_in: Vec<f32>, // (M, D)
    w_o: Vec<f32>,  // (D, H·dh)
    w_v: Vec<f32>,  // (H·dh, D)
    /// `W_U[:, c]` of the answer classes as rows: (p, D).
    u_rows: Vec<f32>,
    /// `U[c, m]·W_in[m, :]` for every class c: (M, p·D), so that `W_inᵀ·(mask ⊙ U[c])` of every
    /// class is one product with a pair's ReLU mask.
    in_by_class: Vec<f32>,
    /// `W_K,hᵀ·q_h` of each token at the last position: (V, H, D).
    kq: Vec<f32>,
    /// `W_Q,hᵀ·k_{t,h}` of each token at each position: (T, V, H, D).
    qk: Vec<f32>,
}

impl std::fmt::Debug for Factored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Factored").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

impl Factored {
    /// The engine for a one-layer ReLU model ([`fast::supports`]).
    pub fn new(params: &Params, cfg: &ModelConfig) -> Result<Factored> {
        if !fast::supports(cfg) {
            bail!("the factored embedding gradients need a one-layer ReLU model");
        }
        let flat = params.flat()?;
        let w = fast::Weights::from_map(&flat)?;
        let fwd = fast::Forward::new(cfg, &w, 1);
        let (v, t, d, h, dh, m, p) = (cfg.vocab, cfg.n_ctx, cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp, cfg.p);
        let get = |q: Param| flat[q.name()].clone();
        let (w_in, w_o, w_v, w_u, w_q, w_k) = (get(Param::WIn), get(Param::WO), get(Param::WV), get(Param::WU), get(Param::WQ), get(Param::WK));
        let u_rows: Vec<f32> = (0..p).flat_map(|c| (0..d).map(move |j| (c, j))).map(|(c, j)| w_u[j * v + c]).collect();
        let u = fwd.u();
        let mut in_by_class = vec![0.0f32; m * p * d];
        for (mm, row) in in_by_class.chunks_mut(p * d).enumerate() {
            for (c, out) in row.chunks_mut(d).enumerate() {
                let uc = u[c * m + mm];
                out.iter_mut().zip(&w_in[mm * d..(mm + 1) * d]).for_each(|(y, x)| *y = uc * x);
            }
        }
        // W_Xᵀ·r for one head's rows of W_X (dh × D), r of width dh: into `out` (D).
        let back = |wx: &[f32], head: usize, r: &[f32], out: &mut [f32]| {
            for (k, &rk) in r.iter().enumerate() {
                fast::axpy(out, rk, &wx[(head * dh + k) * d..][..d]);
            }
        };
        let mut kq = vec![0.0f32; v * h * d];
        for (i, out) in kq.chunks_mut(d).enumerate() {
            back(&w_k, i % h, fwd.query(i / h, i % h), out);
        }
        let mut qk = vec![0.0f32; t * v * h * d];
        for (i, out) in qk.chunks_mut(d).enumerate() {
            let (pos, x, head) = (i / (v * h), (i / h) % v, i % h);
            back(&w_q, head, fwd.key(pos, x, head), out);
        }
        Ok(Factored { cfg: cfg.clone(), fwd, w_in, w_o, w_v, u_rows, in_by_class, kq, qk })
    }

    /// `(∂Q_c/∂e_0, ∂Q_c/∂e_1)` of the token rows `tokens` (`B × n_ctx`), each flat (B, K, D).
    fn grads(&self, tokens: &[u32], classes: Classes) -> Result<(Vec<f32>, Vec<f32>)> {
        let c = &self.cfg;
        let (v, t, d, h, dh, m, p) = (c.vocab, c.n_ctx, c.d_model, c.n_heads, c.d_head, c.d_mlp, c.p);
        let (hd, ht, b) = (h * dh, h * t, tokens.len() / t);
        let none = Parallelism::None;
        let kk = match classes {
            Classes::All => p,
            Classes::PerRow(cls) if cls.len() == b => 1,
            Classes::PerRow(cls) => bail!("{} classes for {} rows", cls.len(), b),
        };
        if let Some(bad) = tokens.iter().find(|&&x| x as usize >= v) {
            bail!("token {bad} is outside the vocabulary of {v}");
        }
        // Forward, pair by pair.
        let (mut att, mut act, mut logit) = (vec![0.0f32; b * 2 * ht], vec![0.0f32; b * m], vec![0.0f32; v]);
        for (i, (att, act)) in att.chunks_mut(2 * ht).zip(act.chunks_mut(m)).enumerate() {
            let (sm, a) = att.split_at_mut(ht);
            self.fwd.pair(&tokens[i * t..(i + 1) * t], sm, a, act, &mut logit);
        }
        // ∂Q_c/∂resid at the last position, every row and class: (B·K, D).
        let mut gh = vec![0.0f32; b * kk * d];
        match classes {
            Classes::All => {
                let mask: Vec<f32> = act.iter().map(|&x| if x > 0.0 { 1.0 } else { 0.0 }).collect();
                gemm(&mut gh, 0, p * d, false, mat(&mask, m), mat(&self.in_by_class, p * d), b, p * d, m, none);
                for row in gh.chunks_mut(p * d) {
                    fast::add(row, &self.u_rows);
                }
            }
            Classes::PerRow(cls) => {
                let u = self.fwd.u();
                let mut x = act.clone();
                for (row, &cl) in x.chunks_mut(m).zip(cls) {
                    let uc = &u[cl as usize * m..][..m];
                    row.iter_mut().zip(uc).for_each(|(y, u)| *y = if *y > 0.0 { *u } else { 0.0 });
                }
                gemm(&mut gh, 0, d, false, mat(&x, m), mat(&self.w_in, d), b, d, m, none);
                for (row, &cl) in gh.chunks_mut(d).zip(cls) {
                    fast::add(row, &self.u_rows[cl as usize * d..][..d]);
                }
            }
        }
        // ∂Q/∂z per head: y = gh·W_O (B·K, H·dh); the value path to position j is
        // Σ_h A_{h,j}·W_V,hᵀ·y_h, the skip path adds gh at the last position.
        let n = b * kk;
        let mut y = vec![0.0f32; n * hd];
        gemm(&mut y, 0, hd, false, mat(&gh, d), mat(&self.w_o, hd), n, hd, d, none);
        let mut out = [vec![0.0f32; n * d], vec![0.0f32; n * d]];
        if c.alpha == 0.0 {
            // Every weight is 1: both positions get y·W_V.
            gemm(&mut out[0], 0, d, false, mat(&y, hd), mat(&self.w_v, d), n, d, hd, none);
            out[1] = out[0].clone();
        } else {
            let mut ys = vec![0.0f32; n * hd];
            for (j, g) in out.iter_mut().enumerate() {
                for (r, (dst, src)) in ys.chunks_mut(hd).zip(y.chunks(hd)).enumerate() {
                    let a = &att[(r / kk) * 2 * ht + ht..][..ht];
                    for head in 0..h {
                        let coef = a[head * t + j];
                        dst[head * dh..(head + 1) * dh].iter_mut().zip(&src[head * dh..(head + 1) * dh]).for_each(|(d, s)| *d = coef * s);
                    }
                }
                gemm(g, 0, d, false, mat(&ys, hd), mat(&self.w_v, d), n, d, hd, none);
            }
        }
        if t - 1 < 2 {
            fast::add(&mut out[t - 1], &gh);
        }
        if c.alpha != 0.0 {
            // The score path: ∂Q/∂A_{h,t} = y_h·v_{t,h}, the softmax backward, then
            // ∂s_{h,t}/∂e_t = W_K,hᵀ·q_h and ∂s_{h,t}/∂e_last = W_Q,hᵀ·k_{t,h}.
            let (alpha, scale) = (c.alpha as f32, 1.0 / (dh as f32).sqrt());
            let (mut vals, mut da, mut ds) = (vec![0.0f32; t * hd], vec![0.0f32; t], vec![0.0f32; ht]);
            for i in 0..b {
                let toks = &tokens[i * t..(i + 1) * t];
                let last = toks[t - 1] as usize;
                for (pos, row) in vals.chunks_mut(hd).enumerate() {
                    self.fwd.value(pos, toks[pos] as usize, row);
                }
                let sm = &att[i * 2 * ht..][..ht];
                for cl in 0..kk {
                    let r = i * kk + cl;
                    let yr = &y[r * hd..(r + 1) * hd];
                    for head in 0..h {
                        for pos in 0..t {
                            da[pos] = fast::dot(&yr[head * dh..(head + 1) * dh], &vals[pos * hd + head * dh..][..dh]);
                        }
                        let s = &sm[head * t..(head + 1) * t];
                        let mean: f32 = s.iter().zip(&da).map(|(s, d)| s * d).sum();
                        for pos in 0..t {
                            ds[head * t + pos] = alpha * s[pos] * (da[pos] - mean) * scale;
                        }
                    }
                    for (j, g) in out.iter_mut().enumerate() {
                        let g = &mut g[r * d..(r + 1) * d];
                        for head in 0..h {
                            fast::axpy(g, ds[head * t + j], &self.kq[(last * h + head) * d..][..d]);
                        }
                        if j == t - 1 {
                            for head in 0..h {
                                for (pos, &x) in toks.iter().enumerate() {
                                    fast::axpy(g, ds[head * t + pos], &self.qk[((pos * v + x as usize) * h + head) * d..][..d]);
                                }
                            }
                        }
                    }
                }
            }
        }
        let [ga, gb] = out;
        Ok((ga, gb))
    }
}

/// How embedding gradients are computed for one model.
#[derive(Debug)]
pub enum GradientEngine {
    /// The fast path's forward and a reverse pass by hand (one-layer ReLU models, float32).
    Factored(Box<Factored>),
    /// The hand-written reverse pass in candle operations (one-layer models).
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
    /// The factored engine for one-layer ReLU models in float32, the closed form for other
    /// one-layer models, autograd otherwise.
    pub fn new(params: &Params, cfg: &ModelConfig, dtype: DType) -> Result<GradientEngine> {
        if fast::supports(cfg) && dtype == DType::F32 {
            Ok(GradientEngine::Factored(Box::new(Factored::new(params, cfg)?)))
        } else if cfg.n_layers == 1 {
            GradientEngine::closed_form(params, cfg, dtype)
        } else {
            GradientEngine::autograd(params, cfg, dtype)
        }
    }

    /// Always the closed form (one-layer models; the factored engine's cross-check).
    pub fn closed_form(params: &Params, cfg: &ModelConfig, dtype: DType) -> Result<GradientEngine> {
        Ok(GradientEngine::ClosedForm(Box::new(OneLayer::new(params, cfg, dtype)?)))
    }

    /// The engine's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            GradientEngine::Factored(_) => "factored",
            GradientEngine::ClosedForm(_) => "closed form",
            GradientEngine::Autograd { .. } => "autograd",
        }
    }

    /// `(∂Q_c/∂e_a, ∂Q_c/∂e_b)` of the token rows `tokens` (`B × n_ctx`), each (B, K, d); `w_e` is
    /// `embed.W_E` (d, vocab), which the engines other than the factored one embed the rows with.
    pub fn grads_of_tokens(&self, w_e: &Tensor, tokens: &[u32], classes: Classes) -> Result<(Tensor, Tensor)> {
        match self {
            GradientEngine::Factored(f) => {
                let (ga, gb) = f.grads(tokens, classes)?;
                let (b, d) = (tokens.len() / f.cfg.n_ctx, f.cfg.d_model);
                let k = ga.len() / (b * d).max(1);
                Ok((Tensor::from_vec(ga, (b, k, d), &Device::Cpu)?, Tensor::from_vec(gb, (b, k, d), &Device::Cpu)?))
            }
            _ => {
                let n_ctx = self.n_ctx();
                let rows: Vec<u32> = (0..(tokens.len() / n_ctx) as u32).collect();
                let emb = embed_rows(&w_e.t()?.contiguous()?, tokens, n_ctx, &rows)?;
                self.grads(&emb, classes)
            }
        }
    }

    fn n_ctx(&self) -> usize {
        match self {
            GradientEngine::Factored(f) => f.cfg.n_ctx,
            GradientEngine::ClosedForm(w) => w.w_pos.dim(0).unwrap_or(2),
            GradientEngine::Autograd { model, .. } => model.config().n_ctx,
        }
    }

    /// Cosines between `∂Q_c/∂e_a` and `∂Q_c/∂e_b` for `rows` of the token table `tokens`
    /// (`n_ctx` tokens per row), in row-then-class order; `w_e_t` is `W_Eᵀ` (vocab, d).
    fn cosines_of_rows(&self, w_e_t: &Tensor, tokens: &[u32], n_ctx: usize, rows: &[u32], classes: Classes) -> Result<Vec<f64>> {
        match self {
            GradientEngine::Factored(f) => {
                let toks: Vec<u32> = rows.iter().flat_map(|&r| tokens[r as usize * n_ctx..(r as usize + 1) * n_ctx].iter().copied()).collect();
                let (ga, gb) = f.grads(&toks, classes)?;
                let d = f.cfg.d_model;
                Ok(ga
                    .chunks(d)
                    .zip(gb.chunks(d))
                    .map(|(a, b)| {
                        let (ab, aa, bb) = (fast::dot(a, b) as f64, fast::dot(a, a) as f64, fast::dot(b, b) as f64);
                        if aa > 0.0 && bb > 0.0 { ab / (aa * bb).sqrt() } else { 0.0 }
                    })
                    .collect())
            }
            _ => {
                let emb = embed_rows(w_e_t, tokens, n_ctx, rows)?;
                let (ga, gb) = self.grads(&emb, classes)?;
                cosines(&ga, &gb)
            }
        }
    }

    /// Always the autograd engine (the closed form's cross-check).
    pub fn autograd(params: &Params, cfg: &ModelConfig, dtype: DType) -> Result<GradientEngine> {
        Ok(GradientEngine::Autograd { model: Box::new(detached_model(params, cfg, dtype)?), p: cfg.p })
    }

    /// `(∂Q_c/∂e_a, ∂Q_c/∂e_b)` for token embeddings `emb` (B, T, d): each (B, K, d), with `K = p`
    /// for [`Classes::All`] and `K = 1` for [`Classes::PerRow`].
    /// The factored engine works from tokens ([`GradientEngine::grads_of_tokens`]) and refuses.
    pub fn grads(&self, emb: &Tensor, classes: Classes) -> Result<(Tensor, Tensor)> {
        match self {
            GradientEngine::Factored(_) => bail!("the factored engine takes token rows (grads_of_tokens), not embeddings"),
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
            let classes = match triples {
                Triples::All => Classes::All,
                Triples::Sample { classes, .. } => Classes::PerRow(&classes[s..e]),
            };
            let cos = engine.cosines_of_rows(&w_e_t, tokens, cfg.n_ctx, &rows[s..e], classes)?;
            Ok((cos.iter().sum(), cos.len() as u64))
        })
        .collect::<Result<Vec<_>>>()?;
    let (sum, n) = parts.iter().fold((0.0, 0u64), |(s, n), (a, b)| (s + a, n + b));
    Ok(GradientSymmetry { value: sum / n as f64, exact: matches!(triples, Triples::All), triples: n })
}
