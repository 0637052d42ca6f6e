//! `cpu::moe` (router, routed experts) and `cpu::embed` against the interpreter.

mod cpu_common;

use cpu_common::moe_cases::*;
use cpu_common::*;
use half::bf16;
use qgc_runtime::cpu::embed::embed;
use qgc_runtime::cpu::moe::{moe_experts, ExpertDims, MoeScratch};
use qgc_runtime::cpu::{CpuError, WeightRef};

const TOL: f32 = 1e-5;

#[test]
fn router_top_k_with_ties() {
    for (t, e, k) in [(1, 1, 1), (3, 7, 3), (50, 64, 8), (2, 512, 10)] {
        for renorm in [true, false] {
            route_case(t, e, k, renorm, (t * e + k) as u64, 1e-6);
        }
    }
}

#[test]
fn experts_decode_and_grouped_prefill() {
    in_pools(|_| {
        // (tokens, experts, width, hidden, top_k)
        for (t, e, i, h, k) in
            [(1, 1, 1, 1, 1), (1, 16, 24, 50, 4), (3, 7, 5, 33, 3), (50, 16, 24, 50, 4), (70, 8, 16, 40, 2)]
        {
            for bf in [false, true] {
                experts_case(t, e, i, h, k, bf, (t + e + i) as u64, TOL);
            }
        }
    });
}

#[test]
fn experts_realistic_width() {
    // Qwen3-Next expert shapes (hidden 2048, width 512, top-10) over 12 experts.
    experts_case(1, 12, 512, 2048, 10, true, 1, TOL);
    experts_case(6, 12, 512, 2048, 10, true, 2, TOL);
}

#[test]
fn bad_expert_index_is_an_error() {
    let (gu, dn) = (vec![0.0f32; 2 * 2 * 3], vec![0.0f32; 2 * 3]);
    let dims = ExpertDims { experts: 2, hidden: 3, inter: 1, top_k: 1 };
    let mut out = vec![0.0; 3];
    let r = moe_experts(
        &[1.0; 3],
        1,
        &[1.0],
        &[2],
        WeightRef::F32(&gu),
        WeightRef::F32(&dn),
        dims,
        &mut MoeScratch::new(),
        &mut out,
    );
    assert_eq!(r, Err(CpuError::ExpertIndex { id: 2, token: 0, experts: 2 }));
}

#[test]
fn embedding_gather() {
    let (v, h) = (50, 783);
    let mut rng = Rng::new(5);
    let (t32, tb) = bf16_pair(&rvec(&mut rng, v * h, -1.0, 1.0));
    let ids = vec![0, 49, 7, 7, 3];
    let want = eval1(Op::Embed, &[&t(&[v, h], t32.clone()), &ti(&[1, ids.len()], ids.clone())]);
    let mut out = vec![f32::NAN; ids.len() * h];
    embed(WeightRef::F32(&t32), v, h, &ids, &mut out).expect("ids in range");
    check("embed f32", &out, f(&want), 0.0);
    embed(WeightRef::Bf16(&tb), v, h, &ids, &mut out).expect("ids in range");
    check("embed bf16", &out, f(&want), 0.0);
    let bits: Vec<u16> = tb.iter().map(|b: &bf16| b.to_bits()).collect();
    embed(WeightRef::bf16_bits(&bits), v, h, &ids, &mut out).expect("ids in range");
    check("embed bf16 bits", &out, f(&want), 0.0);
    let r = embed(WeightRef::F32(&t32), v, h, &[1, 50], &mut out);
    assert_eq!(r, Err(CpuError::TokenId { id: 50, index: 1, vocab: 50 }));
    assert!(embed(WeightRef::F32(&t32), v, h, &[-1], &mut out).is_err());
}
