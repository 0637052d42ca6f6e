//! Passes read structure from each node's `Origin` (layer, layer kind, role), never from its
//! name: renaming every node — roles and layer prefixes alike — leaves the optimised graph the
//! same node for node, and the origins survive the pipeline (stamped layers move with their
//! region).

#[path = "common.rs"]
mod common;

use qgc_ir::{Graph, Layer, Role};
use qgc_passes::{optimise, Options};

/// `g` with every node renamed `node{i}` (its origin kept).
fn renamed(g: &Graph) -> Graph {
    let mut h = g.clone();
    for (i, n) in h.nodes.iter_mut().enumerate() {
        n.name = format!("node{i}");
    }
    h
}

/// The optimised graph with names dropped: per node its op, operands, result types, origin.
fn shape(g: &Graph) -> Vec<String> {
    let mut v: Vec<String> =
        g.nodes.iter().map(|n| format!("{:?} {:?} {:?} {:?}", n.op, n.inputs, n.outputs, n.origin)).collect();
    v.push(format!("{:?}", g.outputs));
    v
}

#[test]
fn renaming_nodes_does_not_change_fusion() {
    for model in ["qwen3-next-tiny", "qwen3-next", "qwen3-next-5to1-dense-head"] {
        let p = common::program(&common::spec(model));
        for g in [&p.prefill, &p.decode].into_iter().chain(&p.mtp) {
            let opts = Options::default();
            let (a, ra) = optimise(g, &opts, &mut |_, _| {}).unwrap();
            let (b, rb) = optimise(&renamed(g), &opts, &mut |_, _| {}).unwrap();
            assert!(a.nodes.len() < g.nodes.len(), "{model} {}: nothing fused", g.name);
            assert_eq!(shape(&a), shape(&b), "{model} {}: fusion depends on names", g.name);
            let kinds = |r: &qgc_passes::Report| -> Vec<(String, usize)> {
                r.passes.iter().flat_map(|p| &p.phases).map(|s| (s.kind.clone(), s.regions)).collect()
            };
            assert_eq!(kinds(&ra), kinds(&rb), "{model} {}", g.name);
        }
    }
}

#[test]
fn origins_survive_the_pipeline() {
    let p = common::program(&common::spec("qwen3-next"));
    let (g, _) = optimise(&p.decode, &Options::default(), &mut |_, _| {}).unwrap();
    for (i, n) in g.nodes.iter().enumerate() {
        // Every node named for a layer carries that layer, the layer's kind, and a role.
        if let Some(l) = (0..48).map(Layer::Main).find(|l| n.name.starts_with(&format!("{}.", l.prefix()))) {
            assert_eq!(n.origin.layer, Some(l), "%{i} {}", n.name);
            let attention = l.index() % 4 == 3;
            let mixer = n.origin.kind.map(|k| k.mixer == qgc_ir::Mixer::GatedAttention);
            assert_eq!(mixer, Some(attention), "%{i} {}: kind {:?}", n.name, n.origin.kind);
            assert_ne!(n.origin.role, Role::Other, "%{i} {}", n.name);
        }
    }
    // The layer outputs fused into the next layer's input norm keep their own layer.
    let outputs = g.nodes.iter().filter(|n| n.origin.role == Role::LayerOutput).count();
    let norms = g.nodes.iter().filter(|n| n.op.name() == "add_rms_norm").count();
    assert!(norms >= 47, "{norms} add_rms_norm");
    assert!(outputs <= 1, "{outputs} layer outputs left unfused");
}
