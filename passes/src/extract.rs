//! DAG-aware extraction with an explicit cost table.
//!
//! egg's default extractor sums costs over a tree, so a value shared by several consumers (the
//! residual stream, a merged projection read through several slices) is paid once per use and
//! sharing never looks worth it. Here a choice's cost is the cost of the *set* of e-classes it
//! needs (greedy-DAG, as in extraction-gym: each class keeps the cheapest node whose
//! children's class sets, united, cost least; a node whose children need its own class is
//! skipped, so the result is acyclic). Greedy-DAG still misses a shared class that only pays
//! off when several consumers switch to it at once (q, k and v all reading one merged
//! projection), so a local search then tries "prepaying" each unused class that has several
//! users and keeps the change when the exact DAG cost of the whole extraction drops.
//!
//! [`node_cost`] is the cost table: a kernel launch costs [`LAUNCH`] (in byte-equivalents), a
//! kernel moves the bytes of its activation operands and results under [`COST_BINDINGS`];
//! reshapes and slices are views (almost free), attributes, leaves and projections free, and
//! weight-only nodes free (evaluated once at load). Weight bytes are left out: every
//! extraction reads each weight once (a merged projection reads the same bytes as the
//! projections it replaces), so they cannot tell choices apart — and counting them would make a
//! prepaid merged projection look like it had absorbed its weights' cost.

use crate::analysis::QGraph;
use crate::lang::Node;
use egg::{Id, Language};
use qgc_ir::{Bindings, Op, TensorType, View};
use std::collections::{BTreeMap, BTreeSet};

/// Cost of one kernel launch, in bytes moved (~4 µs at ~1 GB/ms of memory bandwidth).
pub const LAUNCH: f64 = 4.0 * 1024.0 * 1024.0;
/// Cost of a view (reshape, slice): a tie-breaker that prefers fewer nodes.
pub const VIEW: f64 = 1.0;

/// Concrete symbol values used to size tensors for costs (decode: one token, a long cache).
pub const COST_BINDINGS: Bindings = Bindings { b: 1, s: 1, p: 4096 };

fn bytes(t: &TensorType) -> f64 {
    t.eval(&COST_BINDINGS).iter().product::<usize>() as f64 * t.dtype.size() as f64
}

/// The cost of evaluating `node` once (see the module doc for the table).
pub fn node_cost(eg: &QGraph, class: Id, node: &Node) -> f64 {
    let Node::Op(name, ch) = node else { return 0.0 };
    let operands: Vec<Id> = ch.iter().copied().filter(|&c| eg[c].data.attr().is_none()).collect();
    if !operands.is_empty() && operands.iter().all(|&c| eg[c].data.weight_only) {
        return 0.0;
    }
    if Op::info_by_name(name).is_some_and(|i| i.view != View::No) {
        return VIEW;
    }
    let moved: f64 =
        operands.iter().filter(|&&c| !eg[c].data.weight_only).filter_map(|&c| eg[c].data.ty()).map(bytes).sum();
    let made: f64 = match &eg[class].data.kind {
        crate::analysis::Kind::Values(tys) => tys.iter().map(bytes).sum(),
        crate::analysis::Kind::Attr(_) => 0.0,
    };
    LAUNCH + moved + made
}

/// The chosen node of every extracted class.
pub type Choice = BTreeMap<Id, Node>;

/// The e-graph's classes densely numbered, with every node's cost computed once.
struct Table<'a> {
    eg: &'a QGraph,
    ids: Vec<Id>,
    index: BTreeMap<Id, usize>,
    /// Per class, per node: (node, dense children, cost).
    nodes: Vec<Vec<(Node, Vec<usize>, f64)>>,
}

impl<'a> Table<'a> {
    fn new(eg: &'a QGraph) -> Table<'a> {
        let mut ids: Vec<Id> = eg.classes().map(|c| c.id).collect();
        ids.sort();
        let index: BTreeMap<Id, usize> = ids.iter().enumerate().map(|(i, c)| (*c, i)).collect();
        let nodes = ids
            .iter()
            .map(|&c| {
                let dense = |n: &Node| n.children().iter().map(|ch| index[&eg.find(*ch)]).collect();
                eg[c].nodes.iter().map(|n| (n.clone(), dense(n), node_cost(eg, c, n))).collect()
            })
            .collect();
        Table { eg, ids, index, nodes }
    }

    /// Greedy-DAG choices (module doc) with the classes in `prepaid` costing nothing. Cost sets
    /// are bitsets over classes; a set's cost sums each member's current own cost.
    fn greedy(&self, prepaid: &BTreeSet<usize>) -> Choice {
        let n = self.ids.len();
        let words = n.div_ceil(64);
        let mut own = vec![f64::INFINITY; n];
        let mut sets: Vec<Option<Vec<u64>>> = vec![None; n];
        let mut pick = vec![usize::MAX; n];
        for _round in 0..50 {
            let mut changed = false;
            for c in 0..n {
                let mut best: Option<(f64, usize, Vec<u64>)> = None;
                for (k, (_, ch, cost)) in self.nodes[c].iter().enumerate() {
                    let mut set = vec![0u64; words];
                    let ok = ch.iter().all(|&x| match &sets[x] {
                        Some(cs) if x != c && cs[c / 64] & (1 << (c % 64)) == 0 => {
                            set.iter_mut().zip(cs).for_each(|(a, b)| *a |= b);
                            true
                        }
                        _ => false,
                    });
                    let mine = if prepaid.contains(&c) { 0.0 } else { *cost };
                    let t = mine + members(&set).filter(|&x| x != c).map(|x| own[x]).sum::<f64>();
                    if ok && best.as_ref().is_none_or(|b| t < b.0 - 1e-6) {
                        best = Some((t, k, set));
                    }
                }
                let Some((t, k, mut set)) = best else { continue };
                set[c / 64] |= 1 << (c % 64);
                changed |= pick[c] != k || sets[c].as_ref() != Some(&set);
                own[c] = if prepaid.contains(&c) { 0.0 } else { self.nodes[c][k].2 };
                (sets[c], pick[c]) = (Some(set), k);
                let _ = t;
            }
            if !changed {
                break;
            }
        }
        (0..n).filter(|&c| pick[c] != usize::MAX).map(|c| (self.ids[c], self.nodes[c][pick[c]].0.clone())).collect()
    }
}

/// The members of a bitset.
fn members(set: &[u64]) -> impl Iterator<Item = usize> + '_ {
    set.iter().enumerate().flat_map(|(w, &bits)| (0..64).filter(move |b| bits & (1 << b) != 0).map(move |b| w * 64 + b))
}

/// Exact DAG cost of `choice` from `roots`: each reachable class once; `None` on a cycle or a
/// class without a choice.
pub fn dag_cost(eg: &QGraph, choice: &Choice, roots: &[Id]) -> Option<f64> {
    let mut state: BTreeMap<Id, bool> = BTreeMap::new(); // false: on the stack, true: done
    let mut total = 0.0;
    let mut stack: Vec<(Id, usize)> = roots.iter().map(|&r| (eg.find(r), 0)).collect();
    while let Some((c, i)) = stack.pop() {
        let node = choice.get(&c)?;
        if i == 0 {
            match state.get(&c) {
                Some(true) => continue,
                Some(false) => return None,
                None => {
                    state.insert(c, false);
                }
            }
        }
        if let Some(&ch) = node.children().get(i) {
            stack.push((c, i + 1));
            let ch = eg.find(ch);
            match state.get(&ch) {
                Some(false) => return None,
                Some(true) => {}
                None => stack.push((ch, 0)),
            }
        } else {
            state.insert(c, true);
            total += node_cost(eg, c, node);
        }
    }
    Some(total)
}

/// Unused op classes that are children of at least two classes — the sharing candidates.
fn candidates(t: &Table, used: &BTreeSet<Id>, prepaid: &BTreeSet<usize>) -> Vec<usize> {
    let mut parents = vec![BTreeSet::new(); t.ids.len()];
    for (c, nodes) in t.nodes.iter().enumerate() {
        for (_, ch, _) in nodes {
            ch.iter().for_each(|&x| {
                parents[x].insert(c);
            });
        }
    }
    let op_class = |c: usize| t.nodes[c].iter().any(|(n, _, _)| matches!(n, Node::Op(..)));
    (0..t.ids.len())
        .filter(|&c| parents[c].len() >= 2 && !used.contains(&t.ids[c]) && !prepaid.contains(&c) && op_class(c))
        .collect()
}

/// The classes `choice` reaches from `roots`.
fn reachable(eg: &QGraph, choice: &Choice, roots: &[Id]) -> BTreeSet<Id> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<Id> = roots.iter().map(|&r| eg.find(r)).collect();
    while let Some(c) = todo.pop() {
        if seen.insert(c) {
            if let Some(n) = choice.get(&c) {
                todo.extend(n.children().iter().map(|&ch| eg.find(ch)));
            }
        }
    }
    seen
}

/// Switches every reached class to a node whose children are all reached already when that
/// lowers the exact cost (e.g. the sum of a residual add served by the `add_rms_norm` that
/// already computes the norm).
fn reuse(t: &Table, mut choice: Choice, mut cost: f64, roots: &[Id]) -> (Choice, f64) {
    let used = reachable(t.eg, &choice, roots);
    for &c in &used {
        for (node, _, _) in &t.nodes[t.index[&c]] {
            let inside = node.children().iter().all(|ch| used.contains(&t.eg.find(*ch)));
            if !inside || choice.get(&c) == Some(node) {
                continue;
            }
            let old = choice.insert(c, node.clone());
            match dag_cost(t.eg, &choice, roots) {
                Some(nc) if nc < cost - 1e-6 => cost = nc,
                _ => {
                    choice.insert(c, old.expect("reached classes have a choice"));
                }
            }
        }
    }
    (choice, cost)
}

/// The extraction for `roots`: greedy-DAG, prepaid-class local search, then [`reuse`] (module
/// doc). Returns the choice and its exact DAG cost; `None` if some root cannot be extracted.
pub fn extract(eg: &QGraph, roots: &[Id]) -> Option<(Choice, f64)> {
    let t = Table::new(eg);
    let mut prepaid = BTreeSet::new();
    let mut choice = t.greedy(&prepaid);
    let mut cost = dag_cost(eg, &choice, roots)?;
    for _round in 0..8 {
        let used = reachable(eg, &choice, roots);
        let mut found: Option<(f64, usize, Choice)> = None;
        for c in candidates(&t, &used, &prepaid) {
            let mut trial = prepaid.clone();
            trial.insert(c);
            let ch = t.greedy(&trial);
            let Some(tc) = dag_cost(eg, &ch, roots) else { continue };
            if tc < found.as_ref().map_or(cost, |f| f.0) - 1e-6 {
                found = Some((tc, c, ch));
            }
        }
        let Some((tc, c, ch)) = found else { break };
        prepaid.insert(c);
        choice = ch;
        cost = tc;
    }
    Some(reuse(&t, choice, cost, roots))
}
