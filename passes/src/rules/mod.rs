//! Rewrite rules, one file per theme, under the rule policy of design.md §4 (after Cranelift's
//! e-graph rules): directional (towards fused or simpler code), no general commutativity or
//! associativity (both operand orders are written out where both type-check), kebab-case names,
//! and a one-line comment per rule stating its identity.
//!
//! Every rule type-checks what it would add before adding anything (tensat's `CheckApply`):
//! pattern right-hand sides go through [`Checked`], which infers the instantiated pattern's types
//! bottom-up and requires the root to have the matched class's type; custom appliers add nodes
//! through [`add_checked`].

pub mod elementwise;
pub mod gdn;
pub mod moe;
pub mod norm;
pub mod projection;

use crate::analysis::{derive, derive_in, Meta, QGraph, Shapes};
use crate::lang::{Attr, Node};
use egg::{Applier, ENodeOrVar, Id, Pattern, PatternAst, Rewrite, Subst, Symbol, Var};

/// A rule over the qgc language.
pub type Rw = Rewrite<Node, Shapes>;

/// A right-hand-side pattern applied only where it type-checks and has the matched class's type.
#[derive(Debug, Clone)]
pub struct Checked(pub Pattern<Node>);

impl Checked {
    /// Parses `rhs`; panics on a malformed pattern (rules are static).
    pub fn new(rhs: &str) -> Checked {
        Checked(rhs.parse().unwrap_or_else(|e| panic!("bad pattern {rhs}: {e}")))
    }
}

/// The data the instantiated pattern `ast` would have under `subst`, or `None` where it does
/// not type-check.
pub fn instantiate_meta(eg: &QGraph, ast: &PatternAst<Node>, subst: &Subst) -> Option<Meta> {
    let mut metas: Vec<Meta> = Vec::with_capacity(ast.as_ref().len());
    for n in ast.as_ref() {
        let m = match n {
            ENodeOrVar::Var(v) => eg[*subst.get(*v)?].data.clone(),
            ENodeOrVar::ENode(e) => derive(e, &|c| metas[usize::from(c)].clone(), &eg.analysis.leaves).ok()?,
        };
        metas.push(m);
    }
    metas.pop()
}

impl Applier<Node, Shapes> for Checked {
    fn apply_one(
        &self,
        eg: &mut QGraph,
        eclass: Id,
        subst: &Subst,
        ast: Option<&PatternAst<Node>>,
        rule: Symbol,
    ) -> Vec<Id> {
        match instantiate_meta(eg, &self.0.ast, subst) {
            Some(m) if m.kind == eg[eclass].data.kind => self.0.apply_one(eg, eclass, subst, ast, rule),
            _ => vec![],
        }
    }

    fn vars(&self) -> Vec<Var> {
        self.0.vars()
    }
}

/// Adds `node` if it type-checks (returns the existing class when it is already there).
pub fn add_checked(eg: &mut QGraph, node: Node) -> Option<Id> {
    derive_in(eg, &node).ok()?;
    Some(eg.add(node))
}

/// The class of an attribute value.
pub fn attr(eg: &mut QGraph, a: Attr) -> Id {
    eg.add(Node::Attr(a))
}

/// `(get i n)`.
pub fn get(eg: &mut QGraph, i: usize, n: Id) -> Id {
    let i = attr(eg, Attr::Int(i as i64));
    eg.add(Node::Get([i, n]))
}

/// Variable `name` (`"?x"`).
pub fn var(name: &str) -> Var {
    name.parse().expect("variable names are static")
}

/// The class bound to `?name` in `subst`.
pub fn bound(subst: &Subst, name: &str) -> Id {
    subst[var(name)]
}

/// Unions `a` and `b`; returns the changed class, if any.
pub fn union(eg: &mut QGraph, a: Id, b: Id) -> Option<Id> {
    eg.union(a, b).then_some(a)
}

/// Phase 1: movement and identity simplifications.
pub fn canonicalise() -> Vec<Rw> {
    elementwise::canonical()
}

/// Phase 2: fusions into fused ops and merged projections (with the phase 1 rules, which
/// tidy what fusion leaves, e.g. slices of merged projections).
pub fn fuse() -> Vec<Rw> {
    let mut v = canonicalise();
    v.extend(norm::rules());
    v.extend(projection::rules());
    v.extend(gdn::rules());
    v.extend(moe::router());
    v
}

/// Phase 3: kernel selection — matmul epilogues and prologues (with the phase 1 rules).
pub fn select() -> Vec<Rw> {
    let mut v = canonicalise();
    v.extend(elementwise::epilogues());
    v.extend(moe::swiglu());
    v
}
