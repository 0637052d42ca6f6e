//! The placement half of the memory plan, on its own: greedy slot placement of buffers given
//! only their sizes and live intervals. [`memplan::plan`](super::plan) drives it with node-order
//! liveness (and in-place reuse on top); the JIT's arena planner
//! (`qgc_codegen::host::place::ReusePlanner`) drives it with schedule-step intervals through
//! [`place_intervals`].
//!
//! Slots are stacked in the arena, each hosting buffers whose live intervals are disjoint. A new
//! buffer takes the free slot it fits best (coefficient-wise `<=`, which is `<=` under every
//! binding), else grows a free slot to the coefficient-wise maximum ([`Poly::lub`]) or opens a
//! new slot, whichever adds fewer bytes at the representative binding (ties broken at a second,
//! larger binding, then by the lower slot). A slot's offset is the sum of the sizes of the slots
//! below it; every size is rounded up coefficient-wise to [`ALIGN`] bytes, so every offset is a
//! multiple of 64 under every binding. Growing a slot adds at most the buffer's own aligned size
//! coefficient-wise, so the arena is never larger than the no-reuse sum of aligned sizes.
//!
//! Safety does not depend on the heuristic: a slot is free for a buffer only when every buffer
//! it hosted died before the new one is written, and slots are disjoint.

use super::ALIGN;
use qgc_ir::{Bindings, Poly};

/// The binding that breaks ties between choices equal at the representative binding.
const TIE_BREAK: Bindings = Bindings { b: 3, s: 70, p: 100 };

/// One slot while placing: its size so far and the last step (or node) any buffer in it is live.
#[derive(Debug, Clone, PartialEq)]
struct SlotUse {
    size: Poly,
    busy_until: usize,
}

/// Slots being filled, bottom up.
#[derive(Debug, Clone, PartialEq)]
pub struct Slots {
    bind: Bindings,
    slots: Vec<SlotUse>,
}

impl Slots {
    /// No slots yet; placement costs are measured at `bind`.
    pub fn new(bind: Bindings) -> Slots {
        Slots { bind, slots: Vec::new() }
    }

    /// Places a buffer of `bytes` live over `first..=last` and returns its slot (a new slot's
    /// index is the previous [`Slots::len`]). Buffers should be placed in order of `first` for
    /// good reuse; any order is safe.
    pub fn place(&mut self, bytes: &Poly, first: usize, last: usize) -> usize {
        let need = bytes.align_up(ALIGN);
        let bind = self.bind;
        let cost = |p: &Poly| (p.eval(&bind), p.eval(&TIE_BREAK));
        let free = || self.slots.iter().enumerate().filter(|(_, s)| s.busy_until < first);
        let fit = free().filter(|(_, s)| need.le(&s.size)).min_by_key(|(k, s)| (cost(&s.size), *k)).map(|(k, _)| k);
        let slot = fit.or_else(|| {
            let grow = |s: &SlotUse| {
                let (a, b) = (cost(&s.size.lub(&need)), cost(&s.size));
                (a.0 - b.0, a.1 - b.1)
            };
            let best = free().map(|(k, s)| (grow(s), k)).min()?;
            (best.0 < cost(&need)).then_some(best.1)
        });
        let slot = slot.unwrap_or_else(|| {
            self.slots.push(SlotUse { size: Poly::zero(), busy_until: 0 });
            self.slots.len() - 1
        });
        self.host(slot, &need, last);
        slot
    }

    /// Hosts one more buffer of `bytes` in `slot`, live until `last`, without any free check:
    /// for a result written in place over the slot's current buffer, which the caller proved
    /// dies where the new one is written. Grows the slot if the buffer does not fit.
    pub fn reuse(&mut self, slot: usize, bytes: &Poly, last: usize) {
        self.host(slot, &bytes.align_up(ALIGN), last);
    }

    fn host(&mut self, slot: usize, need: &Poly, last: usize) {
        let s = &mut self.slots[slot];
        s.size = s.size.lub(need);
        s.busy_until = s.busy_until.max(last);
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no slot was opened.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Size of slot `k` (a multiple of [`ALIGN`] under every binding).
    pub fn size(&self, k: usize) -> &Poly {
        &self.slots[k].size
    }

    /// Each slot's offset (the sum of the sizes below it) and the arena size (the sum of all).
    pub fn layout(&self) -> (Vec<Poly>, Poly) {
        let mut offsets = Vec::with_capacity(self.slots.len());
        let mut total = Poly::zero();
        for s in &self.slots {
            offsets.push(total.clone());
            total = total.add(&s.size);
        }
        (offsets, total)
    }
}

/// A buffer to place: its size and its inclusive live interval (in any unit of time: nodes,
/// schedule steps). Two buffers may share bytes only if their intervals are disjoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    /// Size in bytes.
    pub bytes: Poly,
    /// When it is written.
    pub first: usize,
    /// When it is last read (`>= first`).
    pub last: usize,
}

/// [`place_intervals`]'s answer.
#[derive(Debug, Clone, PartialEq)]
pub struct IntervalPlan {
    /// Byte offset of each interval's buffer (same order), a multiple of [`ALIGN`] under every
    /// binding.
    pub offsets: Vec<Poly>,
    /// Arena bytes: the sum of the slot sizes, `<=` coefficient-wise the sum of the aligned
    /// sizes.
    pub size: Poly,
}

/// Places `intervals` into slots ([`Slots`]) in order of `first` (ties in input order), costs
/// measured at `bind`.
pub fn place_intervals(intervals: &[Interval], bind: &Bindings) -> IntervalPlan {
    let mut order: Vec<usize> = (0..intervals.len()).collect();
    order.sort_by_key(|&k| intervals[k].first);
    let mut slots = Slots::new(*bind);
    let mut slot_of = vec![0; intervals.len()];
    for k in order {
        let r = &intervals[k];
        slot_of[k] = slots.place(&r.bytes, r.first, r.last);
    }
    let (offsets, size) = slots.layout();
    IntervalPlan { offsets: slot_of.into_iter().map(|k| offsets[k].clone()).collect(), size }
}
