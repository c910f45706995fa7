/*!
A hand-derived forward and backward pass for one-layer ReLU models: the fast path that training,
SGLD and the LLC's loss at `w*` use when the model allows it, tested against candle's autograd
through the textbook forward ([`super::Transformer::forward_reference`]) and the PyTorch goldens.

# One pair, from tokens to loss

Position `t` only ever holds one token, so everything that depends on a single token is a table
with one row per vocabulary entry, and what remains per pair is small. Sizes: `V` vocabulary,
`T` positions, `D` d_model, `H` heads of width `dh`, `M` d_mlp, `R = M + V`.

The residual stream entering the block at position `t` with token `x` is `W_E[:, x] + W_pos[t]`,
i.e. `X[x] + X[V + t]` for the stack `X` of the `V` token rows over the `T` position rows
(`Embed`). The maps that read it, `W_Q`, `W_K`, `W_V` and, at the last position, the *readout*
`Rd = [W_in; W_Uᵀ]` (`R × D`: the MLP reads the residual through `W_in`, the unembedding's skip
path through `W_Uᵀ`), are applied once to the `V + T` rows of `X`. For a pair with tokens `x_t`,
`ℓ = x_{T−1}`:

```text
q_h     = Q[ℓ, h]          Q[x]   = X[x]·W_Qᵀ + X[V+T−1]·W_Qᵀ            (V, H·dh)
k_{t,h} = K_t[x_t, h]      K_t[x] = X[x]·W_Kᵀ + X[V+t]·W_Kᵀ              (T, V, H·dh)
A_{h,t} = α·softmax_t(q_h·k_{t,h} / √dh) + (1 − α)                      [attention]
resid   = X[ℓ] + X[V+T−1] + Σ_{h,t} A_{h,t}·W_O,h·V_t[x_t, h]            (D; never formed)
read    = Rd·resid = S[ℓ] + Σ_{h,t} A_{h,t}·OV_t[x_t, h]                 (R)
          S[x]       = Rd·(X[x] + X[V+T−1])                 the skip     (V, R)
          OV_t[x, h] = G_h·(V[x, h] + V[V+t, h]), G = Rd·W_O             (T, V, H, R)
act     = relu(read[..M] + b_in)                                         [mlp]  (M)
logits  = read[M..] + U·act + c,  U = W_Uᵀ·W_out (V, M), c = W_Uᵀ·b_out  [unembed] (V)
loss    = mean cross-entropy, in float64
```

So `W_in`, `W_out` and `W_U` are never applied per pair: the MLP's pre-activation and the
skip and attention paths' logits are weighted sums of `H·T + 1` table rows, and the MLP's output
goes to the logits through the one `V × M` matrix `U`. The backward mirrors it: per pair,
`dU += dlogits ⊗ act`, `dpre = (Uᵀ·dlogits) ⊙ [act > 0]`, `dA_{h,t} = dread·OV_t[x_t, h]` and
the softmax backward; then each per-pair gradient is summed into the table row it came from
(`dOV_t[x, h] = Σ A_{h,t}·dread` over the pairs with `x` at `t`, likewise `dK`, `dQ`, `dS`), and
the weight gradients follow from the tables by a few matrix products, once per token.

# Cost

Per pair `3·V·M + (3·H·T + 2)·R + 3·H·T·dh` multiply-adds (the `V·M` products of `U` forward and
twice backward, the sums of table rows, the attention scores; at α = 0 the weights are constant
and their backward, `H·T·R + 2·H·T·dh`, is skipped); per token the table products, whose cost
does not grow with the batch (`bench::flops_factored` counts both, checked by hand in a test).
At p = 59 that is 106 k per pair against 420 k for applying `W_in`, `W_out` and `W_U` to each
pair's residual stream. Where an association order is free it takes the cheaper one: maps of
the embedding act on `V + T` rows, not `V·T`, and the values are read out through `G = Rd·W_O`
(`(M+V)·H·dh·(D + V + T)`) rather than by reading out `W_O·V` (`(M+V)·D·H·(V + T)`). At a
minibatch of 512 the tables are more than half of the work (0.14 of 0.25 GFLOP at p = 59).

# Only some gradients

[`loss_and_grads`] takes the set of tensors whose gradients the caller needs ([`ParamSet`]) and
skips every step of the backward that none of them depends on (the rules are in `Need`); the
gradients it returns are bit for bit those of the full backward.

# Layout

`Forward` holds the per-token tables of the blocks, `Embed` (the embedding and the skip path),
`Attention` (the only place α appears) and `Mlp`, and runs one pair up to the logits;
[`loss_and_grads`] adds the loss (`cross_entropy`) and the backward, each block's beside its
forward. The tensors are named by [`super::names::Param`].

# Determinism

Per-pair work writes only its own pair's rows (in fixed chunks of [`CHUNK`] pairs), each
per-token sum is accumulated by one thread in pair order, the loss's partial sums are added in
chunk order, and every matrix product writes each output element from one thread, so the result
does not depend on the number of threads. The inner loops' sums use a fixed pattern of partial
sums and no fused multiply-add, so they also give the same bits whatever vector instructions the
compiler picks.
*/

use std::collections::BTreeMap;

use gemm::Parallelism;
use rayon::prelude::*;

use super::names::{Param, ParamSet};
use super::ModelConfig;
use super::Activation;

/// Pairs per chunk of the per-pair loops (fixed, so results do not depend on thread count).
pub const CHUNK: usize = 256;

/// Whether the fast path computes this model.
pub fn supports(cfg: &ModelConfig) -> bool {
    cfg.n_layers == 1 && cfg.act == Activation::Relu
}

/// The weights of a one-layer model, flat and row-major, under the checkpoint names.
pub struct Weights<'a> {
    w_e: &'a [f32],   // (D, V)
    w_pos: &'a [f32], // (T, D)
    w_q: &'a [f32],   // (H·dh, D)
    w_k: &'a [f32],   // (H·dh, D)
    w_v: &'a [f32],   // (H·dh, D)
    w_o: &'a [f32],   // (D, H·dh)
    w_in: &'a [f32],  // (M, D)
    b_in: &'a [f32],  // (M)
    w_out: &'a [f32], // (D, M)
    b_out: &'a [f32], // (D)
    w_u: &'a [f32],   // (D, V)
}

impl<'a> Weights<'a> {
    /// Borrows the tensors of a one-layer model by name.
    pub fn from_map(w: &'a BTreeMap<String, Vec<f32>>) -> anyhow::Result<Weights<'a>> {
        Weights::by_name(|name| w.get(name).map(Vec::as_slice))
    }

    /// Borrows the tensors of a one-layer model from `lookup` (tensor name → flat values).
    pub fn by_name(lookup: impl Fn(&str) -> Option<&'a [f32]>) -> anyhow::Result<Weights<'a>> {
        let get = |p: Param| lookup(p.name()).ok_or_else(|| anyhow::anyhow!("missing tensor `{}`", p.name()));
        Ok(Weights {
            w_e: get(Param::WE)?,
            w_pos: get(Param::WPos)?,
            w_q: get(Param::WQ)?,
            w_k: get(Param::WK)?,
            w_v: get(Param::WV)?,
            w_o: get(Param::WO)?,
            w_in: get(Param::WIn)?,
            b_in: get(Param::BIn)?,
            w_out: get(Param::WOut)?,
            b_out: get(Param::BOut)?,
            w_u: get(Param::WU)?,
        })
    }

    fn check(&self, cfg: &ModelConfig) {
        for (p, x) in [
            (Param::WE, self.w_e),
            (Param::WPos, self.w_pos),
            (Param::WQ, self.w_q),
            (Param::WK, self.w_k),
            (Param::WV, self.w_v),
            (Param::WO, self.w_o),
            (Param::WIn, self.w_in),
            (Param::BIn, self.b_in),
            (Param::WOut, self.w_out),
            (Param::BOut, self.b_out),
            (Param::WU, self.w_u),
        ] {
            assert_eq!(x.len(), p.len(cfg), "fast path: tensor `{}` has {} elements, the model needs {:?}", p.name(), x.len(), p.shape(cfg));
        }
    }
}

/// Loss, correct count and (optionally) gradients of a batch.
pub struct Output {
    /// Mean cross-entropy in float64.
    pub loss: f64,
    /// Rows whose largest logit is the label.
    pub correct: usize,
    /// Gradient of `loss` for every tensor asked for, by checkpoint name (`None` when none was).
    pub grads: Option<BTreeMap<String, Vec<f32>>>,
}

/// Loss (and, with `want_grad`, the gradient of every tensor) of the rows given by `tokens`
/// (`B × n_ctx`) and `labels` (`B`).
pub fn loss_and_grad(cfg: &ModelConfig, w: &Weights, tokens: &[u32], labels: &[u32], want_grad: bool, threads: usize) -> Output {
    loss_and_grads(cfg, w, tokens, labels, if want_grad { ParamSet::ALL } else { ParamSet::NONE }, threads)
}

/// Loss and the gradients of the tensors in `need` (none: the forward pass only) of the rows given
/// by `tokens` (`B × n_ctx`) and `labels` (`B`), on at most `threads` threads.
pub fn loss_and_grads(cfg: &ModelConfig, w: &Weights, tokens: &[u32], labels: &[u32], need: ParamSet, threads: usize) -> Output {
    assert!(supports(cfg), "the fast path computes one-layer ReLU models only");
    w.check(cfg);
    let z = Dims::of(cfg);
    let (b, Dims { v, t, h, m, .. }) = (labels.len(), z);
    assert_eq!(tokens.len(), b * t, "fast path: {} tokens for {b} rows of {t}", tokens.len());
    if let Some(bad) = tokens.iter().chain(labels).find(|&&x| x as usize >= v) {
        panic!("fast path: token or label {bad} is outside the vocabulary of {v}");
    }
    let ex = Exec { threads };
    let fwd = Forward::new(cfg, w, threads);
    let Forward { embed, attn, mlp, .. } = &fwd;

    // Forward, pair by pair: attention weights, the residual stream read out, the activation.
    let ht = h * t;
    let mut att = Buf::scratch(b * 2 * ht); // per pair: softmax (H, T), then A (H, T)
    let mut act = Buf::scratch(b * m);
    let mut logits = Buf::scratch(b * v);
    let chunks = att.chunks_mut(CHUNK * 2 * ht).zip(act.chunks_mut(CHUNK * m)).zip(logits.chunks_mut(CHUNK * v));
    ex.each(chunks, |c, ((att, act), logits)| {
        let pairs = att.chunks_mut(2 * ht).zip(act.chunks_mut(m)).zip(logits.chunks_mut(v));
        for (j, ((att, pre), logit)) in pairs.enumerate() {
            let i = c * CHUNK + j;
            let (sm, a) = att.split_at_mut(ht);
            fwd.pair(&tokens[i * t..(i + 1) * t], sm, a, pre, logit);
        }
    });
    mlp.forward(z, &act, &mut logits, ex);
    let need = Need::new(need, cfg.alpha);
    let (loss, correct) = cross_entropy(&mut logits, labels, v, need.any, ex);
    if !need.any {
        return Output { loss, correct, grads: None };
    }
    let dlogits = logits;

    // Backward, pair by pair: through the MLP, then through the attention weights.
    let mut g = Grads::new(need.set, cfg);
    let (du, dpre) = mlp.backward_pairs(z, &need, &act, &dlogits, ex);
    if need.scores {
        let chunks = att.chunks_mut(CHUNK * 2 * ht);
        ex.each(chunks, |c, att| {
            let mut da = vec![0.0f32; t];
            for (j, att) in att.chunks_mut(2 * ht).enumerate() {
                let i = c * CHUNK + j;
                let toks = &tokens[i * t..(i + 1) * t];
                attn.backward_pair(z, toks, &dpre[i * m..(i + 1) * m], &dlogits[i * v..(i + 1) * v], &mut att[..ht], &mut da);
            }
        });
    }

    // From pairs to tokens, then from the tables to the weights.
    let readers = Reader::all(w, z);
    let by = ByToken::new(tokens, b, z);
    let pair = PairGrads { att: &att, dpre: &dpre, dlogits: &dlogits, tokens };
    let dskip = embed.skip_grads(z, &by, &pair, ex);
    let mut dxl = Buf::zeroed(z.rows * z.p);
    mlp.backward(w, z, &need, &du, &dskip, &mut g, ex);
    attn.backward(w, z, &need, &embed, &readers, &by, &pair, &mut dxl, &mut g, ex);
    embed.backward(z, &need, &readers, &dskip, &mut dxl, &mut g, ex);
    Output { loss, correct, grads: Some(g.into_map()) }
}

/// Sizes, named once.
#[derive(Clone, Copy, Debug)]
struct Dims {
    v: usize,
    t: usize,
    d: usize,
    h: usize,
    dh: usize,
    hd: usize,
    m: usize,
    /// Width of the readout, `M + V`: the MLP's pre-activation, then the skip path's logits.
    r: usize,
    /// Rows of the embedding stack, `V + T`.
    rows: usize,
    /// Columns of the embedding's projections, `3·H·dh + R`: `[Q | K | V | Rd]`.
    p: usize,
}

impl Dims {
    fn of(cfg: &ModelConfig) -> Dims {
        let (v, t, d, h, dh, m) = (cfg.vocab, cfg.n_ctx, cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp);
        let hd = h * dh;
        Dims { v, t, d, h, dh, hd, m, r: m + v, rows: v + t, p: 3 * hd + m + v }
    }

    /// Column of the readout in the embedding's projections.
    fn col_read(&self) -> usize {
        3 * self.hd
    }
}

/// The per-token tables of the forward pass and the pass of one pair up to the logits, built once
/// for a set of weights: [`loss_and_grads`] runs it on every pair, and `metrics::gradients`
/// differentiates its output class by class (for that it reads the attention weights and the
/// activation of each pair and the query, key and value rows of each token).
pub(crate) struct Forward {
    z: Dims,
    embed: Embed,
    attn: Attention,
    mlp: Mlp,
}

impl Forward {
    pub(crate) fn new(cfg: &ModelConfig, w: &Weights, threads: usize) -> Forward {
        assert!(supports(cfg), "the fast path computes one-layer ReLU models only");
        w.check(cfg);
        let (z, ex) = (Dims::of(cfg), Exec { threads });
        let readers = Reader::all(w, z);
        let embed = Embed::new(w, z, &readers, ex);
        let attn = Attention::new(w, z, cfg.alpha as f32, &embed, &readers, ex);
        Forward { z, embed, attn, mlp: Mlp::new(w, z, ex) }
    }

    /// One pair (`n_ctx` tokens): the attention weights `sm = softmax(q·k/√dh)` and
    /// `a = α·sm + (1 − α)` (`H, T` each), the activation `act` (`M`) and the logits without the
    /// MLP's output read out (`logit`, `V`; [`Mlp::forward`] adds it for a whole batch).
    #[inline]
    pub(crate) fn pair(&self, toks: &[u32], sm: &mut [f32], a: &mut [f32], act: &mut [f32], logit: &mut [f32]) {
        self.attn.weights(self.z, toks, sm, a);
        self.embed.read_skip(self.z, toks, act, logit);
        self.attn.read(self.z, toks, a, act, logit);
        self.mlp.activate(act, logit);
    }

    /// The query of token `x` at the last position, head `head` (`dh`).
    pub(crate) fn query(&self, x: usize, head: usize) -> &[f32] {
        self.attn.q_row(self.z, x, head)
    }

    /// The key of token `x` at position `pos`, head `head` (`dh`).
    pub(crate) fn key(&self, pos: usize, x: usize, head: usize) -> &[f32] {
        self.attn.k_row(self.z, pos, x, head)
    }

    /// The value of token `x` at position `pos`, all heads (`H·dh`), into `out`.
    pub(crate) fn value(&self, pos: usize, x: usize, out: &mut [f32]) {
        let Dims { v, hd, p, .. } = self.z;
        let (tok, at) = (&self.embed.xl[x * p + 2 * hd..][..hd], &self.embed.xl[(v + pos) * p + 2 * hd..][..hd]);
        out.iter_mut().zip(tok.iter().zip(at)).for_each(|(y, (a, b))| *y = a + b);
    }

    /// `U = W_Uᵀ·W_out` (`V, M`): the MLP's output read by the unembedding.
    pub(crate) fn u(&self) -> &[f32] {
        &self.mlp.u
    }
}

/// Which steps of the backward are needed for the gradients asked for.
struct Need {
    set: ParamSet,
    /// Any gradient at all.
    any: bool,
    /// `dpre`, the gradient entering the MLP from the logits (everything before the MLP).
    pre: bool,
    /// `dU` and `dc`, the MLP's output read by the unembedding.
    mlp_out: bool,
    /// `dOV`, the attention's value path.
    values: bool,
    /// The scores' gradient `ds` (never at α = 0, where the weights do not depend on them).
    scores: bool,
    /// The skip path's gradient reaching the embedding's readout columns.
    skip: bool,
    /// The gradient of the embedding stack itself.
    embed: bool,
}

impl Need {
    fn new(set: ParamSet, alpha: f64) -> Need {
        use Param::*;
        Need {
            set,
            any: !set.is_empty(),
            pre: set.any(&[BIn, WIn, WO, WV, WQ, WK, WE, WPos]),
            mlp_out: set.any(&[WOut, BOut, WU]),
            values: set.any(&[WO, WV, WIn, WU, WE, WPos]),
            scores: alpha != 0.0 && set.any(&[WQ, WK, WE, WPos]),
            skip: set.any(&[WIn, WU, WE, WPos]),
            embed: set.any(&[WE, WPos]),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Embedding: the token and position rows, every map that reads them, and the skip path.

/// A linear map `L` (`out × D`) that reads the residual stream, with the columns its image takes
/// in the embedding's projections `XL`. Stored as in the checkpoint: row-major `(out, D)`, or
/// `(D, out)` for `W_U`, whose transpose is the map.
#[derive(Clone, Copy)]
struct Reader<'a> {
    param: Param,
    w: &'a [f32],
    out: usize,
    col: usize,
    transposed: bool,
}

impl<'a> Reader<'a> {
    /// `W_Q`, `W_K`, `W_V`, then the readout `Rd = [W_in; W_Uᵀ]` (the last two).
    fn all(w: &Weights<'a>, z: Dims) -> [Reader<'a>; 5] {
        let r = |param, w, out, col, transposed| Reader { param, w, out, col, transposed };
        [
            r(Param::WQ, w.w_q, z.hd, 0, false),
            r(Param::WK, w.w_k, z.hd, z.hd, false),
            r(Param::WV, w.w_v, z.hd, 2 * z.hd, false),
            r(Param::WIn, w.w_in, z.m, z.col_read(), false),
            r(Param::WU, w.w_u, z.v, z.col_read() + z.m, true),
        ]
    }

    /// The map, `(out, D)`.
    fn l(&self, d: usize) -> Mat<'a> {
        if self.transposed {
            Mat { data: self.w, off: 0, rs: 1, cs: self.out }
        } else {
            mat(self.w, d)
        }
    }

    /// Adds `a·b` (`out × D`, `a` is `out × k`) to the map's gradient `dw`, in its stored layout.
    fn add_grad(&self, dw: &mut [f32], a: Mat, b: Mat, k: usize, d: usize, par: Parallelism) {
        if self.transposed {
            gemm(dw, 0, self.out, true, b.t(), a.t(), d, self.out, k, par);
        } else {
            gemm(dw, 0, d, true, a, b, self.out, d, k, par);
        }
    }
}

/// The embedding block: `X`, the `V` token rows `W_E[:, x]` over the `T` position rows
/// `W_pos[t]` (`V+T, D`), its image under every reader, `XL` (`V+T, P`), and the skip path
/// `S[x] = Rd·(X[x] + X[V+T−1])` (`V, R`), the last position's embedding read out.
struct Embed {
    x: Buf,
    xl: Buf,
    skip: Buf,
}

impl Embed {
    fn new(w: &Weights, z: Dims, readers: &[Reader; 5], ex: Exec) -> Embed {
        let Dims { v, d, p, r, rows, .. } = z;
        let mut x = Buf::scratch(rows * d);
        for (tok, row) in x.chunks_mut(d).take(v).enumerate() {
            row.iter_mut().enumerate().for_each(|(j, y)| *y = w.w_e[j * v + tok]);
        }
        x[v * d..].copy_from_slice(w.w_pos);
        let mut xl = Buf::scratch(rows * p);
        for rd in readers {
            gemm(&mut xl, rd.col, p, false, mat(&x, d), rd.l(d).t(), rows, rd.out, d, ex.par());
        }
        let last = &xl[(rows - 1) * p + z.col_read()..][..r];
        let mut skip = Buf::scratch(v * r);
        for (tok, row) in skip.chunks_mut(r).enumerate() {
            let own = &xl[tok * p + z.col_read()..][..r];
            row.iter_mut().zip(own.iter().zip(last)).for_each(|(y, (a, b))| *y = a + b);
        }
        Embed { x, xl, skip }
    }

    /// Per pair: the skip path starts the readout, `pre = S[ℓ][..M]`, `logit = S[ℓ][M..]`.
    #[inline]
    fn read_skip(&self, z: Dims, toks: &[u32], pre: &mut [f32], logit: &mut [f32]) {
        let s = &self.skip[toks[z.t - 1] as usize * z.r..][..z.r];
        pre.copy_from_slice(&s[..z.m]);
        logit.copy_from_slice(&s[z.m..]);
    }

    /// `dS[x] = Σ dread` over the pairs whose last token is `x` (`V, R`; the `M` columns stay
    /// zero when `dpre` is not computed).
    fn skip_grads(&self, z: Dims, by: &ByToken, pair: &PairGrads, ex: Exec) -> Buf {
        let mut ds = Buf::scratch(z.v * z.r);
        ex.each(ds.chunks_mut(z.r), |x, row| {
            row.fill(0.0);
            let (pre, logit) = row.split_at_mut(z.m);
            for &i in by.pairs(z.t - 1, x) {
                let (dpre, dlogit) = pair.dread(z, i as usize);
                if !dpre.is_empty() {
                    add(pre, dpre);
                }
                add(logit, dlogit);
            }
        });
        ds
    }

    /// From the gradient of the projections `dxl` (the attention has filled its `Q`, `K`, `V`
    /// columns; the skip's `dS` fills the readout's) to the readers' weights and `W_E`, `W_pos`.
    #[allow(clippy::too_many_arguments)]
    fn backward(&self, z: Dims, need: &Need, readers: &[Reader; 5], ds: &[f32], dxl: &mut [f32], g: &mut Grads, ex: Exec) {
        let Dims { v, d, p, r, rows, .. } = z;
        if need.skip {
            let col = z.col_read();
            for (x, row) in ds.chunks(r).enumerate() {
                dxl[x * p + col..][..r].copy_from_slice(row);
                add(&mut dxl[(rows - 1) * p + col..][..r], row);
            }
        }
        // Without scores (α = 0) the Q and K columns of `dxl` are zero, and so are their products.
        let readers: Vec<&Reader> = readers.iter().filter(|rd| need.scores || !matches!(rd.param, Param::WQ | Param::WK)).collect();
        for rd in &readers {
            if let Some(dw) = g.get(rd.param) {
                let dxl_t = Mat { data: dxl, off: rd.col, rs: 1, cs: p }; // (out, V+T)
                rd.add_grad(dw, dxl_t, mat(&self.x, d), rows, d, ex.par());
            }
        }
        if need.embed {
            let mut dx = Buf::zeroed(rows * d);
            for rd in &readers {
                let dxl_rd = Mat { data: dxl, off: rd.col, rs: p, cs: 1 }; // (V+T, out)
                gemm(&mut dx, 0, d, true, dxl_rd, rd.l(d), rows, d, rd.out, ex.par());
            }
            if let Some(dw) = g.get(Param::WE) {
                for (tok, row) in dx.chunks(d).take(v).enumerate() {
                    row.iter().enumerate().for_each(|(j, y)| dw[j * v + tok] += y);
                }
            }
            if let Some(dw) = g.get(Param::WPos) {
                add(dw, &dx[v * d..]);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Attention, with rate α.

/// The attention block: per token the query at the last position `Q` (`V, H·dh`), the keys `K`
/// (`T, V, H·dh`), `Gᵀ = (Rd·W_O)ᵀ` (`H·dh, R`) and each head's value read out,
/// `OV_t[x, h] = G_h·V_t[x, h]` (`T, V, H, R`); per pair the weights and their sum `Σ A·OV`.
struct Attention {
    q: Buf,
    k: Buf,
    gt: Buf,
    ov: Buf,
    alpha: f32,
    scale: f32,
}

impl Attention {
    fn new(w: &Weights, z: Dims, alpha: f32, embed: &Embed, readers: &[Reader; 5], ex: Exec) -> Attention {
        let Dims { v, t, d, h, dh, hd, r, rows, p, .. } = z;
        let xl = &embed.xl;
        let (cq, ck, cv) = (0, hd, 2 * hd);
        let row_sum = |a: usize, b: usize, col: usize, n: usize, out: &mut [f32]| {
            out.iter_mut().zip(xl[a * p + col..][..n].iter().zip(&xl[b * p + col..][..n])).for_each(|(y, (x, z))| *y = x + z);
        };
        let mut q = Buf::scratch(v * hd);
        for (x, row) in q.chunks_mut(hd).enumerate() {
            row_sum(x, rows - 1, cq, hd, row);
        }
        let mut k = Buf::scratch(t * v * hd);
        for (i, row) in k.chunks_mut(hd).enumerate() {
            row_sum(i % v, v + i / v, ck, hd, row);
        }
        // Gᵀ = W_Oᵀ·Rdᵀ, then the values of the V + T embedding rows read out, head by head.
        let mut gt = Buf::scratch(hd * r);
        let w_ot = Mat { data: w.w_o, off: 0, rs: 1, cs: hd }; // (H·dh, D)
        for rd in &readers[3..] {
            gemm(&mut gt, rd.col - z.col_read(), r, false, w_ot, rd.l(d).t(), hd, rd.out, d, ex.par());
        }
        let mut ovs = Buf::scratch(rows * h * r);
        for head in 0..h {
            let xv = Mat { data: xl, off: cv + head * dh, rs: p, cs: 1 }; // (V+T, dh)
            let gt_h = Mat { data: &gt, off: head * dh * r, rs: r, cs: 1 }; // (dh, R)
            gemm(&mut ovs, head * r, h * r, false, xv, gt_h, rows, r, dh, ex.par());
        }
        let hr = h * r;
        let mut ov = Buf::scratch(t * v * hr);
        for (i, row) in ov.chunks_mut(hr).enumerate() {
            let (tok, pos) = (&ovs[(i % v) * hr..][..hr], &ovs[(v + i / v) * hr..][..hr]);
            row.iter_mut().zip(tok.iter().zip(pos)).for_each(|(y, (a, b))| *y = a + b);
        }
        Attention { q, k, gt, ov, alpha, scale: 1.0 / (dh as f32).sqrt() }
    }

    #[inline]
    fn q_row(&self, z: Dims, x: usize, head: usize) -> &[f32] {
        &self.q[x * z.hd + head * z.dh..][..z.dh]
    }

    #[inline]
    fn k_row(&self, z: Dims, pos: usize, x: usize, head: usize) -> &[f32] {
        &self.k[(pos * z.v + x) * z.hd + head * z.dh..][..z.dh]
    }

    #[inline]
    fn ov_row(&self, z: Dims, pos: usize, x: usize, head: usize) -> &[f32] {
        &self.ov[((pos * z.v + x) * z.h + head) * z.r..][..z.r]
    }

    /// The weights of one pair's last position, each `(H, T)`: `sm = softmax_t(q·k/√dh)` and
    /// `a = α·sm + (1 − α)`.
    #[inline]
    fn weights(&self, z: Dims, toks: &[u32], sm: &mut [f32], a: &mut [f32]) {
        let last = toks[z.t - 1] as usize;
        for head in 0..z.h {
            let q = self.q_row(z, last, head);
            let row = &mut sm[head * z.t..(head + 1) * z.t];
            for (pos, s) in row.iter_mut().enumerate() {
                *s = dot(q, self.k_row(z, pos, toks[pos] as usize, head)) * self.scale;
            }
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
            let mut sum = 0.0;
            for s in row.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            for (s, a) in row.iter_mut().zip(&mut a[head * z.t..(head + 1) * z.t]) {
                *s /= sum;
                *a = self.alpha * *s + (1.0 - self.alpha);
            }
        }
    }

    /// The attention output at the last position, read out: `(pre, logit) += Σ_{h,t} a·OV_t[x_t, h]`.
    #[inline]
    fn read(&self, z: Dims, toks: &[u32], a: &[f32], pre: &mut [f32], logit: &mut [f32]) {
        for head in 0..z.h {
            for (pos, &x) in toks.iter().enumerate() {
                let (coef, row) = (a[head * z.t + pos], self.ov_row(z, pos, x as usize, head));
                axpy(pre, coef, &row[..z.m]);
                axpy(logit, coef, &row[z.m..]);
            }
        }
    }

    /// Backward of [`Attention::read`] and [`Attention::weights`] for one pair: from the readout's
    /// gradient `(dpre, dlogit)` to the scores' `ds = ∂loss/∂(q·k)`, written over `sm` (`H, T`).
    #[inline]
    fn backward_pair(&self, z: Dims, toks: &[u32], dpre: &[f32], dlogit: &[f32], sm: &mut [f32], da: &mut [f32]) {
        for head in 0..z.h {
            for (pos, &x) in toks.iter().enumerate() {
                let row = self.ov_row(z, pos, x as usize, head);
                da[pos] = dot(dpre, &row[..z.m]) + dot(dlogit, &row[z.m..]);
            }
            // Softmax backward of α·softmax(s): ds = α·sm ⊙ (dA − Σ sm·dA).
            let s = &mut sm[head * z.t..(head + 1) * z.t];
            let mean: f32 = s.iter().zip(&*da).map(|(s, d)| s * d).sum();
            for (s, d) in s.iter_mut().zip(&*da) {
                *s = self.alpha * *s * (d - mean) * self.scale;
            }
        }
    }

    /// Backward of the tables: sums the pairs' gradients into `dOV`, `dK` and `dQ` by token, then
    /// from those to `W_O`, the readout's share of `W_in` and `W_U` (through `G`), and the `Q`, `K`,
    /// `V` columns of the embedding's `dxl`.
    #[allow(clippy::too_many_arguments)]
    fn backward(&self, w: &Weights, z: Dims, need: &Need, embed: &Embed, readers: &[Reader; 5], by: &ByToken, pair: &PairGrads, dxl: &mut [f32], g: &mut Grads, ex: Exec) {
        let Dims { v, t, d, h, dh, hd, m, r, rows, p } = z;
        if need.values {
            // dOV_t[x, h] = Σ a_{h,t}·dread, then dOV of the V + T embedding rows.
            let hr = h * r;
            let mut dov = Buf::scratch(t * v * hr);
            ex.each(dov.chunks_mut(hr), |i, row| {
                row.fill(0.0);
                let (pos, x) = (i / v, i % v);
                for &i in by.pairs(pos, x) {
                    let (a, (dpre, dlogit)) = (pair.a(z, i as usize), pair.dread(z, i as usize));
                    for (head, row) in row.chunks_mut(r).enumerate() {
                        let coef = a[head * t + pos];
                        if !dpre.is_empty() {
                            axpy(&mut row[..m], coef, dpre);
                        }
                        axpy(&mut row[m..], coef, dlogit);
                    }
                }
            });
            let mut dovs = Buf::zeroed(rows * hr);
            for (i, row) in dov.chunks(hr).enumerate() {
                add(&mut dovs[(i % v) * hr..][..hr], row);
                add(&mut dovs[(v + i / v) * hr..][..hr], row);
            }
            // OV = V·Gᵀ per head: dGᵀ_h = V_hᵀ·dOV_h, dV_h = dOV_h·G_h.
            let mut dgt = Buf::scratch(hd * r);
            for head in 0..h {
                let dov_h = Mat { data: &dovs, off: head * r, rs: hr, cs: 1 }; // (V+T, R)
                let xv_t = Mat { data: &embed.xl, off: 2 * hd + head * dh, rs: 1, cs: p }; // (dh, V+T)
                gemm(&mut dgt, head * dh * r, r, false, xv_t, dov_h, dh, r, rows, ex.par());
                if need.set.any(&[Param::WV, Param::WE, Param::WPos]) {
                    let g_h = Mat { data: &self.gt, off: head * dh * r, rs: 1, cs: r }; // (R, dh)
                    gemm(dxl, 2 * hd + head * dh, p, false, dov_h, g_h, rows, dh, r, ex.par());
                }
            }
            // G = Rd·W_O: dW_O = Rdᵀ·dG, dRd += dG·W_Oᵀ.
            for rd in &readers[3..] {
                let dg = Mat { data: &dgt, off: rd.col - z.col_read(), rs: 1, cs: r }; // (out, H·dh)
                if let Some(dw) = g.get(Param::WO) {
                    gemm(dw, 0, hd, true, rd.l(d).t(), dg, d, hd, rd.out, ex.par());
                }
                if let Some(dw) = g.get(rd.param) {
                    rd.add_grad(dw, dg, Mat { data: w.w_o, off: 0, rs: 1, cs: hd }, hd, d, ex.par());
                }
            }
        }
        if need.scores {
            // dK_t[x, h] = Σ ds_{h,t}·q_h over the pairs with x at t; dQ[x, h] = Σ_t ds_{h,t}·k_{t,h}
            // over the pairs whose last token is x.
            let mut dk = Buf::scratch(t * v * hd);
            ex.each(dk.chunks_mut(hd), |i, row| {
                row.fill(0.0);
                let (pos, x) = (i / v, i % v);
                for &i in by.pairs(pos, x) {
                    let (ds, last) = (pair.ds(z, i as usize), pair.tokens(z, i as usize)[t - 1] as usize);
                    for (head, row) in row.chunks_mut(dh).enumerate() {
                        axpy(row, ds[head * t + pos], self.q_row(z, last, head));
                    }
                }
            });
            let mut dq = Buf::scratch(v * hd);
            ex.each(dq.chunks_mut(hd), |x, row| {
                row.fill(0.0);
                for &i in by.pairs(t - 1, x) {
                    let (ds, toks) = (pair.ds(z, i as usize), pair.tokens(z, i as usize));
                    for (head, row) in row.chunks_mut(dh).enumerate() {
                        for (pos, &y) in toks.iter().enumerate() {
                            axpy(row, ds[head * t + pos], self.k_row(z, pos, y as usize, head));
                        }
                    }
                }
            });
            // Q[x] = XL[x] + XL[V+T−1] and K_t[x] = XL[x] + XL[V+t], in the Q and K columns.
            let (cq, ck) = (0, hd);
            for x in 0..v {
                dxl[x * p + cq..][..hd].copy_from_slice(&dq[x * hd..][..hd]);
                add(&mut dxl[(rows - 1) * p + cq..][..hd], &dq[x * hd..][..hd]);
                for pos in 0..t {
                    let row = &dk[(pos * v + x) * hd..][..hd];
                    add(&mut dxl[x * p + ck..][..hd], row);
                    add(&mut dxl[(v + pos) * p + ck..][..hd], row);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// MLP, read through the unembedding.

/// The MLP block: `act = relu(pre + b_in)` per pair, and its output read by the unembedding,
/// `U·act + c` with `U = W_Uᵀ·W_out` (`V, M`) and `c = W_Uᵀ·b_out` (`V`): the output never exists
/// in d_model.
struct Mlp {
    u: Buf,
    c: Vec<f32>,
    b_in: Vec<f32>,
}

impl Mlp {
    fn new(w: &Weights, z: Dims, ex: Exec) -> Mlp {
        let Dims { v, d, m, .. } = z;
        let w_ut = Mat { data: w.w_u, off: 0, rs: 1, cs: v }; // (V, D)
        let mut u = Buf::scratch(v * m);
        gemm(&mut u, 0, m, false, w_ut, mat(w.w_out, m), v, m, d, ex.par());
        let mut c = vec![0.0f32; v];
        gemm(&mut c, 0, 1, false, w_ut, mat(w.b_out, 1), v, 1, d, Parallelism::None);
        Mlp { u, c, b_in: w.b_in.to_vec() }
    }

    /// Per pair: `pre ← relu(pre + b_in)` (the activation) and `logit += c`.
    #[inline]
    fn activate(&self, pre: &mut [f32], logit: &mut [f32]) {
        pre.iter_mut().zip(&self.b_in).for_each(|(x, b)| *x = (*x + b).max(0.0));
        add(logit, &self.c);
    }

    /// All pairs: `logits += act·Uᵀ`.
    fn forward(&self, z: Dims, act: &[f32], logits: &mut [f32], ex: Exec) {
        let b = act.len() / z.m;
        gemm(logits, 0, z.v, true, mat(act, z.m), Mat { data: &self.u, off: 0, rs: 1, cs: z.m }, b, z.v, z.m, ex.par());
    }

    /// All pairs: `dU = dlogitsᵀ·act` (when needed) and `dpre = (dlogits·U) ⊙ [act > 0]` (when
    /// needed; ReLU's derivative at 0 is 0, as PyTorch's). Empty when not needed.
    fn backward_pairs(&self, z: Dims, need: &Need, act: &[f32], dlogits: &[f32], ex: Exec) -> (Buf, Buf) {
        let Dims { v, m, .. } = z;
        let b = act.len() / m;
        let mut du = Buf::zeroed(0);
        if need.mlp_out {
            du = Buf::scratch(v * m);
            gemm(&mut du, 0, m, false, Mat { data: dlogits, off: 0, rs: 1, cs: v }, mat(act, m), v, m, b, ex.par());
        }
        let mut dpre = Buf::zeroed(0);
        if need.pre {
            dpre = Buf::scratch(b * m);
            gemm(&mut dpre, 0, m, false, mat(dlogits, v), mat(&self.u, m), b, m, v, ex.par());
            ex.each(dpre.chunks_mut(CHUNK * m).zip(act.chunks(CHUNK * m)), |_, (g, a)| {
                g.iter_mut().zip(a).for_each(|(g, &a)| *g = if a > 0.0 { *g } else { 0.0 }); // a select: vectorises
            });
        }
        (du, dpre)
    }

    /// From `dU` and the skip's `dS` (whose columns summed over tokens are the bias gradients:
    /// every pair's `dpre` and `dlogits` land in exactly one row) to `W_out`, `b_out`, `b_in` and
    /// the MLP's share of `W_U`.
    #[allow(clippy::too_many_arguments)]
    fn backward(&self, w: &Weights, z: Dims, need: &Need, du: &[f32], ds: &[f32], g: &mut Grads, ex: Exec) {
        let Dims { v, d, m, r, .. } = z;
        let mut sums = vec![0.0f32; r];
        for row in ds.chunks(r) {
            add(&mut sums, row);
        }
        let (db_in, dc) = sums.split_at(m);
        if let Some(dw) = g.get(Param::BIn) {
            dw.copy_from_slice(db_in);
        }
        if !need.mlp_out {
            return;
        }
        if let Some(dw) = g.get(Param::WOut) {
            gemm(dw, 0, m, true, mat(w.w_u, v), mat(du, m), d, m, v, ex.par());
        }
        if let Some(dw) = g.get(Param::WU) {
            gemm(dw, 0, v, true, mat(w.w_out, m), Mat { data: du, off: 0, rs: 1, cs: m }, d, v, m, ex.par());
            for (row, &bo) in dw.chunks_mut(v).zip(w.b_out) {
                axpy(row, bo, dc);
            }
        }
        if let Some(dw) = g.get(Param::BOut) {
            for (y, row) in dw.iter_mut().zip(w.w_u.chunks(v)) {
                *y += dot(row, dc);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The loss.

/// Mean cross-entropy of the logits (`B × V`) in float64 and the number of rows whose largest
/// logit is the label; with `grad`, `logits` becomes `∂loss/∂logits`.
fn cross_entropy(logits: &mut [f32], labels: &[u32], v: usize, grad: bool, ex: Exec) -> (f64, usize) {
    let b = labels.len();
    let mut parts = vec![(0.0f64, 0usize); b.div_ceil(CHUNK)];
    ex.each(logits.chunks_mut(CHUNK * v).zip(labels.chunks(CHUNK)).zip(parts.iter_mut()), |_, ((logits, labels), part)| {
        let mut e = vec![0.0f64; v];
        for (row, &lab) in logits.chunks_mut(v).zip(labels) {
            let lab = lab as usize;
            let (mut best, mut arg) = (f32::NEG_INFINITY, 0);
            for (j, &x) in row.iter().enumerate() {
                if x > best {
                    best = x;
                    arg = j;
                }
            }
            part.1 += usize::from(arg == lab);
            let max = best as f64;
            e.iter_mut().zip(row.iter()).for_each(|(e, &x)| *e = (x as f64 - max).exp());
            let sum: f64 = e.iter().sum();
            part.0 += max + sum.ln() - row[lab] as f64;
            if grad {
                for (j, (x, e)) in row.iter_mut().zip(&e).enumerate() {
                    *x = ((e / sum - f64::from(u8::from(j == lab))) / b as f64) as f32;
                }
            }
        }
    });
    let (loss, correct) = parts.iter().fold((0.0, 0), |(l, c), p| (l + p.0, c + p.1));
    (loss / b as f64, correct)
}

// ---------------------------------------------------------------------------------------------
// From pairs to tokens.

/// What the backward keeps per pair: tokens, the attention weights `A` and the scores' `ds`
/// (`att`: per pair `ds` or softmax, then `A`, each `H, T`), and the readout's gradient
/// `(dpre, dlogits)` (`dpre` empty when not computed).
struct PairGrads<'a> {
    att: &'a [f32],
    dpre: &'a [f32],
    dlogits: &'a [f32],
    tokens: &'a [u32],
}

impl PairGrads<'_> {
    #[inline]
    fn tokens(&self, z: Dims, i: usize) -> &[u32] {
        &self.tokens[i * z.t..(i + 1) * z.t]
    }
    #[inline]
    fn ds(&self, z: Dims, i: usize) -> &[f32] {
        let ht = z.h * z.t;
        &self.att[i * 2 * ht..][..ht]
    }
    #[inline]
    fn a(&self, z: Dims, i: usize) -> &[f32] {
        let ht = z.h * z.t;
        &self.att[i * 2 * ht + ht..][..ht]
    }
    #[inline]
    fn dread(&self, z: Dims, i: usize) -> (&[f32], &[f32]) {
        let dpre = if self.dpre.is_empty() { &[][..] } else { &self.dpre[i * z.m..(i + 1) * z.m] };
        (dpre, &self.dlogits[i * z.v..(i + 1) * z.v])
    }
}

/// The pairs holding each token at each position, in pair order: every per-token gradient is a
/// sum over one of these lists, accumulated by one thread, so no two threads add into one sum.
struct ByToken {
    start: Vec<usize>, // (T, V+1): offsets into the position's block of `pairs`
    pairs: Vec<u32>,   // (T, B)
    v: usize,
    b: usize,
}

impl ByToken {
    fn new(tokens: &[u32], b: usize, z: Dims) -> ByToken {
        let (v, t) = (z.v, z.t);
        let mut start = vec![0usize; t * (v + 1)];
        for (i, &x) in tokens.iter().enumerate() {
            start[(i % t) * (v + 1) + x as usize + 1] += 1;
        }
        for pos in 0..t {
            for x in 0..v {
                start[pos * (v + 1) + x + 1] += start[pos * (v + 1) + x];
            }
        }
        let mut next = start.clone();
        let mut pairs = vec![0u32; t * b];
        for (i, &x) in tokens.iter().enumerate() {
            let (pair, pos) = (i / t, i % t);
            let slot = &mut next[pos * (v + 1) + x as usize];
            pairs[pos * b + *slot] = pair as u32;
            *slot += 1;
        }
        ByToken { start, pairs, v, b }
    }

    /// The pairs whose token at `pos` is `x`, in increasing order.
    #[inline]
    fn pairs(&self, pos: usize, x: usize) -> &[u32] {
        let s = &self.start[pos * (self.v + 1)..];
        &self.pairs[pos * self.b + s[x]..pos * self.b + s[x + 1]]
    }
}

/// Gradients being accumulated: a zeroed buffer for each tensor asked for.
struct Grads {
    bufs: BTreeMap<Param, Vec<f32>>,
}

impl Grads {
    fn new(set: ParamSet, cfg: &ModelConfig) -> Grads {
        Grads { bufs: set.iter().map(|p| (p, vec![0.0; p.len(cfg)])).collect() }
    }

    /// The buffer of `p`, if its gradient was asked for.
    fn get(&mut self, p: Param) -> Option<&mut [f32]> {
        self.bufs.get_mut(&p).map(Vec::as_mut_slice)
    }

    fn into_map(self) -> BTreeMap<String, Vec<f32>> {
        self.bufs.into_iter().map(|(p, g)| (p.name().to_string(), g)).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Kernels.

thread_local! {
    /// The buffers of earlier passes on this thread, for reuse: allocating and first touching
    /// the few megabytes a pass needs cost about a tenth of an SGLD step (page faults, mostly).
    static SPARE: std::cell::RefCell<Vec<Vec<f32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A zeroed buffer of floats, taken from [`SPARE`] (the smallest one big enough, else the largest,
/// grown) and given back when dropped.
struct Buf(Vec<f32>);

impl Buf {
    /// `n` zeros.
    fn zeroed(n: usize) -> Buf {
        let mut b = Buf::spare(n);
        b.0.clear();
        b.0.resize(n, 0.0);
        b
    }

    /// `n` floats of unspecified value, for a buffer the pass writes in full before reading it
    /// (in tests they are NaN, so that a read before the write shows in every result).
    fn scratch(n: usize) -> Buf {
        let mut b = Buf::spare(n);
        b.0.resize(n, 0.0);
        b.0.truncate(n);
        if cfg!(test) {
            b.0.fill(f32::NAN);
        }
        b
    }

    fn spare(n: usize) -> Buf {
        if n == 0 {
            return Buf(Vec::new());
        }
        let spare = SPARE.with(|s| {
            let mut s = s.borrow_mut();
            let fit = (0..s.len()).filter(|&i| s[i].capacity() >= n).min_by_key(|&i| s[i].capacity());
            let pick = fit.or_else(|| (0..s.len()).max_by_key(|&i| s[i].capacity()));
            pick.map(|i| s.swap_remove(i))
        });
        Buf(spare.unwrap_or_default())
    }
}

impl std::ops::Deref for Buf {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.0
    }
}

impl std::ops::DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.0
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        if v.capacity() > 0 {
            // After the thread's pool is gone (thread exit) the buffer is simply freed.
            let _ = SPARE.try_with(|s| s.borrow_mut().push(v));
        }
    }
}


/// How many threads the pass may use.
#[derive(Clone, Copy)]
struct Exec {
    threads: usize,
}

impl Exec {
    fn par(self) -> Parallelism {
        if self.threads > 1 {
            Parallelism::Rayon(self.threads)
        } else {
            Parallelism::None
        }
    }

    /// `f(index, item)` for every item, on rayon when more than one thread is allowed. Each item
    /// must write only its own outputs.
    fn each<I, F>(self, items: I, f: F)
    where
        I: Iterator + Send,
        I::Item: Send,
        F: Fn(usize, I::Item) + Sync + Send,
    {
        if self.threads > 1 {
            items.enumerate().par_bridge().for_each(|(i, x)| f(i, x));
        } else {
            items.enumerate().for_each(|(i, x)| f(i, x));
        }
    }
}

/// Whether the vector kernels may use AVX2 (tests turn it off to compare the two builds).
static WIDE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Turns the AVX2 build of the vector kernels on or off (for the test that compares them).
#[cfg(test)]
pub(crate) fn set_wide(on: bool) {
    WIDE.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Defines a vector kernel twice, for the default target (SSE2) and for AVX2, with a dispatcher
/// that runs the AVX2 build where the CPU has it: the per-pair loops are ours, not gemm's (which
/// picks its own kernels). Both builds give the same bits: the kernels use no fused multiply-add
/// and fix the pattern of their partial sums.
macro_rules! kernel {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? $body:block) => {
        $(#[$doc])*
        #[inline]
        pub(crate) fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn base($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    base($($arg),*)
                }
                if WIDE.load(std::sync::atomic::Ordering::Relaxed) && std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2 (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            base($($arg),*)
        }
    };
}

kernel! {
    /// `Σ x_i·y_i` with eight partial sums in a fixed pattern.
    fn dot(x: &[f32], y: &[f32]) -> f32 {
        let n = x.len().min(y.len());
        let (x, y) = (&x[..n], &y[..n]);
        let mut acc = [0.0f32; 8];
        let (xc, yc) = (x.chunks_exact(8), y.chunks_exact(8));
        let (xr, yr) = (xc.remainder(), yc.remainder());
        for (a, b) in xc.zip(yc) {
            for l in 0..8 {
                acc[l] += a[l] * b[l];
            }
        }
        let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
        for (a, b) in xr.iter().zip(yr) {
            s += a * b;
        }
        s
    }
}

kernel! {
    /// `y += a·x`.
    fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
        y.iter_mut().zip(x).for_each(|(y, x)| *y += a * x);
    }
}

kernel! {
    /// `y += x`.
    fn add(y: &mut [f32], x: &[f32]) {
        y.iter_mut().zip(x).for_each(|(y, x)| *y += x);
    }
}

/// Matrix view: element `(i, j)` at `off + i·rs + j·cs`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) off: usize,
    pub(crate) rs: usize,
    pub(crate) cs: usize,
}

impl Mat<'_> {
    /// The transpose (the same elements).
    pub(crate) fn t(self) -> Self {
        Mat { rs: self.cs, cs: self.rs, ..self }
    }
}

/// A row-major `(·, cols)` matrix.
pub(crate) fn mat(data: &[f32], cols: usize) -> Mat<'_> {
    Mat { data, off: 0, rs: cols, cs: 1 }
}

/// `dst[m×n] (+)= a[m×k] · b[k×n]`, dst row-major with row stride `dst_rs` from `dst_off`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(dst: &mut [f32], dst_off: usize, dst_rs: usize, acc: bool, a: Mat, b: Mat, m: usize, n: usize, k: usize, par: Parallelism) {
    if m == 0 || n == 0 {
        return;
    }
    // Bounds: the last element each operand touches must be inside its slice.
    let last = |x: &Mat, r: usize, c: usize| x.off + (r.max(1) - 1) * x.rs + (c.max(1) - 1) * x.cs;
    assert!(k == 0 || last(&a, m, k) < a.data.len(), "gemm: lhs out of bounds");
    assert!(k == 0 || last(&b, k, n) < b.data.len(), "gemm: rhs out of bounds");
    assert!(dst_off + (m - 1) * dst_rs + n - 1 < dst.len(), "gemm: dst out of bounds");
    if k == 0 {
        if !acc {
            for i in 0..m {
                dst[dst_off + i * dst_rs..dst_off + i * dst_rs + n].fill(0.0);
            }
        }
        return;
    }
    // SAFETY: all three operands were bounds-checked above for the strides given, and `dst` does
    // not alias `a` or `b` (it is a distinct `&mut`).
    unsafe {
        gemm::gemm(
            m, n, k,
            dst.as_mut_ptr().add(dst_off), 1, dst_rs as isize, acc,
            a.data.as_ptr().add(a.off), a.cs as isize, a.rs as isize,
            b.data.as_ptr().add(b.off), b.cs as isize, b.rs as isize,
            1.0, 1.0, false, false, false, par,
        );
    }
}
