//! The e-graph analysis: every e-class knows what it holds — an attribute value or the types of
//! its results — plus whether it belongs to the weight-only subgraph and the earliest source it
//! depends on. Types come from the IR's own inference ([`qgc_ir::Op::infer`]), so a rule can only
//! add nodes the verifier would accept; `merge` asserts that merged classes agree.

use crate::lang::{join, Attr, Node};
use egg::{Analysis, DidMerge, EGraph, Id};
use qgc_ir::{Origin, TensorType};
use std::collections::BTreeMap;

/// What an e-class holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// An attribute value.
    Attr(Attr),
    /// A value, or the results of a multi-result op.
    Values(Vec<TensorType>),
}

/// Analysis data of one e-class.
#[derive(Debug, Clone, PartialEq)]
pub struct Meta {
    /// Attribute or value types.
    pub kind: Kind,
    /// Computable from weights alone (the weight-only subgraph, evaluated once at load).
    pub weight_only: bool,
    /// The earliest region leaf this depends on (orders merged projection weights).
    pub order: usize,
}

impl Meta {
    /// The single value type, if the class holds exactly one value.
    pub fn ty(&self) -> Option<&TensorType> {
        match &self.kind {
            Kind::Values(v) if v.len() == 1 => Some(&v[0]),
            _ => None,
        }
    }
    /// The attribute, if the class holds one.
    pub fn attr(&self) -> Option<&Attr> {
        match &self.kind {
            Kind::Attr(a) => Some(a),
            Kind::Values(_) => None,
        }
    }
}

/// A region leaf: its type and whether it is a weight.
#[derive(Debug, Clone, PartialEq)]
pub struct LeafInfo {
    /// Value type.
    pub ty: TensorType,
    /// A `Weight` source (inputs and values from other regions are not).
    pub weight: bool,
}

/// What extraction names a node made from a class: the name (for people) and the origin (layer,
/// layer kind, role) it carries into the optimised graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    /// Node name (the representative region's, e.g. `l3.attn.q_proj`).
    pub name: String,
    /// Node origin (the representative region's layer).
    pub origin: Origin,
}

/// The analysis: the region's leaf table, and node labels (labels do not affect equality: they
/// only label what extraction emits).
#[derive(Debug, Clone, Default)]
pub struct Shapes {
    /// `Leaf(k)` is `leaves[k]`.
    pub leaves: Vec<LeafInfo>,
    /// Labels given to classes (at import, or by a rule for what it creates), by the id they
    /// were given to; a class's label is that of its smallest labelled id.
    pub labels: BTreeMap<Id, Label>,
}

/// The label of `id`'s class, if any.
pub fn label_of(eg: &QGraph, id: Id) -> Option<Label> {
    let c = eg.find(id);
    eg.analysis.labels.iter().find(|(k, _)| eg.find(**k) == c).map(|(_, l)| l.clone())
}

/// Labels `id`'s class unless it has a label already.
pub fn set_label(eg: &mut QGraph, id: Id, label: Label) {
    if label_of(eg, id).is_none() {
        eg.analysis.labels.insert(id, label);
    }
}

/// The e-graph type used by every phase.
pub type QGraph = EGraph<Node, Shapes>;

/// The data a node would have, from its children's data; `Err` says why it does not type-check.
pub fn derive(node: &Node, child: &dyn Fn(Id) -> Meta, leaves: &[LeafInfo]) -> Result<Meta, String> {
    match node {
        Node::Attr(a) => Ok(Meta { kind: Kind::Attr(a.clone()), weight_only: true, order: usize::MAX }),
        Node::Leaf(k) => {
            let l = leaves.get(*k as usize).ok_or_else(|| format!("no leaf {k}"))?;
            Ok(Meta { kind: Kind::Values(vec![l.ty.clone()]), weight_only: l.weight, order: *k as usize })
        }
        Node::Get([i, n]) => {
            let (i, n) = (child(*i), child(*n));
            let idx = i.attr().and_then(Attr::int).ok_or("get index is not an integer")?;
            let Kind::Values(tys) = &n.kind else { return Err("get of an attribute".into()) };
            let ty = usize::try_from(idx).ok().and_then(|j| tys.get(j)).ok_or("get index out of range")?;
            Ok(Meta { kind: Kind::Values(vec![ty.clone()]), weight_only: n.weight_only, order: n.order })
        }
        Node::Op(name, ch) => {
            let metas: Vec<Meta> = ch.iter().map(|&c| child(c)).collect();
            let n_attrs = metas.iter().take_while(|m| m.attr().is_some()).count();
            let attrs: Vec<Attr> = metas[..n_attrs].iter().filter_map(|m| m.attr().cloned()).collect();
            let op = join(name, &attrs).ok_or_else(|| format!("{name}: attributes {attrs:?} do not fit"))?;
            let tys = metas[n_attrs..]
                .iter()
                .map(|m| m.ty().ok_or("operand is not one value"))
                .collect::<Result<Vec<_>, _>>()?;
            let out = op.infer(&tys)?;
            let operands = &metas[n_attrs..];
            Ok(Meta {
                kind: Kind::Values(out),
                weight_only: !operands.is_empty() && operands.iter().all(|m| m.weight_only),
                order: operands.iter().map(|m| m.order).min().unwrap_or(usize::MAX),
            })
        }
    }
}

/// The data `node` would have in `eg`.
pub fn derive_in(eg: &QGraph, node: &Node) -> Result<Meta, String> {
    derive(node, &|c| eg[c].data.clone(), &eg.analysis.leaves)
}

impl Analysis<Node> for Shapes {
    type Data = Meta;

    fn make(eg: &mut QGraph, enode: &Node, _id: Id) -> Meta {
        derive_in(eg, enode).unwrap_or_else(|m| panic!("e-node {enode:?} does not type-check: {m}"))
    }

    fn merge(&mut self, a: &mut Meta, b: Meta) -> DidMerge {
        assert_eq!(a.kind, b.kind, "merged e-classes disagree on shape/dtype");
        let (wo, order) = (a.weight_only || b.weight_only, a.order.min(b.order));
        let did = DidMerge(wo != a.weight_only || order != a.order, wo != b.weight_only || order != b.order);
        a.weight_only = wo;
        a.order = order;
        did
    }
}
