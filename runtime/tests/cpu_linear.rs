//! `cpu::linear` (GEMV and GEMM paths, f32 and bf16 weights, every epilogue) against the
//! interpreter's `MatMul`, at odd sizes and a realistic one, on 1 and 3 threads.

mod cpu_common;

use cpu_common::linear_cases::{linear_case, Epi, ALL};
use cpu_common::*;
use qgc_runtime::cpu::linear::GEMM_MIN_ROWS;

const TOL: f32 = 1e-5;

#[test]
fn gemv_odd_sizes_every_epilogue() {
    in_pools(|_| {
        for (m, k, n) in [(1, 1, 1), (1, 3, 50), (3, 50, 783), (4, 783, 3), (2, 17, 9), (7, 40, 70)] {
            for epi in ALL {
                for bf in [false, true] {
                    linear_case(m, k, n, bf, epi, (m * 1000 + k + n) as u64, TOL);
                }
            }
        }
    });
}

#[test]
fn gemm_odd_sizes_every_epilogue() {
    let m = GEMM_MIN_ROWS + 3;
    in_pools(|_| {
        for (k, n) in [(1, 3), (50, 783), (783, 50), (33, 17)] {
            for epi in ALL {
                for bf in [false, true] {
                    linear_case(m, k, n, bf, epi, (k * 7 + n) as u64, TOL);
                }
            }
        }
    });
}

#[test]
fn realistic_sizes() {
    // Decode: hidden 2048 -> 512 expert SwiGLU (1024 rows), and the shared-expert gate form.
    linear_case(1, 2048, 512, true, Epi::SwiGlu, 1, TOL);
    linear_case(1, 2048, 1000, false, Epi::Residual, 2, TOL);
    linear_case(4, 2048, 300, true, Epi::Plain, 3, TOL);
    // Prefill-shaped GEMM with bf16 tiles crossing the K tile boundary.
    linear_case(GEMM_MIN_ROWS + 1, 2048, 300, true, Epi::Plain, 4, TOL);
    linear_case(GEMM_MIN_ROWS, 1000, 260, false, Epi::SwiGlu, 5, TOL);
}

#[test]
fn a_perturbed_result_fails_the_comparison() {
    // The comparator itself must catch a small error at the tolerance used above.
    let want = [1.0f32, -2.0, 3.0];
    let got = [1.0f32, -2.0, 3.0 + 1e-4];
    assert!(rel_err(&got, &want) > TOL);
    assert!(rel_err(&[f32::NAN, 0.0, 0.0], &want).is_nan());
}
