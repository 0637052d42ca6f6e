//! The pipeline on the 80B flagship spec (no weights needed): every phase saturates, each
//! distinct layer kind is saturated once and stamped over its layers, and the fusion counters.

#[path = "common.rs"]
mod common;

use qgc_passes::{optimise, Options};

#[test]
fn flagship_saturates_once_per_layer_kind() {
    let p = common::program(&common::spec("qwen3-next"));
    for g in [&p.prefill, &p.decode, p.mtp.as_ref().unwrap()] {
        let (_, report) = optimise(g, &Options::default(), &mut |_, _| {}).unwrap();
        assert!(report.saturated(), "{report}");
        for pass in report.passes.iter().filter(|p| !p.phases.is_empty()) {
            let regions: Vec<(String, usize)> = pass.phases.iter().map(|s| (s.kind.clone(), s.regions)).collect();
            if g.name != "mtp" {
                // embed, layer 0 (reads the embedding), 35 GDN layers, 12 attention layers, tail.
                let want = [("-", 1), ("l0", 1), ("l1", 35), ("l3", 12), ("-", 1)];
                assert_eq!(regions, want.map(|(k, n)| (k.to_string(), n)), "{report}");
            }
        }
    }
}

#[test]
fn flagship_fusion_counters() {
    let p = common::program(&common::spec("qwen3-next"));
    let mm = ["matmul", "matmul_swiglu", "matmul_sigmoid_gate", "sigmoid_gate_matmul"];
    for g in [&p.prefill, &p.decode] {
        let (opt, _) = optimise(g, &Options::default(), &mut |_, _| {}).unwrap();
        // GDN layer: 17 kernels, was 34; attention layer: 15, was 31 (every layer of the kind).
        for l in 0..48 {
            let l = format!("l{l}");
            let (was, now) = if common::count_ops(g, &l, &["attention"]) == 1 { (31, 15) } else { (34, 17) };
            assert_eq!((common::kernels(g, &l), common::kernels(&opt, &l)), (was, now), "{} {l}", g.name);
        }
        // Matmuls per layer: GDN 8 -> 5, attention 9 -> 5.
        assert_eq!((common::count_ops(g, "l1", &["matmul"]), common::count_ops(&opt, "l1", &mm)), (8, 5));
        assert_eq!((common::count_ops(g, "l47", &["matmul"]), common::count_ops(&opt, "l47", &mm)), (9, 5));
    }
}
