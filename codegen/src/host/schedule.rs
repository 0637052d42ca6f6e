//! The straight-line schedule of one entry point: which nodes are kernel calls, which are
//! grouped into compiled elementwise chains, which cost nothing (sources, views), where every
//! value lives, and which outputs need a final copy.
//!
//! Chain grouping is greedy in graph order: an elementwise node (`add`, `mul`, `silu`,
//! `sigmoid`, `softplus`, `exp`, `neg`, `scale`) joins the chain whose output it reads when that
//! output has the same shape, no other reader, is not a graph output, and the broadcast inner
//! lengths agree; otherwise it starts a chain. A chain runs at the position of its last node.

use super::chain::{Bcast, Binary, EwChain, EwNode, Unary};
use super::math::Precision;
use super::place::{ArenaPlanner, ArenaRequest, Base, IoKind, IoTable, Loc};
use super::HostError;
use qgc_ir::{Graph, Op, Poly, TensorType, Value};
use std::collections::BTreeMap;

/// Choices of the host code generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostOptions {
    /// Compile elementwise chains as Cranelift loops; when false every elementwise node is a
    /// kernel call like any other (`qgc_add_f32`, ...).
    pub fuse_elementwise: bool,
    /// Call compiled loops through the `qgc_parallel_for` shim (the runtime splits `[0, n)` over
    /// threads) instead of directly over `[0, n)`.
    pub parallel_loops: bool,
    /// How compiled loops evaluate exp, sigmoid, silu and softplus.
    pub precision: Precision,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions { fuse_elementwise: true, parallel_loops: false, precision: Precision::F64 }
    }
}

/// One step of the schedule.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// A call of kernel shim `symbol` for `node`.
    Kernel {
        /// Graph node index.
        node: usize,
        /// `qgc_{op}_{dtype}`, dtype of the first result.
        symbol: String,
    },
    /// A compiled elementwise chain.
    Chain {
        /// Index into [`Schedule::chains`] (equal chains share one loop).
        chain: usize,
        /// The graph nodes it computes, in order.
        nodes: Vec<usize>,
        /// The values behind the chain's inputs (the loop's `in_ptrs`).
        inputs: Vec<Value>,
        /// The value it writes.
        out: Value,
    },
    /// A copy of `value` into output io slot `slot` (outputs no step writes in place: views,
    /// graph inputs, values named by two outputs).
    Copy {
        /// What to copy.
        value: Value,
        /// The output's io slot.
        slot: usize,
    },
}

/// Everything the host function is emitted from.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Steps in execution order.
    pub steps: Vec<Step>,
    /// Distinct compiled chains.
    pub chains: Vec<EwChain>,
    /// The io pointer table.
    pub io: IoTable,
    /// Per node, per result: where it lives (`None`: a chain intermediate, never stored).
    pub locs: Vec<Vec<Option<Loc>>>,
    /// The arena requests given to the planner.
    pub requests: Vec<ArenaRequest>,
    /// Arena bytes the plan needs.
    pub arena_bytes: Poly,
}

/// Kernel shim symbol of `node`: `qgc_{op}_{dtype}`.
pub fn symbol(g: &Graph, node: usize) -> String {
    let n = &g.nodes[node];
    let dtype = n.outputs.first().map_or("f32", |t| t.dtype.name());
    format!("qgc_{}_{dtype}", n.op.name())
}

/// How `x` broadcasts over a result of type `out` as an operand of `op`: the indexing and, for
/// suffix/row operands, the inner length. `None` when the loop compiler cannot index it.
fn bcast(op: &Op, out: &TensorType, x: &TensorType) -> Option<(Bcast, Option<usize>)> {
    if x.shape == out.shape {
        return Some((Bcast::Full, None));
    }
    let (ro, rx) = (out.rank(), x.rank());
    if rx <= ro && out.shape[ro - rx..] == x.shape[..] {
        let l = x.shape.iter().try_fold(1, |n, d| Some(n * d.as_const()?))?;
        return Some(if l == 1 { (Bcast::Scalar, None) } else { (Bcast::Suffix, Some(l)) });
    }
    if matches!(op, Op::Mul) && rx == ro && ro > 0 && x.shape[..rx - 1] == out.shape[..ro - 1] {
        return Some((Bcast::Row, Some(out.shape[ro - 1].as_const()?)));
    }
    None
}

/// The inner length an elementwise node needs (`Some(None)`: none), or `None` if the node cannot
/// be part of a chain.
fn node_inner(g: &Graph, node: usize) -> Option<Option<usize>> {
    let n = &g.nodes[node];
    if Unary::of(&n.op).is_none() && Binary::of(&n.op).is_none() {
        return None;
    }
    let mut inner = None;
    for v in &n.inputs {
        let (_, l) = bcast(&n.op, &n.outputs[0], g.ty(*v))?;
        match (inner, l) {
            (Some(a), Some(b)) if a != b => return None,
            (None, Some(b)) => inner = Some(b),
            _ => {}
        }
    }
    Some(inner)
}

/// A group of nodes that becomes one chain.
struct Group {
    nodes: Vec<usize>,
    inner: Option<usize>,
}

/// Groups elementwise nodes into chains; returns the groups and each node's group.
fn group(
    g: &Graph,
    uses: &BTreeMap<Value, usize>,
    outputs: &BTreeMap<Value, usize>,
) -> (Vec<Group>, Vec<Option<usize>>) {
    let mut groups: Vec<Group> = Vec::new();
    let mut member = vec![None; g.nodes.len()];
    let mut open: BTreeMap<Value, usize> = BTreeMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        let Some(inner) = node_inner(g, i) else { continue };
        let joinable = |v: &Value| {
            let gi = *open.get(v)?;
            let gr: &Group = &groups[gi];
            let same = g.ty(*v).shape == n.outputs[0].shape;
            let single = uses.get(v) == Some(&1) && !outputs.contains_key(v);
            let fits = inner.is_none() || gr.inner.is_none() || gr.inner == inner;
            (same && single && fits).then_some(gi)
        };
        let gi = match n.inputs.iter().find_map(joinable) {
            Some(gi) => {
                open.retain(|_, &mut k| k != gi);
                groups[gi].nodes.push(i);
                groups[gi].inner = groups[gi].inner.or(inner);
                gi
            }
            None => {
                groups.push(Group { nodes: vec![i], inner });
                groups.len() - 1
            }
        };
        member[i] = Some(gi);
        open.insert(Value { node: i, index: 0 }, gi);
    }
    (groups, member)
}

/// The chain of a group and the values behind its inputs.
fn chain_of(g: &Graph, grp: &Group) -> (EwChain, Vec<Value>) {
    let mut inputs: Vec<(Value, Bcast)> = Vec::new();
    let mut nodes: Vec<EwNode> = Vec::new();
    let mut at: BTreeMap<Value, usize> = BTreeMap::new();
    let mut input_node: BTreeMap<usize, usize> = BTreeMap::new();
    for &m in &grp.nodes {
        let n = &g.nodes[m];
        let mut ops = Vec::new();
        for v in &n.inputs {
            if let Some(&k) = at.get(v) {
                ops.push(k);
                continue;
            }
            let (b, _) = bcast(&n.op, &n.outputs[0], g.ty(*v)).expect("grouped nodes broadcast");
            let k = inputs.iter().position(|x| *x == (*v, b)).unwrap_or_else(|| {
                inputs.push((*v, b));
                inputs.len() - 1
            });
            let idx = *input_node.entry(k).or_insert_with(|| {
                nodes.push(EwNode::Input(k));
                nodes.len() - 1
            });
            ops.push(idx);
        }
        nodes.push(match (Unary::of(&n.op), Binary::of(&n.op)) {
            (Some(u), _) => EwNode::Unary(u, ops[0]),
            (_, Some(b)) => EwNode::Binary(b, ops[0], ops[1]),
            _ => unreachable!("grouped nodes are elementwise"),
        });
        at.insert(Value { node: m, index: 0 }, nodes.len() - 1);
    }
    let chain = EwChain { inputs: inputs.iter().map(|x| x.1).collect(), nodes, inner: grp.inner };
    (chain, inputs.into_iter().map(|x| x.0).collect())
}

/// Readers per value (operand uses plus output names).
fn use_counts(g: &Graph) -> BTreeMap<Value, usize> {
    let mut uses = BTreeMap::new();
    for v in g.nodes.iter().flat_map(|n| n.inputs.iter()).chain(g.outputs.iter().map(|(_, v)| v)) {
        *uses.entry(*v).or_insert(0) += 1;
    }
    uses
}

/// The steps of `g` in execution order (copies not yet added), and the chains.
fn steps(g: &Graph, opts: &HostOptions, outputs: &BTreeMap<Value, usize>) -> (Vec<Step>, Vec<EwChain>) {
    let uses = use_counts(g);
    let (groups, member) =
        if opts.fuse_elementwise { group(g, &uses, outputs) } else { (Vec::new(), vec![None; g.nodes.len()]) };
    let mut steps = Vec::new();
    let mut chains: Vec<EwChain> = Vec::new();
    for (i, n) in g.nodes.iter().enumerate() {
        if matches!(n.op, Op::Input { .. } | Op::Weight { .. }) || g.view_offset(i).is_some() {
            continue;
        }
        match member[i] {
            Some(gi) if *groups[gi].nodes.last().expect("groups are non-empty") == i => {
                let (chain, inputs) = chain_of(g, &groups[gi]);
                let k = chains.iter().position(|c| *c == chain).unwrap_or_else(|| {
                    chains.push(chain);
                    chains.len() - 1
                });
                let out = Value { node: i, index: 0 };
                steps.push(Step::Chain { chain: k, nodes: groups[gi].nodes.clone(), inputs, out });
            }
            Some(_) => {}
            None => steps.push(Step::Kernel { node: i, symbol: symbol(g, i) }),
        }
    }
    (steps, chains)
}

/// Values a step writes and reads.
fn writes_reads(g: &Graph, s: &Step) -> (Vec<Value>, Vec<Value>) {
    match s {
        Step::Kernel { node, .. } => {
            let n = &g.nodes[*node];
            ((0..n.outputs.len()).map(|index| Value { node: *node, index }).collect(), n.inputs.clone())
        }
        Step::Chain { inputs, out, .. } => (vec![*out], inputs.clone()),
        Step::Copy { value, .. } => (vec![], vec![*value]),
    }
}

/// Builds the schedule of `g` and plans its arena with `planner`.
pub fn schedule(g: &Graph, opts: &HostOptions, planner: &dyn ArenaPlanner) -> Result<Schedule, HostError> {
    let io = IoTable::of(g);
    let mut named: BTreeMap<Value, usize> = BTreeMap::new();
    for (_, v) in &g.outputs {
        *named.entry(*v).or_insert(0) += 1;
    }
    let (mut steps, chains) = steps(g, opts, &named);
    // Outputs written in place: produced by a step, named once.
    let mut direct: BTreeMap<Value, usize> = BTreeMap::new();
    for s in &steps {
        for v in writes_reads(g, s).0 {
            if named.get(&v) == Some(&1) {
                let name = &g.outputs.iter().find(|(_, o)| *o == v).expect("named").0;
                direct.insert(v, io.slot(IoKind::Output, name).expect("output slot"));
            }
        }
    }
    for (name, v) in &g.outputs {
        let slot = io.slot(IoKind::Output, name).expect("output slot");
        if direct.get(v) != Some(&slot) {
            steps.push(Step::Copy { value: *v, slot });
        }
    }
    let root = roots(g);
    let requests = requests(g, &steps, &direct, &root);
    let plan = planner.plan(&requests);
    if plan.offsets.len() != requests.len() {
        let message = format!("{} offsets for {} arena values", plan.offsets.len(), requests.len());
        return Err(HostError::Plan { message });
    }
    let locs = locate(g, &io, &direct, &requests, &plan.offsets);
    Ok(Schedule { steps, chains, io, locs, requests, arena_bytes: plan.size })
}

/// Per value: the value whose storage it is (itself, or what a view views).
fn roots(g: &Graph) -> Vec<Vec<Value>> {
    let mut root: Vec<Vec<Value>> = Vec::with_capacity(g.nodes.len());
    for (i, n) in g.nodes.iter().enumerate() {
        let r = if g.view_offset(i).is_some() {
            vec![root[n.inputs[0].node][n.inputs[0].index]]
        } else {
            (0..n.outputs.len()).map(|index| Value { node: i, index }).collect()
        };
        root.push(r);
    }
    root
}

/// One request per value a step writes that is not an in-place output.
fn requests(g: &Graph, steps: &[Step], direct: &BTreeMap<Value, usize>, root: &[Vec<Value>]) -> Vec<ArenaRequest> {
    let mut reqs: Vec<ArenaRequest> = Vec::new();
    let mut at: BTreeMap<Value, usize> = BTreeMap::new();
    for (k, s) in steps.iter().enumerate() {
        let (writes, reads) = writes_reads(g, s);
        for v in reads {
            if let Some(&r) = at.get(&root[v.node][v.index]) {
                reqs[r].last = k;
            }
        }
        for v in writes.into_iter().filter(|v| !direct.contains_key(v)) {
            at.insert(v, reqs.len());
            reqs.push(ArenaRequest { value: v, bytes: Poly::bytes(g.ty(v)), first: k, last: k });
        }
    }
    reqs
}

/// Every value's location (see [`Schedule::locs`]).
fn locate(
    g: &Graph,
    io: &IoTable,
    direct: &BTreeMap<Value, usize>,
    requests: &[ArenaRequest],
    offsets: &[Poly],
) -> Vec<Vec<Option<Loc>>> {
    let mut stored: BTreeMap<Value, Loc> = BTreeMap::new();
    for (v, &slot) in direct {
        stored.insert(*v, Loc { base: Base::Io(slot), offset: Poly::zero() });
    }
    for (r, o) in requests.iter().zip(offsets) {
        stored.insert(r.value, Loc { base: Base::Arena, offset: o.clone() });
    }
    let mut locs: Vec<Vec<Option<Loc>>> = Vec::with_capacity(g.nodes.len());
    for (i, n) in g.nodes.iter().enumerate() {
        let io_loc = |k: Option<usize>| Some(Loc { base: Base::Io(k.expect("io slot")), offset: Poly::zero() });
        let l = match (&n.op, g.view_offset(i)) {
            (Op::Input { name, .. }, _) => vec![io_loc(io.slot(IoKind::Input, name))],
            (Op::Weight { name, .. }, _) => vec![io_loc(io.slot(IoKind::Weight, name))],
            (_, Some(off)) => {
                let x = n.inputs[0];
                vec![locs[x.node][x.index].as_ref().map(|l| Loc { base: l.base, offset: l.offset.add(&off) })]
            }
            _ => (0..n.outputs.len()).map(|index| stored.get(&Value { node: i, index }).cloned()).collect(),
        };
        locs.push(l);
    }
    locs
}
