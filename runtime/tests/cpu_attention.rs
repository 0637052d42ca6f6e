//! `cpu::attention` (KV cache append, causal GQA attention with the output gate) against the
//! interpreter: decode and prefill, continuation after a cached prefix, left-padded rows.

mod cpu_common;

use cpu_common::attn_cases::*;
use cpu_common::*;

const TOL: f32 = 1e-5;

#[test]
fn decode_and_prefill_odd_sizes() {
    in_pools(|_| {
        // (b, s, past, nq, nkv, d)
        for (b, s, past, nq, nkv, d) in
            [(1, 1, 0, 1, 1, 1), (1, 1, 50, 4, 2, 3), (1, 50, 0, 3, 1, 7), (1, 3, 783, 2, 2, 5), (1, 37, 40, 6, 3, 16)]
        {
            attn_case(b, s, past, nq, nkv, d, &vec![0; b], (s + past + d) as u64, TOL);
        }
    });
}

#[test]
fn left_padded_rows() {
    in_pools(|_| {
        // Prefill with row 1 padded by 3 (its first 3 queries see nothing and output 0), then
        // decode steps of padded rows, including a row that is all padding so far.
        attn_case(2, 6, 0, 4, 2, 8, &[0, 3], 1, TOL);
        attn_case(3, 1, 5, 4, 2, 8, &[0, 2, 5], 2, TOL);
        attn_case(2, 4, 7, 2, 1, 9, &[1, 9], 3, TOL);
    });
}

#[test]
fn realistic_qwen3_next_shapes() {
    // 16 q heads, 2 kv heads, head dim 256: a decode step over 300 cached positions and a
    // 64-token prefill continuing after 40.
    attn_case(1, 1, 300, 16, 2, 256, &[0], 4, TOL);
    attn_case(1, 64, 40, 16, 2, 256, &[0], 5, TOL);
}

#[test]
fn bad_positions_and_full_cache_are_errors() {
    attn_errors();
}
