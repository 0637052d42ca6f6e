//! Sparse MoE (qwen3-next.md §3.9): the router's softmax + top-k + renormalisation in one pass
//! (`MoeRoute`), and routed experts that touch only the chosen experts' weights (`MoeExperts`).
//!
//! **Expert weight layout.** `gate_up: [E, 2I, H]` — per expert its I gate rows then its I up
//! rows (HF's fused `gate_up_proj`; per-expert checkpoints stack the same way) — and
//! `down: [E, H, I]`, each f32 or bf16.
//!
//! Tokens are grouped by expert (a stable counting sort of the routing slots). Two paths, by the
//! mean rows per active expert ([`PANEL_MIN_ROWS`]):
//!
//! - **Few rows** (decode, small batches): every expert gathers its tokens' rows and runs
//!   [`linear`](super::linear::linear)'s GEMV path for gate+up (SwiGLU fused) and for `down` into per-slot rows, in
//!   parallel over experts; then each token adds its slots' rows with their routing weights.
//! - **Many rows** (prefill: ~64 rows per expert at 512 tokens, 64 experts, top-8), on the panel
//!   GEMM in two parallel phases. (1) gate+up, tasks of up to [`TASK_PANELS`] token panels of one
//!   expert: the task packs its tokens' rows straight into panels and the SwiGLU epilogue writes
//!   `mid` already packed for `down`. (2) `down`, tasks over column chunks of the output: each
//!   walks all experts in order and adds `weight · down_e(mid)` straight into `out` — no per-slot
//!   rows, no combine pass, and no two tasks write the same element.
//!
//! Either way every output element adds its experts in ascending expert order, so results do
//! not depend on the thread count. Decode ([`moe_experts_ordered`] with `Invariant`) always
//! takes the GEMV path with [`linear_invariant`](super::linear::linear_invariant): a token's
//! output is then the same bits whatever the other tokens of the call and however many tokens
//! each expert got.

use super::gemv::{pack_panels, panel_block, run_panel, with_buf, Buf, PanelOp, PanelW, Sink};
use super::linear::{linear_ordered, Epilogue};
use super::simd::{self, dispatch, Simd};
use super::{for_ranges, task_size, CpuError, RowOrder, SharedMut, WeightRef};
use rayon::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};

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
    /// First `mid` panel of each expert (panel path).
    panel0: Vec<usize>,
    pos: Vec<u32>,
    tasks: Vec<Task>,
    xs: Vec<f32>,
    mid: Vec<f32>,
    ys: Vec<f32>,
}

/// Rows `r0..r1` (of the grouped slots) of expert `e`.
#[derive(Debug, Clone, Copy)]
struct Task {
    e: u32,
    r0: u32,
    r1: u32,
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

/// Default mean rows per active expert from which the panel path runs (below, the GEMV path).
pub const PANEL_MIN_ROWS: usize = 16;

static PANEL_MIN: AtomicUsize = AtomicUsize::new(PANEL_MIN_ROWS);

/// Sets the mean rows per active expert from which [`moe_experts`] uses the panel path
/// (process-wide; for tuning, benchmarks and tests). Returns the previous value.
pub fn set_panel_min_rows(rows: usize) -> usize {
    PANEL_MIN.swap(rows.max(1), Ordering::Relaxed)
}

/// Token panels per gate+up task at most (larger experts are split so threads share them).
pub const TASK_PANELS: usize = 4;

/// Routed experts: `out[t] = Σ_i weights[t,i] · down_e(silu(gate_e x_t) ⊙ up_e x_t)`,
/// `e = experts[t,i]`, computing only the routed experts, on the fastest path for the number of
/// rows per expert ([`RowOrder::Fastest`]).
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
    let routing = Routing { weights, experts };
    moe_experts_ordered(RowOrder::Fastest, x, t, routing, (gate_up, down), dims, scratch, out)
}

/// The routing of [`moe_experts`]: `weights`, `experts: [T, k]`.
#[derive(Clone, Copy)]
pub struct Routing<'a> {
    /// Each slot's weight, `[T, k]`.
    pub weights: &'a [f32],
    /// Each slot's expert, `[T, k]`.
    pub experts: &'a [i32],
}

/// [`moe_experts`] in `order`: with [`RowOrder::Invariant`] (decode, invariant prefill) always
/// the GEMV path with [`linear_invariant`](super::linear::linear_invariant), so token `t`'s output has the same bits as the call
/// on token `t` alone, however many tokens the other experts' or its own experts got.
#[allow(clippy::too_many_arguments)]
pub fn moe_experts_ordered(
    order: RowOrder,
    x: &[f32],
    t: usize,
    Routing { weights, experts }: Routing,
    (gate_up, down): (WeightRef, WeightRef),
    dims: ExpertDims,
    scratch: &mut MoeScratch,
    out: &mut [f32],
) -> Result<(), CpuError> {
    let ExpertDims { experts: ne, hidden: h, inter: i, top_k: k } = dims;
    assert!(x.len() >= t * h && out.len() >= t * h, "moe_experts: x, out must be [{t}, {h}]");
    assert!(weights.len() >= t * k && experts.len() >= t * k, "moe_experts: routing must be [{t}, {k}]");
    assert!(gate_up.len() == ne * 2 * i * h && down.len() == ne * h * i, "moe_experts: expert weights");
    group(experts, t, k, ne, scratch)?;
    let out = &mut out[..t * h];
    let few = t * k < PANEL_MIN.load(Ordering::Relaxed).saturating_mul(scratch.active.len().max(1));
    if order == RowOrder::Invariant || few {
        gemv_experts(order, x, k, gate_up, down, dims, scratch);
        combine(t, k, h, weights, scratch, out);
    } else {
        run_panel(PanelExperts { x, k, weights, gate_up, down, dims, scratch, out });
    }
    Ok(())
}

/// The GEMV path: per expert, gathered rows through [`linear_ordered`] in `order`; fills
/// `scratch.ys` with every slot's expert output (unweighted), row `j` for the slot `order[j]`.
fn gemv_experts(
    order: RowOrder,
    x: &[f32],
    k: usize,
    gate_up: WeightRef,
    down: WeightRef,
    dims: ExpertDims,
    s: &mut MoeScratch,
) {
    let (h, i, n) = (dims.hidden, dims.inter, s.order.len());
    for (v, len) in [(&mut s.xs, n * h), (&mut s.mid, n * i), (&mut s.ys, n * h)] {
        if v.len() < len {
            v.resize(len, 0.0);
        }
    }
    for (slot, &o) in s.order.iter().enumerate() {
        let tok = o as usize / k;
        s.xs[slot * h..][..h].copy_from_slice(&x[tok * h..][..h]);
    }
    // Each active expert owns the rows starts[e]..starts[e+1] of xs, mid and ys.
    let (xs, starts) = (&s.xs[..], &s.starts[..]);
    let (mid_p, ys_p) = (SharedMut::new(&mut s.mid), SharedMut::new(&mut s.ys));
    s.active.par_iter().for_each(|&e| {
        let (e, r0) = (e as usize, starts[e as usize]);
        let rows = starts[e + 1] - r0;
        // SAFETY: expert e alone owns rows r0..r0+rows of mid and ys.
        let (me, ye) = unsafe { (mid_p.slice(r0 * i, rows * i), ys_p.slice(r0 * h, rows * h)) };
        linear_ordered(
            order,
            &xs[r0 * h..],
            gate_up.slice(e * 2 * i * h, 2 * i * h),
            (rows, h, i),
            Epilogue::SwiGlu,
            me,
        );
        linear_ordered(order, me, down.slice(e * h * i, h * i), (rows, i, h), Epilogue::Plain, ye);
    });
}

/// The panel path of one call (after [`group`]).
struct PanelExperts<'a> {
    x: &'a [f32],
    k: usize,
    weights: &'a [f32],
    gate_up: WeightRef<'a>,
    down: WeightRef<'a>,
    dims: ExpertDims,
    scratch: &'a mut MoeScratch,
    out: &'a mut [f32],
}

impl PanelOp for PanelExperts<'_> {
    type Out = ();

    fn run<S: Simd, const NR: usize, const MV: usize>(self) {
        let PanelExperts { x, k, weights, gate_up, down, dims, scratch, out } = self;
        let (h, i, pw) = (dims.hidden, dims.inter, MV * S::LANES);
        let MoeScratch { order, starts, active, panel0, tasks, mid, .. } = scratch;
        // Phase 1 tasks, and where each expert's panels of `mid` start.
        let max_rows = TASK_PANELS * pw;
        tasks.clear();
        panel0.clear();
        panel0.resize(dims.experts + 1, 0);
        let mut panels_total = 0;
        for &e in active.iter() {
            let (r0, r1) = (starts[e as usize], starts[e as usize + 1]);
            panel0[e as usize] = panels_total;
            panels_total += (r1 - r0).div_ceil(pw);
            let pieces = (r1 - r0).div_ceil(max_rows);
            let per = (r1 - r0).div_ceil(pieces).next_multiple_of(pw);
            for a in (r0..r1).step_by(per) {
                tasks.push(Task { e, r0: a as u32, r1: (a + per).min(r1) as u32 });
            }
        }
        // Largest first, so the last tasks to start are short ones.
        tasks.sort_by_key(|t| std::cmp::Reverse(t.r1 - t.r0));
        if mid.len() < panels_total * i * pw {
            mid.resize(panels_total * i * pw, 0.0);
        }
        let (order, starts, panel0) = (&order[..], &starts[..], &panel0[..]);
        let mid_p = SharedMut::new(mid);
        tasks.par_iter().for_each(|task| {
            let (e, r0, rows) = (task.e as usize, task.r0 as usize, (task.r1 - task.r0) as usize);
            let (panels, q0) = (rows.div_ceil(pw), panel0[e] + (r0 - starts[e]) / pw);
            let gu = gate_up.slice(e * 2 * i * h, 2 * i * h);
            with_buf(Buf::Pack, panels * pw * h, |xp| {
                pack_panels::<S, MV>(x, |r| (order[r0 + r] as usize / k) * h, rows, h, 0..panels, xp);
                let (gate, up) = (gu.slice(0, i * h), gu.slice(i * h, i * h));
                let w = PanelW { gate, up: Some(up), k: h, then: None };
                // SAFETY: this task alone writes its panels q0.. of mid.
                let sink =
                    MidSink { mid: SharedMut::new(unsafe { mid_p.slice(q0 * i * pw, panels * i * pw) }), inter: i, pw };
                panel_block::<S, NR, MV, _>(xp, rows, w, 0..i, 0..panels, &sink);
            });
        });
        // Phase 2: column chunks of `out`, each over every expert in ascending order.
        out.fill(0.0);
        let threads = rayon::current_num_threads().max(1);
        let chunk = h.div_ceil(2 * threads).next_multiple_of(NR).min(h);
        let (mid, out_p) = (&mid[..], SharedMut::new(out));
        (0..h.div_ceil(chunk)).into_par_iter().for_each(|c| {
            let (c0, nc) = (c * chunk, chunk.min(h - c * chunk));
            for (a, &e) in active.iter().enumerate() {
                let e = e as usize;
                let (r0, rows) = (starts[e], starts[e + 1] - starts[e]);
                let gate = down.slice(e * h * i + c0 * i, nc * i);
                let then = active.get(a + 1).map(|&f| down.slice(f as usize * h * i + c0 * i, nc * i));
                let w = PanelW { gate, up: None, k: i, then };
                let sink = AddSink { out: out_p, h, c0, slots: &order[r0..r0 + rows], k, weights };
                let xp = &mid[panel0[e] * i * pw..][..rows.div_ceil(pw) * i * pw];
                panel_block::<S, NR, MV, _>(xp, rows, w, 0..nc, 0..rows.div_ceil(pw), &sink);
            }
        });
    }
}

/// Stores SwiGLU tiles of gate+up as the packed panels `down` reads: `mid[(q·I + c)·P + lane]`.
struct MidSink {
    mid: SharedMut,
    inter: usize,
    pw: usize,
}

impl Sink for MidSink {
    #[inline(always)]
    unsafe fn emit<S: Simd, const NR: usize, const MV: usize>(
        &self,
        tok0: usize,
        _valid: usize,
        c0: usize,
        cols: usize,
        acc: &[[S::V; MV]; NR],
    ) {
        let q = tok0 / self.pw;
        for j in 0..cols {
            let n = MV * S::LANES;
            // `ptr` checks the end of the run against the buffer.
            let dst = self.mid.ptr((q * self.inter + c0 + j) * self.pw + n).sub(n);
            for (v, (&g, &u)) in acc[j].iter().zip(&acc[NR / 2 + j]).enumerate() {
                S::store(dst.add(v * S::LANES), S::mul(simd::silu::<S>(g), u));
            }
        }
    }
}

/// Adds `down` tiles of one expert, scaled by each slot's routing weight, into its tokens' rows
/// of `out: [T, H]`, at columns `c0 + c` (`slots`: the expert's routing slots in token order).
struct AddSink<'a> {
    out: SharedMut,
    h: usize,
    c0: usize,
    slots: &'a [u32],
    k: usize,
    weights: &'a [f32],
}

impl Sink for AddSink<'_> {
    #[inline(always)]
    unsafe fn emit<S: Simd, const NR: usize, const MV: usize>(
        &self,
        tok0: usize,
        valid: usize,
        c0: usize,
        cols: usize,
        acc: &[[S::V; MV]; NR],
    ) {
        let l = S::LANES;
        let mut wl = [0.0f32; 32];
        for (w, &s) in wl.iter_mut().zip(&self.slots[tok0..tok0 + valid]) {
            *w = self.weights[s as usize];
        }
        for v in 0..MV {
            let toks = valid.saturating_sub(v * l).min(l);
            let wv = S::load(wl.as_ptr().add(v * l));
            for c in (0..cols).step_by(l) {
                let cn = l.min(cols - c);
                let mut t = [S::zero(); 16];
                t.iter_mut().zip(&acc[c..c + cn]).for_each(|(t, a)| *t = S::mul(a[v], wv));
                S::transpose(&mut t[..l]);
                for (lane, &tv) in t.iter().enumerate().take(toks) {
                    let tok = self.slots[tok0 + v * l + lane] as usize / self.k;
                    // SAFETY: this task alone writes columns c0.. of `out` (its chunk).
                    let p = self.out.slice(tok * self.h + self.c0 + c0 + c, cn).as_mut_ptr();
                    S::store_first(p, S::add(S::load_first(p, cn), tv), cn);
                }
            }
        }
    }
}

/// `out[t] = Σ_i weights[t,i] · ys[pos(t,i)]` over token t's slots in ascending expert order.
fn combine(t: usize, k: usize, h: usize, weights: &[f32], scratch: &mut MoeScratch, out: &mut [f32]) {
    let MoeScratch { order, pos, ys, .. } = scratch;
    pos.clear();
    pos.resize(t * k, 0);
    for (j, &s) in order.iter().enumerate() {
        pos[s as usize] = j as u32;
    }
    let (pos, ys, order) = (&pos[..], &ys[..], &order[..]);
    let o = SharedMut::new(&mut out[..t * h]);
    for_ranges(t, task_size(t, 4), t * k * h >= 1 << 15, |t0, t1| {
        let mut ps = [0u32; 64];
        for tok in t0..t1 {
            // SAFETY: this task alone writes rows t0..t1.
            let row = unsafe { o.slice(tok * h, h) };
            row.fill(0.0);
            let mut add = |ps: &mut [u32]| {
                ps.copy_from_slice(&pos[tok * k..][..k]);
                ps.sort_unstable();
                for &j in ps.iter() {
                    let w = weights[order[j as usize] as usize];
                    dispatch!(S => simd::axpy::<S>(row, w, &ys[j as usize * h..][..h]));
                }
            };
            if k <= ps.len() {
                add(&mut ps[..k]);
            } else {
                add(&mut vec![0; k]);
            }
        }
    });
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
