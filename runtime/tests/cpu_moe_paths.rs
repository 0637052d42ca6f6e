//! Both paths of `cpu::moe::moe_experts` — per-expert GEMV (decode) and the two-phase panel
//! GEMM (prefill) — forced in turn at every SIMD level, against the interpreter's `MoeExperts`:
//! experts with one row, tails of one vector, experts split over several tasks, odd widths.
//! One test, because the level and the path threshold are process-wide.

mod cpu_common;

use cpu_common::moe_cases::experts_case;
use cpu_common::*;
use qgc_runtime::cpu::moe::{moe_experts, moe_route, set_panel_min_rows, ExpertDims, MoeScratch, PANEL_MIN_ROWS};
use qgc_runtime::cpu::{detected_level, set_level, Level, WeightRef};

const TOL: f32 = 1e-5;

#[test]
fn both_paths_every_level() {
    for want in [Level::Scalar, Level::Avx2, Level::Avx512] {
        if want > detected_level() {
            eprintln!("skipping {want:?}: not supported by this CPU");
            continue;
        }
        assert_eq!(set_level(want), want);
        for min_rows in [1, usize::MAX] {
            set_panel_min_rows(min_rows);
            in_pools(|_| {
                // (tokens, experts, width, hidden, top_k)
                for (t, e, i, h, k) in [(1, 4, 5, 7, 2), (40, 6, 9, 37, 3), (60, 3, 24, 50, 2), (300, 2, 8, 20, 1)] {
                    for bf in [false, true] {
                        experts_case(t, e, i, h, k, bf, (t * 7 + e + i) as u64, TOL);
                    }
                }
            });
        }
    }
    set_level(detected_level());
    set_panel_min_rows(1);
    // Qwen3-Next-like shapes on the panel path: hidden 1024, width 256, top-8 of 16 experts.
    experts_case(96, 16, 256, 1024, 8, true, 9, TOL);
    same_bits_on_any_thread_count();
    set_panel_min_rows(PANEL_MIN_ROWS);
}

/// Every output element adds its experts in ascending expert order on either path, so the
/// thread count cannot change the bits.
fn same_bits_on_any_thread_count() {
    let (t, e, i, h, k) = (200, 8, 24, 100, 3);
    let mut rng = Rng::new(11);
    let x = rvec(&mut rng, t * h, -1.0, 1.0);
    let (_, gu) = bf16_pair(&rvec(&mut rng, e * 2 * i * h, -0.2, 0.2));
    let (_, dn) = bf16_pair(&rvec(&mut rng, e * h * i, -0.2, 0.2));
    let logits = rvec(&mut rng, t * e, -2.0, 2.0);
    let (mut w, mut ids) = (vec![0.0; t * k], vec![0; t * k]);
    moe_route(&logits, t, e, k, true, &mut w, &mut ids);
    let dims = ExpertDims { experts: e, hidden: h, inter: i, top_k: k };
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
        let mut out = vec![0.0f32; t * h];
        pool.install(|| {
            let (g, d) = (WeightRef::Bf16(&gu), WeightRef::Bf16(&dn));
            moe_experts(&x, t, &w, &ids, g, d, dims, &mut MoeScratch::new(), &mut out).expect("valid experts")
        });
        out
    };
    let one = run(1);
    for threads in [2, 3, 5] {
        assert!(run(threads) == one, "{threads} threads changed the result bits");
    }
}
