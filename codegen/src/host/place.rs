//! Where every value's bytes are: the io pointer table ([`IoTable`]), the arena plan
//! ([`ArenaPlanner`]: [`ReusePlanner`], or the no-reuse [`BumpPlanner`]) and the resulting
//! per-value [`Loc`]ations.
//!
//! The planner interface is what the memory planner (`qgc_passes::memplan`) fills: it gets one
//! [`ArenaRequest`] per value that needs arena bytes — its size as a [`Poly`] over `B,S,P` (the
//! plan's own `qgc_ir::Poly`) and its live interval in *schedule steps* — and answers an offset
//! per request and the arena size ([`ArenaPlan`]). Step intervals, not node intervals: a chain
//! runs at its last node, so its inputs live until then. Views (reshapes, contiguous slices) and values that live in io buffers
//! never appear in requests; a view's reads count as reads of the value it views.

use qgc_ir::{Bindings, Graph, Op, Poly, TensorType, Value};
use qgc_passes::memplan::{self, Interval};
use serde::{Deserialize, Serialize};

/// What an io slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IoKind {
    /// A graph input (read only).
    Input,
    /// A graph output (written by the call).
    Output,
    /// A checkpoint tensor (read only).
    Weight,
}

/// One entry of the io pointer table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IoSlot {
    /// Input, output or weight.
    pub kind: IoKind,
    /// Input name (`tokens`, `state.l0.conv`), output name (`logits`), or logical weight name.
    pub name: String,
    /// Type (shape symbolic in `B,S,P`).
    pub ty: TensorType,
}

/// The io pointer table of an entry point, in order: every `Input` node (graph order, as
/// `Graph::inputs`), then every named output (`Graph::outputs` order), then every distinct
/// weight (first occurrence order). Each slot holds a pointer to a dense row-major buffer of the
/// slot's type under the call's bindings.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct IoTable {
    /// The slots, in table order.
    pub slots: Vec<IoSlot>,
}

impl IoTable {
    /// The table of `g`.
    pub fn of(g: &Graph) -> IoTable {
        let mut slots: Vec<IoSlot> = g
            .inputs()
            .into_iter()
            .map(|(name, ty)| IoSlot { kind: IoKind::Input, name: name.into(), ty: ty.clone() })
            .collect();
        for (name, v) in &g.outputs {
            slots.push(IoSlot { kind: IoKind::Output, name: name.clone(), ty: g.ty(*v).clone() });
        }
        for n in &g.nodes {
            if let Op::Weight { name, ty } = &n.op {
                if !slots.iter().any(|s| s.kind == IoKind::Weight && &s.name == name) {
                    slots.push(IoSlot { kind: IoKind::Weight, name: name.clone(), ty: ty.clone() });
                }
            }
        }
        IoTable { slots }
    }

    /// The slot index of `name` of `kind`.
    pub fn slot(&self, kind: IoKind, name: &str) -> Option<usize> {
        self.slots.iter().position(|s| s.kind == kind && s.name == name)
    }
}

/// The base a location is relative to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Base {
    /// The call's arena pointer.
    Arena,
    /// The pointer in io slot `k`.
    Io(usize),
}

/// A value's address: `base + offset` bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Loc {
    /// Arena or io slot.
    pub base: Base,
    /// Byte offset from the base.
    pub offset: Poly,
}

/// A value that needs arena bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArenaRequest {
    /// The value.
    pub value: Value,
    /// Its size in bytes.
    pub bytes: Poly,
    /// The schedule step that writes it.
    pub first: usize,
    /// The last schedule step that reads it (or a view of it); `first` if none does. Live
    /// intervals are inclusive: two values may share bytes only if their intervals are disjoint.
    pub last: usize,
}

/// A planner's answer: one offset per request (same order) and the arena size, in bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct ArenaPlan {
    /// Byte offset of each request's value.
    pub offsets: Vec<Poly>,
    /// Bytes the arena must have.
    pub size: Poly,
}

/// A memory planner for one entry point.
pub trait ArenaPlanner {
    /// Offsets for `requests`; every offset a multiple of 64 under all bindings is recommended
    /// (SIMD loads do not need it, cache lines like it).
    fn plan(&self, requests: &[ArenaRequest]) -> ArenaPlan;
}

/// The stand-in planner: every value gets its own bytes, one after another, sizes rounded up
/// to 64-byte multiples (no reuse; the arena is the sum of all sizes).
#[derive(Debug, Clone, Copy, Default)]
pub struct BumpPlanner;

impl ArenaPlanner for BumpPlanner {
    fn plan(&self, requests: &[ArenaRequest]) -> ArenaPlan {
        let mut at = Poly::zero();
        let mut offsets = Vec::with_capacity(requests.len());
        for r in requests {
            offsets.push(at.clone());
            at = at.add(&r.bytes.align_up(64));
        }
        ArenaPlan { offsets, size: at }
    }
}

/// The reusing planner: `qgc_passes::memplan`'s greedy slot placement
/// ([`memplan::place_intervals`]) over the requests' step intervals. A value takes the bytes of
/// values dead before its step (best-fitting free slot, else the cheaper of growing one or
/// opening one, measured at [`ReusePlanner::binding`]); every offset is a multiple of 64 under
/// every binding, and the arena is never larger than [`BumpPlanner`]'s (coefficient-wise).
/// No in-place reuse: a step's results never share bytes with its operands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReusePlanner {
    /// The binding the heuristic minimises the arena at; the plan is sound under every binding.
    pub binding: Bindings,
}

impl ReusePlanner {
    /// The planner for entry point `g`, optimising at its representative binding
    /// ([`memplan::representative`]: decode `B=1,S=1,P=4096`, otherwise `B=1,S=512,P=0`).
    pub fn for_graph(g: &Graph) -> ReusePlanner {
        ReusePlanner { binding: memplan::representative(g) }
    }
}

impl Default for ReusePlanner {
    /// Optimises at the prefill binding `B=1,S=512,P=0`.
    fn default() -> Self {
        ReusePlanner { binding: Bindings { b: 1, s: 512, p: 0 } }
    }
}

impl ArenaPlanner for ReusePlanner {
    fn plan(&self, requests: &[ArenaRequest]) -> ArenaPlan {
        let intervals: Vec<Interval> =
            requests.iter().map(|r| Interval { bytes: r.bytes.clone(), first: r.first, last: r.last }).collect();
        let p = memplan::place_intervals(&intervals, &self.binding);
        ArenaPlan { offsets: p.offsets, size: p.size }
    }
}

/// Checks `plan` against `requests` under `bind`: one offset per request, every value inside
/// the arena, and no two values with overlapping live intervals overlapping in bytes.
pub fn check_plan(requests: &[ArenaRequest], plan: &ArenaPlan, bind: &Bindings) -> Result<(), String> {
    if plan.offsets.len() != requests.len() {
        return Err(format!("{} offsets for {} requests", plan.offsets.len(), requests.len()));
    }
    let size = plan.size.eval(bind);
    let spans: Vec<(u64, u64)> = requests
        .iter()
        .zip(&plan.offsets)
        .map(|(r, o)| {
            let at = o.eval(bind);
            (at, at + r.bytes.eval(bind))
        })
        .collect();
    for (i, (r, &(lo, hi))) in requests.iter().zip(&spans).enumerate() {
        if hi > size {
            return Err(format!(
                "value %{}.{} at [{lo}, {hi}) is outside the arena of {size}",
                r.value.node, r.value.index
            ));
        }
        for (q, &(lo2, hi2)) in requests.iter().zip(&spans).skip(i + 1) {
            let live = r.first <= q.last && q.first <= r.last;
            if live && lo < hi2 && lo2 < hi && lo < hi && lo2 < hi2 {
                let (a, b) = (r.value, q.value);
                return Err(format!(
                    "values %{}.{} and %{}.{} are live together and overlap",
                    a.node, a.index, b.node, b.index
                ));
            }
        }
    }
    Ok(())
}
