//! NeoX (rotate-half) rotary embeddings with HF's partial/odd rotary-dim rule (`Rope` in the IR),
//! and the q/k RMSNorm fused with it.
//!
//! The cos/sin tables are built once per call of an entry point ([`rope_table`]) and shared by
//! every attention layer; the rotation runs in place on heads anywhere in a buffer
//! ([`HeadLayout`]), e.g. the query half of each head of a fused `[T, Nq, q|gate]` projection.

use super::norm::norm_row_in_place;
use super::simd::dispatch;
use super::{for_ranges, task_size, HeadLayout, SharedMut};

/// Frequencies (and rotated pairs) per head: `ceil(rotary_dim / 2)`; HF rotates `2·half` dims
/// (one more than `rotary_dim` when it is odd).
pub fn rope_half(rotary_dim: usize) -> usize {
    rotary_dim.div_ceil(2)
}

/// `cos`, `sin: [T, half]` for `positions: [T]` (all batch rows flattened), `half =
/// rope_half(rotary_dim)`: angle `f32(p) · inv_freq[i]`, `inv_freq[i] = 1 / theta^(2i/rotary_dim)`
/// computed in f32 exactly as `interp::attention::inv_freq` (HF's formula), cos/sin in f32.
pub fn rope_table(positions: &[i32], theta: f64, rotary_dim: usize, cos: &mut [f32], sin: &mut [f32]) {
    let (t, half) = (positions.len(), rope_half(rotary_dim));
    assert!(cos.len() >= t * half && sin.len() >= t * half, "rope_table: cos, sin must be [{t}, {half}]");
    let base = theta as f32;
    let (c, s) = (SharedMut::new(cos), SharedMut::new(sin));
    for_ranges(t, task_size(t, 64), t * half >= 1 << 12, |t0, t1| {
        for i in 0..half {
            let f = 1.0 / base.powf((2 * i) as f32 / rotary_dim as f32);
            for (tt, &p) in positions.iter().enumerate().take(t1).skip(t0) {
                let a = p as f32 * f;
                // SAFETY: tokens t0..t1 belong to this task.
                unsafe {
                    c.slice(tt * half + i, 1)[0] = a.cos();
                    s.slice(tt * half + i, 1)[0] = a.sin();
                }
            }
        }
    });
}

/// In place, every head of `layout` in `x`: `y[i] = x[i]·cos_i − x[i+half]·sin_i`,
/// `y[i+half] = x[i+half]·cos_i + x[i]·sin_i` for `i < half`; dims `2·half..d` pass.
/// `cos`, `sin: [tokens, half]` from [`rope_table`].
pub fn rope(x: &mut [f32], layout: HeadLayout, half: usize, cos: &[f32], sin: &[f32]) {
    heads_op(x, layout, half, cos, sin, "rope", |_| {});
}

/// q/k norm fused with RoPE, in place per head of `layout` in `x`: `h ← rms_norm(h) · (1 + w | w)`
/// (`w: [d]`), then [`rope`].
#[allow(clippy::too_many_arguments)]
pub fn qk_norm_rope(
    x: &mut [f32],
    layout: HeadLayout,
    w: &[f32],
    eps: f32,
    zero_centred: bool,
    half: usize,
    cos: &[f32],
    sin: &[f32],
) {
    assert_eq!(w.len(), layout.d, "qk_norm_rope: weight must be [{}]", layout.d);
    let bias = if zero_centred { 1.0 } else { 0.0 };
    heads_op(x, layout, half, cos, sin, "qk_norm_rope", |h| dispatch!(S => norm_row_in_place::<S>(h, w, bias, eps)));
}

/// Runs `pre` then the rotation on every head, tokens split over threads.
fn heads_op(
    x: &mut [f32],
    layout: HeadLayout,
    half: usize,
    cos: &[f32],
    sin: &[f32],
    what: &str,
    pre: impl Fn(&mut [f32]) + Sync + Send,
) {
    layout.check(x.len(), what);
    let (t, d) = (layout.tokens, layout.d);
    assert!(2 * half <= d, "{what}: rotating {} dims of heads of {d}", 2 * half);
    assert!(cos.len() >= t * half && sin.len() >= t * half, "{what}: cos, sin must be [{t}, {half}]");
    let buf = SharedMut::new(x);
    let par = t * layout.heads * d >= 1 << 15;
    for_ranges(t, task_size(t, 4), par, |t0, t1| {
        for tt in t0..t1 {
            let (c, s) = (&cos[tt * half..][..half], &sin[tt * half..][..half]);
            for h in 0..layout.heads {
                // SAFETY: heads and tokens do not overlap (checked); token tt belongs to this task.
                let head = unsafe { buf.slice(layout.at(tt, h), d) };
                pre(head);
                rotate(head, half, c, s);
            }
        }
    });
}

/// Rotate-half on one head.
#[inline]
fn rotate(h: &mut [f32], half: usize, cos: &[f32], sin: &[f32]) {
    let (lo, hi) = h[..2 * half].split_at_mut(half);
    for (((a, b), &c), &s) in lo.iter_mut().zip(hi.iter_mut()).zip(cos).zip(sin) {
        let (x0, x1) = (*a, *b);
        *a = x0 * c - x1 * s;
        *b = x1 * c + x0 * s;
    }
}
