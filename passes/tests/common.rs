//! Shared helpers for the pass tests (included with `#[path]`).
#![allow(dead_code)]

use qgc_ir::interp::{self, MapWeights, Rng, Tensor};
use qgc_ir::{lower, Bindings, Graph, LowerOptions, ModelSpec, Program};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The spec `models/<name>.json`.
pub fn spec(name: &str) -> ModelSpec {
    let text = std::fs::read_to_string(root().join("models").join(format!("{name}.json"))).unwrap();
    ModelSpec::from_json(&text).unwrap()
}

/// `spec` lowered with default options.
pub fn program(spec: &ModelSpec) -> Program {
    lower(spec, &LowerOptions::default()).unwrap()
}

/// Random inputs for every input of `g` under `bind`: token ids below `vocab`, positions
/// `p..p+s` per row, state uniform in ±0.5.
pub fn inputs(g: &Graph, bind: &Bindings, vocab: usize, seed: u64) -> BTreeMap<String, Tensor> {
    let mut rng = Rng::new(seed);
    let mut m = BTreeMap::new();
    for (name, ty) in g.inputs() {
        let shape = ty.eval(bind);
        let t = match name {
            "tokens" => {
                Tensor::i32(shape.clone(), (0..shape.iter().product()).map(|_| rng.below(vocab) as i32).collect())
            }
            "positions" => {
                let data = (0..bind.b).flat_map(|_| (0..bind.s).map(|s| (bind.p + s) as i32)).collect();
                Tensor::i32(shape, data)
            }
            _ => rng.tensor(&shape, -0.5, 0.5),
        };
        m.insert(name.to_string(), t);
    }
    m
}

/// max |a - b| / max |b| over every output of two runs (same names).
pub fn max_rel(a: &BTreeMap<String, Tensor>, b: &BTreeMap<String, Tensor>) -> f64 {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    let mut worst = 0f64;
    for (name, ta) in a {
        let tb = &b[name];
        assert_eq!(ta.shape, tb.shape, "{name}");
        let (x, y) = (ta.as_f32().unwrap(), tb.as_f32().unwrap());
        let scale = y.iter().fold(1e-30f64, |m, v| m.max(f64::from(v.abs())));
        let diff = x.iter().zip(y).fold(0f64, |m, (p, q)| m.max(f64::from((p - q).abs())));
        worst = worst.max(diff / scale);
    }
    worst
}

/// Runs `g` on `inputs` with `w`.
pub fn run(g: &Graph, bind: &Bindings, inputs: &BTreeMap<String, Tensor>, w: &MapWeights) -> BTreeMap<String, Tensor> {
    interp::run(g, bind, inputs, w).unwrap()
}

/// Nodes of layer `prefix` (`l3`) that run as kernels: not sources, not weight-only (load
/// time), not views (reshape, slice). A `ffn_residual` add is counted with its own layer.
pub fn kernels(g: &Graph, prefix: &str) -> usize {
    let load = g.weight_only();
    let p = format!("{prefix}.");
    g.nodes
        .iter()
        .enumerate()
        .filter(|(i, n)| n.name.starts_with(&p) && !load[*i] && !n.inputs.is_empty())
        .filter(|(_, n)| !matches!(n.op.name(), "reshape" | "slice"))
        .count()
}

/// Nodes of layer `prefix` whose op name is one of `ops`.
pub fn count_ops(g: &Graph, prefix: &str, ops: &[&str]) -> usize {
    let p = format!("{prefix}.");
    g.nodes.iter().filter(|n| n.name.starts_with(&p) && ops.contains(&n.op.name())).count()
}
