//! Per-block saturation: the graph is cut into regions (one per decoder layer, plus the
//! head and tail), regions with the same structure form one *kind*, one region of each kind
//! is saturated and extracted into a [`Template`], and the template is stamped over every
//! region of its kind. Compile time then grows with the number of distinct layer kinds, not
//! with depth.
//!
//! Everything here reads structure from each node's [`Origin`] (recorded by lowering), never
//! from names. A region is a maximal run of consecutive non-source nodes of the same layer
//! (`origin.layer`; `None` for the head and tail). A layer's output (the residual add with
//! [`Role::LayerOutput`]) joins the region of the node after it (the next layer's, or the tail),
//! so the residual add meets the RMSNorm that reads it. Sources (weights, inputs) belong to no
//! region: a region reads them, and values of earlier regions, as numbered leaves. Two regions
//! are of one kind when their [`Io::signature`]s agree: each node's op, attributes, operand
//! types and origin relative to the region's layer, the leaves' source kinds, and which values
//! leave the region. Names play no part: renaming nodes does not change fusion.

use qgc_ir::{Graph, Layer, LayerKind, Op, OpClass, Origin, Role, Value};
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
    /// Its layer (`None`: the head or tail).
    pub layer: Option<Layer>,
    /// Its nodes, in graph order.
    pub nodes: Vec<usize>,
    /// Its leaves, in first-use order.
    pub leaves: Vec<Leaf>,
    /// Its values used after it (by later regions or as graph outputs), in node order.
    pub live_out: Vec<Value>,
    /// Structure with layers relative to the region's: equal signatures, equal templates.
    pub signature: String,
    /// The kind of each layer its nodes belong to, by offset from [`Io::layer`].
    pub kinds: BTreeMap<isize, Option<LayerKind>>,
}

/// A template node: name and origin (the representative region's), the op, and operands.
#[derive(Debug, Clone, PartialEq)]
pub struct TNode {
    /// Name, as in the representative region.
    pub name: String,
    /// Origin, as in the representative region.
    pub origin: Origin,
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

fn is_source(op: &Op) -> bool {
    op.class() == OpClass::Source
}

/// The name and origin of a template node (made in the region of layer `from`) stamped into
/// region `to`: its layer moved by the same offset, with that layer's kind, and the layer's name
/// prefix with it. Names are for people; when one does not start with its layer's prefix, the
/// new prefix is put in front so that names stay unique.
pub fn restamp(name: &str, origin: Origin, from: Option<Layer>, to: &Io) -> (String, Origin) {
    let (Some(l), Some(from), Some(target)) = (origin.layer, from, to.layer) else { return (name.to_string(), origin) };
    let Some(d) = from.delta(l) else { return (name.to_string(), origin) };
    let Some(moved) = target.offset(d) else { return (name.to_string(), origin) };
    let kind = to.kinds.get(&d).copied().unwrap_or(origin.kind);
    let origin = Origin { layer: Some(moved), kind, ..origin };
    if moved == l {
        return (name.to_string(), origin);
    }
    let (old, new) = (format!("{}.", l.prefix()), format!("{}.", moved.prefix()));
    let name = match name.strip_prefix(&old) {
        Some(rest) => format!("{new}{rest}"),
        None => format!("{new}{name}"),
    };
    (name, origin)
}

/// Cuts `g` into regions (module doc), in graph order.
pub fn partition(g: &Graph) -> Vec<Io> {
    let ops: Vec<usize> = (0..g.nodes.len()).filter(|&i| !is_source(&g.nodes[i].op)).collect();
    let mut keys: Vec<Option<Layer>> = ops.iter().map(|&i| g.nodes[i].origin.layer).collect();
    for j in (0..ops.len()).rev() {
        if g.nodes[ops[j]].origin.role == Role::LayerOutput && j + 1 < ops.len() {
            keys[j] = keys[j + 1];
        }
    }
    let mut runs: Vec<(Option<Layer>, Vec<usize>)> = Vec::new();
    for (j, &i) in ops.iter().enumerate() {
        match runs.last_mut() {
            Some((k, nodes)) if *k == keys[j] => nodes.push(i),
            _ => runs.push((keys[j], vec![i])),
        }
    }
    let used_after = uses_outside(g, &runs);
    runs.into_iter().zip(used_after).map(|((layer, nodes), outside)| interface(g, layer, nodes, &outside)).collect()
}

/// Per run, the values it produces that something outside it reads.
fn uses_outside(g: &Graph, runs: &[(Option<Layer>, Vec<usize>)]) -> Vec<BTreeSet<Value>> {
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

/// An origin relative to region layer `layer`: the layer as an offset (`@-1` for the previous
/// layer's output) and the role. (Not the layer kind: the kind of the layer whose output a
/// region starts with differs between regions of one structure; stamping takes each region's
/// own kinds from [`Io::kinds`].)
fn relative(o: &Origin, layer: Option<Layer>) -> String {
    let at = match (layer, o.layer) {
        (Some(r), Some(l)) => r.delta(l).map_or("@?".to_string(), |d| format!("@{d}")),
        (None, Some(l)) => format!("@{}", l.prefix()),
        (_, None) => "@-".to_string(),
    };
    format!("{at} {:?}", o.role)
}

/// Leaves, live-outs and the signature of one run.
fn interface(g: &Graph, layer: Option<Layer>, nodes: Vec<usize>, outside: &BTreeSet<Value>) -> Io {
    let local: BTreeMap<usize, usize> = nodes.iter().enumerate().map(|(j, &i)| (i, j)).collect();
    let (mut leaves, mut sig) = (Vec::<Leaf>::new(), String::new());
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
                        writeln!(sig, "x{}: {} {}", leaves.len(), src.op.name(), relative(&src.origin, layer))
                    }
                    Leaf::Ext(_) => writeln!(sig, "x{}: ext", leaves.len()),
                };
                leaves.push(leaf);
                leaves.len() - 1
            });
            args.push(format!("x{k}:{}", g.ty(*v)));
        }
        let at = relative(&n.origin, layer);
        let _ = writeln!(sig, "{} {} ({}) {at}", n.op.name(), n.op.attr_text(), args.join(", "));
    }
    let live_out: Vec<Value> = outside.iter().copied().collect();
    let outs: Vec<String> = live_out.iter().map(|v| format!("n{}.{}", local[&v.node], v.index)).collect();
    let _ = writeln!(sig, "out {}", outs.join(", "));
    let kinds =
        (nodes.iter().map(|&i| g.nodes[i].origin)).filter_map(|o| Some((layer?.delta(o.layer?)?, o.kind))).collect();
    Io { layer, nodes, leaves, live_out, signature: sig, kinds }
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
