//! Norms and RoPE against `RmsNorm`, `GatedRmsNorm`, `L2Norm`+`Scale`, `Rope`.

use super::*;
use qgc_runtime::cpu::norm::{add_rms_norm, gated_rms_norm, l2_norm_scale, rms_norm, rms_norm_heads};
use qgc_runtime::cpu::rope::{qk_norm_rope, rope, rope_half, rope_table};
use qgc_runtime::cpu::HeadLayout;

const EPS: f32 = 1e-6;

/// `rms_norm` and `add_rms_norm` on `[rows, d]`.
pub fn rms_case(rows: usize, d: usize, zc: bool, seed: u64, tol: f32) -> f32 {
    let mut rng = Rng::new(seed);
    let (x, r, w) =
        (rvec(&mut rng, rows * d, -2.0, 2.0), rvec(&mut rng, rows * d, -2.0, 2.0), rvec(&mut rng, d, -0.5, 1.5));
    let op = Op::RmsNorm { eps: EPS, zero_centred: zc };
    let want = eval1(op.clone(), &[&t(&[rows, d], x.clone()), &t(&[d], w.clone())]);
    let mut out = vec![0.0; rows * d];
    rms_norm(&x, &w, rows, d, EPS, zc, &mut out);
    let e1 = check(&format!("rms_norm rows={rows} d={d} zc={zc}"), &out, f(&want), tol);
    // Fused residual add: sum written back, norm of the sum.
    let sum = eval1(Op::Add, &[&t(&[rows, d], r.clone()), &t(&[rows, d], x.clone())]);
    let want = eval1(op, &[&sum, &t(&[d], w.clone())]);
    let mut res = r;
    add_rms_norm(&mut res, &x, &w, rows, d, EPS, zc, &mut out);
    check(&format!("add_rms_norm sum rows={rows} d={d}"), &res, f(&sum), 0.0);
    let e2 = check(&format!("add_rms_norm rows={rows} d={d} zc={zc}"), &out, f(&want), tol);
    e1.max(e2)
}

/// `gated_rms_norm` on `[rows, d]`.
pub fn gated_case(rows: usize, d: usize, seed: u64, tol: f32) -> f32 {
    let mut rng = Rng::new(seed);
    let (x, z, w) =
        (rvec(&mut rng, rows * d, -2.0, 2.0), rvec(&mut rng, rows * d, -4.0, 4.0), rvec(&mut rng, d, 0.5, 1.5));
    let want = eval1(
        Op::GatedRmsNorm { eps: EPS },
        &[&t(&[rows, d], x.clone()), &t(&[rows, d], z.clone()), &t(&[d], w.clone())],
    );
    let mut out = vec![0.0; rows * d];
    gated_rms_norm(&x, &z, &w, rows, d, EPS, &mut out);
    check(&format!("gated_rms_norm rows={rows} d={d}"), &out, f(&want), tol)
}

/// `l2_norm_scale` and `rms_norm_heads` on heads inside a wider buffer: `[tokens, heads, d]`
/// placed at head stride `d + 5` and an offset of 3.
pub fn heads_case(tokens: usize, heads: usize, d: usize, seed: u64, tol: f32) -> f32 {
    let mut rng = Rng::new(seed);
    let l = HeadLayout { tokens, heads, d, token_stride: heads * (d + 5), head_stride: d + 5, offset: 3 };
    let buf = rvec(&mut rng, l.min_len() + 2, -2.0, 2.0);
    let dense: Vec<f32> = (0..tokens * heads).flat_map(|i| buf[l.at(i / heads, i % heads)..][..d].to_vec()).collect();
    let xt = t(&[tokens, heads, d], dense);
    let scale = 1.0 / (d as f32).sqrt();
    let want = eval1(Op::Scale { by: scale }, &[&eval1(Op::L2Norm { eps: EPS }, &[&xt])]);
    let mut b = buf.clone();
    l2_norm_scale(&mut b, l, EPS, scale);
    let e1 = check(&format!("l2_norm_scale t={tokens} h={heads} d={d}"), &gather(&b, l), f(&want), tol);
    untouched(&buf, &b, l);
    let w = rvec(&mut rng, d, -0.3, 0.3);
    let want = eval1(Op::RmsNorm { eps: EPS, zero_centred: true }, &[&xt, &t(&[d], w.clone())]);
    let mut b = buf.clone();
    rms_norm_heads(&mut b, l, &w, EPS, true);
    untouched(&buf, &b, l);
    e1.max(check(&format!("rms_norm_heads t={tokens} h={heads} d={d}"), &gather(&b, l), f(&want), tol))
}

/// The heads of `l` in `buf`, densely.
pub fn gather(buf: &[f32], l: HeadLayout) -> Vec<f32> {
    (0..l.tokens * l.heads).flat_map(|i| buf[l.at(i / l.heads, i % l.heads)..][..l.d].to_vec()).collect()
}

/// Elements outside the heads of `l` are unchanged.
pub fn untouched(before: &[f32], after: &[f32], l: HeadLayout) {
    let mut inside = vec![false; before.len()];
    for i in 0..l.tokens * l.heads {
        inside[l.at(i / l.heads, i % l.heads)..][..l.d].iter_mut().for_each(|v| *v = true);
    }
    for (i, ((a, b), ins)) in before.iter().zip(after).zip(inside).enumerate() {
        assert!(ins || a == b, "element {i} outside the heads changed");
    }
}

/// `rope` and `qk_norm_rope` on `[b, s, n, d]` heads (strided, as q inside `[T, N, q|gate]`)
/// against `Rope` (and `RmsNorm` before it), positions `p0..` per row with row 1 shifted by −2.
#[allow(clippy::too_many_arguments)]
pub fn rope_case(b: usize, s: usize, n: usize, d: usize, rot: usize, p0: i32, seed: u64, tol: f32) -> f32 {
    let mut rng = Rng::new(seed);
    let tokens = b * s;
    let l = HeadLayout { tokens, heads: n, d, token_stride: 2 * n * d, head_stride: 2 * d, offset: 0 };
    let buf = rvec(&mut rng, l.min_len() + d, -2.0, 2.0);
    let pos: Vec<i32> = (0..tokens).map(|i| p0 + (i % s) as i32 - 2 * (i / s) as i32).collect();
    let theta = 1e7;
    let xt = t(&[b, s, n, d], gather(&buf, l));
    let pt = ti(&[b, s], pos.clone());
    let half = rope_half(rot);
    let (mut cos, mut sin) = (vec![0.0; tokens * half], vec![0.0; tokens * half]);
    rope_table(&pos, theta, rot, &mut cos, &mut sin);
    let rope_op = Op::Rope { theta, rotary_dim: rot };
    let want = eval1(rope_op.clone(), &[&xt, &pt]);
    let mut bb = buf.clone();
    rope(&mut bb, l, half, &cos, &sin);
    untouched(&buf, &bb, l);
    let e1 = check(&format!("rope b={b} s={s} n={n} d={d} rot={rot} p0={p0}"), &gather(&bb, l), f(&want), tol);
    let w = rvec(&mut rng, d, -0.3, 0.3);
    let normed = eval1(Op::RmsNorm { eps: EPS, zero_centred: true }, &[&xt, &t(&[d], w.clone())]);
    let want = eval1(rope_op, &[&normed, &pt]);
    let mut bb = buf.clone();
    qk_norm_rope(&mut bb, l, &w, EPS, true, half, &cos, &sin);
    e1.max(check(&format!("qk_norm_rope b={b} s={s} n={n} d={d} rot={rot}"), &gather(&bb, l), f(&want), tol))
}
