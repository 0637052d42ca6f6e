//! Norm fusions: the residual add folded into the following RMSNorm, and RoPE folded into the
//! q/k norm of attention.

use super::{add_checked, bound, get, union, Checked, Rw};
use crate::analysis::{label_of, set_label, QGraph, Shapes};
use crate::lang::Node;
use egg::{rewrite as rw, Applier, Id, PatternAst, Subst, Symbol};

/// Fuse-phase norm rules.
pub fn rules() -> Vec<Rw> {
    vec![
        // (a + b, rms_norm(a + b, w)) == add_rms_norm(a, b, w)   (both results kept)
        rw!("fuse-residual-rmsnorm"; "(rms_norm ?eps ?zc (add ?a ?b) ?w)" => { ResidualNorm }),
        // rope(rms_norm(x, w), pos) == rms_norm_rope(x, w, pos)
        rw!("fuse-qk-norm-rope"; "(rope ?theta ?rd (rms_norm ?eps ?zc ?x ?w) ?pos)"
            => { Checked::new("(rms_norm_rope ?eps ?zc ?theta ?rd ?x ?w ?pos)") }),
    ]
}

/// Applier of `fuse-residual-rmsnorm`: the sum class becomes result 0 and the norm class
/// result 1 of one `add_rms_norm`.
struct ResidualNorm;

impl Applier<Node, Shapes> for ResidualNorm {
    fn apply_one(&self, eg: &mut QGraph, eclass: Id, s: &Subst, _: Option<&PatternAst<Node>>, _: Symbol) -> Vec<Id> {
        let [eps, zc, a, b, w] = ["?eps", "?zc", "?a", "?b", "?w"].map(|v| bound(s, v));
        let Some(sum) = add_checked(eg, Node::op("add", vec![a, b])) else { return vec![] };
        let Some(fused) = add_checked(eg, Node::op("add_rms_norm", vec![eps, zc, a, b, w])) else { return vec![] };
        if let Some(l) = label_of(eg, eclass) {
            set_label(eg, fused, l);
        }
        let (g0, g1) = (get(eg, 0, fused), get(eg, 1, fused));
        union(eg, sum, g0).into_iter().chain(union(eg, eclass, g1)).collect()
    }
}
