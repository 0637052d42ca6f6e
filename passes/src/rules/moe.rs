//! Mixture of experts: the router's softmax + top-k + renormalisation (as lowering emits them)
//! as one `moe_route`, and the shared expert's SwiGLU as the epilogue
//! of one matmul over the stacked gate/up weight. The routed experts' gate/up is already one
//! stacked op (`moe_experts`).

use super::{add_checked, attr, bound, get, union, Checked, Rw};
use crate::analysis::{label_of, set_label, QGraph, Shapes};
use crate::lang::{Attr, Node};
use egg::{rewrite as rw, Applier, Id, PatternAst, Subst, Symbol};

/// Fuse-phase router rules.
pub fn router() -> Vec<Rw> {
    vec![
        // (renorm(top_k(softmax(l)).values), top_k(softmax(l)).indices) == moe_route(l, renormalize)
        rw!("fuse-router"; "(renormalize (get 0 (top_k ?k (softmax ?l))))" => { Router(true) }),
        // top_k(softmax(l)) == moe_route(l)   (no renormalisation)
        rw!("fuse-router-plain"; "(get 0 (top_k ?k (softmax ?l)))" => { Router(false) }),
    ]
}

/// Select-phase SwiGLU rules.
pub fn swiglu() -> Vec<Rw> {
    vec![
        // silu(x wgᵀ) ⊙ (x wuᵀ) == matmul_swiglu(x, concat(wg, wu))   (wg, wu weight-only)
        rw!("fuse-swiglu"; "(mul (silu (matmul ?x ?wg)) (matmul ?x ?wu))"
            => { Checked::new("(matmul_swiglu ?x (concat 0 ?wg ?wu))") } if stackable),
        // (x wuᵀ) ⊙ silu(x wgᵀ) == matmul_swiglu(x, concat(wg, wu))   (wg, wu weight-only)
        rw!("fuse-swiglu-swapped"; "(mul (matmul ?x ?wu) (silu (matmul ?x ?wg)))"
            => { Checked::new("(matmul_swiglu ?x (concat 0 ?wg ?wu))") } if stackable),
    ]
}

/// Gate and up weights are weight-only and of one shape.
fn stackable(eg: &mut QGraph, _: Id, s: &Subst) -> bool {
    let (g, u) = (&eg[bound(s, "?wg")].data, &eg[bound(s, "?wu")].data);
    g.weight_only && u.weight_only && g.ty().is_some() && g.ty() == u.ty()
}

/// Applier of the router rules (`.0`: renormalise): values and indices of the top-k become the
/// two results of one `moe_route`.
struct Router(bool);

impl Applier<Node, Shapes> for Router {
    fn apply_one(&self, eg: &mut QGraph, eclass: Id, s: &Subst, _: Option<&PatternAst<Node>>, _: Symbol) -> Vec<Id> {
        let (k, l) = (bound(s, "?k"), bound(s, "?l"));
        let Some(sm) = add_checked(eg, Node::op("softmax", vec![l])) else { return vec![] };
        let Some(tk) = add_checked(eg, Node::op("top_k", vec![k, sm])) else { return vec![] };
        let renorm = attr(eg, Attr::Bool(self.0));
        let Some(route) = add_checked(eg, Node::op("moe_route", vec![k, renorm, l])) else { return vec![] };
        if let Some(l) = label_of(eg, eclass) {
            set_label(eg, route, l);
        }
        let (w, ix, old_ix) = (get(eg, 0, route), get(eg, 1, route), get(eg, 1, tk));
        union(eg, eclass, w).into_iter().chain(union(eg, old_ix, ix)).collect()
    }
}
