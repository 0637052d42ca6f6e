//! Small elementwise kernels the compiler may call instead of generating a loop: sigmoid-gate
//! and SiLU-gate multiplies and in-place adds (`Mul`∘`Sigmoid`, `Mul`∘`Silu`, `Add`).

use super::simd::dispatch;
use super::{sigmoid, silu};

/// `x ⊙= σ(g)`; `g` has `x`'s length (elementwise) or `x.len() / row` entries with
/// `row = x.len() / g.len()` (one gate per row of `x`).
pub fn sigmoid_mul(x: &mut [f32], g: &[f32]) {
    if g.len() == x.len() {
        x.iter_mut().zip(g).for_each(|(v, &gv)| *v *= sigmoid(gv));
        return;
    }
    assert!(!g.is_empty() && x.len().is_multiple_of(g.len()), "sigmoid_mul: {} gates for {} values", g.len(), x.len());
    let row = x.len() / g.len();
    x.chunks_mut(row).zip(g).for_each(|(r, &gv)| {
        let s = sigmoid(gv);
        r.iter_mut().for_each(|v| *v *= s);
    });
}

/// `out = silu(a) ⊙ b` (SwiGLU on separate gate and up values); all of one length.
pub fn silu_mul(a: &[f32], b: &[f32], out: &mut [f32]) {
    assert!(a.len() == b.len() && out.len() == a.len(), "silu_mul: lengths differ");
    out.iter_mut().zip(a).zip(b).for_each(|((o, &x), &y)| *o = silu(x) * y);
}

/// `y += x`; `x` has `y`'s length, or divides it (broadcast over leading rows).
pub fn add_in_place(y: &mut [f32], x: &[f32]) {
    assert!(
        !x.is_empty() && y.len().is_multiple_of(x.len()),
        "add_in_place: {} does not broadcast to {}",
        x.len(),
        y.len()
    );
    y.chunks_mut(x.len()).for_each(|r| r.iter_mut().zip(x).for_each(|(a, &b)| *a += b));
}

/// `x ← e^x` elementwise with the vectorised exponential the kernels use (within ~2 ulp of
/// `f32::exp`; below −87.3, including −∞, exactly 0).
pub fn exp_in_place(x: &mut [f32]) {
    dispatch!(S => super::simd::exp_in_place::<S>(x))
}
