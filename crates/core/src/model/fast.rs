/*!
A hand-derived forward and backward pass for one-layer ReLU models: the fast path that training
and SGLD use when the model allows it, tested against candle's autograd through the textbook
forward ([`super::Transformer::forward_reference`]).

It uses the structure of the problem. Position `t` only ever holds one token, so everything before
the MLP that depends on a single token is computed once per vocabulary entry (`V` rows) instead of
once per pair (`V²` rows): `H0_t = E + pos_t`, keys `K_t`, values `V_t`, the last position's query
`Q`, and the values already projected by `W_O` (`VO_t`, one `d_model` vector per token and head).
Per pair only the attention weights (`n_heads × n_ctx` dot products), the residual
`H0_last[x_last] + Σ_{h,t} A_{h,t}·VO_t[x_t, h]`, the MLP and the unembedding remain. The backward
pass mirrors it: per-pair gradients are scattered into the per-token tables, and the weight
gradients follow from the tables with small matrix products.

Determinism: per-pair work is split into fixed chunks of [`CHUNK`] pairs whose partial sums are
added in chunk order, and every matrix product writes each output element from one thread, so the
result does not depend on the number of threads.
*/

use std::collections::BTreeMap;

use gemm::Parallelism;
use rayon::prelude::*;

use super::ModelConfig;
use super::Activation;

/// Pairs per chunk of the per-pair loops (fixed, so results do not depend on thread count).
pub const CHUNK: usize = 256;

/// Whether the fast path computes this model.
pub fn supports(cfg: &ModelConfig) -> bool {
    cfg.n_layers == 1 && cfg.act == Activation::Relu
}

/// Row-major matrix view: element `(i, j)` at `off + i·rs + j·cs`.
#[derive(Clone, Copy)]
struct Mat<'a> {
    data: &'a [f32],
    off: usize,
    rs: usize,
    cs: usize,
}

fn mat(data: &[f32], cols: usize) -> Mat<'_> {
    Mat { data, off: 0, rs: cols, cs: 1 }
}

fn mat_t(data: &[f32], cols: usize) -> Mat<'_> {
    Mat { data, off: 0, rs: 1, cs: cols }
}

/// `dst[m×n] (+)= a[m×k] · b[k×n]`, dst row-major with row stride `dst_rs` from `dst_off`.
#[allow(clippy::too_many_arguments)]
fn gemm(dst: &mut [f32], dst_off: usize, dst_rs: usize, acc: bool, a: Mat, b: Mat, m: usize, n: usize, k: usize, par: Parallelism) {
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

/// The weights of a one-layer model, flat and row-major, under the checkpoint names.
pub struct Weights<'a> {
    w_e: &'a [f32],   // (D, V)
    w_pos: &'a [f32], // (T, D)
    w_q: &'a [f32],   // (H·dh, D)
    w_k: &'a [f32],
    w_v: &'a [f32],
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
        let get = |k: &str| w.get(k).map(Vec::as_slice).ok_or_else(|| anyhow::anyhow!("missing tensor `{k}`"));
        Ok(Weights {
            w_e: get("embed.W_E")?,
            w_pos: get("pos_embed.W_pos")?,
            w_q: get("blocks.0.attn.W_Q")?,
            w_k: get("blocks.0.attn.W_K")?,
            w_v: get("blocks.0.attn.W_V")?,
            w_o: get("blocks.0.attn.W_O")?,
            w_in: get("blocks.0.mlp.W_in")?,
            b_in: get("blocks.0.mlp.b_in")?,
            w_out: get("blocks.0.mlp.W_out")?,
            b_out: get("blocks.0.mlp.b_out")?,
            w_u: get("unembed.W_U")?,
        })
    }
}

/// Loss, correct count and (optionally) gradients of a batch.
pub struct Output {
    /// Mean cross-entropy in float64.
    pub loss: f64,
    /// Rows whose largest logit is the label.
    pub correct: usize,
    /// Gradient of `loss` for every tensor, by checkpoint name (when asked for).
    pub grads: Option<BTreeMap<String, Vec<f32>>>,
}

/// Per-token tables (see the module docs).
struct Tables {
    h0: Vec<Vec<f32>>, // per position: (V, D)
    k: Vec<Vec<f32>>,  // per position: (V, HD)
    v: Vec<Vec<f32>>,  // per position: (V, HD)
    q: Vec<f32>,       // last position: (V, HD)
    vo: Vec<Vec<f32>>, // per position: (V, H, D)
}

/// Sizes, named once.
#[derive(Clone, Copy)]
struct Dims {
    v: usize,
    t: usize,
    d: usize,
    h: usize,
    dh: usize,
    hd: usize,
    m: usize,
}

fn tables(w: &Weights, z: Dims, par: Parallelism) -> Tables {
    let Dims { v, t, d, h, dh, hd, .. } = z;
    let h0: Vec<Vec<f32>> = (0..t)
        .map(|pos| {
            let mut out = vec![0.0; v * d];
            for x in 0..v {
                for j in 0..d {
                    out[x * d + j] = w.w_e[j * v + x] + w.w_pos[pos * d + j];
                }
            }
            out
        })
        .collect();
    let proj = |src: &[f32], wt: &[f32]| {
        let mut out = vec![0.0; v * hd];
        gemm(&mut out, 0, hd, false, mat(src, d), mat_t(wt, d), v, hd, d, par);
        out
    };
    let k: Vec<Vec<f32>> = h0.iter().map(|x| proj(x, w.w_k)).collect();
    let vv: Vec<Vec<f32>> = h0.iter().map(|x| proj(x, w.w_v)).collect();
    let q = proj(&h0[t - 1], w.w_q);
    let vo = vv
        .iter()
        .map(|vt| {
            let mut out = vec![0.0; v * h * d];
            for head in 0..h {
                let a = Mat { data: vt, off: head * dh, rs: hd, cs: 1 };
                let b = Mat { data: w.w_o, off: head * dh, rs: 1, cs: hd };
                gemm(&mut out, head * d, h * d, false, a, b, v, d, dh, par);
            }
            out
        })
        .collect();
    Tables { h0, k, v: vv, q, vo }
}

/// Attention weights of one pair: `sm` (softmax) and `a = α·sm + (1−α)`, each `(H, T)`.
fn attention(tb: &Tables, toks: &[u32], z: Dims, alpha: f32, sm: &mut [f32], a: &mut [f32]) {
    let last = toks[z.t - 1] as usize;
    let scale = 1.0 / (z.dh as f32).sqrt();
    for head in 0..z.h {
        let qv = &tb.q[last * z.hd + head * z.dh..][..z.dh];
        let mut max = f32::NEG_INFINITY;
        for pos in 0..z.t {
            let kv = &tb.k[pos][toks[pos] as usize * z.hd + head * z.dh..][..z.dh];
            let s = qv.iter().zip(kv).map(|(x, y)| x * y).sum::<f32>() * scale;
            sm[head * z.t + pos] = s;
            max = max.max(s);
        }
        let row = &mut sm[head * z.t..(head + 1) * z.t];
        let mut sum = 0.0;
        for s in row.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        for (pos, s) in row.iter_mut().enumerate() {
            *s /= sum;
            a[head * z.t + pos] = alpha * *s + (1.0 - alpha);
        }
    }
}

/// Loss (and gradients) of the rows given by `tokens` (`B × n_ctx`) and `labels` (`B`).
pub fn loss_and_grad(cfg: &ModelConfig, w: &Weights, tokens: &[u32], labels: &[u32], want_grad: bool, threads: usize) -> Output {
    let z = Dims { v: cfg.vocab, t: cfg.n_ctx, d: cfg.d_model, h: cfg.n_heads, dh: cfg.d_head, hd: cfg.n_heads * cfg.d_head, m: cfg.d_mlp };
    let Dims { v, t, d, h, hd, m, .. } = z;
    let b = labels.len();
    let par = if threads > 1 { Parallelism::Rayon(threads) } else { Parallelism::None };
    let alpha = cfg.alpha as f32;
    let tb = tables(w, z, par);
    let n_chunks = b.div_ceil(CHUNK);

    // Per pair: attention weights and the residual stream at the last position.
    let mut sm = vec![0.0f32; b * h * t];
    let mut att = vec![0.0f32; b * h * t];
    let mut resid = vec![0.0f32; b * d];
    let per_pair = |(((toks, labs), (sm, att)), resid): (((&[u32], &[u32]), (&mut [f32], &mut [f32])), &mut [f32])| {
        for i in 0..labs.len() {
            let tk = &toks[i * t..(i + 1) * t];
            let (s, a) = (&mut sm[i * h * t..(i + 1) * h * t], &mut att[i * h * t..(i + 1) * h * t]);
            attention(&tb, tk, z, alpha, s, a);
            let r = &mut resid[i * d..(i + 1) * d];
            r.copy_from_slice(&tb.h0[t - 1][tk[t - 1] as usize * d..][..d]);
            for head in 0..h {
                for pos in 0..t {
                    let coef = a[head * t + pos];
                    let row = &tb.vo[pos][(tk[pos] as usize * h + head) * d..][..d];
                    r.iter_mut().zip(row).for_each(|(x, y)| *x += coef * y);
                }
            }
        }
    };
    let iter = tokens.chunks(CHUNK * t).zip(labels.chunks(CHUNK)).zip(sm.chunks_mut(CHUNK * h * t).zip(att.chunks_mut(CHUNK * h * t))).zip(resid.chunks_mut(CHUNK * d));
    if threads > 1 { iter.par_bridge().for_each(per_pair) } else { iter.for_each(per_pair) }

    // MLP and unembedding.
    let mut act = vec![0.0f32; b * m];
    for row in act.chunks_mut(m) {
        row.copy_from_slice(w.b_in);
    }
    gemm(&mut act, 0, m, true, mat(&resid, d), mat_t(w.w_in, d), b, m, d, par);
    act.iter_mut().for_each(|x| *x = x.max(0.0));
    let mut out = resid.clone();
    for row in out.chunks_mut(d) {
        row.iter_mut().zip(w.b_out).for_each(|(x, y)| *x += y);
    }
    gemm(&mut out, 0, d, true, mat(&act, m), mat_t(w.w_out, m), b, d, m, par);
    let mut logits = vec![0.0f32; b * v];
    gemm(&mut logits, 0, v, false, mat(&out, d), mat(w.w_u, v), b, v, d, par);

    // Float64 cross-entropy; `logits` becomes d loss / d logits.
    let mut loss = 0.0f64;
    let mut correct = 0usize;
    for (row, &lab) in logits.chunks_mut(v).zip(labels) {
        let lab = lab as usize;
        let (mut best, mut arg) = (f32::NEG_INFINITY, 0);
        for (j, &x) in row.iter().enumerate() {
            if x > best {
                best = x;
                arg = j;
            }
        }
        correct += usize::from(arg == lab);
        let max = best as f64;
        let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
        let lse = max + sum.ln();
        loss += lse - row[lab] as f64;
        if want_grad {
            for (j, x) in row.iter_mut().enumerate() {
                let p = ((*x as f64) - lse).exp();
                *x = ((p - f64::from(u8::from(j == lab))) / b as f64) as f32;
            }
        }
    }
    let loss = loss / b as f64;
    if !want_grad {
        return Output { loss, correct, grads: None };
    }
    let dlogits = logits;

    // Backward through the unembedding and the MLP.
    let mut g: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    let mut d_wu = vec![0.0f32; d * v];
    gemm(&mut d_wu, 0, v, false, mat_t(&out, d), mat(&dlogits, v), d, v, b, par);
    let mut dout = vec![0.0f32; b * d];
    gemm(&mut dout, 0, d, false, mat(&dlogits, v), mat_t(w.w_u, v), b, d, v, par);
    let d_bout = col_sums(&dout, d);
    let mut d_wout = vec![0.0f32; d * m];
    gemm(&mut d_wout, 0, m, false, mat_t(&dout, d), mat(&act, m), d, m, b, par);
    let mut dpre = vec![0.0f32; b * m];
    gemm(&mut dpre, 0, m, false, mat(&dout, d), mat(w.w_out, m), b, m, d, par);
    dpre.iter_mut().zip(&act).for_each(|(g, &a)| if a <= 0.0 { *g = 0.0 });
    let d_bin = col_sums(&dpre, m);
    let mut d_win = vec![0.0f32; m * d];
    gemm(&mut d_win, 0, d, false, mat_t(&dpre, m), mat(&resid, d), m, d, b, par);
    let mut dresid = dout;
    gemm(&mut dresid, 0, d, true, mat(&dpre, m), mat(w.w_in, d), b, d, m, par);

    // Backward through attention, scattered into per-token tables chunk by chunk.
    struct Acc {
        dvo: Vec<Vec<f32>>,
        dk: Vec<Vec<f32>>,
        dq: Vec<f32>,
        dh0_last: Vec<f32>,
    }
    let scale = 1.0 / (z.dh as f32).sqrt();
    let chunk_grads = |c: usize| -> Acc {
        let mut acc = Acc { dvo: vec![vec![0.0; v * h * d]; t], dk: vec![vec![0.0; v * hd]; t], dq: vec![0.0; v * hd], dh0_last: vec![0.0; v * d] };
        let mut da = vec![0.0f32; h * t];
        for i in c * CHUNK..((c + 1) * CHUNK).min(b) {
            let tk = &tokens[i * t..(i + 1) * t];
            let last = tk[t - 1] as usize;
            let dr = &dresid[i * d..(i + 1) * d];
            acc.dh0_last[last * d..][..d].iter_mut().zip(dr).for_each(|(x, y)| *x += y);
            let a = &att[i * h * t..(i + 1) * h * t];
            let s = &sm[i * h * t..(i + 1) * h * t];
            for head in 0..h {
                for pos in 0..t {
                    let base = (tk[pos] as usize * h + head) * d;
                    let vo = &tb.vo[pos][base..base + d];
                    da[head * t + pos] = vo.iter().zip(dr).map(|(x, y)| x * y).sum();
                    let coef = a[head * t + pos];
                    acc.dvo[pos][base..base + d].iter_mut().zip(dr).for_each(|(x, y)| *x += coef * y);
                }
                // Softmax backward of α·softmax(s): ds = sm ⊙ (α·dA − Σ sm·α·dA).
                let dot: f32 = (0..t).map(|pos| s[head * t + pos] * da[head * t + pos]).sum();
                let qv = &tb.q[last * hd + head * z.dh..][..z.dh];
                for pos in 0..t {
                    let ds = alpha * s[head * t + pos] * (da[head * t + pos] - dot) * scale;
                    if ds == 0.0 {
                        continue;
                    }
                    let koff = tk[pos] as usize * hd + head * z.dh;
                    let kv = &tb.k[pos][koff..koff + z.dh];
                    acc.dq[last * hd + head * z.dh..][..z.dh].iter_mut().zip(kv).for_each(|(x, y)| *x += ds * y);
                    acc.dk[pos][koff..koff + z.dh].iter_mut().zip(qv).for_each(|(x, y)| *x += ds * y);
                }
            }
        }
        acc
    };
    let parts: Vec<Acc> = if threads > 1 { (0..n_chunks).into_par_iter().map(chunk_grads).collect() } else { (0..n_chunks).map(chunk_grads).collect() };
    let mut parts = parts.into_iter();
    let mut acc = parts.next().unwrap_or_else(|| chunk_grads(usize::MAX / CHUNK));
    for p in parts {
        add(&mut acc.dh0_last, &p.dh0_last);
        add(&mut acc.dq, &p.dq);
        for pos in 0..t {
            add(&mut acc.dvo[pos], &p.dvo[pos]);
            add(&mut acc.dk[pos], &p.dk[pos]);
        }
    }

    // From the tables back to the weights.
    let mut d_wo = vec![0.0f32; d * hd];
    let mut d_wq = vec![0.0f32; hd * d];
    let mut d_wk = vec![0.0f32; hd * d];
    let mut d_wv = vec![0.0f32; hd * d];
    let mut dh0: Vec<Vec<f32>> = vec![vec![0.0; v * d]; t];
    add(&mut dh0[t - 1], &acc.dh0_last);
    for pos in 0..t {
        let mut dvv = vec![0.0f32; v * hd];
        for head in 0..h {
            // VO[x, head, :] = W_O[:, head-block] · V[x, head-block]
            let dvo = Mat { data: &acc.dvo[pos], off: head * d, rs: 1, cs: h * d };
            let vt = Mat { data: &tb.v[pos], off: head * z.dh, rs: hd, cs: 1 };
            gemm(&mut d_wo, head * z.dh, hd, true, dvo, vt, d, z.dh, v, par);
            let dvo_rows = Mat { data: &acc.dvo[pos], off: head * d, rs: h * d, cs: 1 };
            let wo = Mat { data: w.w_o, off: head * z.dh, rs: hd, cs: 1 };
            gemm(&mut dvv, head * z.dh, hd, false, dvo_rows, wo, v, z.dh, d, par);
        }
        for (dtab, wt, dw) in [(&dvv, w.w_v, &mut d_wv), (&acc.dk[pos], w.w_k, &mut d_wk)] {
            gemm(dw, 0, d, true, mat_t(dtab, hd), mat(&tb.h0[pos], d), hd, d, v, par);
            gemm(&mut dh0[pos], 0, d, true, mat(dtab, hd), mat(wt, d), v, d, hd, par);
        }
    }
    gemm(&mut d_wq, 0, d, true, mat_t(&acc.dq, hd), mat(&tb.h0[t - 1], d), hd, d, v, par);
    gemm(&mut dh0[t - 1], 0, d, true, mat(&acc.dq, hd), mat(w.w_q, d), v, d, hd, par);
    let mut d_we = vec![0.0f32; d * v];
    let mut d_pos = vec![0.0f32; t * d];
    for pos in 0..t {
        for x in 0..v {
            for j in 0..d {
                let gval = dh0[pos][x * d + j];
                d_we[j * v + x] += gval;
                d_pos[pos * d + j] += gval;
            }
        }
    }
    g.insert("embed.W_E".into(), d_we);
    g.insert("pos_embed.W_pos".into(), d_pos);
    g.insert("blocks.0.attn.W_Q".into(), d_wq);
    g.insert("blocks.0.attn.W_K".into(), d_wk);
    g.insert("blocks.0.attn.W_V".into(), d_wv);
    g.insert("blocks.0.attn.W_O".into(), d_wo);
    g.insert("blocks.0.mlp.W_in".into(), d_win);
    g.insert("blocks.0.mlp.b_in".into(), d_bin);
    g.insert("blocks.0.mlp.W_out".into(), d_wout);
    g.insert("blocks.0.mlp.b_out".into(), d_bout);
    g.insert("unembed.W_U".into(), d_wu);
    Output { loss, correct, grads: Some(g) }
}

fn add(dst: &mut [f32], src: &[f32]) {
    dst.iter_mut().zip(src).for_each(|(x, y)| *x += y);
}

/// Column sums of a row-major `(rows, cols)` matrix, in a fixed order.
fn col_sums(x: &[f32], cols: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; cols];
    for row in x.chunks(cols) {
        add(&mut out, row);
    }
    out
}
