//! Gated DeltaNet kernels: the depthwise causal conv over `state ++ x`, and the gated delta rule
//! in its per-token recurrent form (qwen3-next.md §3.7) and its chunked form (§3.8).
//!
//! Both forms of the delta rule run per (batch row, value head) on f64 copies of that head's
//! sequence and state, and the state is rounded to f32 only when stored. The chunked form keeps
//! its per-chunk matrices and cumulative log-decays in f64 too, so it agrees with the recurrence
//! to f32 rounding even under strong decay (an all-f32 chunked kernel, like HF's, drifts by
//! ~1e-5 relative there; backends are compared against this with a tolerance).

use super::{dims, dot, f32s, want, Tensor};

/// `x: [B,S,C]`, `w: [C,K]`, `state: [B,C,K-1]` -> (`y: [B,S,C]`, `state': [B,C,K-1]`).
///
/// Over `hist = state ++ x` (per channel, oldest first): `y[t,c] = Σ_j w[c,j] · hist[t+j, c]`,
/// and `state'` is the last K-1 columns of `hist` (so S < K-1 keeps part of the old state).
/// No activation.
pub fn causal_conv1d(x: &Tensor, w: &Tensor, state: &Tensor, kernel: usize) -> Result<(Tensor, Tensor), String> {
    let [b, s, c] = dims::<3>(x, "conv input")?;
    want(kernel >= 1 && w.shape == [c, kernel], || format!("conv weight {} must be [{c},{kernel}]", w.describe()))?;
    want(state.shape == [b, c, kernel - 1], || {
        format!("conv state {} must be [{b},{c},{}]", state.describe(), kernel - 1)
    })?;
    let (xs, ws, ss) = (f32s(x, "conv input")?, f32s(w, "conv weight")?, f32s(state, "conv state")?);
    let keep = kernel - 1;
    let (mut y, mut st) = (vec![0.0f32; b * s * c], vec![0.0f32; b * c * keep]);
    let mut hist = Vec::with_capacity(keep + s);
    for bi in 0..b {
        for ch in 0..c {
            hist.clear();
            hist.extend_from_slice(&ss[(bi * c + ch) * keep..][..keep]);
            hist.extend((0..s).map(|t| xs[(bi * s + t) * c + ch]));
            let wr = &ws[ch * kernel..][..kernel];
            for t in 0..s {
                y[(bi * s + t) * c + ch] = dot(wr, &hist[t..t + kernel]) as f32;
            }
            st[(bi * c + ch) * keep..][..keep].copy_from_slice(&hist[s..]);
        }
    }
    Ok((Tensor::f32(x.shape.clone(), y), Tensor::f32(state.shape.clone(), st)))
}

/// One value head's inputs over the call's tokens, in f64: `q`, `k: [T, Dk]`, `v: [T, Dv]`,
/// `g`, `beta: [T]`.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadSeq {
    /// Tokens.
    pub t: usize,
    /// Key dim.
    pub dk: usize,
    /// Value dim.
    pub dv: usize,
    /// Queries (already l2-normalised and scaled), `[T, Dk]`.
    pub q: Vec<f64>,
    /// Keys (already l2-normalised), `[T, Dk]`.
    pub k: Vec<f64>,
    /// Values, `[T, Dv]`.
    pub v: Vec<f64>,
    /// Log-decays γ (≤ 0 in the model), `[T]`.
    pub g: Vec<f64>,
    /// Write strengths β, `[T]`.
    pub beta: Vec<f64>,
}

/// `q`, `k: [B,S,Hk,Dk]`, `v: [B,S,Hv,Dv]`, `g`, `beta: [B,S,Hv]`, `state: [B,Hv,Dk,Dv]` (passed as
/// `ins`, in that order) -> (`o: [B,S,Hv,Dv]`, `state': [B,Hv,Dk,Dv]`).
///
/// Value head `h` reads q/k head `h / (Hv/Hk)`. `chunk: None` runs [`recurrent`] token by token;
/// `Some(C)` runs [`chunked`] with chunks of C tokens. Both compute the same function.
pub fn gated_delta_rule(ins: &[&Tensor], chunk: Option<usize>) -> Result<(Tensor, Tensor), String> {
    let [q, k, v, g, beta, state] = <[&Tensor; 6]>::try_from(ins).map_err(|_| "gated_delta_rule takes 6 operands")?;
    let [b, s, hk, dk] = dims::<4>(q, "q")?;
    let [_, _, hv, dv] = dims::<4>(v, "v")?;
    want(k.shape == q.shape, || format!("q {} and k {} differ", q.describe(), k.describe()))?;
    want(v.shape[..2] == [b, s], || format!("v {} does not match q {}", v.describe(), q.describe()))?;
    want(hk > 0 && hv % hk == 0, || format!("{hv} value heads are not a multiple of {hk} key heads"))?;
    want(dk > 0 && dv > 0, || format!("empty head dims in q {} / v {}", q.describe(), v.describe()))?;
    let gate_shape = [b, s, hv];
    want(g.shape == gate_shape && beta.shape == gate_shape, || {
        format!("gates {} / {} must be {gate_shape:?}", g.describe(), beta.describe())
    })?;
    want(state.shape == [b, hv, dk, dv], || format!("state {} must be [{b},{hv},{dk},{dv}]", state.describe()))?;
    want(chunk != Some(0), || "chunk size 0".to_string())?;
    let ops = Operands {
        q: f32s(q, "q")?,
        k: f32s(k, "k")?,
        v: f32s(v, "v")?,
        g: f32s(g, "g")?,
        beta: f32s(beta, "beta")?,
        dims: [b, s, hk, hv, dk, dv],
    };
    let ss = f32s(state, "state")?;
    let (mut o, mut st_out) = (vec![0.0f32; b * s * hv * dv], vec![0.0f32; b * hv * dk * dv]);
    for bi in 0..b {
        for h in 0..hv {
            let seq = ops.head(bi, h);
            let at = (bi * hv + h) * dk * dv;
            let mut st: Vec<f64> = ss[at..at + dk * dv].iter().map(|&x| f64::from(x)).collect();
            let out = match chunk {
                None => recurrent(&seq, &mut st),
                Some(c) => chunked(&seq, &mut st, c),
            };
            for (t, ot) in out.chunks(dv).enumerate() {
                let dst = &mut o[((bi * s + t) * hv + h) * dv..][..dv];
                dst.iter_mut().zip(ot).for_each(|(d, &x)| *d = x as f32);
            }
            st_out[at..at + dk * dv].iter_mut().zip(&st).for_each(|(d, &x)| *d = x as f32);
        }
    }
    Ok((Tensor::f32(v.shape.clone(), o), Tensor::f32(state.shape.clone(), st_out)))
}

/// The flat f32 operands of [`gated_delta_rule`] and their dims `[B, S, Hk, Hv, Dk, Dv]`.
struct Operands<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    g: &'a [f32],
    beta: &'a [f32],
    dims: [usize; 6],
}

impl Operands<'_> {
    /// Value head `h` of batch row `bi` (with its q/k head `h / (Hv/Hk)`) as f64 sequences.
    fn head(&self, bi: usize, h: usize) -> HeadSeq {
        let [_, s, hk, hv, dk, dv] = self.dims;
        let kh = h / (hv / hk);
        let gather = |xs: &[f32], heads: usize, head: usize, width: usize| -> Vec<f64> {
            let rows = (0..s).flat_map(|t| &xs[((bi * s + t) * heads + head) * width..][..width]);
            rows.map(|&x| f64::from(x)).collect()
        };
        HeadSeq {
            t: s,
            dk,
            dv,
            q: gather(self.q, hk, kh, dk),
            k: gather(self.k, hk, kh, dk),
            v: gather(self.v, hv, h, dv),
            g: gather(self.g, hv, h, 1),
            beta: gather(self.beta, hv, h, 1),
        }
    }
}

/// The per-token recurrence on one head; `state: [Dk, Dv]` is updated in place; returns
/// `o: [T, Dv]`. Per token: `S ← e^γ S; m = Sᵀk; S += k ⊗ β(v − m); o = Sᵀq`.
/// Panics if the lengths in `seq` or of `state` disagree with its dims.
pub fn recurrent(seq: &HeadSeq, state: &mut [f64]) -> Vec<f64> {
    let (dk, dv) = (seq.dk, seq.dv);
    let mut o = vec![0.0f64; seq.t * dv];
    let mut m = vec![0.0f64; dv];
    for t in 0..seq.t {
        let (q, k, v) = (&seq.q[t * dk..][..dk], &seq.k[t * dk..][..dk], &seq.v[t * dv..][..dv]);
        let decay = seq.g[t].exp();
        state.iter_mut().for_each(|x| *x *= decay);
        m.iter_mut().for_each(|x| *x = 0.0);
        for (kk, srow) in k.iter().zip(state.chunks(dv)) {
            m.iter_mut().zip(srow).for_each(|(mv, &sv)| *mv += sv * kk);
        }
        let delta: Vec<f64> = v.iter().zip(&m).map(|(&vv, &mv)| seq.beta[t] * (vv - mv)).collect();
        for (kk, srow) in k.iter().zip(state.chunks_mut(dv)) {
            srow.iter_mut().zip(&delta).for_each(|(sv, &dd)| *sv += kk * dd);
        }
        let out = &mut o[t * dv..][..dv];
        for (qq, srow) in q.iter().zip(state.chunks(dv)) {
            out.iter_mut().zip(srow).for_each(|(ov, &sv)| *ov += sv * qq);
        }
    }
    o
}

/// One chunk of C rows, zero-padded past the sequence end (padded rows have k=v=q=0, β=0, γ=0,
/// so they leave the state unchanged and their outputs are dropped).
struct Chunk {
    c: usize,
    dk: usize,
    dv: usize,
    q: Vec<f64>,
    k: Vec<f64>,
    v: Vec<f64>,
    beta: Vec<f64>,
    /// Inclusive cumulative log-decay G_i = Σ_{s≤i} γ_s.
    gcum: Vec<f64>,
}

impl Chunk {
    fn gather(seq: &HeadSeq, start: usize, c: usize) -> Chunk {
        let (dk, dv) = (seq.dk, seq.dv);
        let n = c.min(seq.t - start);
        let pad = |xs: &[f64], w: usize| {
            let mut out = xs[start * w..(start + n) * w].to_vec();
            out.resize(c * w, 0.0);
            out
        };
        let mut gcum = pad(&seq.g, 1);
        for i in 1..c {
            gcum[i] += gcum[i - 1];
        }
        Chunk { c, dk, dv, q: pad(&seq.q, dk), k: pad(&seq.k, dk), v: pad(&seq.v, dv), beta: pad(&seq.beta, 1), gcum }
    }

    fn k(&self, i: usize) -> &[f64] {
        &self.k[i * self.dk..][..self.dk]
    }

    fn q(&self, i: usize) -> &[f64] {
        &self.q[i * self.dk..][..self.dk]
    }
}

fn dot64(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The chunked form on one head: `state: [Dk, Dv]` is carried across chunks of `c` tokens
/// (starting from the given state), returns `o: [T, Dv]`. Per chunk (qwen3-next.md §3.8):
/// `A = I + L`, `L[i,j] = β_i (k_i·k_j) e^{G_i−G_j}` (j < i); `A U = diag(β) V`,
/// `A W = diag(β e^G) K`; `V' = U − W S`; `O = (Q ⊙ e^G) S + M V'` with
/// `M[i,j] = (q_i·k_j) e^{G_i−G_j}` (j ≤ i); `S ← e^{G_last} S + (K ⊙ e^{G_last − G})ᵀ V'`.
/// Panics if `c == 0` or if the lengths in `seq` or of `state` disagree with its dims.
pub fn chunked(seq: &HeadSeq, state: &mut [f64], c: usize) -> Vec<f64> {
    let dv = seq.dv;
    let mut o = Vec::with_capacity(seq.t * dv);
    for start in (0..seq.t).step_by(c) {
        let ch = Chunk::gather(seq, start, c);
        let (u, w) = solve_chunk(&ch);
        let vp = pseudo_values(&ch, &u, &w, state);
        let out = chunk_output(&ch, &vp, state);
        let n = c.min(seq.t - start);
        o.extend_from_slice(&out[..n * dv]);
        update_state(&ch, &vp, state);
    }
    o
}

/// Forward substitution for the unit-lower-triangular `A = I + L`: returns `U: [C, Dv]` with
/// `A U = diag(β) V` and `W: [C, Dk]` with `A W = diag(β e^G) K`.
fn solve_chunk(ch: &Chunk) -> (Vec<f64>, Vec<f64>) {
    let (c, dk, dv) = (ch.c, ch.dk, ch.dv);
    let mut u = vec![0.0f64; c * dv];
    let mut w = vec![0.0f64; c * dk];
    for i in 0..c {
        let (bi, gi) = (ch.beta[i], ch.gcum[i]);
        let wscale = bi * gi.exp();
        let mut ui: Vec<f64> = ch.v[i * dv..][..dv].iter().map(|x| bi * x).collect();
        let mut wi: Vec<f64> = ch.k(i).iter().map(|x| wscale * x).collect();
        for j in 0..i {
            let l = bi * dot64(ch.k(i), ch.k(j)) * (gi - ch.gcum[j]).exp();
            ui.iter_mut().zip(&u[j * dv..][..dv]).for_each(|(a, &b)| *a -= l * b);
            wi.iter_mut().zip(&w[j * dk..][..dk]).for_each(|(a, &b)| *a -= l * b);
        }
        u[i * dv..][..dv].copy_from_slice(&ui);
        w[i * dk..][..dk].copy_from_slice(&wi);
    }
    (u, w)
}

/// `V' = U − W S`, `[C, Dv]`.
fn pseudo_values(ch: &Chunk, u: &[f64], w: &[f64], state: &[f64]) -> Vec<f64> {
    let (dk, dv) = (ch.dk, ch.dv);
    let mut vp = u.to_vec();
    for i in 0..ch.c {
        let row = &mut vp[i * dv..][..dv];
        for (kk, srow) in w[i * dk..][..dk].iter().zip(state.chunks(dv)) {
            row.iter_mut().zip(srow).for_each(|(a, &s)| *a -= kk * s);
        }
    }
    vp
}

/// `O = (Q ⊙ e^G) S + M V'`, `[C, Dv]`, with the state from before the chunk.
fn chunk_output(ch: &Chunk, vp: &[f64], state: &[f64]) -> Vec<f64> {
    let dv = ch.dv;
    let mut o = vec![0.0f64; ch.c * dv];
    for i in 0..ch.c {
        let gi = ch.gcum[i];
        let row = &mut o[i * dv..][..dv];
        let qd = gi.exp();
        for (qq, srow) in ch.q(i).iter().zip(state.chunks(dv)) {
            row.iter_mut().zip(srow).for_each(|(a, &s)| *a += qd * qq * s);
        }
        for j in 0..=i {
            let m = dot64(ch.q(i), ch.k(j)) * (gi - ch.gcum[j]).exp();
            row.iter_mut().zip(&vp[j * dv..][..dv]).for_each(|(a, &x)| *a += m * x);
        }
    }
    o
}

/// `S ← e^{G_last} S + Σ_j e^{G_last − G_j} k_j ⊗ V'_j`.
fn update_state(ch: &Chunk, vp: &[f64], state: &mut [f64]) {
    let dv = ch.dv;
    let glast = ch.gcum[ch.c - 1];
    let decay = glast.exp();
    state.iter_mut().for_each(|x| *x *= decay);
    for j in 0..ch.c {
        let f = (glast - ch.gcum[j]).exp();
        for (kk, srow) in ch.k(j).iter().zip(state.chunks_mut(dv)) {
            srow.iter_mut().zip(&vp[j * dv..][..dv]).for_each(|(s, &x)| *s += f * kk * x);
        }
    }
}
