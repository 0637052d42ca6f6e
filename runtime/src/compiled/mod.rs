//! The compiled CPU backend: a [`CompiledProgram`] (optimised graphs, kernel bindings, memory
//! plans — made by `qgc_codegen::compile`, or read from an artifact) whose entry points are
//! JIT-compiled by `qgc_codegen::host` (Cranelift host functions calling the [`shims`] over
//! `runtime::cpu` kernels, fused elementwise chains as SIMD loops split over rayon threads), with
//! the weights bound once at load.
//!
//! [`CpuModel::load`] verifies the compiled program (no pass runs), generates host code from
//! each stored schedule, and binds the weights ([`bind`]: every weight the host code reads, in
//! the dtype its kernel wants; `load:` weights evaluated from their load graph).
//! [`CpuModel::compile`] compiles a lowered program first. [`CpuModel::run`] calls an entry point:
//! inputs by name, state updated in place where the schedule allows (an [`IoAlias`]: a state
//! output sharing its input's buffer, a KV cache appended to within its capacity).

mod bind;
pub mod load;
mod shims;

use crate::budget::{self, BudgetError, Reservation};
use crate::cpu::moe::MoeScratch;
use crate::cpu::RowOrder;
use crate::tensor::{grow_axis, StateTensor, Tensor};
use crate::weights::{HostTensor, RawWeights};
use qgc_codegen::binding::Kernel;
pub use qgc_codegen::compile::Entry;
use qgc_codegen::compile::{compile_graphs, compile_program, CompileError, CompiledProgram};
use qgc_codegen::host::{compile_schedule, HostEntry, HostError, HostOptions, IoKind, Precision};
use qgc_ir::interp::InterpError;
use qgc_ir::{Bindings, DType, Graph, Program};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Compiled-backend failures.
#[derive(Debug, thiserror::Error)]
pub enum CompiledError {
    /// Compiling or verifying the program failed.
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// Host code generation failed.
    #[error("generating host code for {entry}")]
    Host {
        /// Entry point.
        entry: &'static str,
        /// Why.
        #[source]
        source: HostError,
    },
    /// The schedule calls a shim the CPU backend does not have.
    #[error("{entry}: {message}")]
    Shim {
        /// Entry point.
        entry: &'static str,
        /// Which.
        message: String,
    },
    /// A weight could not be bound.
    #[error("binding weight {name}")]
    Weight {
        /// Logical (or `load:`) name.
        name: String,
        /// Why.
        #[source]
        source: InterpError,
    },
    /// A bad call: missing or mis-shaped input, or the entry point does not exist.
    #[error("{0}")]
    Input(String),
    /// A buffer the call or the load needs does not fit in the memory budget.
    #[error(transparent)]
    Budget(#[from] BudgetError),
    /// A kernel reported an error (bad token id, positions, ...). State the call updates in
    /// place may be partly written.
    #[error("{0}")]
    Kernel(String),
}

/// Choices of the compiled backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuOptions {
    /// How compiled loops evaluate exp, sigmoid, silu and softplus.
    pub precision: Precision,
    /// Split compiled loops over threads.
    pub parallel_loops: bool,
    /// How calls with several tokens per sequence (prefill) sum. Decode always runs in the
    /// [`RowOrder::Invariant`] order. [`RowOrder::Invariant`] here computes every prefill token
    /// in decode's order (matmuls on the GEMV path, the delta rule token by token), so a
    /// token's bits do not depend on how its sequence was split into calls: a prompt prefilled
    /// at once, in chunks, after a restored snapshot, or decoded token by token gives the same
    /// logits bit for bit (what an exact prefix cache needs). [`RowOrder::Fastest`] uses the
    /// panel GEMM and the chunked delta rule from their thresholds on (equal to f32 rounding).
    pub prefill: RowOrder,
}

impl Default for CpuOptions {
    fn default() -> Self {
        CpuOptions { precision: Precision::F64, parallel_loops: true, prefill: RowOrder::Fastest }
    }
}

/// One compiled entry point.
pub(crate) struct CpuEntry {
    /// The graph the host function was compiled from (after fusion and hoisting).
    pub graph: Graph,
    pub host: HostEntry,
    /// Per node: its kernel binding when it is a kernel step.
    pub kernels: Vec<Option<Kernel>>,
    /// Per io slot: the bound tensor of a weight slot.
    slot_tensors: Vec<Option<usize>>,
    /// Per node, per operand: the bound tensor when the operand is a weight.
    pub operand_weights: Vec<Vec<Option<usize>>>,
    /// Per `moe_experts` node: its gate/up stack `[E, 2I, H]`.
    pub expert_stacks: BTreeMap<usize, usize>,
    /// The arena, the MoE scratch and what the arena holds in the memory budget, kept between
    /// calls (one call at a time).
    scratch: Mutex<(Vec<u64>, MoeScratch, Reservation)>,
}

impl CpuEntry {
    /// The bound tensor of io slot `k` (a weight slot).
    pub(crate) fn slot_tensor(&self, k: usize) -> Option<usize> {
        self.slot_tensors.get(k).copied().flatten()
    }

    /// The bound tensor of operand `j` of node `node`, when it is a weight.
    pub(crate) fn operand_weight(&self, node: usize, j: usize) -> Option<usize> {
        self.operand_weights.get(node).and_then(|o| o.get(j)).copied().flatten()
    }

    /// The gate/up stack `[E, 2I, H]` of `moe_experts` node `node`.
    pub(crate) fn expert_stack(&self, node: usize) -> Option<usize> {
        self.expert_stacks.get(&node).copied()
    }
}

/// What the shims see through `ctx` during one call.
pub(crate) struct Ctx<'a> {
    pub entry: &'a CpuEntry,
    pub tensors: &'a [HostTensor<'a>],
    pub bind: Bindings,
    /// Per io slot: `(axis, capacity)` of a state buffer with spare capacity along `axis`.
    pub caps: Vec<Option<(usize, usize)>>,
    pub error: Option<String>,
    pub moe: MoeScratch,
    /// How this call sums ([`CpuOptions::prefill`] for several tokens per sequence, else
    /// [`RowOrder::Invariant`]).
    pub order: RowOrder,
}

/// A program compiled for the CPU with its weights bound.
pub struct CpuModel<'w> {
    entries: BTreeMap<Entry, CpuEntry>,
    tensors: Vec<HostTensor<'w>>,
    /// How prefill sums ([`CpuOptions::prefill`]).
    prefill: RowOrder,
    /// What the weight binding's copies hold in the memory budget.
    _held: Reservation,
}

impl<'w> CpuModel<'w> {
    /// Optimises and compiles every entry point of `program` (as lowered), then [`CpuModel::load`]s it.
    pub fn compile(
        program: &Program,
        weights: &'w dyn RawWeights,
        opts: CpuOptions,
    ) -> Result<CpuModel<'w>, CompiledError> {
        let (compiled, _) = compile_program(program, &mut |_, _| {})?;
        CpuModel::load(&compiled, weights, opts)
    }

    /// Compiles already optimised entry-point graphs (e.g. one random graph as
    /// [`Entry::Prefill`]) and binds `weights`.
    pub fn from_graphs(
        graphs: Vec<(Entry, Graph)>,
        weights: &'w dyn RawWeights,
        opts: CpuOptions,
    ) -> Result<CpuModel<'w>, CompiledError> {
        CpuModel::load(&compile_graphs(graphs, Vec::new(), Vec::new())?, weights, opts)
    }

    /// Verifies `compiled` (no pass runs), generates host code for every entry point from its
    /// stored schedule, and binds `weights`.
    pub fn load(
        compiled: &CompiledProgram,
        weights: &'w dyn RawWeights,
        opts: CpuOptions,
    ) -> Result<CpuModel<'w>, CompiledError> {
        compiled.verify()?;
        let held = budget::global()
            .reserve("weight copies the compiled backend makes at load", bind::copies_at_load(compiled))?;
        let mut model = CpuModel { entries: BTreeMap::new(), tensors: Vec::new(), prefill: opts.prefill, _held: held };
        let mut binder = bind::Binder { weights, index: BTreeMap::new() };
        let hopts = HostOptions {
            fuse_elementwise: true,
            parallel_loops: opts.parallel_loops,
            precision: opts.precision,
            device: false,
        };
        for e in &compiled.entries {
            let name = e.entry.name();
            let symbols = e.schedule.shim_symbols(hopts.parallel_loops);
            let table = shims::table(&symbols).map_err(|message| CompiledError::Shim { entry: name, message })?;
            let host = compile_schedule(&e.graph, e.schedule.clone(), &table, &hopts)
                .map_err(|source| CompiledError::Host { entry: name, source })?;
            let bound = binder.bind(&e.load, e.graph.clone(), host, &mut model.tensors)?;
            model.entries.insert(e.entry, bound);
        }
        Ok(model)
    }

    /// How prefill sums ([`CpuOptions::prefill`]).
    pub fn prefill_order(&self) -> RowOrder {
        self.prefill
    }

    /// The weights as bound at load (index = a slot's or operand's bound tensor).
    pub(crate) fn bound_tensors(&self) -> &[HostTensor<'w>] {
        &self.tensors
    }

    /// One compiled entry point.
    pub(crate) fn entry(&self, entry: Entry) -> Option<&CpuEntry> {
        self.entries.get(&entry)
    }

    /// The entry points the model has, in order.
    pub fn entry_points(&self) -> impl Iterator<Item = Entry> + '_ {
        self.entries.keys().copied()
    }

    /// Whether the model has `entry`.
    pub fn has(&self, entry: Entry) -> bool {
        self.entries.contains_key(&entry)
    }

    /// The schedule `entry` runs (steps with their kernel bindings, in-place results, io aliases,
    /// the arena plan).
    pub fn schedule(&self, entry: Entry) -> Option<&qgc_codegen::host::Schedule> {
        self.entries.get(&entry).map(|e| &e.host.schedule)
    }

    /// The names of the nodes of `entry` that run on the interpreter fallback.
    pub fn fallbacks(&self, entry: Entry) -> Vec<String> {
        let Some(e) = self.entries.get(&entry) else { return Vec::new() };
        e.host.schedule.fallbacks().into_iter().map(|n| e.graph.nodes[n].name.clone()).collect()
    }

    /// The graph `entry` runs (after fusion and hoisting).
    pub fn graph(&self, entry: Entry) -> Option<&Graph> {
        self.entries.get(&entry).map(|e| &e.graph)
    }

    /// Bytes of weights one decode step reads at batch 1 (bf16 at 2 bytes per element): every
    /// weight of the decode entry point, but of an embedding table one row, and of each layer's
    /// routed experts `top_k` of `E`.
    pub fn decode_bytes(&self) -> u64 {
        let Some(e) = self.entries.get(&Entry::Decode) else { return 0 };
        let g = &e.graph;
        let mut total = 0;
        for (k, t) in e.slot_tensors.iter().enumerate() {
            let Some(t) = *t else { continue };
            let name = &e.host.io().slots[k].name;
            let is_this =
                |v: &qgc_ir::Value| matches!(&g.nodes[v.node].op, qgc_ir::Op::Weight { name: w, .. } if w == name);
            let uses: Vec<(usize, usize)> = (g.nodes.iter().enumerate())
                .flat_map(|(i, n)| n.inputs.iter().enumerate().filter(|(_, v)| is_this(v)).map(move |(j, _)| (i, j)))
                .collect();
            let bytes = tensor_bytes(&self.tensors[t]);
            let embed_row = |&(i, j): &(usize, usize)| matches!(e.kernels[i], Some(Kernel::Embed { .. })) && j == 0;
            total += if !uses.is_empty() && uses.iter().all(embed_row) {
                let h = g.nodes[uses[0].0].outputs[0].shape.last().and_then(|d| d.as_const()).unwrap_or(0) as u64;
                h * if self.tensors[t].is_bf16() { 2 } else { 4 }
            } else {
                bytes
            };
        }
        for (&node, &stack) in &e.expert_stacks {
            let Some(Kernel::Experts(x)) = &e.kernels[node] else { continue };
            let down = e.operand_weights[node][5].map_or(0, |d| tensor_bytes(&self.tensors[d]));
            let all = tensor_bytes(&self.tensors[stack]) + down;
            total = total - down + all * x.top_k as u64 / (x.experts as u64).max(1);
        }
        total
    }

    /// Runs `entry` under `bind`. Inputs come from `state` (by name: `state.*`, growing KV caches
    /// with their capacity) or else from `inputs`; state outputs go back into `state` (updated in
    /// place where the schedule aliases them, growing within capacity), every other output is
    /// returned. On error, state buffers the call updates in place may be partly written.
    pub fn run(
        &self,
        entry: Entry,
        bind: &Bindings,
        inputs: &BTreeMap<String, Tensor>,
        state: &mut BTreeMap<String, StateTensor>,
    ) -> Result<BTreeMap<String, Tensor>, CompiledError> {
        let e = self
            .entries
            .get(&entry)
            .ok_or_else(|| CompiledError::Input(format!("the model has no {} entry point", entry.name())))?;
        let sched = &e.host.schedule;
        let slots = &sched.io.slots;
        // A state tensor must grow along the axis its slot's type grows along (`P`), or not at all:
        // kernels index KV caches with the buffer's capacity, everything else as dense.
        for slot in slots.iter().filter(|s| s.kind != IoKind::Weight) {
            if let Some(st) = state.get(&slot.name) {
                let want = grow_axis(&slot.ty);
                if st.axis() != want {
                    return Err(CompiledError::Input(format!(
                        "state {:?} is stored growing along axis {:?}, the model's {} along {:?}",
                        slot.name,
                        st.axis(),
                        slot.ty,
                        want
                    )));
                }
            }
        }
        let mut caps: Vec<Option<(usize, usize)>> = vec![None; slots.len()];
        let mut outs: Vec<(usize, Tensor)> = Vec::new();
        for (k, slot) in slots.iter().enumerate() {
            match slot.kind {
                IoKind::Input => match state.get(&slot.name) {
                    Some(st) => {
                        if st.shape() != slot.ty.eval(bind) {
                            return Err(bad_input(&slot.name, &slot.ty, bind, &format!("{:?}", st.shape())));
                        }
                        caps[k] = st.axis().map(|a| (a, st.capacity()));
                    }
                    None => {
                        let t = inputs
                            .get(&slot.name)
                            .ok_or_else(|| CompiledError::Input(format!("missing input {:?}", slot.name)))?;
                        if !t.fits(&slot.ty, bind) {
                            return Err(bad_input(&slot.name, &slot.ty, bind, &t.describe()));
                        }
                    }
                },
                IoKind::Output => {
                    if state.contains_key(&slot.name)
                        && slots.iter().all(|s| s.kind != IoKind::Input || s.name != slot.name)
                    {
                        return Err(CompiledError::Input(format!(
                            "state {:?} is not an input of {}",
                            slot.name,
                            entry.name()
                        )));
                    }
                }
                IoKind::Weight => {}
            }
        }
        // State outputs that share their input's buffer: the same tensor, growing as the alias says.
        let aliased = state_aliases(sched, state);
        // Room for what the call appends (inputs checked above; no pointer taken yet).
        for &o in aliased.keys() {
            let want = slots[o].ty.eval(bind);
            let st = state.get_mut(&slots[o].name).expect("aliased slots are state");
            if let Some(len) = st.axis().and_then(|a| want.get(a)) {
                st.reserve(*len);
            }
            caps[o] = st.axis().map(|a| (a, st.capacity()));
        }
        let mut fresh: BTreeMap<usize, StateTensor> = BTreeMap::new();
        for (k, slot) in slots.iter().enumerate() {
            if slot.kind != IoKind::Output || aliased.contains_key(&k) {
                continue;
            }
            match state.get(&slot.name) {
                Some(st) => {
                    let shape = slot.ty.eval(bind);
                    let need = crate::tensor::state_bytes(&shape, st.axis(), 0);
                    budget::global().admit(format_args!("state output {} of {}", slot.name, entry.name()), need)?;
                    let fresh_st = StateTensor::zeros(shape, st.axis());
                    caps[k] = fresh_st.axis().map(|a| (a, fresh_st.capacity()));
                    fresh.insert(k, fresh_st);
                }
                None => {
                    let shape = slot.ty.eval(bind);
                    let need = budget::bytes_of(&shape, 4);
                    budget::global().admit(format_args!("output {} of {}", slot.name, entry.name()), need)?;
                    outs.push((k, Tensor::zeros(shape, slot.ty.dtype)))
                }
            }
        }
        let mut io: Vec<*mut u8> = vec![std::ptr::null_mut(); slots.len()];
        for (k, slot) in slots.iter().enumerate() {
            io[k] = match slot.kind {
                IoKind::Input => match state.get_mut(&slot.name) {
                    Some(st) => st.data_mut().as_mut_ptr() as *mut u8,
                    None => host_ptr(&inputs[&slot.name]),
                },
                IoKind::Output => match aliased.get(&k) {
                    Some(_) => continue,
                    None => match fresh.get_mut(&k) {
                        Some(st) => st.data_mut().as_mut_ptr() as *mut u8,
                        None => continue,
                    },
                },
                IoKind::Weight => {
                    let t = e.slot_tensors[k].expect("every weight slot is bound at load");
                    match &self.tensors[t] {
                        HostTensor::Bf16(v) => v.as_ptr() as *mut u8,
                        other => other.as_f32().unwrap_or_default().as_ptr() as *mut u8,
                    }
                }
            };
        }
        for (&o, &i) in &aliased {
            io[o] = io[i];
        }
        for (k, t) in &mut outs {
            io[*k] = match t.dtype() {
                DType::I32 => t.as_i32_mut().map_or(std::ptr::null_mut(), |v| v.as_mut_ptr() as *mut u8),
                _ => t.as_f32_mut().map_or(std::ptr::null_mut(), |v| v.as_mut_ptr() as *mut u8),
            };
        }
        let mut scratch = e.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let (arena, moe, held) = &mut *scratch;
        let need = e.host.arena_bytes().checked_eval(bind).and_then(|b| b.checked_add(64));
        let what = || format!("the {} arena at B={},S={},P={}", entry.name(), bind.b, bind.s, bind.p);
        let bytes = need.ok_or_else(|| BudgetError::Overflow { what: what() })? as usize;
        if arena.len() * 8 < bytes {
            held.resize(what(), Some(bytes as u64))?;
            arena.resize(bytes.div_ceil(8), 0);
        }
        let base = arena.as_mut_ptr() as *mut u8;
        // SAFETY: `base` points into the arena vector, which has the planned bytes + 64.
        let arena_ptr = unsafe { base.add(base.align_offset(64)) };
        let order = if bind.s == 1 { RowOrder::Invariant } else { self.prefill };
        let mut cx =
            Ctx { entry: e, tensors: &self.tensors, bind: *bind, caps, error: None, moe: std::mem::take(moe), order };
        let (b, s, p) = (bind.b as i64, bind.s as i64, bind.p as i64);
        // SAFETY: io holds one buffer per slot of its type under `bind` (inputs checked above,
        // state buffers of their logical shape with `caps` entries along a growing axis, outputs
        // freshly allocated, aliased outputs the input buffer reserved for the appended length,
        // weights bound at load with their slot's element count), the arena has the planned
        // bytes, and ctx is the Ctx the shims expect.
        let status = unsafe { (e.host.func())(&mut cx as *mut Ctx as *mut u8, arena_ptr, io.as_ptr(), b, s, p) };
        *moe = std::mem::take(&mut cx.moe);
        drop(scratch);
        if status != 0 {
            return Err(CompiledError::Kernel(cx.error.unwrap_or_else(|| format!("{} failed", entry.name()))));
        }
        for &o in aliased.keys() {
            let want = slots[o].ty.eval(bind);
            let st = state.get_mut(&slots[o].name).expect("aliased slots are state");
            if let Some(a) = st.axis() {
                st.set_len(want[a]);
            }
        }
        for (k, st) in fresh {
            state.insert(slots[k].name.clone(), st);
        }
        Ok(outs.into_iter().map(|(k, t)| (slots[k].name.clone(), t)).collect())
    }
}

/// Output slots of `sched` that share their input slot's buffer (output → input): a state
/// tensor updated in place, or grown along the axis the alias says.
pub(crate) fn state_aliases(
    sched: &qgc_codegen::host::Schedule,
    state: &BTreeMap<String, StateTensor>,
) -> BTreeMap<usize, usize> {
    let slots = &sched.io.slots;
    (sched.aliases.iter())
        .filter(|a| slots[a.output].name == slots[a.input].name)
        .filter(|a| state.get(&slots[a.input].name).is_some_and(|st| st.axis() == a.grows))
        .map(|a| (a.output, a.input))
        .collect()
}

fn bad_input(name: &str, ty: &qgc_ir::TensorType, bind: &Bindings, got: &str) -> CompiledError {
    let want: Vec<String> = ty.eval(bind).iter().map(usize::to_string).collect();
    CompiledError::Input(format!("input {name:?}: expected [{}], got {got}", want.join(",")))
}

/// The host address of a tensor's elements (read-only use by the host code).
fn host_ptr(t: &Tensor) -> *mut u8 {
    match (t.as_f32(), t.as_i32()) {
        (Some(v), _) => v.as_ptr() as *mut u8,
        (_, Some(v)) => v.as_ptr() as *mut u8,
        _ => std::ptr::null_mut(),
    }
}

fn tensor_bytes(t: &HostTensor) -> u64 {
    (t.len() * if t.is_bf16() { 2 } else { 4 }) as u64
}
