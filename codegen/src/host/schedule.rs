//! The straight-line schedule of one entry point: which nodes are kernel calls (with their
//! [`Kernel`] binding), which are grouped into compiled elementwise chains, which cost nothing
//! (sources, views), where every value lives, which results share an operand's bytes, and which
//! outputs need a final copy.
//!
//! Chain grouping is greedy in graph order: a pointwise node (the op table's `Pointwise`) joins
//! the chain whose output it reads when that output has the same shape, no other reader, is
//! not a graph output, and the broadcast inner lengths agree; otherwise it starts a chain. A
//! chain runs at the position of its last node.
//!
//! **In place.** A result takes its operand's bytes where the op table allows it
//! (`OpInfo::in_place`) and the operand's storage dies at this step: no later step (or output
//! copy) reads it, no other operand of the step reads it, it is the whole of its storage and
//! of the result's type. In the arena the result then shares the operand's request. Between
//! io buffers — a state input updated into its state output (`Sharing::Update`, e.g. the conv and
//! recurrent state) or a KV cache appended to (`Sharing::Append`) — the schedule records an
//! [`IoAlias`]: the runtime may pass one buffer for both slots, and the kernel, seeing equal
//! pointers, skips the copy it would otherwise make (a KV cache stored with spare capacity
//! along its length then only gets its new entries written). A chain's output takes a full
//! input's bytes the same way.

use super::chain::{Bcast, Binary, EwChain, EwNode, Unary};
use super::math::Precision;
use super::place::{ArenaPlanner, ArenaRequest, Base, IoKind, IoTable, Loc};
use super::HostError;
use crate::binding::{bind, Kernel};
use qgc_ir::{Graph, Op, Poly, Sharing, TensorType, Value};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

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
    /// Host code for a device: the arena and io pointers are device addresses, never
    /// dereferenced by the host code. Chain steps call the [`super::jit::CHAIN`] shim and output
    /// copies the [`super::jit::COPY`] shim (see the module doc of [`super`]); no loop is
    /// compiled, and `parallel_loops` and `precision` are ignored.
    pub device: bool,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions { fuse_elementwise: true, parallel_loops: false, precision: Precision::F64, device: false }
    }
}

/// One step of the schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Step {
    /// A call of kernel shim `symbol` for `node`.
    Kernel {
        /// Graph node index.
        node: usize,
        /// The shim symbol ([`Kernel::symbol`]).
        symbol: String,
        /// What the call computes.
        kernel: Kernel,
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

/// An output io slot that may share an input slot's buffer (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoAlias {
    /// The output slot.
    pub output: usize,
    /// The input slot.
    pub input: usize,
    /// `Some(axis)` when the output grows the input along `axis` (a KV cache); `None` when both
    /// have one type.
    pub grows: Option<usize>,
}

/// Everything the host function is emitted from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Output slots that may share an input slot's buffer.
    pub aliases: Vec<IoAlias>,
    /// Results written over an operand's bytes, as `(result, operand)`.
    pub in_place: Vec<(Value, Value)>,
}

impl Schedule {
    /// The shim symbols its host function calls (kernel shims, and `qgc_parallel_for` when
    /// `parallel_loops` and there are compiled loops), sorted.
    pub fn shim_symbols(&self, parallel_loops: bool) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = (self.steps.iter())
            .filter_map(|s| match s {
                Step::Kernel { symbol, .. } => Some(symbol.clone()),
                _ => None,
            })
            .collect();
        if parallel_loops && !self.chains.is_empty() {
            out.insert(super::jit::PARALLEL_FOR.into());
        }
        out
    }

    /// The shim symbols its host function calls under `opts`, sorted: the kernel shims, and
    /// `qgc_parallel_for` as [`Schedule::shim_symbols`] says, or on a device (`opts.device`)
    /// `qgc_chain` when there are chain steps and `qgc_copy` when there are output copies.
    pub fn host_symbols(&self, opts: &HostOptions) -> BTreeSet<String> {
        if !opts.device {
            return self.shim_symbols(opts.parallel_loops);
        }
        let mut out = self.shim_symbols(false);
        for s in &self.steps {
            match s {
                Step::Kernel { .. } => {}
                Step::Chain { .. } => {
                    out.insert(super::jit::CHAIN.into());
                }
                Step::Copy { .. } => {
                    out.insert(super::jit::COPY.into());
                }
            }
        }
        out
    }

    /// Nodes run by the interpreter fallback ([`Kernel::Interp`]), in order.
    pub fn fallbacks(&self) -> Vec<usize> {
        (self.steps.iter())
            .filter_map(|s| match s {
                Step::Kernel { node, kernel, .. } if kernel.is_fallback() => Some(*node),
                _ => None,
            })
            .collect()
    }
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
fn steps(
    g: &Graph,
    opts: &HostOptions,
    outputs: &BTreeMap<Value, usize>,
) -> Result<(Vec<Step>, Vec<EwChain>), HostError> {
    let uses = use_counts(g);
    let (groups, member) =
        if opts.fuse_elementwise { group(g, &uses, outputs) } else { (Vec::new(), vec![None; g.nodes.len()]) };
    let mut steps = Vec::new();
    let mut chains: Vec<EwChain> = Vec::new();
    for (i, &group) in member.iter().enumerate() {
        let kernel = bind(g, i).map_err(HostError::Bind)?;
        if matches!(kernel, Kernel::Source | Kernel::View) {
            continue;
        }
        match group {
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
            None => {
                let kernel = match kernel {
                    Kernel::Pointwise => Kernel::Interp { why: "pointwise op outside a compiled loop".into() },
                    k => k,
                };
                let symbol = kernel.symbol().expect("calls have a symbol").to_string();
                steps.push(Step::Kernel { node: i, symbol, kernel });
            }
        }
    }
    Ok((steps, chains))
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
    let (mut steps, chains) = steps(g, opts, &named)?;
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
    let last = last_reads(g, &steps, &root);
    let plan = Sharer { g, steps: &steps, chains: &chains, direct: &direct, root: &root, io: &io, last }.run();
    let arena = planner.plan(&plan.requests);
    if arena.offsets.len() != plan.requests.len() {
        let message = format!("{} offsets for {} arena values", arena.offsets.len(), plan.requests.len());
        return Err(HostError::Plan { message });
    }
    let locs = locate(g, &io, &direct, &plan, &arena.offsets);
    Ok(Schedule {
        steps,
        chains,
        io,
        locs,
        requests: plan.requests,
        arena_bytes: arena.size,
        aliases: plan.aliases,
        in_place: plan.in_place,
    })
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

/// The arena requests and in-place decisions of a schedule.
struct Shared {
    requests: Vec<ArenaRequest>,
    /// Per arena value: its request.
    request_of: BTreeMap<Value, usize>,
    aliases: Vec<IoAlias>,
    in_place: Vec<(Value, Value)>,
}

/// Decides where each written value goes: its own request, an operand's request (in place), or
/// a direct output (possibly aliasing a state input).
struct Sharer<'a> {
    g: &'a Graph,
    steps: &'a [Step],
    chains: &'a [EwChain],
    direct: &'a BTreeMap<Value, usize>,
    root: &'a [Vec<Value>],
    io: &'a IoTable,
    /// Per storage root: the last step reading it (or a view of it).
    last: BTreeMap<Value, usize>,
}

/// Per storage root: the last step reading it (or a view of it).
fn last_reads(g: &Graph, steps: &[Step], root: &[Vec<Value>]) -> BTreeMap<Value, usize> {
    let mut last = BTreeMap::new();
    for (k, s) in steps.iter().enumerate() {
        for v in writes_reads(g, s).1 {
            last.insert(root[v.node][v.index], k);
        }
    }
    last
}

impl Sharer<'_> {
    fn root_of(&self, v: Value) -> Value {
        self.root[v.node][v.index]
    }

    /// The operands result `v` of step `k` may take the bytes of, with how: the op table's pairs
    /// for a kernel, full inputs for a chain.
    fn candidates(&self, k: usize, v: Value) -> Vec<(Value, Sharing)> {
        match &self.steps[k] {
            Step::Kernel { node, .. } => {
                let n = &self.g.nodes[*node];
                (n.op.info().in_place.iter())
                    .filter(|p| p.result == v.index)
                    .map(|p| (n.inputs[p.operand], p.sharing))
                    .collect()
            }
            Step::Chain { chain, inputs, .. } => (inputs.iter().zip(&self.chains[*chain].inputs))
                .filter(|(_, b)| **b == Bcast::Full)
                .map(|(x, _)| (*x, Sharing::Alias))
                .collect(),
            Step::Copy { .. } => vec![],
        }
    }

    /// Whether operand `x` of step `k` is the whole of its storage, read by no other operand of
    /// the step and by no later step.
    fn dies_whole(&self, k: usize, x: Value, taken: &BTreeSet<Value>) -> bool {
        let r = self.root_of(x);
        let reads = writes_reads(self.g, &self.steps[k]).1;
        let alone = reads.iter().filter(|o| self.root_of(**o) == r).count() == 1;
        let whole = self.g.ty(x) == self.g.ty(r) && (x == r || self.g.view_offset(x.node).is_some_and(|o| o.is_zero()));
        alone && whole && self.last.get(&r) == Some(&k) && !taken.contains(&r)
    }

    fn run(self) -> Shared {
        let mut sh =
            Shared { requests: Vec::new(), request_of: BTreeMap::new(), aliases: Vec::new(), in_place: Vec::new() };
        let input_slot = |r: Value| match &self.g.nodes[r.node].op {
            Op::Input { name, .. } => self.io.slot(IoKind::Input, name),
            _ => None,
        };
        for k in 0..self.steps.len() {
            let (writes, reads) = writes_reads(self.g, &self.steps[k]);
            for v in &reads {
                if let Some(&r) = sh.request_of.get(&self.root_of(*v)) {
                    sh.requests[r].last = sh.requests[r].last.max(k);
                }
            }
            let mut taken = BTreeSet::new();
            for v in writes {
                let cands = self.candidates(k, v);
                if let Some(&out_slot) = self.direct.get(&v) {
                    // A state output may share its state input's buffer.
                    for (x, how) in cands {
                        let r = self.root_of(x);
                        let grows = match how {
                            Sharing::Update if self.g.ty(x) == self.g.ty(v) => None,
                            Sharing::Append { axis } => Some(axis),
                            _ => continue,
                        };
                        if let (Some(input), true) = (input_slot(r), self.dies_whole(k, x, &taken)) {
                            taken.insert(r);
                            sh.aliases.push(IoAlias { output: out_slot, input, grows });
                            sh.in_place.push((v, x));
                            break;
                        }
                    }
                    continue;
                }
                let shared = cands.into_iter().find(|(x, how)| {
                    let r = self.root_of(*x);
                    !matches!(how, Sharing::Append { .. })
                        && self.g.ty(*x) == self.g.ty(v)
                        && sh.request_of.contains_key(&r)
                        && self.dies_whole(k, *x, &taken)
                });
                match shared {
                    Some((x, _)) => {
                        let r = self.root_of(x);
                        taken.insert(r);
                        let req = sh.request_of[&r];
                        sh.request_of.insert(v, req);
                        sh.in_place.push((v, x));
                    }
                    None => {
                        sh.request_of.insert(v, sh.requests.len());
                        sh.requests.push(ArenaRequest {
                            value: v,
                            bytes: Poly::bytes(self.g.ty(v)),
                            first: k,
                            last: k,
                        });
                    }
                }
            }
        }
        sh
    }
}

/// Every value's location (see [`Schedule::locs`]).
fn locate(
    g: &Graph,
    io: &IoTable,
    direct: &BTreeMap<Value, usize>,
    shared: &Shared,
    offsets: &[Poly],
) -> Vec<Vec<Option<Loc>>> {
    let mut stored: BTreeMap<Value, Loc> = BTreeMap::new();
    for (v, &slot) in direct {
        stored.insert(*v, Loc { base: Base::Io(slot), offset: Poly::zero() });
    }
    for (v, &r) in &shared.request_of {
        stored.insert(*v, Loc { base: Base::Arena, offset: offsets[r].clone() });
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
