//! Differential property test (after Cranelift's `cranelift-fuzzgen`): random small graphs of
//! elementwise, norm, matmul, slice and concat ops — with the patterns the fusion rules look
//! for mixed in — go through the whole pipeline; the result must verify, saturate, and compute
//! what the interpreter computes on the original graph.

#[path = "common.rs"]
mod common;

#[path = "gen/mod.rs"]
mod gen;

use proptest::prelude::*;
use qgc_ir::Bindings;
use qgc_passes::{optimise, Options};

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn pipeline_matches_interpreter(
        steps in gen::steps(2..24),
        pick in any::<usize>(),
    ) {
        let gen = gen::build(&steps, pick);
        let (opt, report) = optimise(&gen.g, &Options::default(), &mut |_, _| {}).unwrap();
        prop_assert!(report.saturated(), "{}", report);
        if std::env::var_os("QGC_SHOW").is_some() {
            eprintln!("{} -> {} nodes: {}", gen.g.nodes.len(), opt.nodes.len(), report.passes.iter().flat_map(|p| &p.phases).flat_map(|s| s.applied.keys().cloned()).collect::<Vec<_>>().join(" "));
        }
        let bind = Bindings { b: 2, s: 3, p: 0 };
        let ins = common::inputs(&gen.g, &bind, 1, 9);
        let want = common::run(&gen.g, &bind, &ins, &gen.w);
        let e = common::max_rel(&common::run(&opt, &bind, &ins, &gen.w), &want);
        prop_assert!(e <= 1e-5, "rel {:.3e}\n{}\n{}", e, qgc_ir::print(&gen.g), qgc_ir::print(&opt));
    }
}
