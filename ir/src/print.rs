//! The readable text form of a graph:
//!
//! ```text
//! graph decode {
//!   %3 = rms_norm eps=1e-6 zero_centred %1, %2 : f32[B,1,64]   # l0.input_norm
//!   ...
//!   return logits=%40, state.l0.conv=%12.1
//! }
//! ```

use crate::graph::{Graph, Value};
use crate::op::Op;
use std::fmt::Write;

fn val(v: &Value, g: &Graph) -> String {
    if g.nodes[v.node].outputs.len() > 1 {
        format!("%{}.{}", v.node, v.index)
    } else {
        format!("%{}", v.node)
    }
}

/// Renders `g` as text (stable: depends only on the graph). Nodes of the weight-only subgraph
/// ([`Graph::weight_only`]) other than the weights themselves are marked `[load]`.
pub fn print(g: &Graph) -> String {
    let load = g.weight_only();
    let mut s = String::new();
    let _ = writeln!(s, "graph {} {{", g.name);
    for (i, n) in g.nodes.iter().enumerate() {
        let lhs = if n.outputs.len() == 1 {
            format!("%{i}")
        } else {
            (0..n.outputs.len()).map(|j| format!("%{i}.{j}")).collect::<Vec<_>>().join(", ")
        };
        let mut rhs = n.op.name().to_string();
        let attrs = n.op.attr_text();
        if !attrs.is_empty() {
            rhs.push(' ');
            rhs.push_str(&attrs);
        }
        let args: Vec<String> = n.inputs.iter().map(|v| val(v, g)).collect();
        if !args.is_empty() {
            rhs.push(' ');
            rhs.push_str(&args.join(", "));
        }
        let tys: Vec<String> = n.outputs.iter().map(|t| t.to_string()).collect();
        let named = match &n.op {
            Op::Input { name, .. } | Op::Weight { name, .. } => *name == n.name,
            _ => false,
        };
        if named {
            let _ = writeln!(s, "  {lhs} = {rhs} : {}", tys.join(", "));
        } else if load[i] && !n.inputs.is_empty() {
            let _ = writeln!(s, "  {lhs} = {rhs} : {}   # {} [load]", tys.join(", "), n.name);
        } else {
            let _ = writeln!(s, "  {lhs} = {rhs} : {}   # {}", tys.join(", "), n.name);
        }
    }
    let outs: Vec<String> = g.outputs.iter().map(|(n, v)| format!("{n}={}", val(v, g))).collect();
    let _ = writeln!(s, "  return {}", outs.join(", "));
    s.push_str("}\n");
    s
}
