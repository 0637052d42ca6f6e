//! The whole pipeline on the tiny model: values unchanged, every phase saturates, and the
//! fusion counters (so a fusion cannot silently stop firing).

#[path = "common.rs"]
mod common;

use qgc_ir::interp::MapWeights;
use qgc_ir::{print, Bindings, Graph};
use qgc_passes::{optimise, optimise_program, Options, Report, PASSES};

fn optimised(g: &Graph) -> (Graph, Report) {
    optimise(g, &Options::default(), &mut |_, _| {}).unwrap()
}

#[test]
fn tiny_model_values_unchanged() {
    let spec = common::spec("qwen3-next-tiny");
    let p = common::program(&spec);
    let w = MapWeights::random(&spec, 7);
    for (g, bind) in [(&p.prefill, Bindings { b: 2, s: 5, p: 3 }), (&p.decode, Bindings { b: 2, s: 1, p: 4 })] {
        let (opt, report) = optimised(g);
        if std::env::var_os("QGC_SHOW").is_some() {
            eprintln!("{report}\n{}", print(&opt));
        }
        let ins = common::inputs(g, &bind, spec.vocab_size, 1);
        let e = common::max_rel(&common::run(&opt, &bind, &ins, &w), &common::run(g, &bind, &ins, &w));
        assert!(e <= 1e-5, "{}: rel {e:.3e}", g.name);
    }
}

#[test]
fn every_phase_saturates_on_the_tiny_model() {
    let p = common::program(&common::spec("qwen3-next-tiny"));
    let (_, reports) = optimise_program(&p, &Options::default(), &mut |_, _| {}).unwrap();
    for r in &reports {
        let names: Vec<&str> = r.passes.iter().map(|p| p.name).collect();
        assert_eq!(names, PASSES);
        assert!(r.saturated(), "{r}");
        for pass in r.passes.iter().filter(|p| !p.phases.is_empty()) {
            assert_eq!(pass.phases.len(), 5, "kinds: embed, l0, l1-l2, l3, tail\n{r}");
        }
    }
}

#[test]
fn tiny_fusion_counters() {
    let p = common::program(&common::spec("qwen3-next-tiny"));
    let (d, report) = optimised(&p.decode);
    let mm = ["matmul", "matmul_swiglu", "matmul_sigmoid_gate", "sigmoid_gate_matmul"];
    // GDN layer decode: 17 kernels, was 34; attention layer: 15, was 31.
    for (l, was, now) in [("l0", 34, 17), ("l1", 34, 17), ("l3", 31, 15)] {
        assert_eq!(common::kernels(&p.decode, l), was, "{l} before");
        assert_eq!(common::kernels(&d, l), now, "{l} after");
    }
    // Matmuls per layer: GDN 8 -> 5 (qkvz+ba, out, router+shared gate, swiglu, down·σ);
    // attention 9 -> 5 (q+k+v, σ·o_proj, router+shared gate, swiglu, down·σ).
    assert_eq!((common::count_ops(&p.decode, "l1", &["matmul"]), common::count_ops(&d, "l1", &mm)), (8, 5));
    assert_eq!((common::count_ops(&p.decode, "l3", &["matmul"]), common::count_ops(&d, "l3", &mm)), (9, 5));
    for (op, per_gdn, per_attn) in [
        ("add_rms_norm", 2, 2),
        ("gdn_gates", 1, 0),
        ("moe_route", 1, 1),
        ("matmul_swiglu", 1, 1),
        ("matmul_sigmoid_gate", 1, 1),
        ("sigmoid_gate_matmul", 0, 1),
        ("rms_norm_rope", 0, 2),
    ] {
        let n = |l: &str| common::count_ops(&d, l, &[op]);
        // l0's first norm reads the embedding (no residual add to fuse).
        let gdn0 = if op == "add_rms_norm" { per_gdn - 1 } else { per_gdn };
        assert_eq!((n("l0"), n("l1"), n("l2"), n("l3")), (gdn0, per_gdn, per_gdn, per_attn), "{op}");
    }
    // Each layer kind is saturated once and stamped: rule counts are per kind × regions.
    assert_eq!(report.applied("fuse-gdn-gates"), 4 * 3);
    assert!(report.applied("merge-projections") > 0 && report.applied("fuse-router") > 0);
}
