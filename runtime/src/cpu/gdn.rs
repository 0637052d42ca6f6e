//! Gated DeltaNet kernels (qwen3-next.md §3.6-3.8, §4.2): the depthwise causal conv with its
//! state (`CausalConv1d` + SiLU), the fused gate chain (β = σ(b), g = −exp(A_log)·softplus(a +
//! dt_bias)), and the gated delta rule (`GatedDeltaRule`) per token with an f32 state, threads over
//! (batch row, value head). q/k l2norm + scale is [`super::norm::l2_norm_scale`].
//!
//! **Recurrent and chunked forms.** [`gated_delta_rule`] makes one register-blocked pass over
//! the 64 KiB state per token (3 FMAs and a decay multiply per state element), near the FMA
//! peak; it is the form for decode and short continuations. Prefill can use
//! [`gated_delta_rule_chunked`](super::gdn_chunked::gated_delta_rule_chunked) (same contract):
//! per chunk its dense products need `3·Dk·Dv + 2·C·D` multiply-adds per token, so with a small
//! chunk (`C = 32`) it is 10-25 % faster for 8 to 256 tokens and 0-10 % at 512 on 2 Zen 5
//! cores, and as exact (≤ 5e-7 relative to the interpreter's f64 recurrence).
//! [`use_chunked`](super::gdn_chunked::use_chunked) picks the form;
//! [`gated_delta_rule_auto`](super::gdn_chunked::gated_delta_rule_auto) applies it.

use super::simd::{dispatch, Simd};
use super::{for_ranges, sigmoid, silu, task_size, with_scratch, HeadLayout, SharedMut};

/// Depthwise causal conv over `hist = state ++ x` per channel (oldest first), optionally with
/// SiLU: `y[b,t,c] = act(Σ_j w[c,j] · hist[t+j, c])`; `state ← last K−1 columns of hist`.
///
/// `x`, `y: [B, S, C]`, `w: [C, K]`, `state: [B, C, K−1]` (updated in place; S < K−1 keeps part
/// of the old state). Channels are split over threads.
#[allow(clippy::too_many_arguments)]
pub fn causal_conv1d(
    x: &[f32],
    w: &[f32],
    state: &mut [f32],
    batch: usize,
    s: usize,
    c: usize,
    kernel: usize,
    silu_act: bool,
    y: &mut [f32],
) {
    assert!(kernel >= 1, "causal_conv1d: kernel 0");
    let keep = kernel - 1;
    assert!(x.len() >= batch * s * c && y.len() >= batch * s * c, "causal_conv1d: x, y must be [{batch}, {s}, {c}]");
    assert!(w.len() == c * kernel && state.len() >= batch * c * keep, "causal_conv1d: w [{c}, {kernel}], state");
    let (ys, st) = (SharedMut::new(y), SharedMut::new(state));
    let par = batch * s * c * kernel >= 1 << 15;
    for_ranges(batch * c, task_size(batch * c, 64), par, |i0, i1| {
        for i in i0..i1 {
            let (b, ch) = (i / c, i % c);
            let wr = &w[ch * kernel..][..kernel];
            // SAFETY: channel (b, ch) belongs to this task: its state row and its y column.
            let sr = unsafe { st.slice((b * c + ch) * keep, keep) };
            let hist = |j: usize| if j < keep { sr[j] } else { x[(b * s + j - keep) * c + ch] };
            for t in 0..s {
                let acc: f32 = (0..kernel).map(|j| wr[j] * hist(t + j)).sum();
                // SAFETY: as above.
                unsafe { ys.slice((b * s + t) * c + ch, 1)[0] = if silu_act { silu(acc) } else { acc } };
            }
            // New state: hist[s..s+keep]; index s+j ≥ j, so reading forward never sees a new value.
            for j in 0..keep {
                let v = if s + j < keep { sr[s + j] } else { x[(b * s + s + j - keep) * c + ch] };
                sr[j] = v;
            }
        }
    });
}

/// The GDN gate chain for `rows` tokens and `hv` value heads: `beta = σ(b)`,
/// `g = −exp(A_log[h]) · softplus(a + dt_bias[h])` (softplus = x above 20, as PyTorch).
/// `a`, `b`, `g`, `beta: [rows, Hv]`; `a_log`, `dt_bias: [Hv]`.
#[allow(clippy::too_many_arguments)]
pub fn gdn_gates(
    a: &[f32],
    b: &[f32],
    a_log: &[f32],
    dt_bias: &[f32],
    rows: usize,
    hv: usize,
    g: &mut [f32],
    beta: &mut [f32],
) {
    let n = rows * hv;
    assert!(a.len() >= n && b.len() >= n && g.len() >= n && beta.len() >= n, "gdn_gates: [{rows}, {hv}] operands");
    assert!(a_log.len() == hv && dt_bias.len() == hv, "gdn_gates: A_log, dt_bias must be [{hv}]");
    for i in 0..n {
        let h = i % hv;
        g[i] = gate_g(a[i], a_log[h], dt_bias[h]);
        beta[i] = sigmoid(b[i]);
    }
}

/// [`gdn_gates`] reading `a` and `b` straight from the `in_proj_ba` output `ba: [rows, Hk, 2r]`
/// (per key head `[b_0..b_{r−1}, a_0..a_{r−1}]`, value head `h = kh·r + j`).
#[allow(clippy::too_many_arguments)]
pub fn gdn_gates_grouped(
    ba: &[f32],
    a_log: &[f32],
    dt_bias: &[f32],
    rows: usize,
    hk: usize,
    hv: usize,
    g: &mut [f32],
    beta: &mut [f32],
) {
    assert!(hk > 0 && hv.is_multiple_of(hk), "gdn_gates_grouped: {hv} value heads, {hk} key heads");
    let r = hv / hk;
    let n = rows * hv;
    assert!(ba.len() >= 2 * n && g.len() >= n && beta.len() >= n, "gdn_gates_grouped: ba [{rows}, {hk}, {}]", 2 * r);
    assert!(a_log.len() == hv && dt_bias.len() == hv, "gdn_gates_grouped: A_log, dt_bias must be [{hv}]");
    for t in 0..rows {
        for h in 0..hv {
            let base = t * 2 * hv + (h / r) * 2 * r + h % r;
            g[t * hv + h] = gate_g(ba[base + r], a_log[h], dt_bias[h]);
            beta[t * hv + h] = sigmoid(ba[base]);
        }
    }
}

/// `−exp(a_log) · softplus(a + dt_bias)`.
#[inline]
fn gate_g(a: f32, a_log: f32, dt_bias: f32) -> f32 {
    let x = a + dt_bias;
    let sp = if x > 20.0 { x } else { x.exp().ln_1p() };
    -a_log.exp() * sp
}

/// Dimensions of a [`gated_delta_rule`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GdnDims {
    /// Batch rows.
    pub batch: usize,
    /// Tokens per row.
    pub s: usize,
    /// q/k heads.
    pub hk: usize,
    /// Value heads (a multiple of `hk`).
    pub hv: usize,
    /// Key head dim.
    pub dk: usize,
    /// Value head dim.
    pub dv: usize,
}

/// The inputs of [`gated_delta_rule`]: q, k, v as head views into their buffers (e.g. the conv
/// output `[B·S, C]`), and the gates.
#[derive(Debug, Clone, Copy)]
pub struct GdnInputs<'a> {
    /// Queries (l2-normalised and scaled), `[B·S, Hk, Dk]` per `ql`.
    pub q: &'a [f32],
    /// Layout of `q`.
    pub ql: HeadLayout,
    /// Keys (l2-normalised), `[B·S, Hk, Dk]` per `kl`.
    pub k: &'a [f32],
    /// Layout of `k`.
    pub kl: HeadLayout,
    /// Values, `[B·S, Hv, Dv]` per `vl`.
    pub v: &'a [f32],
    /// Layout of `v`.
    pub vl: HeadLayout,
    /// Log-decays, `[B, S, Hv]`.
    pub g: &'a [f32],
    /// Write strengths, `[B, S, Hv]`.
    pub beta: &'a [f32],
}

/// The gated delta rule, token by token with an f32 state (qwen3-next.md §3.7): per value head h
/// (reading q/k head `h / (Hv/Hk)`) and token, `S ← e^g S; m = Sᵀk; S += k ⊗ β(v − m); o = Sᵀq`.
/// `state: [B, Hv, Dk, Dv]` is updated in place; `out: [B, S, Hv, Dv]`. Threads over (row, head).
pub fn gated_delta_rule(inp: GdnInputs, dims: GdnDims, state: &mut [f32], out: &mut [f32]) {
    check_rule_call(&inp, dims, state, out);
    let GdnDims { batch, s, hv, dk, dv, .. } = dims;
    let (st, o) = (SharedMut::new(state), SharedMut::new(out));
    let par = batch * hv * s * dk * dv >= 1 << 15;
    for_ranges(batch * hv, 1, par, |i, _| {
        // SAFETY: head (b, h) owns its state block and its output columns.
        let sh = unsafe { st.slice(i * dk * dv, dk * dv) };
        // Scratch outside the SIMD body: no closure between the dispatch and the intrinsics.
        with_scratch(3 * dv, |buf| dispatch!(S => head_recurrent::<S>(&inp, dims, i / hv, i % hv, sh, o, buf)));
    });
}

/// Panics unless the operands of a delta-rule call cover `dims` (shared by both forms).
pub(crate) fn check_rule_call(inp: &GdnInputs, dims: GdnDims, state: &[f32], out: &[f32]) {
    let GdnDims { batch, s, hk, hv, dk, dv } = dims;
    assert!(hk > 0 && hv.is_multiple_of(hk), "gated_delta_rule: {hv} value heads, {hk} key heads");
    for (l, buf, heads, d, what) in
        [(inp.ql, inp.q, hk, dk, "q"), (inp.kl, inp.k, hk, dk, "k"), (inp.vl, inp.v, hv, dv, "v")]
    {
        assert!(l.tokens == batch * s && l.heads == heads && l.d == d, "gated_delta_rule: {what} layout {l:?}");
        l.check(buf.len(), what);
    }
    assert!(inp.g.len() >= batch * s * hv && inp.beta.len() >= batch * s * hv, "gated_delta_rule: g, beta");
    assert!(state.len() >= batch * hv * dk * dv && out.len() >= batch * s * hv * dv, "gated_delta_rule: state, out");
}

/// All tokens of value head `h` of row `b`, state `sh: [Dk, Dv]`, `buf: [3·Dv]` scratch.
///
/// One pass over the state per token: `m = Sᵀk` for the next token is accumulated while the
/// current token's update is written ([`token_pass`]); only the first token needs a separate
/// read pass.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn head_recurrent<S: Simd>(
    inp: &GdnInputs,
    dims: GdnDims,
    b: usize,
    h: usize,
    sh: &mut [f32],
    out: SharedMut,
    buf: &mut [f32],
) {
    let GdnDims { s, hk, hv, dk, dv, .. } = dims;
    let kh = h / (hv / hk);
    let (m, rest) = buf.split_at_mut(dv);
    let (delta, mnext) = rest.split_at_mut(dv);
    let key = |t: usize| &inp.k[inp.kl.at(b * s + t, kh)..][..dk];
    if s > 0 {
        // Summed exactly as `token_pass` sums `mnext`, so the first token of a call (every token
        // of decode) rounds as a later token of a prefill does.
        if S::REGS >= 32 {
            state_dot::<S, 4>(sh, dv, key(0), m);
        } else {
            state_dot::<S, 2>(sh, dv, key(0), m);
        }
    }
    for t in 0..s {
        let tok = b * s + t;
        let q = &inp.q[inp.ql.at(tok, kh)..][..dk];
        let v = &inp.v[inp.vl.at(tok, h)..][..dv];
        let (decay, beta) = (inp.g[tok * hv + h].exp(), inp.beta[tok * hv + h]);
        for ((d, &mv), &vv) in delta.iter_mut().zip(m.iter()).zip(v) {
            *d = beta * (vv - decay * mv);
        }
        // SAFETY: (tok, h) belongs to this head's task.
        let o = unsafe { out.slice((tok * hv + h) * dv, dv) };
        let knext = if t + 1 < s { Some(key(t + 1)) } else { None };
        let p = Pass { decay, k: key(t), q, knext, delta };
        if S::REGS >= 32 {
            token_pass::<S, 4>(sh, dv, &p, o, mnext);
        } else {
            token_pass::<S, 2>(sh, dv, &p, o, mnext);
        }
        m.copy_from_slice(mnext);
    }
}

/// `m = Σ_i k[i]·S[i]` over the state `st: [Dk, Dv]` in [`token_pass`]'s order for `mnext`: by
/// column blocks of `CB` vectors, one fused multiply-add per row, the columns past the last
/// whole block as scalar products and sums.
#[inline(always)]
fn state_dot<S: Simd, const CB: usize>(st: &[f32], dv: usize, k: &[f32], m: &mut [f32]) {
    let dk = k.len();
    assert!(st.len() >= dk * dv && m.len() >= dv);
    let l = S::LANES;
    let mut j0 = 0;
    // SAFETY: column blocks stay below dv, rows below dk (asserted lengths above).
    unsafe {
        while j0 + CB * l <= dv {
            let mut mv = [S::zero(); CB];
            for (i, &ki) in k.iter().enumerate() {
                let (row, kv) = (st.as_ptr().add(i * dv + j0), S::splat(ki));
                for (c, acc) in mv.iter_mut().enumerate() {
                    *acc = S::fma(S::load(row.add(c * l)), kv, *acc);
                }
            }
            for (c, acc) in mv.iter().enumerate() {
                S::store(m.as_mut_ptr().add(j0 + c * l), *acc);
            }
            j0 += CB * l;
        }
    }
    for j in j0..dv {
        let mut mj = 0.0f32;
        for (i, &ki) in k.iter().enumerate() {
            mj += ki * st[i * dv + j];
        }
        m[j] = mj;
    }
}

/// The per-token vectors of [`token_pass`].
struct Pass<'a> {
    decay: f32,
    k: &'a [f32],
    q: &'a [f32],
    /// The next token's key, if any (its `m = Sᵀk` is accumulated on the way).
    knext: Option<&'a [f32]>,
    delta: &'a [f32],
}

/// One token over the state `st: [Dk, Dv]`, by column blocks of `CB` vectors held in registers:
/// `S[i] = decay·S[i] + k[i]·δ`, `o = Σ_i q[i]·S[i]`, `mnext = Σ_i knext[i]·S[i]` (new S).
#[inline(always)]
fn token_pass<S: Simd, const CB: usize>(st: &mut [f32], dv: usize, p: &Pass, o: &mut [f32], mnext: &mut [f32]) {
    let dk = p.k.len();
    assert!(st.len() >= dk * dv && p.q.len() >= dk && p.delta.len() >= dv && o.len() >= dv && mnext.len() >= dv);
    assert!(p.knext.is_none_or(|k| k.len() >= dk));
    let l = S::LANES;
    let mut j0 = 0;
    // SAFETY: column blocks stay below dv, rows below dk (asserted lengths above).
    unsafe {
        let vd = S::splat(p.decay);
        while j0 + CB * l <= dv {
            let d: [S::V; CB] = std::array::from_fn(|c| S::load(p.delta.as_ptr().add(j0 + c * l)));
            let (mut ov, mut mv) = ([S::zero(); CB], [S::zero(); CB]);
            for i in 0..dk {
                let row = st.as_mut_ptr().add(i * dv + j0);
                let (ki, qi) = (S::splat(p.k[i]), S::splat(p.q[i]));
                let kn = S::splat(p.knext.map_or(0.0, |k| k[i]));
                for c in 0..CB {
                    let nv = S::fma(d[c], ki, S::mul(S::load(row.add(c * l)), vd));
                    S::store(row.add(c * l), nv);
                    ov[c] = S::fma(nv, qi, ov[c]);
                    mv[c] = S::fma(nv, kn, mv[c]);
                }
            }
            for c in 0..CB {
                S::store(o.as_mut_ptr().add(j0 + c * l), ov[c]);
                S::store(mnext.as_mut_ptr().add(j0 + c * l), mv[c]);
            }
            j0 += CB * l;
        }
    }
    for j in j0..dv {
        let (mut oj, mut mj) = (0.0f32, 0.0f32);
        for i in 0..dk {
            let nv = p.decay * st[i * dv + j] + p.k[i] * p.delta[j];
            st[i * dv + j] = nv;
            oj += p.q[i] * nv;
            mj += p.knext.map_or(0.0, |k| k[i]) * nv;
        }
        o[j] = oj;
        mnext[j] = mj;
    }
}
