//! The panel GEMM path of `cpu::linear` (prefill, `M ≥ GEMM_MIN_ROWS`) against the interpreter's
//! `MatMul`: every SIMD level, f32 and bf16 weights, every epilogue, token counts that leave
//! full, half-full (one vector) and single-token last panels, weight blocks split across tasks,
//! and the same bits on any number of threads. One test, because the level is process-wide.

mod cpu_common;

use cpu_common::linear_cases::{linear_case, Epi, ALL};
use cpu_common::*;
use qgc_runtime::cpu::linear::{linear, Epilogue, GEMM_MIN_ROWS};
use qgc_runtime::cpu::{detected_level, set_level, Level, WeightRef};

const TOL: f32 = 1e-5;

#[test]
fn panel_path_every_level_and_thread_count() {
    for want in [Level::Scalar, Level::Avx2, Level::Avx512] {
        if want > detected_level() {
            eprintln!("skipping {want:?}: not supported by this CPU");
            continue;
        }
        assert_eq!(set_level(want), want);
        in_pools(|_| {
            // M: one vector exactly, a full panel plus one token, a short last panel, odd.
            for (m, k, n) in [(GEMM_MIN_ROWS, 1, 1), (33, 3, 50), (47, 50, 13), (70, 783, 3), (17, 0, 5)] {
                for epi in ALL {
                    for bf in [false, true] {
                        linear_case(m, k, n, bf, epi, (m * 31 + k + n) as u64, TOL);
                    }
                }
            }
        });
        // K = 2048: weight blocks of a few dozen columns, so N = 300 spans several blocks.
        for bf in [false, true] {
            linear_case(37, 2048, 300, bf, Epi::SwiGlu, 7, TOL);
            linear_case(100, 2048, 130, bf, Epi::Plain, 8, TOL);
        }
    }
    set_level(detected_level());
    same_bits_on_any_thread_count();
}

/// Each output is one kernel's dot over the whole K, so the result cannot depend on how the
/// work is split between threads.
fn same_bits_on_any_thread_count() {
    let (m, k, n) = (100, 300, 200);
    let mut rng = Rng::new(3);
    let x = rvec(&mut rng, m * k, -1.0, 1.0);
    let (_, wb) = bf16_pair(&rvec(&mut rng, 2 * n * k, -1.0, 1.0));
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
        let mut y = vec![0.0f32; m * n];
        pool.install(|| linear(&x, WeightRef::Bf16(&wb), m, k, n, Epilogue::SwiGlu, &mut y));
        y
    };
    let one = run(1);
    for threads in [2, 3, 5] {
        assert!(run(threads) == one, "{threads} threads changed the result bits");
    }
}
