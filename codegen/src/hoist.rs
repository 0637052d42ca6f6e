//! Load-time hoisting: the weight-only nodes an entry point reads per call (`Graph::weight_only`:
//! weight concats made by fusion, the conv weight's reshape, `-exp(A_log)`, ...) become weights
//! named `load:{node}`, computed once when the weights are bound, from a *load graph* whose
//! outputs are those names. The per-call graph keeps no weight-only node but the weights
//! themselves.

use qgc_ir::{Graph, IrError, Op, Origin, Role, Value};
use std::collections::BTreeMap;

/// Prefix of the weights [`hoist`] introduces.
pub const LOAD_PREFIX: &str = "load:";

/// An entry point split into what runs per call and what runs once at load.
#[derive(Debug, Clone, PartialEq)]
pub struct Hoisted {
    /// The per-call graph: every weight-only value it reads is a `load:` weight.
    pub graph: Graph,
    /// The weight-only subgraph, one output per `load:` weight (named alike).
    pub load: Graph,
}

/// Splits `g` (an optimised entry point; see the module doc).
pub fn hoist(g: &Graph) -> Result<Hoisted, IrError> {
    let wo = g.weight_only();
    let mut hoisted = vec![false; g.nodes.len()];
    let hoistable = |v: &Value| {
        let src = &g.nodes[v.node];
        wo[v.node] && !matches!(src.op, Op::Weight { .. }) && src.outputs.len() == 1
    };
    for (i, n) in g.nodes.iter().enumerate() {
        if !wo[i] {
            n.inputs.iter().filter(|v| hoistable(v)).for_each(|v| hoisted[v.node] = true);
        }
    }
    g.outputs.iter().filter(|(_, v)| hoistable(v)).for_each(|(_, v)| hoisted[v.node] = true);
    let mut out = Graph { name: g.name.clone(), fixed_seq: g.fixed_seq, ..Graph::default() };
    let mut load = Graph { name: format!("{}.load", g.name), fixed_seq: g.fixed_seq, ..Graph::default() };
    let (mut map, mut in_load): (BTreeMap<Value, Value>, BTreeMap<Value, Value>) = Default::default();
    for (i, n) in g.nodes.iter().enumerate() {
        if wo[i] {
            let ins: Vec<Value> = n.inputs.iter().map(|v| in_load[v]).collect();
            for (index, v) in load.add_at(n.origin, n.name.clone(), n.op.clone(), &ins)?.into_iter().enumerate() {
                in_load.insert(Value { node: i, index }, v);
            }
        }
        if hoisted[i] {
            let name = format!("{LOAD_PREFIX}{}", n.name);
            let origin = Origin { role: Role::Weight, ..n.origin };
            let op = Op::Weight { name: name.clone(), ty: n.outputs[0].clone() };
            map.insert(Value { node: i, index: 0 }, out.add_at(origin, n.name.clone(), op, &[])?[0]);
            load.outputs.push((name, in_load[&Value { node: i, index: 0 }]));
            continue;
        }
        let ins: Vec<Value> = n.inputs.iter().map(|v| map[v]).collect();
        for (index, v) in out.add_at(n.origin, n.name.clone(), n.op.clone(), &ins)?.into_iter().enumerate() {
            map.insert(Value { node: i, index }, v);
        }
    }
    out.outputs = g.outputs.iter().map(|(name, v)| (name.clone(), map[v])).collect();
    Ok(Hoisted { graph: qgc_passes::classic::dce(&out)?, load: qgc_passes::classic::dce(&load)? })
}
