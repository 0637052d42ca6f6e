//! Per-block saturation: the graph is cut into regions (one per decoder layer, plus the
//! head and tail), regions with the same structure form one *kind*, one region of each kind
//! is saturated and extracted into a [`Template`], and the template is stamped over every
//! region of its kind. Compile time then grows with the number of distinct layer kinds, not
//! with depth.
//!
//! A region is a maximal run of consecutive non-source nodes with the same layer prefix
//! (`l7`, `mtp0`, or none). A layer's `ffn_residual` add joins the region of the node after it
//! (the next layer's, or the tail), so the residual add meets the RMSNorm that reads it. Sources
//! (weights, inputs) belong to no region: a region reads them, and values of earlier regions,
//! as numbered leaves. Two regions are of one kind when their [`Io::signature`]s agree: the
//! region's text with layer numbers abstracted (`l7.attn.q_proj` → `l#1.attn.q_proj`,
//! `model.layers.7.…` → `model.layers.#1.…`), leaf types and names, and which values leave it.

use qgc_ir::{Graph, Op, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

/// What a region reads: a source node, or a value computed in an earlier region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Leaf {
    /// An `Input`/`Weight` node, by index.
    Source(usize),
    /// A value of an earlier region.
    Ext(Value),
}

/// One region and its interface.
#[derive(Debug, Clone)]
pub struct Io {
    /// The layer prefix (`l7`), or empty.
    pub key: String,
    /// Its nodes, in graph order.
    pub nodes: Vec<usize>,
    /// Its leaves, in first-use order.
    pub leaves: Vec<Leaf>,
    /// Its values used after it (by later regions or as graph outputs), in node order.
    pub live_out: Vec<Value>,
    /// The layer numbers its names mention, in first-mention order (`#k` stands for `nums[k]`).
    pub nums: Vec<String>,
    /// Structure with layer numbers abstracted: equal signatures, equal templates.
    pub signature: String,
}

/// A template node: an abstracted name, the op, and operands.
#[derive(Debug, Clone, PartialEq)]
pub struct TNode {
    /// Name with layer numbers as `#k`.
    pub name: String,
    /// The op.
    pub op: Op,
    /// Operands.
    pub inputs: Vec<TRef>,
}

/// A value in a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TRef {
    /// Result `.1` of template node `.0`.
    Node(usize, usize),
    /// Region leaf `k`.
    Leaf(usize),
}

/// An optimised region, ready to stamp: nodes in order and one value per live-out.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    /// Nodes in execution order.
    pub nodes: Vec<TNode>,
    /// The value of each [`Io::live_out`], in order.
    pub outs: Vec<TRef>,
}

fn layer_prefix(name: &str) -> String {
    let head = name.split('.').next().unwrap_or("");
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let is_layer = head.strip_prefix('l').is_some_and(digits) || head.strip_prefix("mtp").is_some_and(digits);
    if is_layer && head.len() < name.len() {
        head.to_string()
    } else {
        String::new()
    }
}

/// Replaces every layer number in `name` by `#k` (registering new numbers in `nums`).
pub fn abstract_name(name: &str, nums: &mut Vec<String>) -> String {
    let segs: Vec<&str> = name.split('.').collect();
    let mut out = Vec::with_capacity(segs.len());
    for (i, seg) in segs.iter().enumerate() {
        let split = seg.find(|c: char| c.is_ascii_digit()).unwrap_or(seg.len());
        let (head, num) = seg.split_at(split);
        let numeric = !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit());
        let layerish = matches!(head, "l" | "mtp") || (head.is_empty() && i > 0 && segs[i - 1] == "layers");
        if numeric && layerish {
            let k = nums.iter().position(|n| n == num).unwrap_or_else(|| {
                nums.push(num.to_string());
                nums.len() - 1
            });
            out.push(format!("{head}#{k}"));
        } else {
            out.push(seg.to_string());
        }
    }
    out.join(".")
}

/// The inverse of [`abstract_name`] under `nums`.
pub fn concrete_name(name: &str, nums: &[String]) -> String {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find('#') {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 1..];
        let n = tail.find(|c: char| !c.is_ascii_digit()).unwrap_or(tail.len());
        match tail[..n].parse::<usize>().ok().and_then(|k| nums.get(k)) {
            Some(v) => out.push_str(v),
            None => out.push_str(&rest[i..i + 1 + n]),
        }
        rest = &tail[n..];
    }
    out.push_str(rest);
    out
}

fn is_source(op: &Op) -> bool {
    matches!(op, Op::Input { .. } | Op::Weight { .. })
}

/// Cuts `g` into regions (module doc), in graph order.
pub fn partition(g: &Graph) -> Vec<Io> {
    let ops: Vec<usize> = (0..g.nodes.len()).filter(|&i| !is_source(&g.nodes[i].op)).collect();
    let mut keys: Vec<String> = ops.iter().map(|&i| layer_prefix(&g.nodes[i].name)).collect();
    for j in (0..ops.len()).rev() {
        if g.nodes[ops[j]].name.ends_with(".ffn_residual") && j + 1 < ops.len() {
            keys[j] = keys[j + 1].clone();
        }
    }
    let mut runs: Vec<(String, Vec<usize>)> = Vec::new();
    for (j, &i) in ops.iter().enumerate() {
        match runs.last_mut() {
            Some((k, nodes)) if *k == keys[j] => nodes.push(i),
            _ => runs.push((keys[j].clone(), vec![i])),
        }
    }
    let used_after = uses_outside(g, &runs);
    runs.into_iter().zip(used_after).map(|((key, nodes), outside)| interface(g, key, nodes, &outside)).collect()
}

/// Per run, the values it produces that something outside it reads.
fn uses_outside(g: &Graph, runs: &[(String, Vec<usize>)]) -> Vec<BTreeSet<Value>> {
    let mut run_of = vec![usize::MAX; g.nodes.len()];
    for (r, (_, nodes)) in runs.iter().enumerate() {
        nodes.iter().for_each(|&i| run_of[i] = r);
    }
    let mut out = vec![BTreeSet::new(); runs.len()];
    for (i, n) in g.nodes.iter().enumerate() {
        for v in &n.inputs {
            let r = run_of[v.node];
            if r != usize::MAX && r != run_of[i] {
                out[r].insert(*v);
            }
        }
    }
    for (_, v) in &g.outputs {
        if let Some(set) = out.get_mut(run_of[v.node]) {
            set.insert(*v);
        }
    }
    out
}

/// Leaves, live-outs, layer numbers and the signature of one run.
fn interface(g: &Graph, key: String, nodes: Vec<usize>, outside: &BTreeSet<Value>) -> Io {
    let local: BTreeMap<usize, usize> = nodes.iter().enumerate().map(|(j, &i)| (i, j)).collect();
    let (mut leaves, mut nums, mut sig) = (Vec::<Leaf>::new(), Vec::new(), String::new());
    for &i in &nodes {
        let n = &g.nodes[i];
        let mut args = Vec::new();
        for v in &n.inputs {
            if let Some(j) = local.get(&v.node) {
                args.push(format!("n{j}.{}", v.index));
                continue;
            }
            let leaf = if is_source(&g.nodes[v.node].op) { Leaf::Source(v.node) } else { Leaf::Ext(*v) };
            let k = leaves.iter().position(|l| *l == leaf).unwrap_or_else(|| {
                let _ = match leaf {
                    Leaf::Source(s) => {
                        let src = &g.nodes[s];
                        writeln!(sig, "x{}: {} {}", leaves.len(), abstract_name(&src.name, &mut nums), src.op.name())
                    }
                    Leaf::Ext(_) => writeln!(sig, "x{}: ext", leaves.len()),
                };
                leaves.push(leaf);
                leaves.len() - 1
            });
            args.push(format!("x{k}:{}", g.ty(*v)));
        }
        let name = abstract_name(&n.name, &mut nums);
        let _ = writeln!(sig, "{name} = {} {} ({})", n.op.name(), n.op.attr_text(), args.join(", "));
    }
    let live_out: Vec<Value> = outside.iter().copied().collect();
    let outs: Vec<String> = live_out.iter().map(|v| format!("n{}.{}", local[&v.node], v.index)).collect();
    let _ = writeln!(sig, "out {}", outs.join(", "));
    Io { key, nodes, leaves, live_out, nums, signature: sig }
}

/// Groups regions by signature: `(representative, members)` in order of first appearance.
pub fn kinds(regions: &[Io]) -> Vec<(usize, Vec<usize>)> {
    let mut by_sig: BTreeMap<&str, usize> = BTreeMap::new();
    let mut out: Vec<(usize, Vec<usize>)> = Vec::new();
    for (r, io) in regions.iter().enumerate() {
        match by_sig.get(io.signature.as_str()) {
            Some(&k) => out[k].1.push(r),
            None => {
                by_sig.insert(&io.signature, out.len());
                out.push((r, vec![r]));
            }
        }
    }
    out
}
