//! The matmul microkernels behind [`linear`](super::linear) and [`moe`](super::moe):
//!
//! - **GEMV** ([`gemv_block`]) for decode-sized matmuls: `MR` (1..=4) token rows against a block
//!   of weight rows, streaming each weight row once and widening bf16 to f32 in registers.
//! - **Panel GEMM** ([`panel_block`]) for prefill: the activations are packed once into panels
//!   of `P` tokens (`[panel][k][P]`, one token per vector lane, [`pack_panels`], transposing in
//!   registers). Weights are processed in L2-sized blocks of output columns: f32 rows are read
//!   in place, bf16 rows are widened into a per-thread f32 tile with a padded row stride (never
//!   the whole matrix), and the next block is prefetched into L2 while this one computes. A
//!   register-blocked kernel broadcasts one weight at a time against `MV` vectors of tokens
//!   (`NR × MV` accumulators, AVX-512: 12 × 2·16) over the full K, so no partial sums are
//!   stored; a short last panel (≤ one vector of tokens, e.g. an expert's tail) runs a
//!   one-vector kernel. A [`Sink`] receives every finished tile and applies the epilogue
//!   (SwiGLU, gates, residual, routing scale) in registers, transposing `LANES × LANES` blocks
//!   back to rows as it stores.

use super::simd::{Elem, Simd};
use super::WeightRef;
use std::cell::RefCell;
use std::ops::Range;

/// Bytes ahead of the current position that every weight-row stream prefetches (rows are short,
/// 2-8 KiB, so the hardware prefetcher alone restarts too often).
const PREFETCH_BYTES: usize = 1024;

/// One GEMV tile: `MR` token rows of `x` (row stride `ldx`) against `rows` weight rows of `w`
/// (row stride `ldw`), `kk` columns: `out[m·ld + r] (= | +=) Σ_{t<kk} x[m·ldx + t] · w[r·ldw + t]`
/// (`+=` when `accumulate`).
///
/// `NR` weight rows are processed together, each `U` vectors deep (`MR·NR·U` accumulators).
/// Panics if a slice is too short for its strides.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tile {
    pub ldx: usize,
    pub ldw: usize,
    pub kk: usize,
    pub rows: usize,
    pub ld: usize,
    pub accumulate: bool,
}

/// Runs one [`Tile`].
#[inline(always)]
pub(crate) fn gemv_block<S: Simd, W: Elem, const MR: usize, const NR: usize, const U: usize>(
    x: &[f32],
    w: &[W],
    t: Tile,
    out: &mut [f32],
) {
    let Tile { ldx, ldw, kk, rows, ld, accumulate } = t;
    if rows == 0 || MR == 0 {
        return;
    }
    assert!(x.len() >= (MR - 1) * ldx + kk && w.len() >= (rows - 1) * ldw + kk);
    assert!(out.len() >= (MR - 1) * ld + rows);
    let xp: [*const f32; MR] = std::array::from_fn(|m| x[m * ldx..].as_ptr());
    let mut store = |r: usize, acc: &[f32], m: usize| {
        let o = &mut out[m * ld + r..][..acc.len()];
        if accumulate {
            o.iter_mut().zip(acc).for_each(|(o, a)| *o += a);
        } else {
            o.copy_from_slice(acc);
        }
    };
    let mut r = 0;
    while r + NR <= rows {
        let wp: [*const W; NR] = std::array::from_fn(|j| w[(r + j) * ldw..].as_ptr());
        // SAFETY: the asserts above cover kk elements from every pointer.
        let acc = unsafe { rows_kernel::<S, W, MR, NR, U>(xp, wp, kk) };
        acc.iter().enumerate().for_each(|(m, a)| store(r, a, m));
        r += NR;
    }
    while r < rows {
        let wp = [w[r * ldw..].as_ptr()];
        // SAFETY: as above.
        let acc = unsafe { rows_kernel::<S, W, MR, 1, U>(xp, wp, kk) };
        acc.iter().enumerate().for_each(|(m, a)| store(r, a, m));
        r += 1;
    }
}

/// `acc[m][j] = Σ_i x_m[i]·w_j[i]` for `i < k`.
///
/// # Safety
/// Every pointer covers `k` elements; `S`'s instruction set is available.
#[inline(always)]
unsafe fn rows_kernel<S: Simd, W: Elem, const MR: usize, const NR: usize, const U: usize>(
    xp: [*const f32; MR],
    wp: [*const W; NR],
    k: usize,
) -> [[f32; NR]; MR] {
    let l = S::LANES;
    let pf = PREFETCH_BYTES / std::mem::size_of::<W>();
    let mut acc = [[[S::zero(); NR]; MR]; U];
    let mut i = 0;
    while i + U * l <= k {
        for j in 0..NR {
            // Past the row's end this touches the next rows, which are read next anyway.
            S::prefetch(wp[j].wrapping_add(i + pf));
            for (u, accu) in acc.iter_mut().enumerate() {
                let wv = W::load::<S>(wp[j].add(i + u * l));
                for m in 0..MR {
                    accu[m][j] = S::fma(wv, S::load(xp[m].add(i + u * l)), accu[m][j]);
                }
            }
        }
        i += U * l;
    }
    while i + l <= k {
        for j in 0..NR {
            let wv = W::load::<S>(wp[j].add(i));
            for m in 0..MR {
                acc[0][m][j] = S::fma(wv, S::load(xp[m].add(i)), acc[0][m][j]);
            }
        }
        i += l;
    }
    let mut out = [[0.0f32; NR]; MR];
    for m in 0..MR {
        for j in 0..NR {
            let mut v = acc[0][m][j];
            for accu in &acc[1..] {
                v = S::add(v, accu[m][j]);
            }
            let mut s = S::hsum(v);
            for t in i..k {
                s += (*wp[j].add(t)).to_f32() * *xp[m].add(t);
            }
            out[m][j] = s;
        }
    }
    out
}

/// Reusable per-thread buffers of the panel GEMM (64-byte aligned).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Buf {
    /// Packed activations (held by the caller of a parallel region, or by one MoE task).
    Pack = 0,
    /// Widened weight tiles (held inside one task).
    Tile = 1,
}

thread_local! {
    static BUFS: [RefCell<Vec<f32>>; 2] = const { [RefCell::new(Vec::new()), RefCell::new(Vec::new())] };
}

/// Runs `f` on `len` f32 of the per-thread buffer `which` (contents unspecified, start 64-byte
/// aligned), reused across calls; a nested use of the same buffer on one thread allocates.
pub(crate) fn with_buf<R>(which: Buf, len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    fn aligned(v: &mut [f32], len: usize) -> &mut [f32] {
        let off = v.as_ptr().align_offset(64).min(16);
        &mut v[off..off + len]
    }
    BUFS.with(|b| match b[which as usize].try_borrow_mut() {
        Ok(mut v) => {
            if v.len() < len + 16 {
                v.resize(len + 16, 0.0);
            }
            f(aligned(&mut v, len))
        }
        Err(_) => f(aligned(&mut vec![0.0; len + 16], len)),
    })
}

/// The register blocking of one SIMD level for the panel GEMM: `NR` weight rows (even, for
/// SwiGLU's gate/up halves) × `MV` vectors of tokens.
pub(crate) trait PanelOp {
    /// What the operation returns.
    type Out;
    /// Runs with level `S` (not yet entered: call [`Simd::enter`] around kernels).
    fn run<S: Simd, const NR: usize, const MV: usize>(self) -> Self::Out;
}

/// Runs `op` with the current level's type and blocking: AVX-512 12 rows × 32 tokens
/// (24 accumulators of 32 registers), AVX2 6 × 16, scalar 4 × 4.
pub(crate) fn run_panel<O: PanelOp>(op: O) -> O::Out {
    #[cfg(target_arch = "x86_64")]
    {
        use super::simd::{level, Avx2, Avx512, Level};
        match level() {
            Level::Avx512 => op.run::<Avx512, 12, 2>(),
            Level::Avx2 => op.run::<Avx2, 6, 2>(),
            Level::Scalar => op.run::<super::simd::Scalar, 4, 4>(),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    op.run::<super::simd::Scalar, 4, 4>()
}

/// Packs activation rows into panels of `P = MV·LANES` tokens: for panel `q` in `panels`,
/// `dst[((q − panels.start)·k + t)·P + l] = src[row(q·P + l) + t]`, zeros for rows past `rows`.
/// Transposes `LANES × LANES` blocks in registers.
pub(crate) fn pack_panels<S: Simd, const MV: usize>(
    src: &[f32],
    row: impl Fn(usize) -> usize,
    rows: usize,
    k: usize,
    panels: Range<usize>,
    dst: &mut [f32],
) {
    let (l, p) = (S::LANES, MV * S::LANES);
    assert!(dst.len() >= panels.len() * k * p);
    // SAFETY: the caller runs on a CPU with `S`'s instruction set (see `run_panel`); every row
    // read is checked against `src` below and every store stays inside `dst` (asserted above).
    unsafe {
        S::enter(
            #[inline(always)]
            || {
                for (qi, q) in panels.enumerate() {
                    let d = dst[qi * k * p..][..k * p].as_mut_ptr();
                    for v in 0..MV {
                        let r0 = q * p + v * l;
                        let live = rows.saturating_sub(r0).min(l);
                        let mut srcs = [std::ptr::null::<f32>(); 16];
                        for (i, sp) in srcs.iter_mut().enumerate().take(live) {
                            *sp = src[row(r0 + i)..][..k].as_ptr();
                        }
                        for k0 in (0..k).step_by(l) {
                            let kn = l.min(k - k0);
                            let mut t = [S::zero(); 16];
                            for i in 0..live {
                                t[i] = S::load_first(srcs[i].add(k0), kn);
                            }
                            S::transpose(&mut t[..l]);
                            for (j, &tv) in t.iter().enumerate().take(kn) {
                                S::store(d.add((k0 + j) * p + v * l), tv);
                            }
                        }
                    }
                }
            },
        )
    }
}

/// Weights of a panel GEMM: output column `c` is the dot with row `c` of `gate` and, for
/// SwiGLU, with row `c` of `up` too; rows are `k` long and contiguous.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PanelW<'a> {
    pub gate: WeightRef<'a>,
    pub up: Option<WeightRef<'a>>,
    pub k: usize,
    /// The matrix the caller runs next, whose first rows are prefetched during the last block.
    pub then: Option<WeightRef<'a>>,
}

/// Receives finished tiles of the panel GEMM.
pub(crate) trait Sink: Sync {
    /// Tokens `tok0..tok0+valid` (`tok0` a multiple of the panel width), output columns
    /// `c0..c0+cols`: `acc[j][v]` lane `l` is column `c0+j` of token `tok0 + v·LANES + l`.
    /// `MV` is the level's, or 1 for a short last panel (`valid ≤ LANES`).
    /// With SwiGLU weights `acc[j]` is the gate dot and `acc[NR/2 + j]` the up dot.
    ///
    /// # Safety
    /// `S`'s instruction set is available; calls for different tiles may run concurrently.
    unsafe fn emit<S: Simd, const NR: usize, const MV: usize>(
        &self,
        tok0: usize,
        valid: usize,
        c0: usize,
        cols: usize,
        acc: &[[S::V; MV]; NR],
    );

    /// All columns `cols` of tokens `tok0..tok0+valid` are stored (for epilogues applied to
    /// whole row segments).
    ///
    /// # Safety
    /// As for [`Sink::emit`].
    #[inline(always)]
    unsafe fn block_done<S: Simd>(&self, tok0: usize, valid: usize, cols: Range<usize>) {
        let _ = (tok0, valid, cols);
    }
}

/// Row stride of a widened weight tile: `k` rounded up to 16 plus 16, so rows start 64 bytes
/// apart modulo 4 KiB and the `NR` broadcast streams do not share an L1 set.
fn tile_stride(k: usize) -> usize {
    k.next_multiple_of(16) + 16
}

/// Bytes of one widened weight tile (with a packed panel of up to 256 KiB it stays in a 1 MiB L2).
const TILE_BYTES: usize = 384 << 10;

/// Output columns per weight block for rows of `k` (`halves` = 2 for SwiGLU), a multiple of
/// the `g = NR / halves` columns one kernel call produces.
pub(crate) fn block_cols(k: usize, g: usize, halves: usize) -> usize {
    let rows = TILE_BYTES / 4 / tile_stride(k) / halves;
    (rows / g).max(1) * g
}

/// Output columns `cols` for the panels `panels` of `xp` (packed by [`pack_panels`] with width
/// `MV·LANES`, `tokens` valid tokens in all), single-threaded: widens bf16 weights into a
/// [`Buf::Tile`] (f32 are read in place), prefetches the next block (`cols.end..`, or `w.then`
/// after the last) and hands every `NR × MV·LANES` tile to `sink`.
pub(crate) fn panel_block<S: Simd, const NR: usize, const MV: usize, K: Sink>(
    xp: &[f32],
    tokens: usize,
    w: PanelW,
    cols: Range<usize>,
    panels: Range<usize>,
    sink: &K,
) {
    let (k, p, nc) = (w.k, MV * S::LANES, cols.len());
    let halves = if w.up.is_some() { 2 } else { 1 };
    let g = NR / halves;
    if nc == 0 || panels.is_empty() {
        return;
    }
    assert!(NR.is_multiple_of(halves) && xp.len() >= panels.end * k * p && tokens > (panels.end - 1) * p);
    assert!(w.gate.len() >= cols.end * k && w.up.is_none_or(|u| u.len() >= cols.end * k));
    // f32 weights are read in place (the hardware prefetcher streams the NR rows while the
    // kernel runs; measured as fast as a padded copy); bf16 blocks are widened into the tile.
    let direct = [Some(w.gate), w.up].into_iter().flatten().all(|m| matches!(m, WeightRef::F32(_)));
    let ldt = if direct { 0 } else { tile_stride(k) };
    with_buf(Buf::Tile, halves * nc * ldt, |tile| {
        // SAFETY: the caller runs this on a CPU with `S`'s instruction set (see `run_panel`).
        unsafe {
            S::enter(
                #[inline(always)]
                || {
                    let src: [*const f32; 2] = [w.gate, w.up.unwrap_or(w.gate)].map(|w| match w {
                        WeightRef::F32(v) => v[cols.start * k..].as_ptr(),
                        WeightRef::Bf16(_) => std::ptr::null(),
                    });
                    for (h, wr) in [Some(w.gate), w.up].into_iter().flatten().enumerate().filter(|_| !direct) {
                        for r in 0..nc {
                            let dst = &mut tile[(h * nc + r) * ldt..][..k];
                            widen_row::<S>(wr.slice((cols.start + r) * k, k), dst);
                        }
                    }
                    // The next block's weight rows (contiguous per half), prefetched into L2 a
                    // little after every kernel call so DRAM streams while this block computes.
                    let mut next = NextBlock::new(w, cols.end, nc, panels.len() * nc.div_ceil(g));
                    for q in panels {
                        let (tok0, xq) = (q * p, xp[q * k * p..].as_ptr());
                        let valid = p.min(tokens - tok0);
                        for g0 in (0..nc).step_by(g) {
                            let gc = g.min(nc - g0);
                            let rows: [*const f32; NR] = std::array::from_fn(|j| {
                                let r = g0 + (j % g).min(gc - 1);
                                if direct {
                                    src[j / g].add(r * k)
                                } else {
                                    tile[((j / g) * nc + r) * ldt..].as_ptr()
                                }
                            });
                            next.step::<S>();
                            if MV > 1 && valid <= S::LANES {
                                // A short last panel (an expert's tail): one vector of tokens.
                                let acc = panel_kernel::<S, NR, 1>(xq, p, rows, k);
                                sink.emit::<S, NR, 1>(tok0, valid, cols.start + g0, gc, &acc);
                            } else {
                                let acc = panel_kernel::<S, NR, MV>(xq, p, rows, k);
                                sink.emit::<S, NR, MV>(tok0, valid, cols.start + g0, gc, &acc);
                            }
                        }
                        sink.block_done::<S>(tok0, valid, cols.clone());
                    }
                },
            )
        }
    })
}

/// Paced L2 prefetch of the weight rows `c0..c0+nc` (clamped to the matrix) of `gate` and `up`.
struct NextBlock {
    /// Byte ranges still to prefetch, per half: (next address, end).
    ranges: [(*const u8, *const u8); 2],
    /// Cache lines per step.
    per_step: usize,
}

impl NextBlock {
    fn new(w: PanelW, c0: usize, nc: usize, steps: usize) -> NextBlock {
        let range = |m: Option<WeightRef>| -> (*const u8, *const u8) {
            let Some(m) = m else { return (std::ptr::null(), std::ptr::null()) };
            let (rows, eb) = (m.len() / w.k.max(1), m.elem_bytes());
            let (a, b) = (c0.min(rows) * w.k * eb, (c0 + nc).min(rows) * w.k * eb);
            let base = match m {
                WeightRef::F32(v) => v.as_ptr() as *const u8,
                WeightRef::Bf16(v) => v.as_ptr() as *const u8,
            };
            (base.wrapping_add(a), base.wrapping_add(b))
        };
        let mut ranges = [range(Some(w.gate)), range(w.up)];
        if let (true, Some(t)) = (ranges[0].0 >= ranges[0].1, w.then) {
            // Last block: the start of the next matrix instead (one tile's worth of rows).
            let (base, len) = match t {
                WeightRef::F32(v) => (v.as_ptr() as *const u8, v.len() * 4),
                WeightRef::Bf16(v) => (v.as_ptr() as *const u8, v.len() * 2),
            };
            let want = TILE_BYTES * t.elem_bytes() / 4;
            ranges = [(base, base.wrapping_add(len.min(want))), (std::ptr::null(), std::ptr::null())];
        }
        let bytes: usize = ranges.iter().map(|(a, b)| *b as usize - *a as usize).sum();
        NextBlock { ranges, per_step: (bytes / 64).div_ceil(steps.max(1)) }
    }

    /// Prefetches the next `per_step` lines.
    #[inline(always)]
    unsafe fn step<S: Simd>(&mut self) {
        let mut left = self.per_step;
        for (a, b) in self.ranges.iter_mut() {
            while left > 0 && *a < *b {
                S::prefetch_l2(*a);
                *a = a.wrapping_add(64);
                left -= 1;
            }
        }
    }
}

/// `dst = w` widened to f32.
#[inline(always)]
unsafe fn widen_row<S: Simd>(w: WeightRef, dst: &mut [f32]) {
    match w {
        WeightRef::F32(w) => dst.copy_from_slice(w),
        WeightRef::Bf16(w) => {
            let (n, l) = (dst.len(), S::LANES);
            assert!(w.len() >= n);
            let mut i = 0;
            while i + l <= n {
                S::store(dst.as_mut_ptr().add(i), S::load_bf16(w.as_ptr().add(i)));
                i += l;
            }
            for t in i..n {
                dst[t] = w[t].to_f32();
            }
        }
    }
}

/// `acc[j][v] = Σ_{t<k} w_j[t] · xp[t·p + v·LANES ..]` (`p ≥ MV·LANES`, the panel width).
///
/// # Safety
/// `xp` covers `k·p` f32, every `w_j` covers `k`; `S`'s instruction set is available.
#[inline(always)]
unsafe fn panel_kernel<S: Simd, const NR: usize, const MV: usize>(
    xp: *const f32,
    p: usize,
    w: [*const f32; NR],
    k: usize,
) -> [[S::V; MV]; NR] {
    let l = S::LANES;
    let mut acc = [[S::zero(); MV]; NR];
    for t in 0..k {
        let mut xv = [S::zero(); MV];
        for (v, xv) in xv.iter_mut().enumerate() {
            *xv = S::load(xp.add(t * p + v * l));
        }
        for j in 0..NR {
            let b = S::splat(*w[j].add(t));
            for v in 0..MV {
                acc[j][v] = S::fma(b, xv[v], acc[j][v]);
            }
        }
    }
    acc
}
