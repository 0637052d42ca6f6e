//! Projections sharing an input become one matmul over the stacked weights:
//! attention q(+gate)/k/v, GDN in_proj_qkvz + in_proj_ba, shared-expert gate + up (and the router
//! and shared-expert gate beside them — the extractor picks the grouping that pays).
//!
//! The stacked weight is a `concat` over weights only: a node of the weight-only subgraph
//! (`Graph::weight_only`), which a runtime evaluates once at load, never per call.

use super::{add_checked, attr, bound, union, Rw};
use crate::analysis::{label_of, set_label, Label, QGraph, Shapes};
use crate::lang::{Attr, Node};
use egg::{Applier, Id, MultiPattern, PatternAst, Rewrite, Subst, Symbol};

/// Fuse-phase projection rules.
pub fn rules() -> Vec<Rw> {
    let both: MultiPattern<Node> = "?a = (matmul ?x ?w1), ?b = (matmul ?x ?w2)".parse().expect("static multipattern");
    vec![
        // (x w1ᵀ, x w2ᵀ) == (y[..n1], y[n1..]) with y = x concat(w1, w2)ᵀ   (w1, w2 weight-only)
        Rewrite::new("merge-projections", both, MergeProjections).expect("static rule"),
    ]
}

/// The stacked parts of a weight class: the operands of its weight-only axis-0 `concat`, or
/// the class itself.
fn parts(eg: &QGraph, w: Id) -> Vec<Id> {
    let w = eg.find(w);
    let stacked = eg[w].nodes.iter().find_map(|n| match n {
        Node::Op("concat", ch) if eg[ch[0]].data.attr() == Some(&Attr::Int(0)) => Some(ch[1..].to_vec()),
        _ => None,
    });
    stacked.unwrap_or_else(|| vec![w])
}

/// `l3.attn.q_proj` + `l3.attn.k_proj` -> `l3.attn.q_proj+k_proj`.
fn merged_name(a: &str, b: &str) -> String {
    match (a.rsplit_once('.'), b.rsplit_once('.')) {
        (Some((pa, sa)), Some((pb, sb))) if pa == pb => format!("{pa}.{sa}+{sb}"),
        _ => format!("{a}+{b}"),
    }
}

/// Rows of a `[N, K]` weight class.
fn rows(eg: &QGraph, w: Id) -> Option<usize> {
    let ty = eg[w].data.ty()?;
    (ty.rank() == 2).then(|| ty.shape[0].as_const()).flatten()
}

/// Applier of `merge-projections`. Applies only when every part of `?w1` comes before every
/// part of `?w2` (in region order), so each merged weight is an interval of the projections
/// sharing `?x` — O(n²) merged classes for n projections, never all orders and subsets.
struct MergeProjections;

impl Applier<Node, Shapes> for MergeProjections {
    fn apply_one(&self, eg: &mut QGraph, _: Id, s: &Subst, _: Option<&PatternAst<Node>>, _: Symbol) -> Vec<Id> {
        let [x, a, b, w1, w2] = ["?x", "?a", "?b", "?w1", "?w2"].map(|v| bound(s, v));
        if !(eg[w1].data.weight_only && eg[w2].data.weight_only) {
            return vec![];
        }
        let (p1, p2) = (parts(eg, w1), parts(eg, w2));
        let last1 = p1.iter().map(|&p| eg[p].data.order).max();
        let first2 = p2.iter().map(|&p| eg[p].data.order).min();
        let (Some(n1), Some(n2)) = (rows(eg, w1), rows(eg, w2)) else { return vec![] };
        if last1 >= first2 {
            return vec![];
        }
        let mut children = vec![attr(eg, Attr::Int(0))];
        children.extend(p1.iter().chain(&p2));
        let Some(stacked) = add_checked(eg, Node::op("concat", children)) else { return vec![] };
        let Some(m) = add_checked(eg, Node::op("matmul", vec![x, stacked])) else { return vec![] };
        if let (Some(la), Some(lb)) = (label_of(eg, a), label_of(eg, b)) {
            set_label(eg, m, Label { name: merged_name(&la.name, &lb.name), origin: la.origin });
        }
        let axis = eg[m].data.ty().map_or(0, |t| t.rank() - 1);
        let mut changed = vec![];
        for (cls, start, len) in [(a, 0, n1), (b, n1, n2)] {
            let ch = [axis, start, len].map(|v| attr(eg, Attr::Int(v as i64)));
            let Some(part) = add_checked(eg, Node::op("slice", vec![ch[0], ch[1], ch[2], m])) else { continue };
            changed.extend(union(eg, cls, part));
        }
        changed
    }
}
