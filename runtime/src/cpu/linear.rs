//! `y = x Wᵀ` with f32 or bf16 weights (`MatMul` in the IR) and the epilogues the compiler fuses
//! into it: SwiGLU, a sigmoid gate, a residual add, a scaled accumulate.
//!
//! Two paths, chosen by the number of token rows `M` ([`GEMM_MIN_ROWS`], measured crossover):
//! - **GEMV** (decode and small batches): output rows split over threads; a register-blocked
//!   microkernel streams each weight row once per group of ≤ 4 token rows, bf16 widened in
//!   registers; for `M > 4` weight blocks of 64 rows × 512 columns are reused from L2 by every
//!   token group, so DRAM sees each weight once. Decode (M=1) runs at ~90-100 % of a plain read
//!   of the same bytes (f32 and bf16, AVX-512 or AVX2).
//! - **GEMM** (prefill): output columns split into one block per thread; each block runs the
//!   `gemm` crate single-threaded on f32 weights in place, or on 256×256 f32 tiles converted from
//!   bf16 on the fly (L2-resident, never the whole matrix), then applies the epilogue.

use super::gemv::{gemv_block, Tile};
use super::simd::{dispatch, Elem};
use super::{for_ranges, sigmoid, silu, task_size, with_scratch, SharedMut, WeightRef, PAR_MIN_WORK};

/// Default token rows from which the GEMM path is used (below, the blocked GEMV path).
pub const GEMM_MIN_ROWS: usize = 128;

static GEMM_MIN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(GEMM_MIN_ROWS);

/// Sets the token-row count from which [`linear`] uses the GEMM path (process-wide; for tuning
/// and benchmarks). Returns the previous value.
pub fn set_gemm_min_rows(rows: usize) -> usize {
    GEMM_MIN.swap(rows.max(1), std::sync::atomic::Ordering::Relaxed)
}

/// Weight rows per GEMV block.
const RB: usize = 64;

/// Weight columns per GEMV block when several token groups reuse it (64 rows × 512 f32 = 128 KiB).
const KC: usize = 512;

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
/// [`Epilogue::SwiGlu`]), f32 or bf16. Panics if a slice is shorter than its shape.
pub fn linear(x: &[f32], w: WeightRef, m: usize, k: usize, n: usize, epi: Epilogue, y: &mut [f32]) {
    if let Epilogue::SwiGlu = epi {
        assert_eq!(w.len(), 2 * n * k, "SwiGLU weight must be [2N, K] = [{}, {k}]", 2 * n);
        let (gate, up) = (w.slice(0, n * k), w.slice(n * k, n * k));
        return run(&Plan { x, gate, up: Some(up), m, k, n, epi }, y);
    }
    assert_eq!(w.len(), n * k, "weight must be [N, K] = [{n}, {k}]");
    run(&Plan { x, gate: w, up: None, m, k, n, epi }, y)
}

/// `y: [M, N] = silu(x W_gateᵀ) ⊙ (x W_upᵀ)` with `x: [M, K]`, `gate`, `up: [N, K]` stored apart
/// (per-expert checkpoints). Panics if a slice is shorter than its shape.
pub fn linear_swiglu(x: &[f32], gate: WeightRef, up: WeightRef, m: usize, k: usize, n: usize, y: &mut [f32]) {
    assert!(gate.len() == n * k && up.len() == n * k, "gate and up must be [N, K] = [{n}, {k}]");
    run(&Plan { x, gate, up: Some(up), m, k, n, epi: Epilogue::SwiGlu }, y)
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
}

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
    if m < GEMM_MIN.load(std::sync::atomic::Ordering::Relaxed) {
        gemv_path(p, y);
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

/// One GEMV tile for token rows `m0..m0+mr` (`mr ≤ 4`) against weight rows `row0..row0+rows`,
/// columns `k0..k0+t.kk` (see [`Tile`]).
#[allow(clippy::too_many_arguments)]
fn tile_dots(p: &Plan, w: WeightRef, m0: usize, mr: usize, row0: usize, k0: usize, t: Tile, out: &mut [f32]) {
    let x = &p.x[m0 * p.k + k0..];
    match w {
        WeightRef::F32(w) => tile_elem(x, &w[row0 * p.k + k0..], mr, t, out),
        WeightRef::Bf16(w) => tile_elem(x, &w[row0 * p.k + k0..], mr, t, out),
    }
}

fn tile_elem<W: Elem>(x: &[f32], w: &[W], mr: usize, t: Tile, out: &mut [f32]) {
    match mr {
        // One token row: one weight row at a time, 4 vectors deep, so each thread streams its
        // rows sequentially as a plain read does (keeps bf16 near the read bandwidth). More token
        // rows: two weight rows, MR·NR·U ≤ 8 accumulators (measured best on Zen 5).
        1 => dispatch!(S => gemv_block::<S, W, 1, 1, 4>(x, w, t, out)),
        2 => dispatch!(S => gemv_block::<S, W, 2, 2, 2>(x, w, t, out)),
        3 => dispatch!(S => gemv_block::<S, W, 3, 2, 1>(x, w, t, out)),
        4 => dispatch!(S => gemv_block::<S, W, 4, 2, 1>(x, w, t, out)),
        _ => unreachable!("GEMV tiles take 1..=4 token rows"),
    }
}

/// The GEMV path for `M < GEMM_MIN_ROWS`: output columns split over threads; per block of
/// [`RB`] weight rows and [`KC`] columns (L2-resident), every group of 4 token rows runs a
/// [`Tile`], so each weight element comes from DRAM once (from cache `⌈M/4⌉` times).
fn gemv_path(p: &Plan, y: &mut [f32]) {
    let (m, k, n) = (p.m, p.k, p.n);
    let rows_total = if p.up.is_some() { 2 * n } else { n };
    let par = m * rows_total * k >= PAR_MIN_WORK;
    let chunk = task_size(n, 16).next_multiple_of(4);
    let kc = if m <= 4 { k } else { KC };
    let out = SharedMut::new(y);
    for_ranges(n, chunk, par, |n0, n1| {
        with_scratch(2 * m * RB, |raw| {
            let (raw, raw_up) = raw.split_at_mut(m * RB);
            for b0 in (n0..n1).step_by(RB) {
                let rows = RB.min(n1 - b0);
                for k0 in (0..k).step_by(kc) {
                    let t = Tile { ldx: k, ldw: k, kk: kc.min(k - k0), rows, ld: RB, accumulate: k0 > 0 };
                    for m0 in (0..m).step_by(4) {
                        let mr = (m - m0).min(4);
                        tile_dots(p, p.gate, m0, mr, b0, k0, t, &mut raw[m0 * RB..]);
                        if let Some(up) = p.up {
                            tile_dots(p, up, m0, mr, b0, k0, t, &mut raw_up[m0 * RB..]);
                        }
                    }
                }
                for mi in 0..m {
                    // SAFETY: this task alone writes columns n0..n1 of every row.
                    let yrow = unsafe { out.slice(mi * n + b0, rows) };
                    finish(p, mi, b0, &raw[mi * RB..][..rows], &raw_up[mi * RB..][..rows], yrow);
                }
            }
        })
    });
}

/// Output columns per GEMM task: about one block per thread.
fn gemm_cols(p: &Plan) -> usize {
    let threads = rayon::current_num_threads().max(1);
    p.n.div_ceil(threads).next_multiple_of(16).max(16)
}

fn gemm_path(p: &Plan, y: &mut [f32]) {
    let nb = gemm_cols(p);
    let par = p.m * p.n * p.k >= PAR_MIN_WORK;
    let out = SharedMut::new(y);
    for_ranges(p.n, nb, par, |n0, n1| gemm_block(p, n0, n1, out));
}

/// Output columns `n0..n1` of every row through `gemm`.
fn gemm_block(p: &Plan, n0: usize, n1: usize, out: SharedMut) {
    let (m, n, nb) = (p.m, p.n, n1 - n0);
    let tile = if matches!(p.gate, WeightRef::Bf16(_)) { TILE_N * TILE_K } else { 0 };
    let tmp = if p.up.is_some() { 2 * m * nb } else { 0 };
    with_scratch(tile + tmp, |s| {
        let (tile, tbuf) = s.split_at_mut(tile);
        let dst = out.ptr(n0);
        match p.epi {
            Epilogue::SwiGlu => {
                let (tg, tu) = tbuf.split_at_mut(m * nb);
                wgemm(p, p.gate, n0, nb, tg.as_mut_ptr(), nb, None, tile);
                wgemm(p, p.up.expect("SwiGLU has up rows"), n0, nb, tu.as_mut_ptr(), nb, None, tile);
                for mi in 0..m {
                    // SAFETY: this task alone writes columns n0..n1 of every row.
                    let yrow = unsafe { out.slice(mi * n + n0, nb) };
                    finish(p, mi, n0, &tg[mi * nb..][..nb], &tu[mi * nb..][..nb], yrow);
                }
            }
            Epilogue::Plain => wgemm(p, p.gate, n0, nb, dst, n, None, tile),
            Epilogue::Accumulate(alpha) => wgemm(p, p.gate, n0, nb, dst, n, Some(alpha), tile),
            Epilogue::Residual(r) => {
                for mi in 0..m {
                    // SAFETY: as above.
                    unsafe { out.slice(mi * n + n0, nb) }.copy_from_slice(&r[mi * n + n0..][..nb]);
                }
                wgemm(p, p.gate, n0, nb, dst, n, Some(1.0), tile);
            }
            Epilogue::SigmoidGate(_) => {
                wgemm(p, p.gate, n0, nb, dst, n, None, tile);
                for mi in 0..m {
                    // SAFETY: as above.
                    gate_in_place(p, mi, n0, unsafe { out.slice(mi * n + n0, nb) });
                }
            }
        }
    });
}

/// Weight rows per converted bf16 tile.
const TILE_N: usize = 256;
/// Weight columns (K) per converted bf16 tile: a 256 KiB f32 tile stays in L2.
const TILE_K: usize = 256;

/// `dst[i·ld + j] (= | += alpha·) x[i] · w[n0 + j]` for `i < M`, `j < nb`; `acc: Some(alpha)`
/// accumulates. bf16 weights go through `tile` (`TILE_N·TILE_K` f32) one tile at a time.
#[allow(clippy::too_many_arguments)]
fn wgemm(p: &Plan, w: WeightRef, n0: usize, nb: usize, dst: *mut f32, ld: usize, acc: Option<f32>, tile: &mut [f32]) {
    let (m, k) = (p.m, p.k);
    let w = match w {
        WeightRef::F32(w) => return sgemm(p.x, k, &w[n0 * k..(n0 + nb) * k], k, m, k, nb, dst, ld, acc),
        WeightRef::Bf16(w) => w,
    };
    for j0 in (0..nb).step_by(TILE_N) {
        let tn = TILE_N.min(nb - j0);
        for k0 in (0..k).step_by(TILE_K) {
            let tk = TILE_K.min(k - k0);
            for (j, trow) in tile.chunks_mut(tk).take(tn).enumerate() {
                let src = &w[(n0 + j0 + j) * k + k0..][..tk];
                trow.iter_mut().zip(src).for_each(|(d, s)| *d = s.to_f32());
            }
            let a = if k0 == 0 { acc } else { Some(acc.unwrap_or(1.0)) };
            // The tile's columns j0.. land at dst + j0 (still inside this task's columns).
            sgemm(&p.x[k0..], k, &tile[..tn * tk], tk, m, tk, tn, dst.wrapping_add(j0), ld, a);
        }
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

/// `dst[i·ld + j] (= | += alpha·) Σ_t x[i·ldx + t] · w[j·ldw + t]` for `i < m`, `j < nb`, `t < kk`,
/// single-threaded. `acc: Some(alpha)` reads dst; `None` overwrites it.
#[allow(clippy::too_many_arguments)]
fn sgemm(
    x: &[f32],
    ldx: usize,
    w: &[f32],
    ldw: usize,
    m: usize,
    kk: usize,
    nb: usize,
    dst: *mut f32,
    ld: usize,
    acc: Option<f32>,
) {
    assert!(m == 0 || x.len() >= (m - 1) * ldx + kk);
    assert!(nb == 0 || w.len() >= (nb - 1) * ldw + kk);
    let (read_dst, beta) = match acc {
        Some(a) => (true, a),
        None => (false, 1.0),
    };
    // SAFETY: x covers [m, kk] (row stride ldx), w covers [nb, kk] read as its transpose (column
    // stride ldw), dst covers [m, nb] with row stride ld (the caller owns those elements).
    unsafe {
        gemm::gemm(
            m,
            nb,
            kk,
            dst,
            1,
            ld as isize,
            read_dst,
            x.as_ptr(),
            1,
            ldx as isize,
            w.as_ptr(),
            ldw as isize,
            1,
            1.0f32,
            beta,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}
