//! Normalisations over the last dim, per row: RMSNorm (plain or zero-centred), residual add fused
//! with RMSNorm, the gated RMSNorm of Gated DeltaNet, and L2 normalisation with a scale
//! (`RmsNorm`, `GatedRmsNorm`, `L2Norm` + `Scale` in the IR). Sums of squares are f32 with
//! vector accumulators.

use super::simd::{dispatch, sum_sq, Simd};
use super::{for_ranges, silu, task_size, HeadLayout, SharedMut};

/// Elements below which a norm stays on the calling thread.
const PAR_MIN_ELEMS: usize = 1 << 16;

/// `out[r] = x[r] · rsqrt(mean(x[r]²) + eps) · (1 + w if zero_centred else w)` for every row.
/// `x`, `out: [rows, d]`, `w: [d]`.
#[allow(clippy::too_many_arguments)]
pub fn rms_norm(x: &[f32], w: &[f32], rows: usize, d: usize, eps: f32, zero_centred: bool, out: &mut [f32]) {
    assert!(x.len() >= rows * d && out.len() >= rows * d && w.len() == d, "rms_norm: x, out [{rows}, {d}], w [{d}]");
    let bias = if zero_centred { 1.0 } else { 0.0 };
    per_rows(rows, d, out, |r, o| {
        let xr = &x[r * d..][..d];
        dispatch!(S => norm_row::<S>(xr, w, bias, inv_rms::<S>(xr, eps), o))
    });
}

/// Residual add fused with RMSNorm: `residual[r] += x[r]` (the new residual stream, written in
/// place), then `out[r] = rms_norm(residual[r])` as in [`rms_norm`].
/// `residual`, `x`, `out: [rows, d]`, `w: [d]`.
#[allow(clippy::too_many_arguments)]
pub fn add_rms_norm(
    residual: &mut [f32],
    x: &[f32],
    w: &[f32],
    rows: usize,
    d: usize,
    eps: f32,
    zero_centred: bool,
    out: &mut [f32],
) {
    assert!(residual.len() >= rows * d && x.len() >= rows * d && out.len() >= rows * d && w.len() == d);
    let bias = if zero_centred { 1.0 } else { 0.0 };
    let res = SharedMut::new(residual);
    per_rows(rows, d, out, |r, o| {
        // SAFETY: row r of the residual belongs to this call of the closure only.
        let rr = unsafe { res.slice(r * d, d) };
        rr.iter_mut().zip(&x[r * d..][..d]).for_each(|(a, &b)| *a += b);
        dispatch!(S => norm_row::<S>(rr, w, bias, inv_rms::<S>(rr, eps), o))
    });
}

/// Gated RMSNorm: `out[r] = w · (x[r] · rsqrt(mean(x[r]²) + eps)) · silu(z[r])` (plain `w`).
/// `x`, `z`, `out: [rows, d]`, `w: [d]`.
pub fn gated_rms_norm(x: &[f32], z: &[f32], w: &[f32], rows: usize, d: usize, eps: f32, out: &mut [f32]) {
    assert!(x.len() >= rows * d && z.len() >= rows * d && out.len() >= rows * d && w.len() == d);
    per_rows(rows, d, out, |r, o| {
        let (xr, zr) = (&x[r * d..][..d], &z[r * d..][..d]);
        let inv = dispatch!(S => inv_rms::<S>(xr, eps));
        for (((o, &xv), &zv), &wv) in o.iter_mut().zip(xr).zip(zr).zip(w) {
            *o = wv * (xv * inv) * silu(zv);
        }
    });
}

/// In place, per head of `layout` inside `x`: `h ← h · rsqrt(Σ h² + eps) · scale` (eps added to
/// the sum; GDN's q/k l2norm, with `scale = 1/√Dk` for q and 1 for k).
pub fn l2_norm_scale(x: &mut [f32], layout: HeadLayout, eps: f32, scale: f32) {
    layout.check(x.len(), "l2_norm_scale");
    let (n, d) = (layout.tokens * layout.heads, layout.d);
    let buf = SharedMut::new(x);
    let par = n * d >= PAR_MIN_ELEMS;
    for_ranges(n, task_size(n, 16), par, |i0, i1| {
        for i in i0..i1 {
            // SAFETY: heads do not overlap (checked), and each index i is visited once.
            let h = unsafe { buf.slice(layout.at(i / layout.heads, i % layout.heads), d) };
            dispatch!(S => {
                let inv = 1.0 / (sum_sq::<S>(h) + eps).sqrt();
                super::simd::scale::<S>(h, inv * scale)
            });
        }
    });
}

/// In place, per head of `layout` inside `x`: `h ← rms_norm(h) · (1 + w | w)` (q/k norm).
pub fn rms_norm_heads(x: &mut [f32], layout: HeadLayout, w: &[f32], eps: f32, zero_centred: bool) {
    layout.check(x.len(), "rms_norm_heads");
    assert_eq!(w.len(), layout.d, "rms_norm_heads: weight must be [{}]", layout.d);
    let (n, d) = (layout.tokens * layout.heads, layout.d);
    let bias = if zero_centred { 1.0 } else { 0.0 };
    let buf = SharedMut::new(x);
    for_ranges(n, task_size(n, 16), n * d >= PAR_MIN_ELEMS, |i0, i1| {
        for i in i0..i1 {
            // SAFETY: as in `l2_norm_scale`.
            let h = unsafe { buf.slice(layout.at(i / layout.heads, i % layout.heads), d) };
            dispatch!(S => norm_row_in_place::<S>(h, w, bias, eps));
        }
    });
}

/// `1 / sqrt(mean(x²) + eps)`.
#[inline(always)]
pub(crate) fn inv_rms<S: Simd>(x: &[f32], eps: f32) -> f32 {
    1.0 / (sum_sq::<S>(x) / x.len().max(1) as f32 + eps).sqrt()
}

/// `out = x · inv · (w + bias)`.
#[inline(always)]
fn norm_row<S: Simd>(x: &[f32], w: &[f32], bias: f32, inv: f32, out: &mut [f32]) {
    let n = x.len();
    assert!(w.len() >= n && out.len() >= n);
    let l = S::LANES;
    let mut i = 0;
    // SAFETY: every access stays below n.
    unsafe {
        let (vi, vb) = (S::splat(inv), S::splat(bias));
        while i + l <= n {
            let wv = S::add(S::load(w.as_ptr().add(i)), vb);
            S::store(out.as_mut_ptr().add(i), S::mul(S::mul(S::load(x.as_ptr().add(i)), vi), wv));
            i += l;
        }
    }
    for j in i..n {
        out[j] = x[j] * inv * (w[j] + bias);
    }
}

/// `x ← x · rsqrt(mean(x²) + eps) · (w + bias)` in place.
#[inline(always)]
pub(crate) fn norm_row_in_place<S: Simd>(x: &mut [f32], w: &[f32], bias: f32, eps: f32) {
    let inv = inv_rms::<S>(x, eps);
    for (v, &wv) in x.iter_mut().zip(w) {
        *v = *v * inv * (wv + bias);
    }
}

/// Runs `f(r, out_row)` for every row of `out: [rows, d]`, split over threads when large.
fn per_rows(rows: usize, d: usize, out: &mut [f32], f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    let o = SharedMut::new(&mut out[..rows * d]);
    for_ranges(rows, task_size(rows, 4), rows * d >= PAR_MIN_ELEMS, |r0, r1| {
        for r in r0..r1 {
            // SAFETY: each row index is visited once.
            f(r, unsafe { o.slice(r * d, d) });
        }
    });
}
