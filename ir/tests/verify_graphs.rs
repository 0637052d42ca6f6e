//! The verifier rejects malformed graphs, each with a message naming the node; lowering of every
//! shipped model verifies.

use qgc_ir::types::const_shape;
use qgc_ir::{lower, verify, DType, Dim, Graph, LowerOptions, ModelSpec, Op, Sym, TensorType, Value};

fn input(g: &mut Graph, name: &str, ty: TensorType) -> Value {
    g.add1(name, Op::Input { name: name.into(), ty }, &[]).unwrap()
}

/// x [B,S,8] + w [8] -> rms_norm -> output.
fn small() -> Graph {
    let mut g = Graph::new("t");
    let x = input(&mut g, "x", TensorType::f32(vec![Dim::sym(Sym::B), Dim::sym(Sym::S), Dim::c(8)]));
    let w = g.add1("w", Op::Weight { name: "w".into(), ty: TensorType::f32(const_shape(&[8])) }, &[]).unwrap();
    let y = g.add1("y", Op::RmsNorm { eps: 1e-6, zero_centred: true }, &[x, w]).unwrap();
    g.outputs.push(("y".into(), y));
    g
}

#[test]
fn well_formed_graph_verifies() {
    verify(&small()).unwrap();
}

#[test]
fn rejects_forward_reference() {
    let mut g = small();
    g.nodes[2].inputs[0] = Value { node: 2, index: 0 };
    assert_eq!(verify(&g).unwrap_err().to_string(), "graph t: node y: operand %2 is not computed before this node");
}

#[test]
fn rejects_missing_result() {
    let mut g = small();
    g.nodes[2].inputs[1] = Value { node: 1, index: 1 };
    assert_eq!(verify(&g).unwrap_err().to_string(), "graph t: node y: operand %1.1 does not exist");
}

#[test]
fn rejects_wrong_stored_type() {
    let mut g = small();
    g.nodes[2].outputs[0].dtype = DType::BF16;
    let e = verify(&g).unwrap_err().to_string();
    assert!(e.starts_with("graph t: node y: stored result types"), "{e}");
}

#[test]
fn rejects_shape_mismatch() {
    let mut g = small();
    g.nodes[1].op = Op::Weight { name: "w".into(), ty: TensorType::f32(const_shape(&[7])) };
    g.nodes[1].outputs[0] = TensorType::f32(const_shape(&[7]));
    assert_eq!(verify(&g).unwrap_err().to_string(), "graph t: node y: norm weight f32[7] does not fit f32[B,S,8]");
}

#[test]
fn rejects_duplicate_names_and_outputs() {
    let mut g = small();
    g.nodes[1].name = "x".into();
    assert_eq!(verify(&g).unwrap_err().to_string(), "graph t: node x: duplicate node name");
    let mut g = small();
    let y = g.outputs[0].1;
    g.outputs.push(("y".into(), y));
    assert_eq!(verify(&g).unwrap_err().to_string(), "graph t: node output y: duplicate output");
}

#[test]
fn rejects_state_not_returned_or_not_advanced() {
    let mut g = Graph::new("s");
    let cache = vec![Dim::sym(Sym::B), Dim::c(2), Dim::sym(Sym::P), Dim::c(4)];
    let c = input(&mut g, "state.l0.k", TensorType::f32(cache));
    let new = vec![Dim::sym(Sym::B), Dim::sym(Sym::S), Dim::c(2), Dim::c(4)];
    let k = input(&mut g, "k", TensorType::f32(new));
    assert_eq!(verify(&g).unwrap_err().to_string(), "graph s: node output state.l0.k: state input is not returned");
    g.outputs.push(("state.l0.k".into(), c));
    assert_eq!(
        verify(&g).unwrap_err().to_string(),
        "graph s: node output state.l0.k: returns f32[B,2,P,4] for state f32[B,2,P,4], expected f32[B,2,P+S,4]"
    );
    let appended = g.add1("append", Op::KvAppend, &[c, k]).unwrap();
    g.outputs[0].1 = appended;
    verify(&g).unwrap();
}

#[test]
fn op_rejects_bad_operands_when_building() {
    let mut g = Graph::new("b");
    let x = input(&mut g, "x", TensorType::f32(const_shape(&[3, 5])));
    let w = input(&mut g, "w", TensorType::f32(const_shape(&[4, 6])));
    let e = g.add1("mm", Op::MatMul, &[x, w]).unwrap_err().to_string();
    assert_eq!(e, "node mm: matmul f32[3,5] x f32[4,6]ᵀ: inner dims differ");
}

#[test]
fn every_shipped_model_lowers_and_verifies() {
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../models")).unwrap() {
        let path = entry.unwrap().path();
        let spec = ModelSpec::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for opts in [LowerOptions::default(), LowerOptions { gdn_prefill_chunk: None }] {
            let p = lower(&spec, &opts).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            verify(&p.prefill).unwrap();
            verify(&p.decode).unwrap();
            assert_eq!(p.decode.fixed_seq, Some(1));
        }
    }
}
