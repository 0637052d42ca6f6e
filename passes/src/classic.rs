//! Classic graph passes: dead-code elimination and common-subexpression elimination, plus the
//! graph rebuilding they share.

use qgc_ir::{Graph, IrError, Node, Op, Value};
use std::collections::BTreeMap;

/// Copies the nodes `keep` says to keep, in order, with operands redirected through `redirect`
/// (an old value to use instead); types are re-inferred.
fn rebuild(g: &Graph, keep: &[bool], redirect: &BTreeMap<Value, Value>) -> Result<Graph, IrError> {
    let mut out = Graph { nodes: Vec::new(), outputs: Vec::new(), ..g.clone() };
    let mut map: BTreeMap<Value, Value> = BTreeMap::new();
    let resolve = |v: &Value, map: &BTreeMap<Value, Value>| {
        let v = redirect.get(v).unwrap_or(v);
        map[v]
    };
    for (i, n) in g.nodes.iter().enumerate() {
        if !keep[i] {
            continue;
        }
        let ins: Vec<Value> = n.inputs.iter().map(|v| resolve(v, &map)).collect();
        let vals = out.add_at(n.origin, n.name.clone(), n.op.clone(), &ins)?;
        for (j, v) in vals.into_iter().enumerate() {
            map.insert(Value { node: i, index: j }, v);
        }
    }
    out.outputs = g.outputs.iter().map(|(name, v)| (name.clone(), resolve(v, &map))).collect();
    Ok(out)
}

/// Removes nodes no output depends on (inputs stay: they are the entry point's interface).
pub fn dce(g: &Graph) -> Result<Graph, IrError> {
    let mut live = vec![false; g.nodes.len()];
    for (_, v) in &g.outputs {
        live[v.node] = true;
    }
    for i in (0..g.nodes.len()).rev() {
        if live[i] || matches!(g.nodes[i].op, Op::Input { .. }) {
            live[i] = true;
            g.nodes[i].inputs.iter().for_each(|v| live[v.node] = true);
        }
    }
    rebuild(g, &live, &BTreeMap::new())
}

/// Merges nodes with the same op, attributes and operands into the first of them.
pub fn cse(g: &Graph) -> Result<Graph, IrError> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut keep = vec![true; g.nodes.len()];
    let mut redirect: BTreeMap<Value, Value> = BTreeMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        let ins: Vec<Value> = n.inputs.iter().map(|v| *redirect.get(v).unwrap_or(v)).collect();
        match seen.get(&key(n, &ins)) {
            Some(&first) => {
                keep[i] = false;
                for index in 0..n.outputs.len() {
                    redirect.insert(Value { node: i, index }, Value { node: first, index });
                }
            }
            None => {
                seen.insert(key(n, &ins), i);
            }
        }
    }
    rebuild(g, &keep, &redirect)
}

/// Identity of a node for CSE: the op with all attributes (Debug prints floats exactly) and
/// its (already merged) operands.
fn key(n: &Node, ins: &[Value]) -> String {
    format!("{:?} {:?}", n.op, ins)
}
