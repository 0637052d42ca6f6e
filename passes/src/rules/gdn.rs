//! Gated DeltaNet: the gate chain feeding the delta rule (softplus, exp, neg, mul, sigmoid,
//! l2norm, scale) becomes one `gdn_gates` kernel.

use super::{add_checked, bound, get, union, Rw};
use crate::analysis::{label_of, set_label, Label, QGraph, Shapes};
use crate::lang::{Attr, Node};
use egg::{rewrite as rw, Applier, Id, PatternAst, Subst, Symbol};

/// Fuse-phase GDN rules. The operand order of `mul` and `add` is fixed here: the reversed
/// forms do not type-check (the per-head weights broadcast only as the second operand).
pub fn rules() -> Vec<Rw> {
    vec![
        // (l2(q)·s, l2(k), softplus(a + dt)·-exp(A_log), σ(b)) == gdn_gates(q, k, a, b, dt, A_log)
        rw!("fuse-gdn-gates";
            "(gated_delta_rule ?c (scale ?s (l2_norm ?e ?q)) (l2_norm ?e ?k) ?v
                (mul (softplus (add ?a ?dt)) (neg (exp ?alog))) (sigmoid ?b) ?st)" => { GdnGates }),
    ]
}

/// Applier of `fuse-gdn-gates`: each of the four operand classes becomes a result of one
/// `gdn_gates` node (the delta rule itself is unchanged).
struct GdnGates;

impl GdnGates {
    /// The existing classes of the four matched operands, in `gdn_gates` result order.
    fn operands(eg: &mut QGraph, s: &Subst) -> Option<[Id; 4]> {
        let [sc, e, q, k, a, dt, alog, b] = ["?s", "?e", "?q", "?k", "?a", "?dt", "?alog", "?b"].map(|v| bound(s, v));
        let ql2 = add_checked(eg, Node::op("l2_norm", vec![e, q]))?;
        let qs = add_checked(eg, Node::op("scale", vec![sc, ql2]))?;
        let kl2 = add_checked(eg, Node::op("l2_norm", vec![e, k]))?;
        let adt = add_checked(eg, Node::op("add", vec![a, dt]))?;
        let sp = add_checked(eg, Node::op("softplus", vec![adt]))?;
        let ea = add_checked(eg, Node::op("exp", vec![alog]))?;
        let na = add_checked(eg, Node::op("neg", vec![ea]))?;
        let g = add_checked(eg, Node::op("mul", vec![sp, na]))?;
        let beta = add_checked(eg, Node::op("sigmoid", vec![b]))?;
        Some([qs, kl2, g, beta])
    }
}

impl Applier<Node, Shapes> for GdnGates {
    fn apply_one(&self, eg: &mut QGraph, eclass: Id, s: &Subst, _: Option<&PatternAst<Node>>, _: Symbol) -> Vec<Id> {
        let Some(ops) = Self::operands(eg, s) else { return vec![] };
        let [e, sc] = [bound(s, "?e"), bound(s, "?s")];
        // `scale` holds its factor as an f32 attribute; gdn_gates takes (eps, q_scale).
        if eg[sc].data.attr().is_none_or(|a| !matches!(a, Attr::F32(_))) {
            return vec![];
        }
        let mut children = vec![e, sc];
        children.extend(["?q", "?k", "?a", "?b", "?dt", "?alog"].map(|v| bound(s, v)));
        let Some(fused) = add_checked(eg, Node::op("gdn_gates", children)) else { return vec![] };
        if let Some(l) = label_of(eg, eclass) {
            let name =
                l.name.rsplit_once('.').map_or_else(|| format!("{}.gates", l.name), |(p, _)| format!("{p}.gates"));
            set_label(eg, fused, Label { name, origin: l.origin });
        }
        let mut changed = vec![];
        for (i, cls) in ops.into_iter().enumerate() {
            let gi = get(eg, i, fused);
            changed.extend(union(eg, cls, gi));
        }
        changed
    }
}
