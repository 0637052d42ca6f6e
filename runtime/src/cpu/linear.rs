//! `y = x Wᵀ` with f32 or bf16 weights (`MatMul` in the IR) and the epilogues the compiler fuses
//! into it: SwiGLU, a sigmoid gate, a residual add, a scaled accumulate.
//!
//! Two paths:
//! - **GEMV** (decode and small batches, [`GemvRows`](super::gemv)): output rows split over
//!   threads; a register-blocked microkernel (up to 4 token rows × 3 or 4 weight rows) reads the
//!   weight rows as a few long sequential streams, bf16 widened in registers, and every group
//!   of token rows runs over a set of weight rows while it is in L1, so DRAM sees each weight
//!   once. Every output is one dot in one fixed order, so **a token row's bits do not depend on
//!   `M`**: decode ([`linear_invariant`]) gives a sequence the same result alone or in any
//!   batch, and an invariant prefill gives a token what decode gives it. More than
//!   [`GEMV_ROWS`] token rows run in passes of that many (each pass's `x` stays in cache; the
//!   weights are read once per pass). M = 1 runs above a plain one-stream read of the same
//!   bytes; bf16 at M = 16..64 about as fast as the GEMM (f32 at M ≥ 32 about 25 % slower; 2-core
//!   Zen 3, AVX2).
//! - **GEMM** (prefill, `M ≥` [`GEMM_MIN_ROWS`], measured crossover; never for
//!   [`linear_invariant`]): the panel GEMM of [`gemv`](super::gemv). `x` is packed once into
//!   token panels (in parallel, into the calling thread's reusable buffer); tasks of (weight
//!   block, range of panels) run in parallel on the pool, each reading f32 weights in place or
//!   widening one L2-sized bf16 block at a time into a per-thread tile (never the whole
//!   matrix), and the epilogue is applied in registers as each tile is stored. No allocation
//!   after warm-up; each output is one dot over the whole K, so the result does not depend on
//!   the thread count (but its summation order is not the GEMV's).

use super::gemv::{block_cols, pack_panels, panel_block, run_panel, with_buf, Buf, GemvRows, MR_MAX};
use super::gemv::{PanelOp, PanelW, Sink};
use super::simd::{self, dispatch, Elem, Level, Simd};
use super::wide::Wide;
use super::{for_ranges, sigmoid, silu, task_size, with_scratch, RowOrder, SharedMut, WeightRef, PAR_MIN_WORK};

/// Default token rows from which the GEMM path is used (below, the blocked GEMV path).
pub const GEMM_MIN_ROWS: usize = 16;

static GEMM_MIN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(GEMM_MIN_ROWS);

/// Sets the token-row count from which [`linear`] uses the GEMM path (process-wide; for tuning
/// and benchmarks). Returns the previous value.
pub fn set_gemm_min_rows(rows: usize) -> usize {
    GEMM_MIN.swap(rows.max(1), std::sync::atomic::Ordering::Relaxed)
}

/// Weight rows per GEMV block at most (the width of the per-thread result scratch; a multiple
/// of every kernel's 3 or 4 weight rows).
const RB: usize = 60;

/// Weight columns per GEMV column block at most when there are several groups of token rows:
/// a set of weight rows (3 × 1024 f32 = 12 KiB) stays in L1 while every group runs over it, and
/// the columns of `x` of all token rows (up to [`X_BYTES`]) in L2. Splitting the columns does
/// not change any sum ([`GemvRows`]).
const KC: usize = 1024;

/// Bytes of `x` (all token rows, one column block) the GEMV keeps in L2.
const X_BYTES: usize = 256 << 10;

/// What happens to `acc = x Wᵀ` (`[M, N]`) before it is stored in `y: [M, N]`.
#[derive(Debug, Clone, Copy)]
pub enum Epilogue<'a> {
    /// `y = acc`.
    Plain,
    /// W holds `2N` rows, the N gate rows then the N up rows: `y = silu(acc_gate) ⊙ acc_up`.
    SwiGlu,
    /// `y = acc ⊙ σ(g)`, `g: [M, N]` (elementwise) or `[M]` (one gate per token row).
    SigmoidGate(&'a [f32]),
    /// `y = acc + r`, `r: [M, N]`.
    Residual(&'a [f32]),
    /// `y = y + alpha · acc` (reads `y`).
    Accumulate(f32),
}

/// `y: [M, N] = epilogue(x Wᵀ)` with `x: [M, K]` and `w: [N, K]` (`[2N, K]` for
/// [`Epilogue::SwiGlu`]), f32 or bf16, on the fastest path for `M` ([`RowOrder::Fastest`]).
/// Panics if a slice is shorter than its shape.
pub fn linear(x: &[f32], w: WeightRef, m: usize, k: usize, n: usize, epi: Epilogue, y: &mut [f32]) {
    linear_ordered(RowOrder::Fastest, x, w, (m, k, n), epi, y)
}

/// [`linear`] with every token row summed in the GEMV order whatever `M`
/// ([`RowOrder::Invariant`]): row `i` of `y` has the same bits as the call on row `i` alone.
/// For decode, where each row is a different sequence of a batch.
pub fn linear_invariant(x: &[f32], w: WeightRef, m: usize, k: usize, n: usize, epi: Epilogue, y: &mut [f32]) {
    linear_ordered(RowOrder::Invariant, x, w, (m, k, n), epi, y)
}

/// [`linear`] or [`linear_invariant`] as `order` says.
pub fn linear_ordered(
    order: RowOrder,
    x: &[f32],
    w: WeightRef,
    (m, k, n): (usize, usize, usize),
    epi: Epilogue,
    y: &mut [f32],
) {
    run(&Plan::new(x, w, (m, k, n), epi, order), y)
}

/// `y: [M, N] = silu(x W_gateᵀ) ⊙ (x W_upᵀ)` with `x: [M, K]`, `gate`, `up: [N, K]` stored apart
/// (per-expert checkpoints). Panics if a slice is shorter than its shape.
pub fn linear_swiglu(x: &[f32], gate: WeightRef, up: WeightRef, m: usize, k: usize, n: usize, y: &mut [f32]) {
    assert!(gate.len() == n * k && up.len() == n * k, "gate and up must be [N, K] = [{n}, {k}]");
    let order = RowOrder::Fastest;
    run(&Plan { x, gate, up: Some(up), m, k, n, epi: Epilogue::SwiGlu, order }, y)
}

/// One validated call.
struct Plan<'a> {
    x: &'a [f32],
    gate: WeightRef<'a>,
    /// The up rows, for SwiGLU only.
    up: Option<WeightRef<'a>>,
    m: usize,
    k: usize,
    n: usize,
    epi: Epilogue<'a>,
    order: RowOrder,
}

impl<'a> Plan<'a> {
    /// Token rows `r0..r1` of the call, with their part of every epilogue operand.
    fn rows(&self, r0: usize, r1: usize) -> Plan<'a> {
        let (k, n) = (self.k, self.n);
        let epi = match self.epi {
            Epilogue::SigmoidGate(g) if g.len() == self.m && g.len() != self.m * n => Epilogue::SigmoidGate(&g[r0..r1]),
            Epilogue::SigmoidGate(g) => Epilogue::SigmoidGate(&g[r0 * n..r1 * n]),
            Epilogue::Residual(r) => Epilogue::Residual(&r[r0 * n..r1 * n]),
            e => e,
        };
        Plan { x: &self.x[r0 * k..r1 * k], m: r1 - r0, epi, ..*self }
    }

    /// `w: [N, K]`, or `[2N, K]` (gate rows, then up rows) for SwiGLU.
    fn new(
        x: &'a [f32],
        w: WeightRef<'a>,
        (m, k, n): (usize, usize, usize),
        epi: Epilogue<'a>,
        order: RowOrder,
    ) -> Plan<'a> {
        if let Epilogue::SwiGlu = epi {
            assert_eq!(w.len(), 2 * n * k, "SwiGLU weight must be [2N, K] = [{}, {k}]", 2 * n);
            let (gate, up) = (w.slice(0, n * k), w.slice(n * k, n * k));
            return Plan { x, gate, up: Some(up), m, k, n, epi, order };
        }
        assert_eq!(w.len(), n * k, "weight must be [N, K] = [{n}, {k}]");
        Plan { x, gate: w, up: None, m, k, n, epi, order }
    }
}

/// Token rows the GEMV path runs over the weights at once; more are split into passes of this
/// many, each reading the weights again (measured on `small`, bf16 and f32, 512 and 2,048 tokens:
/// 32 beat 16, 48, 64, 128 and one pass).
pub const GEMV_ROWS: usize = 32;

fn run(p: &Plan, y: &mut [f32]) {
    let (m, k, n) = (p.m, p.k, p.n);
    assert!(p.x.len() >= m * k, "x must be [M, K] = [{m}, {k}]");
    assert!(y.len() >= m * n, "y must be [M, N] = [{m}, {n}]");
    match p.epi {
        Epilogue::SigmoidGate(g) => assert!(g.len() == m * n || g.len() == m, "gate must be [M, N] or [M]"),
        Epilogue::Residual(r) => assert!(r.len() >= m * n, "residual must be [M, N]"),
        _ => {}
    }
    if m == 0 || n == 0 {
        return;
    }
    if p.order == RowOrder::Invariant || m < GEMM_MIN.load(std::sync::atomic::Ordering::Relaxed) {
        // Token rows in blocks of at most GEMV_ROWS: each block's x (and the lane accumulators
        // of its rows) stays in cache while the weights stream past; no row's sum changes.
        for r0 in (0..m).step_by(GEMV_ROWS) {
            let r1 = (r0 + GEMV_ROWS).min(m);
            gemv_path(&p.rows(r0, r1), &mut y[r0 * n..r1 * n]);
        }
    } else {
        gemm_path(p, y);
    }
}

/// Applies the epilogue to output row `mi`, columns `n0..n0+len`: `raw` (and `raw_up` for
/// SwiGLU) hold the accumulated dots, `y` the destination row segment.
#[inline]
fn finish(p: &Plan, mi: usize, n0: usize, raw: &[f32], raw_up: &[f32], y: &mut [f32]) {
    let n = p.n;
    match p.epi {
        Epilogue::Plain => y.copy_from_slice(raw),
        Epilogue::SwiGlu => y.iter_mut().zip(raw).zip(raw_up).for_each(|((o, &a), &b)| *o = silu(a) * b),
        Epilogue::SigmoidGate(_) => {
            y.copy_from_slice(raw);
            gate_in_place(p, mi, n0, y);
        }
        Epilogue::Residual(r) => {
            let r = &r[mi * n + n0..][..y.len()];
            y.iter_mut().zip(raw).zip(r).for_each(|((o, &a), &rv)| *o = a + rv);
        }
        Epilogue::Accumulate(alpha) => y.iter_mut().zip(raw).for_each(|(o, &a)| *o += alpha * a),
    }
}

/// The GEMV path (`M < GEMM_MIN_ROWS`, or any `M` for [`RowOrder::Invariant`]): output columns
/// split over threads, in blocks of [`RB`] weight rows ([`GemvRows`]: every group of up to 4
/// token rows runs over each set of weight rows in turn, [`KC`] columns at a time when there are
/// several groups); each output is one dot in the order [`GemvRows`] states.
fn gemv_path(p: &Plan, y: &mut [f32]) {
    let (m, k, n) = (p.m, p.k, p.n);
    let rows_total = if p.up.is_some() { 2 * n } else { n };
    let par = m * rows_total * k >= PAR_MIN_WORK;
    let chunk = task_size(n, 16).next_multiple_of(4);
    let kc = gemv_cols(p);
    let out = SharedMut::new(y);
    for_ranges(n, chunk, par, |n0, n1| {
        with_scratch(2 * m * RB, |raw| {
            let (raw, raw_up) = raw.split_at_mut(m * RB);
            with_buf(Buf::Tile, m * RB * simd::MAX_LANES, |acc| {
                for b0 in (n0..n1).step_by(RB) {
                    let rows = RB.min(n1 - b0);
                    gemv_rows(p, p.gate, b0..b0 + rows, kc, acc, raw);
                    if let Some(up) = p.up {
                        gemv_rows(p, up, b0..b0 + rows, kc, acc, raw_up);
                    }
                    for mi in 0..m {
                        // SAFETY: this task alone writes columns n0..n1 of every row.
                        let yrow = unsafe { out.slice(mi * n + b0, rows) };
                        finish(p, mi, b0, &raw[mi * RB..][..rows], &raw_up[mi * RB..][..rows], yrow);
                    }
                }
            })
        })
    });
}

/// Columns per GEMV column block: all of them for one group of token rows (nothing is
/// reused), else at most [`KC`] and what keeps `x`'s columns within [`X_BYTES`], split evenly.
fn gemv_cols(p: &Plan) -> usize {
    if p.m <= MR_MAX {
        return p.k;
    }
    let max = (X_BYTES / 4 / p.m).clamp(256, KC) / 64 * 64;
    if p.k <= max {
        p.k
    } else {
        p.k.div_ceil(p.k.div_ceil(max)).next_multiple_of(64)
    }
}

/// `out[mi·RB + r] = x[mi] · w[rows.start + r]` for every token row and `r < rows.len()`.
/// (`kc`: columns per block, see [`GemvRows`]).
fn gemv_rows(p: &Plan, w: WeightRef, rows: std::ops::Range<usize>, kc: usize, acc: &mut [f32], out: &mut [f32]) {
    let (k, n) = (p.k, rows.len());
    match w {
        WeightRef::F32(w) => {
            let g = GemvRows { x: p.x, tokens: p.m, w: &w[rows.start * k..][..n * k], rows: n, k, kc, ld: RB };
            run_gemv(g, acc, out)
        }
        WeightRef::Bf16(w) => {
            let g = GemvRows { x: p.x, tokens: p.m, w: &w[rows.start * k..][..n * k], rows: n, k, kc, ld: RB };
            run_gemv(g, acc, out)
        }
    }
}

/// Runs `g` at the current level; the scalar level as [`Wide`] (eight lanes in portable code,
/// which the compiler vectorises: a one-lane sum cannot be).
fn run_gemv<W: Elem>(g: GemvRows<W>, acc: &mut [f32], out: &mut [f32]) {
    if simd::level() == Level::Scalar {
        g.run::<Wide>(acc, out)
    } else {
        dispatch!(S => g.run::<S>(acc, out))
    }
}

fn gemm_path(p: &Plan, y: &mut [f32]) {
    run_panel(PanelLinear { p, y })
}

/// The panel GEMM over a whole [`Plan`]: packs `x` once (in parallel, into the calling thread's
/// [`Buf::Pack`]), then runs tasks of (weight block, range of token panels) in parallel. Each
/// output is one kernel's dot over the full K, so results do not depend on the thread count.
struct PanelLinear<'a, 'p> {
    p: &'a Plan<'p>,
    y: &'a mut [f32],
}

impl PanelOp for PanelLinear<'_, '_> {
    type Out = ();

    fn run<S: Simd, const NR: usize, const MV: usize>(self) {
        let (p, (m, k, n)) = (self.p, (self.p.m, self.p.k, self.p.n));
        let pw = MV * S::LANES;
        let panels = m.div_ceil(pw);
        let halves = if p.up.is_some() { 2 } else { 1 };
        let nb = block_cols(k, NR / halves, halves);
        let blocks = n.div_ceil(nb);
        let threads = rayon::current_num_threads().max(1);
        let par = threads > 1 && halves * m * n * k >= PAR_MIN_WORK;
        // Few weight blocks (narrow outputs): split the token panels too, ~2 tasks per thread.
        let per_block = if blocks >= 2 * threads { 1 } else { (2 * threads).div_ceil(blocks).min(panels) };
        let pchunk = panels.div_ceil(per_block);
        let chunks = panels.div_ceil(pchunk);
        let sink = RowSink { y: SharedMut::new(self.y), ld: n, n, m, epi: p.epi, swiglu: p.up.is_some() };
        let w = PanelW { gate: p.gate, up: p.up, k, then: None };
        with_buf(Buf::Pack, panels * k * pw, |xp| {
            let xs = SharedMut::new(xp);
            for_ranges(panels, 1, par, |q0, q1| {
                // SAFETY: this task alone writes panels q0..q1.
                let d = unsafe { xs.slice(q0 * k * pw, (q1 - q0) * k * pw) };
                pack_panels::<S, MV>(p.x, |r| r * k, m, k, q0..q1, d);
            });
            let xp = &*xp;
            for_ranges(blocks * chunks, 1, par, |t0, t1| {
                for t in t0..t1 {
                    let (b, c) = (t / chunks, t % chunks);
                    let cols = b * nb..((b + 1) * nb).min(n);
                    let pr = c * pchunk..((c + 1) * pchunk).min(panels);
                    panel_block::<S, NR, MV, _>(xp, m, w, cols, pr, &sink);
                }
            });
        });
    }
}

/// Stores panel-GEMM tiles into a row-major `y: [M, ld]` with an [`Epilogue`] (`n`: the row
/// stride of the epilogue's `[M, N]` operands).
struct RowSink<'a> {
    y: SharedMut,
    ld: usize,
    n: usize,
    m: usize,
    epi: Epilogue<'a>,
    swiglu: bool,
}

impl RowSink<'_> {
    /// One gate per token row (`g: [M]`) rather than one per element.
    fn row_gate(&self) -> Option<&[f32]> {
        match self.epi {
            Epilogue::SigmoidGate(g) if g.len() == self.m && g.len() != self.m * self.n => Some(g),
            _ => None,
        }
    }
}

impl Sink for RowSink<'_> {
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
        let mut res = *acc;
        if self.swiglu {
            for j in 0..NR / 2 {
                for v in 0..MV {
                    res[j][v] = S::mul(simd::silu::<S>(acc[j][v]), acc[NR / 2 + j][v]);
                }
            }
        }
        if let Some(g) = self.row_gate() {
            let mut gl = [0.0f32; PANEL_MAX];
            gl[..valid].copy_from_slice(&g[tok0..tok0 + valid]);
            for v in 0..MV {
                let s = simd::sigmoid::<S>(S::load(gl.as_ptr().add(v * l)));
                res.iter_mut().take(cols).for_each(|r| r[v] = S::mul(r[v], s));
            }
        }
        // Transpose LANES × LANES blocks in registers: lanes are tokens, rows want columns.
        for v in 0..MV {
            let toks = valid.saturating_sub(v * l).min(l);
            for c in (0..cols).step_by(l) {
                let cn = l.min(cols - c);
                let mut t = [S::zero(); 16];
                t.iter_mut().zip(&res[c..c + cn]).for_each(|(t, r)| *t = r[v]);
                S::transpose(&mut t[..l]);
                for (lane, &tv) in t.iter().enumerate().take(toks) {
                    let row = tok0 + v * l + lane;
                    // SAFETY: each (token, column) belongs to exactly one tile.
                    let yp = self.y.slice(row * self.ld + c0 + c, cn).as_mut_ptr();
                    let out = match self.epi {
                        Epilogue::Residual(r) => {
                            S::add(tv, S::load_first(r[row * self.n + c0 + c..][..cn].as_ptr(), cn))
                        }
                        Epilogue::Accumulate(a) => S::fma(S::splat(a), tv, S::load_first(yp, cn)),
                        _ => tv,
                    };
                    S::store_first(yp, out, cn);
                }
            }
        }
    }

    #[inline(always)]
    unsafe fn block_done<S: Simd>(&self, tok0: usize, valid: usize, cols: std::ops::Range<usize>) {
        let Epilogue::SigmoidGate(g) = self.epi else { return };
        if self.row_gate().is_some() {
            return;
        }
        for row in tok0..tok0 + valid {
            // SAFETY: this task owns these tokens' columns `cols`.
            let yr = self.y.slice(row * self.ld + cols.start, cols.len());
            mul_sigmoid::<S>(yr, &g[row * self.n + cols.start..][..cols.len()]);
        }
    }
}

/// The widest token panel of any level (AVX-512: 2 × 16 lanes).
const PANEL_MAX: usize = 32;
const _: () = assert!(PANEL_MAX >= 2 * 16);

/// `y ⊙= σ(g)`, vectorised.
#[inline(always)]
unsafe fn mul_sigmoid<S: Simd>(y: &mut [f32], g: &[f32]) {
    let (n, l) = (y.len(), S::LANES);
    let mut i = 0;
    while i + l <= n {
        let s = simd::sigmoid::<S>(S::load(g.as_ptr().add(i)));
        S::store(y.as_mut_ptr().add(i), S::mul(S::load(y.as_ptr().add(i)), s));
        i += l;
    }
    for t in i..n {
        y[t] *= sigmoid(g[t]);
    }
}

/// `y_row ⊙= σ(g)` for row `mi`, columns `n0..`.
fn gate_in_place(p: &Plan, mi: usize, n0: usize, y: &mut [f32]) {
    let Epilogue::SigmoidGate(g) = p.epi else { return };
    if g.len() == p.m && g.len() != p.m * p.n {
        let s = sigmoid(g[mi]);
        y.iter_mut().for_each(|v| *v *= s);
    } else {
        let g = &g[mi * p.n + n0..][..y.len()];
        y.iter_mut().zip(g).for_each(|(v, &gv)| *v *= sigmoid(gv));
    }
}
