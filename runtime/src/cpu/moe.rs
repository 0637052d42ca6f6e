//! Sparse MoE (qwen3-next.md §3.9): the router's softmax + top-k + renormalisation in one pass
//! (`MoeRoute`), and routed experts that touch only the chosen experts' weights (`MoeExperts`).
//!
//! **Expert weight layout.** `gate_up: [E, 2I, H]` — per expert its I gate rows then its I up
//! rows (HF's fused `gate_up_proj`; per-expert checkpoints stack the same way) — and
//! `down: [E, H, I]`, each f32 or bf16.
//!
//! Tokens are grouped by expert: every active expert gathers its tokens' rows and runs one
//! [`linear`] with the SwiGLU epilogue (gate+up fused) and one for `down` — a GEMV per expert for
//! decode, a small GEMM per expert for prefill — and the results are added to the output with
//! their routing weights in ascending expert order. Experts run in parallel.

use super::linear::{linear, Epilogue};
use super::{CpuError, SharedMut, WeightRef};
use rayon::prelude::*;

/// Router: per row of `logits: [T, E]`, softmax over E, the `top_k` most probable experts in
/// descending order (ties: lower index first), weights renormalised to sum 1 when `renormalize`.
/// Writes `weights: [T, k]` and `experts: [T, k]` (i32). Softmax sums run in f64.
pub fn moe_route(
    logits: &[f32],
    t: usize,
    e: usize,
    top_k: usize,
    renormalize: bool,
    weights: &mut [f32],
    experts: &mut [i32],
) {
    assert!(top_k >= 1 && top_k <= e, "moe_route: top_k {top_k} not in 1..={e}");
    assert!(logits.len() >= t * e && weights.len() >= t * top_k && experts.len() >= t * top_k);
    for (r, row) in logits.chunks(e).take(t).enumerate() {
        let (wr, er) = (&mut weights[r * top_k..][..top_k], &mut experts[r * top_k..][..top_k]);
        route_row(row, wr, er);
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let denom: f64 = if renormalize {
            er.iter().map(|&i| (f64::from(row[i as usize]) - f64::from(max)).exp()).sum()
        } else {
            row.iter().map(|&x| (f64::from(x) - f64::from(max)).exp()).sum()
        };
        for (w, &i) in wr.iter_mut().zip(er.iter()) {
            *w = ((f64::from(row[i as usize]) - f64::from(max)).exp() / denom) as f32;
        }
    }
}

/// Top-k of one row by logit (softmax is monotone), insertion into a sorted list: descending,
/// ties keep the lower index first.
fn route_row(row: &[f32], wr: &mut [f32], er: &mut [i32]) {
    let k = wr.len();
    let mut n = 0;
    for (i, &x) in row.iter().enumerate() {
        if n == k && x <= wr[k - 1] {
            continue;
        }
        let mut p = n.min(k - 1);
        // Shift smaller entries down; equal logits stay ahead (lower index first).
        while p > 0 && wr[p - 1] < x {
            if p < k {
                wr[p] = wr[p - 1];
                er[p] = er[p - 1];
            }
            p -= 1;
        }
        wr[p] = x;
        er[p] = i as i32;
        n = (n + 1).min(k);
    }
}

/// Reusable buffers for [`moe_experts`]; they grow to the largest call and are kept.
#[derive(Debug, Default)]
pub struct MoeScratch {
    order: Vec<u32>,
    starts: Vec<usize>,
    fill: Vec<usize>,
    active: Vec<u32>,
    xs: Vec<f32>,
    mid: Vec<f32>,
    ys: Vec<f32>,
}

impl MoeScratch {
    /// Empty buffers.
    pub fn new() -> MoeScratch {
        MoeScratch::default()
    }
}

/// Shapes of the routed experts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpertDims {
    /// Experts (E).
    pub experts: usize,
    /// Hidden size (H).
    pub hidden: usize,
    /// Expert width (I).
    pub inter: usize,
    /// Experts per token (k).
    pub top_k: usize,
}

/// Routed experts: `out[t] = Σ_i weights[t,i] · down_e(silu(gate_e x_t) ⊙ up_e x_t)`,
/// `e = experts[t,i]`, computing only the routed experts.
///
/// `x`, `out: [T, H]`; `weights: [T, k]`; `experts: [T, k]` (i32); `gate_up: [E, 2I, H]`;
/// `down: [E, H, I]`. Errors on an expert index outside `0..E`.
#[allow(clippy::too_many_arguments)]
pub fn moe_experts(
    x: &[f32],
    t: usize,
    weights: &[f32],
    experts: &[i32],
    gate_up: WeightRef,
    down: WeightRef,
    dims: ExpertDims,
    scratch: &mut MoeScratch,
    out: &mut [f32],
) -> Result<(), CpuError> {
    let ExpertDims { experts: ne, hidden: h, inter: i, top_k: k } = dims;
    assert!(x.len() >= t * h && out.len() >= t * h, "moe_experts: x, out must be [{t}, {h}]");
    assert!(weights.len() >= t * k && experts.len() >= t * k, "moe_experts: routing must be [{t}, {k}]");
    assert!(gate_up.len() == ne * 2 * i * h && down.len() == ne * h * i, "moe_experts: expert weights");
    group(experts, t, k, ne, scratch)?;
    let n = t * k;
    let MoeScratch { order, starts, active, xs, mid, ys, .. } = scratch;
    for (v, len) in [(&mut *xs, n * h), (&mut *mid, n * i), (&mut *ys, n * h)] {
        if v.len() < len {
            v.resize(len, 0.0);
        }
    }
    for (slot, &s) in order.iter().enumerate() {
        let tok = s as usize / k;
        xs[slot * h..][..h].copy_from_slice(&x[tok * h..][..h]);
    }
    // Each active expert owns the rows starts[e]..starts[e+1] of xs, mid and ys.
    let (xs, starts) = (&xs[..], &starts[..]);
    let (mid_p, ys_p) = (SharedMut::new(mid), SharedMut::new(ys));
    active.par_iter().for_each(|&e| {
        let (e, r0) = (e as usize, starts[e as usize]);
        let rows = starts[e + 1] - r0;
        // SAFETY: expert e alone owns rows r0..r0+rows of mid and ys.
        let (me, ye) = unsafe { (mid_p.slice(r0 * i, rows * i), ys_p.slice(r0 * h, rows * h)) };
        linear(&xs[r0 * h..], gate_up.slice(e * 2 * i * h, 2 * i * h), rows, h, i, Epilogue::SwiGlu, me);
        linear(me, down.slice(e * h * i, h * i), rows, i, h, Epilogue::Plain, ye);
    });
    out[..t * h].fill(0.0);
    for (slot, &s) in order.iter().enumerate() {
        let (tok, w) = (s as usize / k, weights[s as usize]);
        let o = &mut out[tok * h..][..h];
        o.iter_mut().zip(&ys[slot * h..][..h]).for_each(|(a, &b)| *a += w * b);
    }
    Ok(())
}

/// Sorts the `t·k` routing slots by expert (stable, so by token within an expert) into
/// `scratch.order`, with `scratch.starts[e]..starts[e+1]` the slots of expert e, and lists the
/// experts with at least one slot in `scratch.active`.
fn group(experts: &[i32], t: usize, k: usize, ne: usize, scratch: &mut MoeScratch) -> Result<(), CpuError> {
    let n = t * k;
    scratch.starts.clear();
    scratch.starts.resize(ne + 1, 0);
    for (slot, &id) in experts[..n].iter().enumerate() {
        let e = usize::try_from(id).ok().filter(|&e| e < ne);
        let e = e.ok_or(CpuError::ExpertIndex { id, token: slot / k, experts: ne })?;
        scratch.starts[e + 1] += 1;
    }
    for e in 0..ne {
        scratch.starts[e + 1] += scratch.starts[e];
    }
    scratch.order.clear();
    scratch.order.resize(n, 0);
    scratch.fill.clear();
    scratch.fill.extend_from_slice(&scratch.starts);
    for (slot, &id) in experts[..n].iter().enumerate() {
        let e = id as usize;
        scratch.order[scratch.fill[e]] = slot as u32;
        scratch.fill[e] += 1;
    }
    scratch.active.clear();
    scratch.active.extend((0..ne).filter(|&e| scratch.starts[e + 1] > scratch.starts[e]).map(|e| e as u32));
    Ok(())
}
