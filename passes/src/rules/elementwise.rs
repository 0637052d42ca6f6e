//! Movement and elementwise rules: identities that simplify (canonicalise phase), and
//! sigmoid-gate multiplies folded into a neighbouring matmul (select phase).

use super::{add_checked, attr, bound, union, Checked, Rw};
use crate::analysis::QGraph;
use crate::lang::{Attr, Node};
use egg::{rewrite as rw, Applier, Id, PatternAst, Subst, Symbol};

/// Canonicalise-phase rules.
pub fn canonical() -> Vec<Rw> {
    vec![
        // x[s1..s1+l1][s2..s2+l2] == x[s1+s2..s1+s2+l2]   (same axis)
        rw!("slice-of-slice"; "(slice ?ax ?s2 ?l2 (slice ?ax ?s1 ?l1 ?x))" => { SliceOfSlice }),
        // x[0..n] == x   where n is the whole axis
        rw!("slice-whole"; "(slice ?ax ?s ?l ?x)" => "?x" if whole_slice),
        // reshape(reshape(x, s1), s2) == reshape(x, s2)
        rw!("reshape-of-reshape"; "(reshape ?s2 (reshape ?s1 ?x))" => { Checked::new("(reshape ?s2 ?x)") }),
        // reshape(x, shape(x)) == x
        rw!("reshape-identity"; "(reshape ?s ?x)" => { Checked::new("?x") }),
        // -(-x) == x
        rw!("neg-neg"; "(neg (neg ?x))" => "?x"),
    ]
}

/// Select-phase rules: sigmoid gates as matmul epilogues / prologues.
pub fn epilogues() -> Vec<Rw> {
    vec![
        // (x wᵀ) ⊙ σ(g) == matmul_sigmoid_gate(x, w, g)
        rw!("matmul-sigmoid-gate"; "(mul (matmul ?x ?w) (sigmoid ?g))"
            => { Checked::new("(matmul_sigmoid_gate ?x ?w ?g)") }),
        // σ(g) ⊙ (x wᵀ) == matmul_sigmoid_gate(x, w, g)   (equal shapes)
        rw!("matmul-sigmoid-gate-swapped"; "(mul (sigmoid ?g) (matmul ?x ?w))"
            => { Checked::new("(matmul_sigmoid_gate ?x ?w ?g)") }),
        // (x ⊙ σ(g)) wᵀ == sigmoid_gate_matmul(x, g, w)
        rw!("sigmoid-gate-matmul"; "(matmul (mul ?x (sigmoid ?g)) ?w)"
            => { Checked::new("(sigmoid_gate_matmul ?x ?g ?w)") }),
        // (σ(g) ⊙ x) wᵀ == sigmoid_gate_matmul(x, g, w)   (equal shapes)
        rw!("sigmoid-gate-matmul-swapped"; "(matmul (mul (sigmoid ?g) ?x) ?w)"
            => { Checked::new("(sigmoid_gate_matmul ?x ?g ?w)") }),
    ]
}

fn int_of(eg: &QGraph, id: Id) -> Option<i64> {
    eg[id].data.attr().and_then(Attr::int)
}

/// `(slice ?ax ?s ?l ?x)` covers all of `?x` along `?ax`.
fn whole_slice(eg: &mut QGraph, _: Id, s: &Subst) -> bool {
    let (ax, start, len) = (int_of(eg, bound(s, "?ax")), int_of(eg, bound(s, "?s")), int_of(eg, bound(s, "?l")));
    let ty = eg[bound(s, "?x")].data.ty().cloned();
    match (ax, start, len, ty) {
        (Some(ax), Some(0), Some(len), Some(ty)) => {
            ty.shape.get(ax as usize).and_then(|d| d.as_const()) == Some(len as usize)
        }
        _ => false,
    }
}

/// Applier of `slice-of-slice`: one slice at the summed offset.
struct SliceOfSlice;

impl Applier<Node, crate::analysis::Shapes> for SliceOfSlice {
    fn apply_one(&self, eg: &mut QGraph, eclass: Id, s: &Subst, _: Option<&PatternAst<Node>>, _: Symbol) -> Vec<Id> {
        let (Some(s1), Some(s2)) = (int_of(eg, bound(s, "?s1")), int_of(eg, bound(s, "?s2"))) else { return vec![] };
        let start = attr(eg, Attr::Int(s1 + s2));
        let node = Node::op("slice", vec![bound(s, "?ax"), start, bound(s, "?l2"), bound(s, "?x")]);
        match add_checked(eg, node) {
            Some(id) if eg[id].data.kind == eg[eclass].data.kind => union(eg, eclass, id).into_iter().collect(),
            _ => vec![],
        }
    }
}
