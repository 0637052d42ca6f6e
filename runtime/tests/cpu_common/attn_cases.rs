//! KV cache and attention against `KvAppend` and `Attention` (+ the sigmoid output gate).

use super::*;
use qgc_runtime::cpu::attention::{attention, kv_append, AttnDims, KvShape};
use qgc_runtime::cpu::{CpuError, HeadLayout};

/// One attention layer step: a cache holding `past` entries per row (capacity `past + s + 3`),
/// `s` new tokens appended, then attention with the fused output gate, for `b` rows where row r
/// has `pads[r]` left-padding slots. Checks the cache contents against `KvAppend` and the output
/// against `Attention` → `Sigmoid` → `Mul`.
#[allow(clippy::too_many_arguments)]
pub fn attn_case(
    b: usize,
    s: usize,
    past: usize,
    nq: usize,
    nkv: usize,
    d: usize,
    pads: &[usize],
    seed: u64,
    tol: f32,
) -> f32 {
    let mut rng = Rng::new(seed);
    let dv = d + 1; // value dim differs from the key dim to catch mixed-up strides
    let cap = past + s + 3;
    let (ks, vs) = (
        KvShape { batch: b, kv_heads: nkv, capacity: cap, d },
        KvShape { batch: b, kv_heads: nkv, capacity: cap, d: dv },
    );
    let old_k = rvec(&mut rng, b * nkv * past * d, -1.0, 1.0);
    let old_v = rvec(&mut rng, b * nkv * past * dv, -1.0, 1.0);
    let (mut kc, mut vc) = (vec![f32::NAN; ks.len()], vec![f32::NAN; vs.len()]);
    for bi in 0..b {
        for h in 0..nkv {
            kc[ks.at(bi, h, 0)..][..past * d].copy_from_slice(&old_k[(bi * nkv + h) * past * d..][..past * d]);
            vc[vs.at(bi, h, 0)..][..past * dv].copy_from_slice(&old_v[(bi * nkv + h) * past * dv..][..past * dv]);
        }
    }
    // q and gate interleaved per head as in Qwen3-Next's q_proj: [T, Nq, q(d) | gate(dv)].
    let per = d + dv;
    let qg = rvec(&mut rng, b * s * nq * per, -1.5, 1.5);
    let ql = HeadLayout { tokens: b * s, heads: nq, d, token_stride: nq * per, head_stride: per, offset: 0 };
    let gl = HeadLayout { d: dv, offset: d, ..ql };
    let (nk, nv) = (rvec(&mut rng, b * s * nkv * d, -1.0, 1.0), rvec(&mut rng, b * s * nkv * dv, -1.0, 1.0));
    kv_append(&mut kc, ks, past, &nk, HeadLayout::dense(b * s, nkv, d)).expect("room");
    kv_append(&mut vc, vs, past, &nv, HeadLayout::dense(b * s, nkv, dv)).expect("room");
    let kt = eval1(Op::KvAppend, &[&t(&[b, nkv, past, d], old_k), &t(&[b, s, nkv, d], nk)]);
    let vt = eval1(Op::KvAppend, &[&t(&[b, nkv, past, dv], old_v), &t(&[b, s, nkv, dv], nv)]);
    check("kv_append k", &valid(&kc, ks, past + s), f(&kt), 0.0);
    check("kv_append v", &valid(&vc, vs, past + s), f(&vt), 0.0);
    let pos: Vec<i32> = (0..b * s).map(|i| (past + i % s) as i32 - pads[i / s] as i32).collect();
    let dims = AttnDims { batch: b, s, q_heads: nq, kv_heads: nkv, d, dv, past, capacity: cap };
    let scale = 1.0 / (d as f32).sqrt();
    let mut out = vec![f32::NAN; b * s * nq * dv];
    attention(&qg, ql, &kc, &vc, dims, &pos, scale, Some((&qg, gl)), &mut out).expect("valid positions");
    let qt = t(&[b, s, nq, d], super::norm_cases::gather(&qg, ql));
    let o = eval1(Op::Attention { scale }, &[&qt, &kt, &vt, &ti(&[b, s], pos)]);
    let g = eval1(Op::Sigmoid, &[&t(&[b, s, nq, dv], super::norm_cases::gather(&qg, gl))]);
    let want = eval1(Op::Mul, &[&o, &g]);
    check(&format!("attention+gate b={b} s={s} P={past} nq={nq} nkv={nkv} d={d} pads={pads:?}"), &out, f(&want), tol)
}

/// The first `len` entries of every (row, head) of a cache, densely `[B, Nkv, len, d]`.
fn valid(c: &[f32], sh: KvShape, len: usize) -> Vec<f32> {
    (0..sh.batch * sh.kv_heads)
        .flat_map(|i| c[sh.at(i / sh.kv_heads, i % sh.kv_heads, 0)..][..len * sh.d].to_vec())
        .collect()
}

/// Errors: a full cache, positions that are not consecutive or run past the cache.
pub fn attn_errors() {
    let ks = KvShape { batch: 1, kv_heads: 1, capacity: 4, d: 2 };
    let mut kc = vec![0.0; ks.len()];
    let new = vec![1.0; 3 * 2];
    assert_eq!(
        kv_append(&mut kc, ks, 2, &new, HeadLayout::dense(3, 1, 2)),
        Err(CpuError::CacheFull { len: 2, capacity: 4, new: 3 })
    );
    let dims = AttnDims { batch: 1, s: 2, q_heads: 1, kv_heads: 1, d: 2, dv: 2, past: 2, capacity: 4 };
    let q = vec![0.5; 4];
    let mut out = vec![0.0; 4];
    for pos in [[2, 4], [3, 4]] {
        let r = attention(&q, HeadLayout::dense(2, 1, 2), &kc, &kc, dims, &pos, 1.0, None, &mut out);
        assert!(matches!(r, Err(CpuError::Positions { row: 0, .. })), "{pos:?}: {r:?}");
    }
}
