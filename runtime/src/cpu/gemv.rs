//! The GEMV microkernel for decode-sized matmuls: `MR` (1..=4) token rows against a block of
//! weight rows, streaming each weight row once and widening bf16 to f32 in registers.

use super::simd::{Elem, Simd};

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
