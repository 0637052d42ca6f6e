//! The matmul microkernels behind [`linear`](super::linear) and [`moe`](super::moe):
//!
//! - **GEMV** ([`GemvRows`]) for decode-sized matmuls: `MR` (1..=4) token rows against a block
//!   of weight rows, streaming each weight row once and widening bf16 to f32 in registers, every
//!   output summed in one order whatever the number of token rows (batch-invariant decode).
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

/// Token rows per GEMV tile at most.
pub(crate) const MR_MAX: usize = 4;

/// The GEMV over one block of weight rows: `out[m·ld + r] = Σ_{t<k} x[m·k + t] · w[r·k + t]` for
/// token rows `m < tokens` and weight rows `r < rows` (`x: [tokens, k]`, `w: [rows, k]`), the
/// columns taken `kc` at a time (a multiple of 64, or all of them).
///
/// **One summation order.** Every output is summed the same way whatever the number of token
/// rows, the register blocking (`MR` token rows × `NR` weight rows per kernel), the column
/// blocking and the thread that computes it: one vector accumulator `acc = fma(w[t..t+LANES],
/// x[t..t+LANES], acc)` over the whole vectors of the row from column 0 up (kept in `acc`, not
/// summed, between column blocks), its lanes added by [`Simd::hsum`], then the remaining columns
/// one by one in order. So a token row's result does not depend on how many token rows the call
/// has (decode is batch-invariant) nor on the thread count.
///
/// **Memory.** The `NR` weight rows of a kernel call come from `NR` lanes that each walk a
/// contiguous run of rows front to back (lane `j` takes rows `j·q .. (j+1)·q`), so DRAM sees
/// `NR` long sequential streams; every group of up to [`MR_MAX`] token rows runs over a set of
/// `NR` rows while it is in L1, so each weight is read from DRAM once per call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GemvRows<'a, W> {
    pub x: &'a [f32],
    pub tokens: usize,
    pub w: &'a [W],
    pub rows: usize,
    pub k: usize,
    pub kc: usize,
    pub ld: usize,
}

impl<W: Elem> GemvRows<'_, W> {
    /// Runs the block, column block by column block. `acc` holds `tokens·ld·LANES` f32 of
    /// scratch (the vector accumulators between column blocks); results go to `out: [tokens, ld]`.
    #[inline(always)]
    pub(crate) fn run<S: Simd>(&self, acc: &mut [f32], out: &mut [f32]) {
        let (l, k, ld) = (S::LANES, self.k, self.ld);
        let kv = k / l * l;
        assert!(self.x.len() >= self.tokens * k && self.w.len() >= self.rows * k && self.rows <= ld);
        assert!(acc.len() >= self.tokens * ld * l && out.len() >= self.tokens.saturating_sub(1) * ld + self.rows);
        let kc = if self.kc >= kv { kv.max(l) } else { self.kc.next_multiple_of(4 * l) };
        for k0 in (0..kv).step_by(kc) {
            let cols = k0..(k0 + kc).min(kv);
            // The blocking never changes a result: MR·NR accumulators, NR weight vectors and one
            // x vector fit the registers (AVX2, 16: 8 + 4 + 1 or 12 + 3 + 1; AVX-512, 32: up to
            // 16 + 4 + 1).
            if self.tokens <= 2 || S::REGS >= 32 {
                self.rows_pass::<S, 4>(cols, acc);
            } else {
                self.rows_pass::<S, 3>(cols, acc);
            }
        }
        for m in 0..self.tokens {
            let xr = &self.x[m * k..][..k];
            for r in 0..self.rows {
                let wr = &self.w[r * k..][..k];
                // SAFETY: acc covers tokens·ld·LANES (asserted); `S` is available (caller).
                let mut s = if kv == 0 { 0.0 } else { unsafe { S::hsum(S::load(acc[(m * ld + r) * l..].as_ptr())) } };
                for t in kv..k {
                    s += wr[t].to_f32() * xr[t];
                }
                out[m * ld + r] = s;
            }
        }
    }

    /// Columns `cols` (whole vectors) of every output: the rows in `NR` lanes (then the rest
    /// one at a time), each set of rows run by every group of token rows in turn.
    #[inline(always)]
    fn rows_pass<S: Simd, const NR: usize>(&self, cols: Range<usize>, acc: &mut [f32]) {
        let q = self.rows / NR;
        for t in 0..q {
            let mut rows = [0usize; NR];
            for (j, r) in rows.iter_mut().enumerate() {
                *r = j * q + t;
            }
            self.groups::<S, NR>(rows, cols.clone(), acc);
        }
        for r in NR * q..self.rows {
            self.groups::<S, 1>([r], cols.clone(), acc);
        }
    }

    /// Weight rows `rows` against every group of token rows.
    #[inline(always)]
    fn groups<S: Simd, const NR: usize>(&self, rows: [usize; NR], cols: Range<usize>, acc: &mut [f32]) {
        for m0 in (0..self.tokens).step_by(MR_MAX) {
            match (self.tokens - m0).min(MR_MAX) {
                1 => self.kernel::<S, 1, NR>(m0, rows, cols.clone(), acc),
                2 => self.kernel::<S, 2, NR>(m0, rows, cols.clone(), acc),
                3 => self.kernel::<S, 3, NR>(m0, rows, cols.clone(), acc),
                _ => self.kernel::<S, 4, NR>(m0, rows, cols.clone(), acc),
            }
        }
    }

    /// Token rows `m0..m0+MR` against weight rows `rows`, columns `cols`: accumulators start at
    /// zero for the first column block, else from `acc`, and go back to `acc`.
    #[inline(always)]
    fn kernel<S: Simd, const MR: usize, const NR: usize>(
        &self,
        m0: usize,
        rows: [usize; NR],
        cols: Range<usize>,
        acc: &mut [f32],
    ) {
        let (l, k, ld) = (S::LANES, self.k, self.ld);
        let mut xp = [std::ptr::null::<f32>(); MR];
        for (m, p) in xp.iter_mut().enumerate() {
            *p = self.x[(m0 + m) * k + cols.start..][..cols.len()].as_ptr();
        }
        let mut wp = [std::ptr::null::<W>(); NR];
        for (p, &r) in wp.iter_mut().zip(&rows) {
            *p = self.w[r * k + cols.start..][..cols.len()].as_ptr();
        }
        let end = (m0 + MR - 1) * ld + rows.iter().copied().max().unwrap_or(0) + 1;
        assert!(acc.len() >= end * l);
        // SAFETY: every x and w pointer covers `cols.len()` elements (sliced above), acc every
        // slot (asserted), and `S` is available (the caller runs inside its dispatch).
        unsafe {
            block_kernel::<S, W, MR, NR>(xp, wp, cols.len(), cols.start == 0, acc.as_mut_ptr(), (l, k), |m, j| {
                (m0 + m) * ld + rows[j]
            })
        }
    }
}

/// `acc[m][j] += Σ_i x_m[i]·w_j[i]` lane-wise over `len` columns (a multiple of `LANES`), the
/// accumulators read from and written back to `acc + slot(m, j)·LANES` (zero when `first`);
/// `next`: elements from `w_j` to the row lane `j` reads next.
///
/// # Safety
/// Every pointer covers `len` elements, `acc` every slot; `S`'s instruction set is available.
#[inline(always)]
unsafe fn block_kernel<S: Simd, W: Elem, const MR: usize, const NR: usize>(
    xp: [*const f32; MR],
    wp: [*const W; NR],
    len: usize,
    first: bool,
    acc_buf: *mut f32,
    (l, next): (usize, usize),
    slot: impl Fn(usize, usize) -> usize,
) {
    let pf = PREFETCH_BYTES / std::mem::size_of::<W>();
    let mut acc = [[S::zero(); NR]; MR];
    if !first {
        for (m, row) in acc.iter_mut().enumerate() {
            for (j, a) in row.iter_mut().enumerate() {
                *a = S::load(acc_buf.add(slot(m, j) * l));
            }
        }
    }
    let mut i = 0;
    // Four vectors per row per iteration (each accumulator still takes them in column order),
    // with one prefetch per weight row.
    while i + 4 * l <= len {
        // Past the end of this column block, the same place in the row this lane reads next.
        let ahead = if i + pf < len { i + pf } else { i + pf - len + next };
        for p in wp {
            S::prefetch(p.wrapping_add(ahead));
        }
        for u in 0..4 {
            fma_step::<S, W, MR, NR>(&xp, &wp, i + u * l, &mut acc);
        }
        i += 4 * l;
    }
    while i + l <= len {
        fma_step::<S, W, MR, NR>(&xp, &wp, i, &mut acc);
        i += l;
    }
    for (m, row) in acc.iter().enumerate() {
        for (j, &a) in row.iter().enumerate() {
            S::store(acc_buf.add(slot(m, j) * l), a);
        }
    }
}

/// `acc[m][j] = fma(w_j[i..i+LANES], x_m[i..i+LANES], acc[m][j])`.
///
/// # Safety
/// As for [`block_kernel`], with `i + LANES ≤ len`.
#[inline(always)]
unsafe fn fma_step<S: Simd, W: Elem, const MR: usize, const NR: usize>(
    xp: &[*const f32; MR],
    wp: &[*const W; NR],
    i: usize,
    acc: &mut [[S::V; NR]; MR],
) {
    let mut wv = [S::zero(); NR];
    for j in 0..NR {
        wv[j] = W::load::<S>(wp[j].add(i));
    }
    for m in 0..MR {
        let xv = S::load(xp[m].add(i));
        for j in 0..NR {
            acc[m][j] = S::fma(wv[j], xv, acc[m][j]);
        }
    }
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
