//! Every SIMD level this machine has (scalar, AVX2+FMA, AVX-512) computes the same functions:
//! the core kernel cases run once per level. One test, because the level is process-wide.

mod cpu_common;

use cpu_common::attn_cases::attn_case;
use cpu_common::gdn_cases::{conv_case, rule_case, RuleCase};
use cpu_common::linear_cases::{linear_case, Epi};
use cpu_common::moe_cases::experts_case;
use cpu_common::norm_cases::{gated_case, heads_case, rms_case, rope_case};
use qgc_runtime::cpu::linear::GEMM_MIN_ROWS;
use qgc_runtime::cpu::{bandwidth, detected_level, set_level, Level};

const TOL: f32 = 1e-5;

#[test]
fn all_levels_agree_with_the_interpreter() {
    for want in [Level::Scalar, Level::Avx2, Level::Avx512] {
        if want > detected_level() {
            eprintln!("skipping {want:?}: not supported by this CPU");
            continue;
        }
        assert_eq!(set_level(want), want);
        eprintln!("level {want:?}");
        for bf in [false, true] {
            for (m, k, n) in [(1, 67, 33), (3, 50, 9), (4, 130, 17), (GEMM_MIN_ROWS + 1, 40, 20)] {
                linear_case(m, k, n, bf, Epi::SwiGlu, 1, TOL);
                linear_case(m, k, n, bf, Epi::Residual, 2, TOL);
            }
            experts_case(5, 6, 9, 37, 3, bf, 3, TOL);
        }
        rms_case(3, 50, true, 4, TOL);
        gated_case(3, 37, 5, TOL);
        heads_case(3, 2, 19, 6, TOL);
        rope_case(2, 3, 2, 12, 5, 4, 7, TOL);
        attn_case(2, 5, 9, 4, 2, 19, &[0, 2], 8, TOL);
        conv_case(1, 5, 37, 4, 9, TOL);
        rule_case(RuleCase { b: 1, s: 9, hk: 1, hv: 2, dk: 19, dv: 21, g_min: -5.0 }, 10, TOL);
        rule_case(RuleCase { b: 1, s: 5, hk: 1, hv: 2, dk: 16, dv: 128, g_min: -5.0 }, 11, TOL);
        vector_exp_matches_f64_exp();
    }
    set_level(detected_level());
}

#[test]
fn bandwidth_probe_reports_positive_rates() {
    let bw = bandwidth::probe(1 << 20, 3);
    assert!(bw.copy_gbs.is_finite() && bw.copy_gbs > 0.0, "{bw:?}");
    assert!(bw.read_gbs.is_finite() && bw.read_gbs > 0.0, "{bw:?}");
    assert!(bw.bytes >= 1 << 20 && bw.threads >= 1);
}

fn vector_exp_matches_f64_exp() {
    let mut x: Vec<f32> = (0..20001).map(|i| -100.0 + 0.0094 * i as f32).collect();
    x.extend([f32::NEG_INFINITY, -87.0, 0.0, -1e-8, 1e-8, 88.0]);
    let mut y = x.clone();
    qgc_runtime::cpu::elementwise::exp_in_place(&mut y);
    for (&xi, &yi) in x.iter().zip(&y) {
        let want = f64::from(xi).exp();
        if xi < -87.3 {
            assert_eq!(yi, 0.0, "exp({xi})");
        } else {
            let rel = (f64::from(yi) - want).abs() / want;
            assert!(rel < 3e-7, "exp({xi}) = {yi}, want {want}, rel {rel:e}");
        }
    }
}
