//! Router and routed experts against `MoeRoute` and `MoeExperts`; embedding against `Embed`.

use super::*;
use qgc_runtime::cpu::moe::{moe_experts, moe_route, ExpertDims, MoeScratch};
use qgc_runtime::cpu::WeightRef;

/// `moe_route` on `[t, e]` logits (with some exact ties) against `MoeRoute`; experts must match
/// exactly, weights within `tol`.
pub fn route_case(t: usize, e: usize, k: usize, renorm: bool, seed: u64, tol: f32) -> f32 {
    let mut rng = Rng::new(seed);
    let mut logits = rvec(&mut rng, t * e, -4.0, 4.0);
    for i in (0..t * e).step_by(5) {
        logits[i] = 1.0; // ties: lower index first
    }
    let r = eval(Op::MoeRoute { top_k: k, renormalize: renorm }, &[&t_(&[1, t, e], logits.clone())]);
    let (mut w, mut ids) = (vec![0.0; t * k], vec![0; t * k]);
    moe_route(&logits, t, e, k, renorm, &mut w, &mut ids);
    assert_eq!(ids, r[1].as_i32().expect("i32"), "moe_route experts t={t} e={e} k={k}");
    check(&format!("moe_route t={t} e={e} k={k} renorm={renorm}"), &w, f(&r[0]), tol)
}

fn t_(shape: &[usize], v: Vec<f32>) -> Tensor {
    t(shape, v)
}

/// `moe_experts` for `t` tokens routed by a real router over `e` experts of width `i`, hidden
/// `h`, f32 or bf16 weights, against `MoeExperts` (gate and up split from the fused layout).
#[allow(clippy::too_many_arguments)]
pub fn experts_case(t: usize, e: usize, i: usize, h: usize, k: usize, use_bf16: bool, seed: u64, tol: f32) -> f32 {
    let mut rng = Rng::new(seed);
    let x = rvec(&mut rng, t * h, -1.0, 1.0);
    let a = (3.0 / h as f32).sqrt();
    let (gu32, gub) = bf16_pair(&rvec(&mut rng, e * 2 * i * h, -a, a));
    let (dn32, dnb) = bf16_pair(&rvec(&mut rng, e * h * i, -a, a));
    let logits = rvec(&mut rng, t * e, -2.0, 2.0);
    let (mut w, mut ids) = (vec![0.0; t * k], vec![0; t * k]);
    moe_route(&logits, t, e, k, true, &mut w, &mut ids);
    let (gu, dn) = if use_bf16 {
        (WeightRef::Bf16(&gub), WeightRef::Bf16(&dnb))
    } else {
        (WeightRef::F32(&gu32), WeightRef::F32(&dn32))
    };
    let mut out = vec![f32::NAN; t * h];
    let mut scratch = MoeScratch::new();
    let dims = ExpertDims { experts: e, hidden: h, inter: i, top_k: k };
    moe_experts(&x, t, &w, &ids, gu, dn, dims, &mut scratch, &mut out).expect("valid experts");
    // Reuse of the scratch with fewer tokens must not leak old rows.
    if t > 1 {
        let mut out1 = vec![0.0; h];
        moe_experts(&x, 1, &w, &ids, gu, dn, dims, &mut scratch, &mut out1).expect("valid experts");
        let mut fresh = vec![0.0; h];
        moe_experts(&x, 1, &w, &ids, gu, dn, dims, &mut MoeScratch::new(), &mut fresh).expect("valid experts");
        check("moe_experts scratch reuse", &out1, &fresh, 0.0);
    }
    let (gate, up): (Vec<f32>, Vec<f32>) = {
        let (mut g, mut u) = (Vec::new(), Vec::new());
        for ex in 0..e {
            g.extend_from_slice(&gu32[ex * 2 * i * h..][..i * h]);
            u.extend_from_slice(&gu32[(ex * 2 + 1) * i * h..][..i * h]);
        }
        (g, u)
    };
    let ins = [
        t_(&[1, t, h], x),
        t_(&[1, t, k], w),
        Tensor::i32(vec![1, t, k], ids),
        t_(&[e, i, h], gate),
        t_(&[e, i, h], up),
        t_(&[e, h, i], dn32),
    ];
    let want = eval1(Op::MoeExperts, &ins.iter().collect::<Vec<_>>());
    let what = format!("moe_experts t={t} e={e} i={i} h={h} k={k} {}", if use_bf16 { "bf16" } else { "f32" });
    check(&what, &out, f(&want), tol)
}
