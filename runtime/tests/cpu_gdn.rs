//! `cpu::gdn` (causal conv + state, gate chain, gated delta rule) against the interpreter,
//! including continuation from a cached state and strong decay.

mod cpu_common;

use cpu_common::gdn_cases::*;
use cpu_common::*;
use qgc_runtime::cpu::gdn::{causal_conv1d, gated_delta_rule, GdnDims, GdnInputs};

const TOL: f32 = 1e-5;

#[test]
fn conv_odd_sizes_and_short_continuations() {
    in_pools(|_| {
        // s < K-1 keeps part of the old state; s = 1 is decode.
        for (b, s, c, k) in [(1, 1, 1, 4), (2, 1, 50, 4), (1, 2, 3, 4), (2, 50, 783, 4), (1, 3, 9, 1), (1, 7, 5, 2)] {
            conv_case(b, s, c, k, (s * c + k) as u64, TOL);
        }
        conv_case(1, 64, 8192, 4, 9, TOL);
    });
}

#[test]
fn gate_chain() {
    for (rows, hk, hv) in [(1, 1, 1), (3, 2, 4), (50, 16, 32)] {
        gates_case(rows, hk, hv, (rows + hv) as u64, TOL);
    }
}

#[test]
fn delta_rule_mild_and_strong_decay() {
    in_pools(|_| {
        for (b, s, hk, hv, dk, dv) in
            [(1, 1, 1, 1, 1, 1), (1, 3, 1, 2, 7, 5), (2, 50, 2, 4, 9, 33), (1, 130, 1, 1, 16, 16)]
        {
            for g_min in [-0.1, -10.0] {
                rule_case(RuleCase { b, s, hk, hv, dk, dv, g_min }, (s + dk) as u64, TOL);
            }
        }
    });
}

#[test]
fn delta_rule_realistic_heads() {
    // Qwen3-Next shapes, fewer heads: Hk 2, Hv 4 (r = 2), Dk = Dv = 128; decode and prefill.
    rule_case(RuleCase { b: 1, s: 1, hk: 2, hv: 4, dk: 128, dv: 128, g_min: -10.0 }, 1, TOL);
    rule_case(RuleCase { b: 1, s: 64, hk: 2, hv: 4, dk: 128, dv: 128, g_min: -3.0 }, 2, TOL);
}

#[test]
fn split_runs_continue_exactly() {
    // Conv + delta rule over 150 tokens equal 70 then 80 tokens through the carried states.
    let c = RuleCase { b: 1, s: 150, hk: 2, hv: 4, dk: 16, dv: 8, g_min: -5.0 };
    let inp = rule_inputs(c, 11);
    let dims = |s| GdnDims { batch: 1, s, hk: c.hk, hv: c.hv, dk: c.dk, dv: c.dv };
    let gi = inp.whole();
    let (mut st_all, mut out_all) = (inp.state.clone(), vec![0.0; 150 * c.hv * c.dv]);
    gated_delta_rule(gi, dims(150), &mut st_all, &mut out_all);
    let mut st = inp.state.clone();
    let mut out = vec![0.0; 150 * c.hv * c.dv];
    let w = inp.ql.token_stride;
    for (t0, n) in [(0usize, 70usize), (70, 80)] {
        let part = GdnInputs {
            q: &inp.buf[t0 * w..],
            k: &inp.buf[t0 * w..],
            v: &inp.buf[t0 * w..],
            ql: qgc_runtime::cpu::HeadLayout { tokens: n, ..inp.ql },
            kl: qgc_runtime::cpu::HeadLayout { tokens: n, ..inp.kl },
            vl: qgc_runtime::cpu::HeadLayout { tokens: n, ..inp.vl },
            g: &inp.g[t0 * c.hv..],
            beta: &inp.beta[t0 * c.hv..],
        };
        gated_delta_rule(part, dims(n), &mut st, &mut out[t0 * c.hv * c.dv..]);
    }
    check("delta rule 70+80 vs 150", &out, &out_all, 0.0);
    check("delta rule 70+80 vs 150 state", &st, &st_all, 0.0);
    let (x, w) = (rvec(&mut Rng::new(3), 150 * 20, -1.0, 1.0), rvec(&mut Rng::new(4), 20 * 4, -1.0, 1.0));
    let (mut s1, mut y1) = (vec![0.0; 20 * 3], vec![0.0; 150 * 20]);
    causal_conv1d(&x, &w, &mut s1, 1, 150, 20, 4, true, &mut y1);
    let (mut s2, mut y2) = (vec![0.0; 20 * 3], vec![0.0; 150 * 20]);
    causal_conv1d(&x, &w, &mut s2, 1, 70, 20, 4, true, &mut y2);
    causal_conv1d(&x[70 * 20..], &w, &mut s2, 1, 80, 20, 4, true, &mut y2[70 * 20..]);
    check("conv 70+80 vs 150", &y2, &y1, 0.0);
    check("conv 70+80 vs 150 state", &s2, &s1, 0.0);
}
