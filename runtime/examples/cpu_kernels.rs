//! Timings of the CPU kernels against the memory-bandwidth probe.
//!
//! `cargo run --release -p qgc-runtime --example cpu_kernels [-- --quick | --prefill | --gdn | --context]`
//!
//! Prints GEMV GB/s (f32 and bf16 weights, decode M=1 and 4, every SIMD level) next to a plain
//! read of the same bytes timed interleaved with it, GEMM GFLOP/s for 512×2048×2048 and the
//! GEMV/GEMM crossover, and attention, delta rule and MoE at Qwen3-Next sizes. Every time is
//! the fastest of several runs: the machine this was tuned on is shared and noisy.

use half::bf16;
use qgc_runtime::cpu::attention::{attention, AttnDims};
use qgc_runtime::cpu::gdn::{gated_delta_rule, GdnDims, GdnInputs};
use qgc_runtime::cpu::gdn_chunked::{gated_delta_rule_chunked, use_chunked, CHUNKED_MIN_TOKENS, DEFAULT_CHUNK};
use qgc_runtime::cpu::linear::{linear, set_gemm_min_rows, Epilogue, GEMM_MIN_ROWS};
use qgc_runtime::cpu::moe::{moe_experts, moe_route, set_panel_min_rows, ExpertDims, MoeScratch, PANEL_MIN_ROWS};
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
    if std::env::args().any(|a| a == "--prefill") {
        prefill_bench();
        return;
    }
    if std::env::args().any(|a| a == "--context") {
        context_bench();
        return;
    }
    if std::env::args().any(|a| a == "--gdn") {
        gdn_chunked_bench(if quick { 5 } else { 15 });
        return;
    }
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
    gdn_chunked_bench(if quick { 5 } else { 15 });
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

/// One decode step's attention at the `small` benchmark config's sizes (8 query heads, 2 kv
/// heads, head dim 128) over caches of 512 and 8,192 tokens stored with spare capacity, as a
/// session keeps them: what decode at a long context adds per attention layer.
fn context_bench() {
    let (nq, nkv, d) = (8usize, 2usize, 128usize);
    for past in [512usize, 8192] {
        let cap = 2 * past;
        let (kc, vc, q) = (rand_vec(nkv * cap * d, 5), rand_vec(nkv * cap * d, 6), rand_vec(nq * d, 7));
        let pos = [past as i32];
        let mut out = vec![0.0f32; nq * d];
        let dims = AttnDims { batch: 1, s: 1, q_heads: nq, kv_heads: nkv, d, dv: d, past, capacity: cap };
        let ql = HeadLayout::dense(1, nq, d);
        let tm = time(10, || attention(&q, ql, &kc, &vc, dims, &pos, 0.0884, None, &mut out).expect("attention"));
        let kv_bytes = (2 * nkv * (past + 1) * d * 4) as f64;
        println!("decode attention, {past} cached tokens: {:.3} ms, KV read {:.1} GB/s", tm * 1e3, kv_bytes / tm / 1e9);
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

/// Median wall time of `f(v)` for each variant `v < N`, over `runs` rounds that call every
/// variant once in turn (after one warm-up round), so all of them see the same neighbours on a
/// shared machine.
fn medians<const N: usize>(runs: usize, mut f: impl FnMut(usize)) -> [f64; N] {
    (0..N).for_each(&mut f);
    let mut ts = [(); N].map(|_| Vec::with_capacity(runs));
    for _ in 0..runs {
        for (v, t) in ts.iter_mut().enumerate() {
            let s = Instant::now();
            f(v);
            t.push(s.elapsed().as_secs_f64());
        }
    }
    ts.map(|mut t| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    })
}

/// `--gdn` (and part of the full run): the delta rule, recurrent vs chunked with C = 16, 32, 64,
/// median of `runs` interleaved rounds, at the benchmark model's GDN (B 1, Hk 8, Hv 16, Dk =
/// Dv = 128) for S from 1 to 512 and at Qwen3-Next-80B's (Hk 16, Hv 32) for S = 512. `*` marks
/// the form `gdn_chunked::gated_delta_rule_auto` runs; the last column is recurrent / that form.
/// `QGC_GDN_S=<S>` keeps only that S (to repeat one row).
fn gdn_chunked_bench(runs: usize) {
    let chunks = [16usize, 32, 64];
    println!(
        "delta rule, median of {runs} (ms): recurrent | chunked C={chunks:?}; default C={DEFAULT_CHUNK}, chunked from S={CHUNKED_MIN_TOKENS}"
    );
    let cases = [(8usize, 16usize, [1usize, 4, 8, 16, 32, 64, 128, 256, 512].as_slice()), (16, 32, [512].as_slice())];
    for (hk, hv, ss) in cases {
        let (dk, dv) = (128usize, 128usize);
        for &s in ss {
            if std::env::var("QGC_GDN_S").is_ok_and(|v| v != s.to_string()) {
                continue;
            }
            let width = 2 * hk * dk + hv * dv;
            let buf: Vec<f32> = rand_vec(s * width, 8).iter().map(|v| v * 0.1).collect();
            let ql = HeadLayout { tokens: s, heads: hk, d: dk, token_stride: width, head_stride: dk, offset: 0 };
            let kl = HeadLayout { offset: hk * dk, ..ql };
            let vl = HeadLayout { heads: hv, d: dv, head_stride: dv, offset: 2 * hk * dk, ..ql };
            let g: Vec<f32> = rand_vec(s * hv, 9).iter().map(|v| v - 0.5).collect();
            let beta: Vec<f32> = rand_vec(s * hv, 10).iter().map(|v| v + 0.5).collect();
            let inp = GdnInputs { q: &buf, ql, k: &buf, kl, v: &buf, vl, g: &g, beta: &beta };
            let dims = GdnDims { batch: 1, s, hk, hv, dk, dv };
            // One state and output for all variants: the memory footprint of a model's call.
            let (mut state, mut out) = (rand_vec(hv * dk * dv, 11), vec![0.0f32; s * hv * dv]);
            let t: [f64; 4] = medians(runs, |v| match v {
                0 => gated_delta_rule(inp, dims, &mut state, &mut out),
                _ => gated_delta_rule_chunked(inp, dims, chunks[v - 1], &mut state, &mut out),
            });
            let mark = |v: usize| match (v, use_chunked(s)) {
                (0, false) => "*",
                (v, true) if v > 0 && chunks[v - 1] == DEFAULT_CHUNK => "*",
                _ => " ",
            };
            let picked =
                if use_chunked(s) { t[1 + chunks.iter().position(|&c| c == DEFAULT_CHUNK).unwrap_or(0)] } else { t[0] };
            println!(
                "  Hk {hk:2} Hv {hv:2} S={s:4}: {:7.3}{} | {:7.3}{} {:7.3}{} {:7.3}{}  ({:.2}x)",
                t[0] * 1e3,
                mark(0),
                t[1] * 1e3,
                mark(1),
                t[2] * 1e3,
                mark(2),
                t[3] * 1e3,
                mark(3),
                t[0] / picked
            );
        }
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

/// CPU time of all this process's threads so far, in seconds (`CLOCK_PROCESS_CPUTIME_ID`).
fn cpu_seconds() -> f64 {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: plain libc call (std links libc) writing into `ts`; 2 = CLOCK_PROCESS_CPUTIME_ID.
    if unsafe { clock_gettime(2, &mut ts) } != 0 {
        return 0.0;
    }
    ts.sec as f64 + ts.nsec as f64 * 1e-9
}

/// Wall-clock median and best, and median CPU time over all threads, of `runs` calls of `f`
/// (after one warm-up call), in seconds. On a loaded machine the CPU time still shows what the
/// kernel costs; wall time shows what it got.
fn median_best(runs: usize, mut f: impl FnMut()) -> (f64, f64, f64) {
    f();
    let (mut ts, mut cs): (Vec<f64>, Vec<f64>) = (0..runs)
        .map(|_| {
            let (s, c) = (Instant::now(), cpu_seconds());
            f();
            (s.elapsed().as_secs_f64(), cpu_seconds() - c)
        })
        .unzip();
    ts.sort_by(f64::total_cmp);
    cs.sort_by(f64::total_cmp);
    (ts[ts.len() / 2], ts[0], cs[cs.len() / 2])
}

/// `--prefill`: GFLOP/s of every matmul of the benchmark model (`/work/shared/bench/small`:
/// hidden 1024, 6 GDN + 2 attention layers, 64 experts of width 256, top-8, shared expert 256)
/// at 512 prefill tokens, f32 and bf16 weights: wall-clock median (best) and, as `cpu`, FLOPs
/// per CPU-second of all threads × threads (what the wall clock would give on an idle machine
/// with perfect scaling). Then the tokens/s those matmuls alone would allow.
fn prefill_bench() {
    let m = 512usize;
    let threads = rayon::current_num_threads();
    println!("prefill matmuls, M={m}, level {:?}, {threads} threads; GFLOP/s median (best) [cpu]", level());
    // (name, K, N, SwiGLU, count per model)
    let shapes: [(&str, usize, usize, bool, usize); 8] = [
        ("gdn qkvz 1024->6144", 1024, 6144, false, 6),
        ("gdn ba 1024->32", 1024, 32, false, 6),
        ("gdn out 2048->1024", 2048, 1024, false, 6),
        ("attn q+gate 1024->2048", 1024, 2048, false, 2),
        ("attn k|v 1024->256", 1024, 256, false, 4),
        ("attn o 1024->1024", 1024, 1024, false, 2),
        ("shared gate_up 1024->2x256 swiglu", 1024, 256, true, 8),
        ("shared down 256->1024", 256, 1024, false, 8),
    ];
    let only = std::env::var("QGC_BENCH_ONLY").unwrap_or_default();
    let x = rand_vec(m * 2048, 21);
    let mut y = vec![0.0f32; m * 6144];
    let runs = 9;
    // Per weight type: model time from wall medians, and from CPU time / threads.
    let mut model = [[0.0f64; 2]; 2];
    let fmt = |flops: f64, (med, best, cpu): (f64, f64, f64)| {
        format!("{:6.1} ({:6.1}) [{:6.1}]", flops / med / 1e9, flops / best / 1e9, flops * threads as f64 / cpu / 1e9)
    };
    for (name, k, n, swiglu, count) in shapes {
        if !name.contains(only.as_str()) {
            continue;
        }
        let rows = if swiglu { 2 * n } else { n };
        let wf: Vec<f32> = rand_vec(rows * k, 22).iter().map(|v| v * 0.05).collect();
        let wb = to_bf16(&wf);
        let flops = 2.0 * (m * rows * k) as f64;
        let epi = if swiglu { Epilogue::SwiGlu } else { Epilogue::Plain };
        let mut line = format!("  {name:<34}");
        for (j, w) in [WeightRef::F32(&wf), WeightRef::Bf16(&wb)].into_iter().enumerate() {
            let r = median_best(runs, || linear(&x, w, m, k, n, epi, &mut y));
            model[j][0] += r.0 * count as f64;
            model[j][1] += r.2 / threads as f64 * count as f64;
            line += &format!(" {}: {}", ["f32", "bf16"][j], fmt(flops, r));
        }
        println!("{line}");
    }
    let (e, i, h, k) = (64usize, 256usize, 1024usize, 8usize);
    let gu32: Vec<f32> = rand_vec(e * 2 * i * h, 23).iter().map(|v| v * 0.04).collect();
    let dn32: Vec<f32> = rand_vec(e * h * i, 24).iter().map(|v| v * 0.04).collect();
    let (gub, dnb) = (to_bf16(&gu32), to_bf16(&dn32));
    let dims = ExpertDims { experts: e, hidden: h, inter: i, top_k: k };
    let logits = rand_vec(m * e, 25);
    let (mut w, mut ids) = (vec![0.0f32; m * k], vec![0i32; m * k]);
    moe_route(&logits, m, e, k, true, &mut w, &mut ids);
    let mut scratch = MoeScratch::new();
    let mut out = vec![0.0f32; m * h];
    let flops = (m * k * 3 * i * h * 2) as f64;
    let name = format!("moe experts T={m} E={e} top{k} I={i}");
    if name.contains(only.as_str()) {
        let mut line = format!("  {name:<34}");
        let both = [(WeightRef::F32(&gu32), WeightRef::F32(&dn32)), (WeightRef::Bf16(&gub), WeightRef::Bf16(&dnb))];
        for (j, (gu, dn)) in both.into_iter().enumerate() {
            let r = median_best(runs, || {
                moe_experts(&x, m, &w, &ids, gu, dn, dims, &mut scratch, &mut out).expect("moe");
            });
            model[j][0] += r.0 * 8.0;
            model[j][1] += r.2 / threads as f64 * 8.0;
            line += &format!(" {}: {}", ["f32", "bf16"][j], fmt(flops, r));
        }
        println!("{line}");
    }
    if only == "crossover" {
        crossover(&x, &mut y);
        moe_crossover(&x, (WeightRef::Bf16(&gub), WeightRef::Bf16(&dnb)), dims, &mut out);
    }
    for (j, name) in ["f32", "bf16"].into_iter().enumerate() {
        let [wall, cpu] = model[j];
        println!(
            "  {name} matmuls of 8 layers at {m} tokens: {:.1} ms wall ({:.0} tok/s), {:.1} ms cpu/threads ({:.0} tok/s)",
            wall * 1e3,
            m as f64 / wall,
            cpu * 1e3,
            m as f64 / cpu
        );
    }
}

/// GEMV path vs panel GEMM by token rows M (`QGC_BENCH_ONLY=crossover`), CPU-time GFLOP/s.
fn crossover(x: &[f32], y: &mut [f32]) {
    let threads = rayon::current_num_threads() as f64;
    for (k, n, swiglu) in [(1024usize, 2048usize, false), (1024, 256, true), (256, 1024, false)] {
        let rows = if swiglu { 2 * n } else { n };
        let wf: Vec<f32> = rand_vec(rows * k, 26).iter().map(|v| v * 0.05).collect();
        let wb = to_bf16(&wf);
        let epi = if swiglu { Epilogue::SwiGlu } else { Epilogue::Plain };
        for m in [4usize, 8, 12, 16, 24, 32, 48, 64, 96, 128] {
            let flops = 2.0 * (m * rows * k) as f64;
            let mut line = format!("  crossover {k}->{n}{} M={m:<3}", if swiglu { " swiglu" } else { "" });
            for (name, w) in [("f32", WeightRef::F32(&wf)), ("bf16", WeightRef::Bf16(&wb))] {
                let mut r = [0.0; 2];
                for (j, min_rows) in [usize::MAX, 1].into_iter().enumerate() {
                    set_gemm_min_rows(min_rows);
                    let (_, _, cpu) = median_best(15, || linear(x, w, m, k, n, epi, y));
                    r[j] = flops * threads / cpu / 1e9;
                }
                line += &format!(" {name}: gemv {:6.1} panel {:6.1}", r[0], r[1]);
            }
            set_gemm_min_rows(GEMM_MIN_ROWS);
            println!("{line}");
        }
    }
}

/// MoE GEMV path vs panel path by tokens (mean rows per expert `T·k/E`), CPU-time GFLOP/s.
fn moe_crossover(x: &[f32], (gu, dn): (WeightRef, WeightRef), dims: ExpertDims, out: &mut [f32]) {
    let threads = rayon::current_num_threads() as f64;
    let ExpertDims { experts: e, hidden: h, inter: i, top_k: k } = dims;
    let mut scratch = MoeScratch::new();
    for t in [16usize, 32, 48, 64, 96, 128, 256] {
        let logits = rand_vec(t * e, 27);
        let (mut w, mut ids) = (vec![0.0f32; t * k], vec![0i32; t * k]);
        moe_route(&logits, t, e, k, true, &mut w, &mut ids);
        let flops = (t * k * 3 * i * h * 2) as f64;
        let mut r = [0.0; 2];
        for (j, min_rows) in [usize::MAX, 1].into_iter().enumerate() {
            set_panel_min_rows(min_rows);
            let (_, _, cpu) = median_best(9, || {
                moe_experts(x, t, &w, &ids, gu, dn, dims, &mut scratch, out).expect("moe");
            });
            r[j] = flops * threads / cpu / 1e9;
        }
        set_panel_min_rows(PANEL_MIN_ROWS);
        println!(
            "  moe crossover bf16 T={t:<3} ({:4.1} rows/expert): gemv {:6.1} panel {:6.1}",
            (t * k) as f64 / e as f64,
            r[0],
            r[1]
        );
    }
}
