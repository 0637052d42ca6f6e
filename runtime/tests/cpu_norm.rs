//! `cpu::norm` and `cpu::rope` against the interpreter at odd and realistic sizes.

mod cpu_common;

use cpu_common::norm_cases::*;
use cpu_common::*;

const TOL: f32 = 1e-5;

#[test]
fn rms_norms() {
    in_pools(|_| {
        for (rows, d) in [(1, 1), (3, 50), (50, 783), (1, 2048), (40, 2048)] {
            for zc in [false, true] {
                rms_case(rows, d, zc, (rows * d) as u64, TOL);
            }
            gated_case(rows, d, d as u64, TOL);
        }
    });
}

#[test]
fn head_norms_in_strided_buffers() {
    in_pools(|_| {
        for (tok, heads, d) in [(1, 1, 1), (3, 2, 50), (50, 3, 7), (2, 16, 128), (130, 16, 128)] {
            heads_case(tok, heads, d, (tok + heads + d) as u64, TOL);
        }
    });
}

#[test]
fn rope_partial_odd_and_negative_positions() {
    in_pools(|_| {
        // (b, s, n, d, rotary_dim, first position)
        for (b, s, n, d, rot, p0) in
            [(1, 1, 1, 2, 2, 0), (2, 3, 2, 50, 7, 5), (1, 50, 3, 16, 16, 783), (2, 5, 2, 9, 5, 1)]
        {
            rope_case(b, s, n, d, rot, p0, (s * n * d) as u64, TOL);
        }
        // Qwen3-Next: head 256, rotary 64 (factor 0.25), 16 heads.
        rope_case(1, 40, 16, 256, 64, 1000, 7, TOL);
    });
}
