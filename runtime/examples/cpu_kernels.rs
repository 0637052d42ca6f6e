//! Timings of the CPU kernels against the memory-bandwidth probe.
//!
//! `cargo run --release -p qgc-runtime --example cpu_kernels [-- --quick]`
//!
//! Prints GEMV GB/s (f32 and bf16 weights, decode M=1 and 4, every SIMD level) next to a plain
//! read of the same bytes timed interleaved with it, GEMM GFLOP/s for 512×2048×2048 and the
//! GEMV/GEMM crossover, and attention, delta rule and MoE at Qwen3-Next sizes. Every time is
//! the fastest of several runs: the machine this was tuned on is shared and noisy.

use half::bf16;
use qgc_runtime::cpu::attention::{attention, AttnDims};
use qgc_runtime::cpu::gdn::{gated_delta_rule, GdnDims, GdnInputs};
use qgc_runtime::cpu::linear::{linear, set_gemm_min_rows, Epilogue, GEMM_MIN_ROWS};
use qgc_runtime::cpu::moe::{moe_experts, moe_route, ExpertDims, MoeScratch};
use qgc_runtime::cpu::{bandwidth, detected_level, level, set_level, HeadLayout, Level, WeightRef};
use std::time::Instant;

/// Fastest of `3·runs` calls of `f` after one warm-up call.
fn time(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..3 * runs)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}

fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

fn to_bf16(v: &[f32]) -> Vec<bf16> {
    v.iter().map(|&x| bf16::from_f32(x)).collect()
}

fn as_bytes<'a>(w: WeightRef<'a>) -> &'a [u8] {
    match w {
        // SAFETY: plain old data viewed as bytes.
        WeightRef::F32(v) => unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, v.len() * 4) },
        WeightRef::Bf16(v) => unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, v.len() * 2) },
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    println!("level {:?}, {} threads", level(), rayon::current_num_threads());
    let bw = bandwidth::probe(if quick { 128 << 20 } else { 512 << 20 }, 15);
    println!(
        "bandwidth probe ({} MiB, median/best of 15): copy {:.1}/{:.1} GB/s, read {:.1}/{:.1} GB/s",
        bw.bytes >> 20,
        bw.copy_gbs,
        bw.copy_best_gbs,
        bw.read_gbs,
        bw.read_best_gbs
    );
    gemv_bench(if quick { 32768 } else { 151936 });
    set_level(detected_level());
    gemm_bench();
    attention_bench();
    gdn_bench();
    moe_bench(bw.read_best_gbs);
}

/// Decode GEMV over a `[n, 2048]` matrix, each level, f32 and bf16, vs a read pass of its bytes.
fn gemv_bench(n: usize) {
    let k = 2048;
    let x = rand_vec(4 * k, 1);
    let wf = rand_vec(n * k, 2);
    let wb = to_bf16(&wf);
    let mut y = vec![0.0f32; 4 * n];
    for lv in [Level::Avx512, Level::Avx2, Level::Scalar] {
        if set_level(lv) != lv {
            continue;
        }
        for (m, name, w) in [
            (1, "f32", WeightRef::F32(&wf)),
            (1, "bf16", WeightRef::Bf16(&wb)),
            (4, "f32", WeightRef::F32(&wf)),
            (4, "bf16", WeightRef::Bf16(&wb)),
        ] {
            let bytes = (n * k * w.elem_bytes()) as f64;
            // Interleaved with a plain read of the same bytes, so both see the same neighbours.
            let (mut tg, mut tr) = (f64::MAX, f64::MAX);
            for _ in 0..3 {
                tg = tg.min(time(3, || linear(&x, w, m, k, n, Epilogue::Plain, &mut y)));
                tr = tr.min(time(3, || {
                    std::hint::black_box(bandwidth::read_pass(as_bytes(w)));
                }));
            }
            println!(
                "{lv:?} GEMV M={m} {k}x{n} {name}: {:.2} ms, {:.1} GB/s; read pass {:.1} GB/s; ratio {:.0}%",
                tg * 1e3,
                bytes / tg / 1e9,
                bytes / tr / 1e9,
                100.0 * tr / tg
            );
        }
    }
}

/// Prefill GEMM 512×2048×2048 and the GEMV/GEMM crossover in M.
fn gemm_bench() {
    let (m, k, n) = (512usize, 2048usize, 2048usize);
    let x = rand_vec(m * k, 3);
    let wf = rand_vec(n * k, 4);
    let wb = to_bf16(&wf);
    let mut y = vec![0.0f32; m * n];
    let threads = rayon::current_num_threads();
    let flops = 2.0 * (m * n * k) as f64;
    let tf = time(5, || linear(&x, WeightRef::F32(&wf), m, k, n, Epilogue::Plain, &mut y));
    let tb = time(5, || linear(&x, WeightRef::Bf16(&wb), m, k, n, Epilogue::Plain, &mut y));
    let (ys, xs, ws) = (y.as_mut_ptr(), x.as_ptr(), wf.as_ptr());
    // SAFETY: the pointers cover [m, n], [m, k] and [n, k] with the strides given.
    let tg = time(5, || unsafe {
        let p = gemm::Parallelism::Rayon(threads);
        gemm::gemm(
            m, n, k, ys, 1, n as isize, false, xs, 1, k as isize, ws, k as isize, 1, 1.0f32, 1.0f32, false, false,
            false, p,
        )
    });
    println!(
        "GEMM {m}x{k}x{n}: linear f32 {:.1} GFLOP/s, bf16 {:.1} GFLOP/s; gemm crate alone (f32, rayon) {:.1} GFLOP/s",
        flops / tf / 1e9,
        flops / tb / 1e9,
        flops / tg / 1e9
    );
    for m in [8usize, 32, 64, 128, 256, 512] {
        for (name, w) in [("f32", WeightRef::F32(&wf)), ("bf16", WeightRef::Bf16(&wb))] {
            let fl = 2.0 * (m * n * k) as f64;
            let (mut tg, mut tv) = (f64::MAX, f64::MAX);
            for _ in 0..3 {
                set_gemm_min_rows(1);
                tg = tg.min(time(3, || linear(&x, w, m, k, n, Epilogue::Plain, &mut y)));
                set_gemm_min_rows(usize::MAX);
                tv = tv.min(time(3, || linear(&x, w, m, k, n, Epilogue::Plain, &mut y)));
            }
            set_gemm_min_rows(GEMM_MIN_ROWS);
            println!(
                "  {name} M={m}: gemm path {:.1} GFLOP/s, blocked gemv path {:.1} GFLOP/s",
                fl / tg / 1e9,
                fl / tv / 1e9
            );
        }
    }
}

/// Attention with 16 q heads, 2 kv heads, head dim 256: decode over 4096 and a 512 prefill.
fn attention_bench() {
    let (nq, nkv, d) = (16usize, 2usize, 256usize);
    for (s, past) in [(1usize, 4095usize), (512, 0)] {
        let cap = past + s;
        let (kc, vc, q) = (rand_vec(nkv * cap * d, 5), rand_vec(nkv * cap * d, 6), rand_vec(s * nq * d, 7));
        let pos: Vec<i32> = (0..s).map(|t| (past + t) as i32).collect();
        let mut out = vec![0.0f32; s * nq * d];
        let dims = AttnDims { batch: 1, s, q_heads: nq, kv_heads: nkv, d, dv: d, past, capacity: cap };
        let ql = HeadLayout::dense(s, nq, d);
        let tm = time(5, || attention(&q, ql, &kc, &vc, dims, &pos, 0.0625, None, &mut out).expect("attention"));
        let pairs: f64 = (0..s).map(|t| (past + t + 1) as f64).sum::<f64>() * nq as f64;
        let kv_bytes = (2 * nkv * cap * d * 4) as f64;
        let (gf, gb) = (4.0 * pairs * d as f64 / tm / 1e9, kv_bytes / tm / 1e9);
        println!("attention S={s} P={past}: {:.3} ms, {gf:.1} GFLOP/s, KV read {gb:.1} GB/s", tm * 1e3);
    }
}

/// The gated delta rule with Hk 16, Hv 32, Dk = Dv = 128: one decode step and a 512 prefill.
fn gdn_bench() {
    let (hk, hv, dk, dv) = (16usize, 32usize, 128usize, 128usize);
    for s in [1usize, 512] {
        let width = 2 * hk * dk + hv * dv;
        let buf: Vec<f32> = rand_vec(s * width, 8).iter().map(|v| v * 0.1).collect();
        let ql = HeadLayout { tokens: s, heads: hk, d: dk, token_stride: width, head_stride: dk, offset: 0 };
        let kl = HeadLayout { offset: hk * dk, ..ql };
        let vl = HeadLayout { tokens: s, heads: hv, d: dv, token_stride: width, head_stride: dv, offset: 2 * hk * dk };
        let g: Vec<f32> = rand_vec(s * hv, 9).iter().map(|v| v - 0.5).collect();
        let beta: Vec<f32> = rand_vec(s * hv, 10).iter().map(|v| v + 0.5).collect();
        let (mut state, mut out) = (vec![0.0f32; hv * dk * dv], vec![0.0f32; s * hv * dv]);
        let inp = GdnInputs { q: &buf, ql, k: &buf, kl, v: &buf, vl, g: &g, beta: &beta };
        let dims = GdnDims { batch: 1, s, hk, hv, dk, dv };
        let tm = time(5, || gated_delta_rule(inp, dims, &mut state, &mut out));
        let flops = 6.0 * (s * hv * dk * dv) as f64;
        let state_gbs = (2 * s * hv * dk * dv * 4) as f64 / tm / 1e9;
        println!(
            "delta rule S={s}: {:.3} ms, {:.1} GFLOP/s, state read+write {state_gbs:.1} GB/s (recurrent, f32 state)",
            tm * 1e3,
            flops / tm / 1e9
        );
    }
}

/// Routed experts: 64 experts of width 512, hidden 2048, top-10, bf16; decode and a 512 prefill.
fn moe_bench(read_gbs: f64) {
    let (e, i, h, k) = (64usize, 512usize, 2048usize, 10usize);
    let gu: Vec<bf16> = rand_vec(e * 2 * i * h, 11).iter().map(|&v| bf16::from_f32(v * 0.04)).collect();
    let dn: Vec<bf16> = rand_vec(e * h * i, 12).iter().map(|&v| bf16::from_f32(v * 0.04)).collect();
    let dims = ExpertDims { experts: e, hidden: h, inter: i, top_k: k };
    let mut scratch = MoeScratch::new();
    for t in [1usize, 512] {
        let (x, logits) = (rand_vec(t * h, 13), rand_vec(t * e, 14));
        let (mut w, mut ids) = (vec![0.0f32; t * k], vec![0i32; t * k]);
        moe_route(&logits, t, e, k, true, &mut w, &mut ids);
        let mut out = vec![0.0f32; t * h];
        let (gu, dn) = (WeightRef::Bf16(&gu), WeightRef::Bf16(&dn));
        let tm = time(5, || moe_experts(&x, t, &w, &ids, gu, dn, dims, &mut scratch, &mut out).expect("moe"));
        let mut active = ids.clone();
        active.sort();
        active.dedup();
        let bytes = (active.len() * 3 * i * h * 2) as f64;
        let flops = (t * k * 3 * i * h * 2) as f64;
        println!(
            "moe experts T={t} ({} of {e} active): {:.3} ms, weights {:.1} GB/s ({:.0}% of best read), {:.1} GFLOP/s",
            active.len(),
            tm * 1e3,
            bytes / tm / 1e9,
            100.0 * bytes / tm / 1e9 / read_gbs,
            flops / tm / 1e9
        );
    }
}
