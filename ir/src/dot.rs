//! Graphviz DOT rendering of a graph (`qgc inspect --dot`).
//!
//! Deterministic text that depends only on the graph: nodes in graph order (`n{index}`), each
//! labelled with its op name, key attributes and result type, its node name as tooltip. Weights
//! are small grey boxes labelled by shape (checkpoint name as tooltip); nodes of the weight-only
//! subgraph ([`Graph::weight_only`], `[load]` in the printer) are dashed; each layer (the node's
//! `origin.layer`: `l{i}`, `mtp{j}`) is a cluster; fused ops are filled by family. Every node carries a DOT `class`
//! (`input`, `weight`, `load` or `kernel`), which SVG output keeps.

use crate::graph::Graph;
use crate::op::{Op, OpClass};
use std::fmt::Write;

/// Escapes a DOT double-quoted string.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Fill colour of a compute node: fused ops by family (saturated), the rest by class (pale).
fn fill(op: &Op) -> &'static str {
    match op {
        Op::AddRmsNorm { .. } | Op::RmsNormRope { .. } => "#66bb6a",
        Op::MatMulSwiGlu | Op::MatMulSigmoidGate | Op::SigmoidGateMatMul => "#42a5f5",
        Op::GdnGates { .. } => "#ec407a",
        Op::MoeRoute { .. } => "#ab47bc",
        _ => match op.class() {
            OpClass::Source => "#fff3e0",
            OpClass::Movement => "#f5f5f5",
            OpClass::Linear => "#bbdefb",
            OpClass::Elementwise => "#ffffff",
            OpClass::Norm => "#dcedc8",
            OpClass::Model => "#ffe082",
            OpClass::Fused => "#ff7043",
        },
    }
}

/// Renders `g` as a Graphviz `digraph` named `title`.
pub fn dot(g: &Graph, title: &str) -> String {
    let load = g.weight_only();
    let mut users: Vec<Option<usize>> = vec![None; g.nodes.len()];
    for (i, n) in g.nodes.iter().enumerate() {
        for v in &n.inputs {
            users[v.node].get_or_insert(i);
        }
    }
    let mut outs: Vec<Vec<&str>> = vec![Vec::new(); g.nodes.len()];
    for (name, v) in &g.outputs {
        outs[v.node].push(name);
    }
    // Cluster of each node: its own layer, or (sources and load nodes) its first user's.
    let prefixes: Vec<Option<String>> = g.nodes.iter().map(|n| n.origin.layer.map(|l| l.prefix())).collect();
    let mut cluster: Vec<Option<&str>> = prefixes.iter().map(|p| p.as_deref()).collect();
    for i in (0..g.nodes.len()).rev() {
        let n = &g.nodes[i];
        if cluster[i].is_none() && (matches!(n.op, Op::Weight { .. }) || load[i]) {
            cluster[i] = users[i].and_then(|u| cluster[u]);
        }
    }

    let mut s = String::new();
    let _ = writeln!(s, "digraph \"{}\" {{", esc(title));
    let _ = writeln!(
        s,
        "  graph [rankdir=TB, fontname=\"Helvetica\", label=\"{}: {} nodes\", labelloc=t, newrank=true];",
        esc(title),
        g.nodes.len()
    );
    s.push_str(
        "  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\", fontsize=10, fillcolor=\"#ffffff\"];\n",
    );
    s.push_str("  edge [arrowsize=0.6, color=\"#555555\"];\n");
    let mut lines: Vec<(Option<&str>, String)> = Vec::with_capacity(g.nodes.len());
    for (i, n) in g.nodes.iter().enumerate() {
        let tys: Vec<String> = n.outputs.iter().map(|t| t.to_string()).collect();
        let tys = tys.join(", ");
        let mut tip = format!("%{i} {}", n.name);
        if !outs[i].is_empty() {
            let _ = write!(tip, " (returned as {})", outs[i].join(", "));
        }
        let attrs = match &n.op {
            Op::Weight { .. } => format!(
                "class=\"weight\", label=\"{}\", shape=box, style=filled, fillcolor=\"#e0e0e0\", color=\"#9e9e9e\", fontcolor=\"#616161\", fontsize=7, height=0.2, margin=\"0.04,0.02\"",
                esc(&tys)
            ),
            Op::Input { name, .. } => format!(
                "class=\"input\", label=\"{}\\n{}\", shape=ellipse, fillcolor=\"{}\"",
                esc(name),
                esc(&tys),
                fill(&n.op)
            ),
            op => {
                let mut label = op.name().to_string();
                let a = op.attr_text();
                if !a.is_empty() {
                    label.push('\n');
                    label.push_str(&a);
                }
                label.push('\n');
                label.push_str(&tys);
                let (class, style) = if load[i] { ("load", "rounded,filled,dashed") } else { ("kernel", "rounded,filled") };
                let mut x = format!("class=\"{class}\", label=\"{}\", style=\"{style}\", fillcolor=\"{}\"", esc(&label), fill(op));
                if op.class() == OpClass::Fused || matches!(op, Op::MoeRoute { .. }) {
                    x.push_str(", penwidth=2");
                }
                x
            }
        };
        let mut attrs = attrs;
        if !outs[i].is_empty() {
            attrs.push_str(", peripheries=2");
        }
        lines.push((cluster[i], format!("n{i} [{attrs}, tooltip=\"{}\"];", esc(&tip))));
    }
    // Top-level nodes first, then one cluster per layer in order of first appearance.
    let mut order: Vec<&str> = Vec::new();
    for (c, line) in &lines {
        match c {
            None => {
                let _ = writeln!(s, "  {line}");
            }
            Some(c) if !order.contains(c) => order.push(c),
            Some(_) => {}
        }
    }
    for c in order {
        let _ = writeln!(s, "  subgraph \"cluster_{c}\" {{");
        let _ = writeln!(s, "    label=\"{c}\"; style=\"rounded\"; color=\"#90a4ae\"; fontcolor=\"#546e7a\";");
        for (_, line) in lines.iter().filter(|(k, _)| *k == Some(c)) {
            let _ = writeln!(s, "    {line}");
        }
        s.push_str("  }\n");
    }
    for (i, n) in g.nodes.iter().enumerate() {
        for v in &n.inputs {
            let mut a = Vec::new();
            if g.nodes[v.node].outputs.len() > 1 {
                a.push(format!("taillabel=\"{}\", labelfontsize=8", v.index));
            }
            if matches!(g.nodes[v.node].op, Op::Weight { .. }) || load[v.node] {
                a.push("color=\"#bdbdbd\", style=dashed".into());
            }
            if a.is_empty() {
                let _ = writeln!(s, "  n{} -> n{i};", v.node);
            } else {
                let _ = writeln!(s, "  n{} -> n{i} [{}];", v.node, a.join(", "));
            }
        }
    }
    s.push_str("}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
