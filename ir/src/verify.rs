//! The verifier: run after lowering and after every pass.

use crate::graph::Graph;
use crate::op::Op;
use crate::types::{Dim, TensorType};
use std::collections::HashSet;

/// A verification failure, naming the node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("graph {graph}: node {node}: {message}")]
pub struct VerifyError {
    /// Entry point.
    pub graph: String,
    /// Node name (or `output <name>`).
    pub node: String,
    /// What is wrong.
    pub message: String,
}

/// The type a state value has after a call over `seq` new tokens: `P` becomes `P+seq`.
pub fn advanced(t: &TensorType, seq: Dim) -> TensorType {
    let shape = t
        .shape
        .iter()
        .map(|d| {
            let mut p = *d;
            p.coeffs[2] = 0;
            let mut out = p;
            for _ in 0..d.coeffs[2] {
                out = out.plus(Dim::sym(crate::types::Sym::P)).plus(seq);
            }
            out
        })
        .collect::<Vec<Dim>>();
    TensorType::new(shape, t.dtype)
}

/// Checks: operands refer to earlier nodes (acyclic, each value produced once), stored result types
/// equal re-inferred ones, names unique, outputs valid, and every `state.*` input comes back as an
/// output of the same name with its type advanced by `S` tokens.
pub fn verify(g: &Graph) -> Result<(), VerifyError> {
    let err = |node: &str, message: String| VerifyError { graph: g.name.clone(), node: node.into(), message };
    let mut names = HashSet::new();
    let mut input_names = HashSet::new();
    for (i, n) in g.nodes.iter().enumerate() {
        if !names.insert(n.name.as_str()) {
            return Err(err(&n.name, "duplicate node name".into()));
        }
        if let Op::Input { name, .. } = &n.op {
            if !input_names.insert(name.as_str()) {
                return Err(err(&n.name, format!("duplicate input {name:?}")));
            }
        }
        for v in &n.inputs {
            if v.node >= i {
                return Err(err(&n.name, format!("operand %{} is not computed before this node", v.node)));
            }
            if v.index >= g.nodes[v.node].outputs.len() {
                return Err(err(&n.name, format!("operand %{}.{} does not exist", v.node, v.index)));
            }
        }
        let tys: Vec<&TensorType> = n.inputs.iter().map(|v| g.ty(*v)).collect();
        let inferred = n.op.infer(&tys).map_err(|m| err(&n.name, m))?;
        if inferred != n.outputs {
            return Err(err(
                &n.name,
                format!("stored result types {:?} differ from inferred {:?}", n.outputs, inferred),
            ));
        }
    }
    let mut out_names = HashSet::new();
    for (name, v) in &g.outputs {
        let here = format!("output {name}");
        if !out_names.insert(name.as_str()) {
            return Err(err(&here, "duplicate output".into()));
        }
        if v.node >= g.nodes.len() || v.index >= g.nodes[v.node].outputs.len() {
            return Err(err(&here, "refers to no value".into()));
        }
    }
    for (name, ty) in g.inputs() {
        if !name.starts_with("state.") {
            continue;
        }
        let here = format!("output {name}");
        let v = g.output(name).ok_or_else(|| err(&here, "state input is not returned".into()))?;
        let want = advanced(ty, g.seq_dim());
        if *g.ty(v) != want {
            return Err(err(&here, format!("returns {} for state {ty}, expected {want}", g.ty(v))));
        }
    }
    Ok(())
}
