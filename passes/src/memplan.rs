//! The memory plan: every per-call intermediate of one entry point gets a place in one arena,
//! reusing the bytes of dead values, in place where legal. Codegen computes pointers as
//! `arena + offset.eval(B, S, P)`; the report shows the arena against the naive plan.
//!
//! Sizes are symbolic ([`Poly`] bytes over `B`, `S`, `P`), so one plan serves every call shape.
//!
//! **Where a value lives** ([`Home`]):
//! - graph inputs (tokens, positions, state) are the caller's buffers ([`Home::Input`]);
//! - weights and weight-only nodes (`Graph::weight_only`) are computed once at load and stored
//!   with the weights ([`Home::Load`]);
//! - graph outputs (`logits`, `hidden`, `state.*`) are written straight into caller-provided
//!   buffers, one per output name ([`Home::Output`]). They are not in the arena: the KV-cache
//!   outputs grow with `P` and would dwarf (and, identical in both plans, mask) the activations,
//!   and a runtime that double-buffers state swaps pointers instead of copying. When an output's
//!   value cannot own its caller buffer (a graph input passed through, a value that is also
//!   another output, a partial view), its data stays where it is planned, arena bytes being kept
//!   to the end of the call, and the runtime copies it out;
//! - every other node result is in the arena ([`Home::Arena`]).
//!
//! **Views** ([`Role::View`]) take no bytes of their own: a `Reshape` is always a view of its
//! operand (same bytes, row-major). A `Slice` is a view only when it is contiguous, which we
//! prove structurally: every dim before `axis` is the constant 1 (then the slice is one run of
//! `len · Π dims after axis` elements starting `start · Π dims after axis` elements in); e.g.
//! slicing the last axis of `[B,1,200]` is not contiguous for `B > 1`, so it is a buffer.
//! `Concat` is always a buffer (a copy). A buffer stays alive while any view of it is alive.
//!
//! **Liveness** is over the node order: a value is live from its node to the last node reading
//! it (an unread value dies at its own node). A node's results never share bytes with its
//! operands, except **in place** ([`Role::InPlace`]): a pointwise result (see
//! [`in_place_operands`]) may be written over operand `x` when `x` has the result's type, covers
//! its whole buffer, that buffer (and every view of it) dies at this node, and no other operand
//! of the node reads that buffer.
//!
//! **Placement** is greedy over the node order into slots stacked in the arena: a new buffer
//! takes the free slot it fits best (coefficient-wise `<=`, which is `<=` under every binding),
//! else grows a free slot to the coefficient-wise maximum ([`Poly::lub`]) or opens a new slot,
//! whichever adds fewer bytes at the representative binding. A slot's offset is the sum of the
//! sizes of the slots below it; every slot size is rounded up coefficient-wise to [`ALIGN`]
//! bytes, so every slot start is 64-byte aligned under every binding. Safety does not depend on
//! the heuristic: values sharing a slot never live at once, and slots are disjoint. That
//! placement is [`slots`], which also places plain `(bytes, first, last)` intervals
//! ([`place_intervals`]) for planners that have their own liveness (the JIT's schedule steps).

pub mod slots;

use qgc_ir::{Bindings, Graph, Op, Poly, Sharing, Value};
pub use slots::{place_intervals, Interval, IntervalPlan, Slots};
use std::collections::BTreeMap;
use std::fmt;

/// Alignment of every arena slot, in bytes.
pub const ALIGN: u64 = 64;

/// Where a value's bytes live.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Home {
    /// The entry point's arena.
    Arena,
    /// The caller's buffer of the graph input with this name.
    Input(String),
    /// The caller-provided buffer of the graph output with this name.
    Output(String),
    /// Load-time storage beside the weights (weights and weight-only nodes).
    Load,
}

/// How a value comes to be at its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Its node writes it into bytes of its own (or it is supplied: inputs, weights).
    Buffer,
    /// Its node writes it over operand `of`'s bytes, which die at this node.
    InPlace {
        /// The operand whose buffer is reused.
        of: Value,
    },
    /// Not written by anyone: the bytes of operand `of` (reshape, contiguous slice).
    View {
        /// The viewed operand.
        of: Value,
    },
}

/// The place of one value.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// Which storage.
    pub home: Home,
    /// Byte offset in that storage (arena: from the arena start).
    pub offset: Poly,
    /// Bytes of the value (an upper bound when a dim has a negative part, e.g. `S-1`).
    pub size: Poly,
    /// Buffer, in place or view.
    pub role: Role,
    /// The arena slot holding it (`None` outside the arena).
    pub slot: Option<usize>,
    /// Its node.
    pub def: usize,
    /// The last node reading it (`def` when unread; `usize::MAX` for graph outputs).
    pub last: usize,
}

/// One arena slot: a byte range that hosts buffers whose lifetimes do not overlap.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    /// Byte offset in the arena (sum of the sizes of the slots below).
    pub offset: Poly,
    /// Bytes, a multiple of [`ALIGN`] under every binding.
    pub size: Poly,
    /// The buffers (fresh or in place) it hosts, in node order.
    pub buffers: Vec<Value>,
}

/// The memory plan of one entry point.
#[derive(Debug, Clone, PartialEq)]
pub struct MemPlan {
    /// Entry point name.
    pub entry: String,
    /// The binding the heuristic optimises for and the report evaluates at.
    pub binding: Bindings,
    /// Arena slots, bottom up.
    pub slots: Vec<Slot>,
    /// Every node result's place.
    pub placement: BTreeMap<Value, Placement>,
    /// Arena bytes: the sum of the slot sizes.
    pub arena_size: Poly,
    /// Arena bytes with no reuse: every buffer (fresh or in place) aligned, side by side.
    pub naive_size: Poly,
    /// Bytes of the caller-provided output buffers (not in the arena).
    pub output_size: Poly,
    /// Graph outputs whose data is not planned into their own caller buffer (an input passed
    /// through, a value that is also an earlier output, a partial view): the runtime copies
    /// them from their placement after the call.
    pub copied_outputs: Vec<String>,
}

/// The representative binding of an entry point: decode (fixed one token) `B=1,S=1,P=4096`,
/// otherwise (prefill, MTP) `B=1,S=512,P=0`.
pub fn representative(g: &Graph) -> Bindings {
    match g.fixed_seq {
        Some(_) => Bindings { b: 1, s: 1, p: 4096 },
        None => Bindings { b: 1, s: 512, p: 0 },
    }
}

/// Operand positions that result `result` of `op` may overwrite in place: the op table's
/// [`qgc_ir::InPlace`] pairs of that result, except appends (which need a buffer with spare capacity,
/// something only the runtime's state has). Kernels marked in place read each element before
/// writing it, or update their operand.
pub fn in_place_operands(op: &Op, result: usize) -> Vec<usize> {
    (op.info().in_place.iter())
        .filter(|p| p.result == result && !matches!(p.sharing, Sharing::Append { .. }))
        .map(|p| p.operand)
        .collect()
}

/// Plans `g` (a verified graph). Infallible: anything it cannot prove becomes a plain buffer.
pub fn plan(g: &Graph) -> MemPlan {
    Planner::new(g).run()
}

/// A value's place during planning: its buffer root and its byte offset in the root.
#[derive(Debug, Clone)]
struct Spot {
    root: Value,
    offset: Poly,
    role: Role,
}

/// The planner: the graph, its liveness, each value's spot and the arena slots so far.
struct Planner<'g> {
    g: &'g Graph,
    bind: Bindings,
    /// Per value: first and last node (graph outputs: `usize::MAX`).
    live: BTreeMap<Value, (usize, usize)>,
    spots: BTreeMap<Value, Spot>,
    /// Per buffer root: its home, and the last node any of its views is read at.
    homes: BTreeMap<Value, (Home, usize)>,
    slot_of: BTreeMap<Value, usize>,
    slots: Slots,
    /// Per slot: the buffers it hosts, in node order (the last one occupies it now).
    hosted: Vec<Vec<Value>>,
}

impl<'g> Planner<'g> {
    fn new(g: &'g Graph) -> Planner<'g> {
        let bind = representative(g);
        Planner {
            g,
            bind,
            live: liveness(g),
            spots: BTreeMap::new(),
            homes: BTreeMap::new(),
            slot_of: BTreeMap::new(),
            slots: Slots::new(bind),
            hosted: Vec::new(),
        }
    }

    fn run(mut self) -> MemPlan {
        self.classify();
        self.claim_outputs();
        for i in 0..self.g.nodes.len() {
            for index in 0..self.g.nodes[i].outputs.len() {
                let v = Value { node: i, index };
                let fresh = self.spots[&v].root == v && self.homes[&v].0 == Home::Arena;
                if fresh && !self.try_in_place(i, v) {
                    self.allocate(i, v);
                }
            }
        }
        self.finish()
    }

    fn size(&self, v: Value) -> Poly {
        Poly::bytes(self.g.ty(v))
    }

    /// Roots, views and homes of every value; buffer ends from the liveness of their views.
    fn classify(&mut self) {
        let load = self.g.weight_only();
        for (i, n) in self.g.nodes.iter().enumerate() {
            for index in 0..n.outputs.len() {
                let v = Value { node: i, index };
                let home = match &n.op {
                    Op::Input { name, .. } => Some(Home::Input(name.clone())),
                    _ if load[i] => Some(Home::Load),
                    _ => None,
                };
                let spot = match (home.is_none(), self.view_of(i)) {
                    (true, Some((of, off))) => {
                        let base = &self.spots[&of];
                        Spot { root: base.root, offset: base.offset.add(&off), role: Role::View { of } }
                    }
                    _ => Spot { root: v, offset: Poly::zero(), role: Role::Buffer },
                };
                if spot.root == v {
                    self.homes.insert(v, (home.unwrap_or(Home::Arena), 0));
                }
                let end = &mut self.homes.get_mut(&spot.root).expect("root classified first").1;
                *end = (*end).max(self.live[&v].1);
                self.spots.insert(v, spot);
            }
        }
    }

    /// `Some((operand, byte offset))` when node `i` is a view of its operand.
    fn view_of(&self, i: usize) -> Option<(Value, Poly)> {
        self.g.view_offset(i).map(|off| (self.g.nodes[i].inputs[0], off))
    }

    /// Gives each graph output's arena buffer its caller buffer when the output covers all of
    /// it; any other arena buffer behind an output is kept to the end of the call.
    fn claim_outputs(&mut self) {
        for (name, v) in &self.g.outputs {
            let spot = &self.spots[v];
            let whole = spot.offset.is_zero() && self.size(*v) == self.size(spot.root);
            let (home, end) = self.homes.get_mut(&spot.root).expect("classified");
            if *home == Home::Arena {
                if whole {
                    *home = Home::Output(name.clone());
                }
                *end = usize::MAX;
            }
        }
    }

    /// Places buffer `v` of node `i` over a dying operand's slot when legal.
    fn try_in_place(&mut self, i: usize, v: Value) -> bool {
        let n = &self.g.nodes[i];
        for pos in in_place_operands(&n.op, v.index) {
            let x = n.inputs[pos];
            let (root, off) = (self.spots[&x].root, &self.spots[&x].offset);
            let Some(&slot) = self.slot_of.get(&root) else { continue };
            let legal = self.g.ty(x) == self.g.ty(v)
                && off.is_zero()
                && self.size(x) == self.size(root)
                && self.homes[&root] == (Home::Arena, i)
                && self.hosted[slot].last() == Some(&root)
                && n.inputs.iter().all(|o| *o == x || self.spots[o].root != root);
            if legal {
                self.spots.get_mut(&v).expect("classified").role = Role::InPlace { of: x };
                self.slots.reuse(slot, &self.size(v), self.homes[&v].1);
                self.take(slot, v);
                return true;
            }
        }
        false
    }

    /// Places a fresh buffer ([`Slots::place`]) from node `i` to its buffer's end.
    fn allocate(&mut self, i: usize, v: Value) {
        let slot = self.slots.place(&self.size(v), i, self.homes[&v].1);
        self.take(slot, v);
    }

    /// Records `v` as the buffer now occupying `slot`.
    fn take(&mut self, slot: usize, v: Value) {
        if slot == self.hosted.len() {
            self.hosted.push(Vec::new());
        }
        self.hosted[slot].push(v);
        self.slot_of.insert(v, slot);
    }

    /// Slot offsets, absolute placements and the totals.
    fn finish(self) -> MemPlan {
        let (offsets, arena_size) = self.slots.layout();
        let naive_size = self.slot_of.keys().fold(Poly::zero(), |acc, v| acc.add(&self.size(*v).align_up(ALIGN)));
        let output_size = self.g.outputs.iter().fold(Poly::zero(), |acc, (_, v)| acc.add(&self.size(*v)));
        let mut placement: BTreeMap<Value, Placement> = BTreeMap::new();
        for (v, spot) in &self.spots {
            let home = self.homes[&spot.root].0.clone();
            let slot = self.slot_of.get(&spot.root).copied();
            let offset = slot.map_or(spot.offset.clone(), |k| offsets[k].add(&spot.offset));
            let (def, last) = self.live[v];
            let p = Placement { home, offset, size: self.size(*v), role: spot.role, slot, def, last };
            placement.insert(*v, p);
        }
        let slots = (self.hosted.into_iter().zip(offsets).enumerate())
            .map(|(k, (buffers, offset))| Slot { offset, size: self.slots.size(k).clone(), buffers })
            .collect();
        let copied_outputs = (self.g.outputs.iter())
            .filter(|(name, v)| placement[v].home != Home::Output(name.clone()))
            .map(|(name, _)| name.clone())
            .collect();
        MemPlan {
            copied_outputs,
            entry: self.g.name.clone(),
            binding: self.bind,
            slots,
            placement,
            arena_size,
            naive_size,
            output_size,
        }
    }
}

/// Per value: its node and the last node reading it (itself when unread; `usize::MAX` for
/// graph outputs).
pub fn liveness(g: &Graph) -> BTreeMap<Value, (usize, usize)> {
    let mut live = BTreeMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        for index in 0..n.outputs.len() {
            live.insert(Value { node: i, index }, (i, i));
        }
        for v in &n.inputs {
            live.get_mut(v).expect("operands precede their node").1 = i;
        }
    }
    for (_, v) in &g.outputs {
        live.get_mut(v).expect("outputs refer to values").1 = usize::MAX;
    }
    live
}

impl MemPlan {
    /// Number of values with each role in the arena: `(buffers, in place, views)`.
    pub fn counts(&self) -> (usize, usize, usize) {
        let arena = self.placement.values().filter(|p| p.home == Home::Arena);
        arena.fold((0, 0, 0), |(b, ip, vw), p| match p.role {
            Role::Buffer => (b + 1, ip, vw),
            Role::InPlace { .. } => (b, ip + 1, vw),
            Role::View { .. } => (b, ip, vw + 1),
        })
    }

    /// One line per slot: offset, size and the buffers it hosts (node names, `.k` for result k
    /// of a multi-result node).
    pub fn listing(&self, g: &Graph) -> String {
        let mut out = String::new();
        for (k, s) in self.slots.iter().enumerate() {
            let name = |v: &Value| match g.nodes[v.node].outputs.len() {
                1 => g.nodes[v.node].name.clone(),
                _ => format!("{}.{}", g.nodes[v.node].name, v.index),
            };
            let names: Vec<String> = s.buffers.iter().map(name).collect();
            out += &format!("slot {k:>3} @ {} size {}: {}\n", s.offset, s.size, names.join(", "));
        }
        out
    }
}

/// `12.34 MiB`-style byte counts.
pub fn human(bytes: u64) -> String {
    qgc_ir::poly::human_bytes(bytes, 2)
}

impl fmt::Display for MemPlan {
    /// Peak arena bytes against the naive plan at the representative binding, then the
    /// symbolic forms.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.binding;
        let (arena, naive) = (self.arena_size.eval(b), self.naive_size.eval(b));
        let pct = if naive == 0 { 100.0 } else { arena as f64 * 100.0 / naive as f64 };
        let (bufs, in_place, views) = self.counts();
        writeln!(
            f,
            "arena {} vs naive {} ({pct:.1}%) at B={},S={},P={}; {} slots, {bufs} buffers, {in_place} in place, \
             {views} views; outputs {} caller-provided{}",
            human(arena),
            human(naive),
            b.b,
            b.s,
            b.p,
            self.slots.len(),
            human(self.output_size.eval(b)),
            match self.copied_outputs.len() {
                0 => String::new(),
                _ => format!(" (copied: {})", self.copied_outputs.join(", ")),
            }
        )?;
        writeln!(f, "    arena   = {}", self.arena_size)?;
        writeln!(f, "    naive   = {}", self.naive_size)?;
        writeln!(f, "    outputs = {}", self.output_size)
    }
}
