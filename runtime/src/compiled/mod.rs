//! The compiled CPU backend: a program after the pass pipeline, its entry points JIT-compiled by
//! `qgc_codegen::host` (Cranelift host functions calling the [`shims`] over `runtime::cpu`
//! kernels, fused elementwise chains as SIMD loops split over rayon threads), with the weights
//! bound once at load.
//!
//! [`CpuModel::compile`] runs, per entry point: the pass pipeline (fusion), [`load::hoist`]
//! (weight-only subgraphs become load-time weights), host code generation with the reusing
//! arena planner, and weight binding: every weight the host code reads, in the dtype its kernel
//! wants (bf16 stays bf16 for the matmul family, embeddings and experts; see [`load`]).
//! [`CpuModel::run`] calls an entry point like `qgc_ir::interp::run` does: same inputs, same
//! outputs, same errors for bad inputs; `Session` runs either (`Backend`).
//!
//! The entry points are those of the [`Program`] plus [`Entry::PrefillHidden`]: prefill without
//! the `logits` output (what generation feeds all but the last prompt token through, so the
//! vocabulary projection runs once per prompt instead of once per token).

pub mod load;
mod shims;

use crate::cpu::moe::MoeScratch;
use crate::weights::{HostTensor, RawWeights};
use qgc_codegen::host::{compile_entry, required_shims, HostEntry, HostError, HostOptions, IoKind, Precision};
use qgc_ir::interp::Tensor;
use qgc_ir::{Bindings, DType, Graph, Op, Program};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

/// An entry point of a compiled model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Entry {
    /// Prefill over S tokens, logits for every token.
    Prefill,
    /// Prefill over S tokens without logits (state, and `hidden` with an MTP block).
    PrefillHidden,
    /// One token.
    Decode,
    /// The MTP draft block.
    Mtp,
}

impl Entry {
    /// Its name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Entry::Prefill => "prefill",
            Entry::PrefillHidden => "prefill (no logits)",
            Entry::Decode => "decode",
            Entry::Mtp => "mtp",
        }
    }
}

/// Compiled-backend failures.
#[derive(Debug, thiserror::Error)]
pub enum CompiledError {
    /// The pass pipeline failed.
    #[error("optimising {entry}: {message}")]
    Passes {
        /// Entry point.
        entry: &'static str,
        /// What failed.
        message: String,
    },
    /// Host code generation failed.
    #[error("compiling {entry}: {err}")]
    Host {
        /// Entry point.
        entry: &'static str,
        /// Why.
        err: HostError,
    },
    /// A weight could not be bound.
    #[error("weight {name}: {message}")]
    Weight {
        /// Logical (or `load:`) name.
        name: String,
        /// Why.
        message: String,
    },
    /// A bad call: missing or mis-shaped input, or the entry point does not exist.
    #[error("{0}")]
    Input(String),
    /// A kernel reported an error (bad token id, positions, ...).
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
}

impl Default for CpuOptions {
    fn default() -> Self {
        CpuOptions { precision: Precision::F64, parallel_loops: true }
    }
}

/// One compiled entry point.
pub(crate) struct CpuEntry {
    /// The graph the host function was compiled from (after fusion and hoisting).
    pub graph: Graph,
    host: HostEntry,
    /// Per io slot: the bound tensor of a weight slot.
    slot_tensors: Vec<Option<usize>>,
    /// Per node, per operand: the bound tensor when the operand is a weight.
    pub operand_weights: Vec<Vec<Option<usize>>>,
    /// Per `moe_experts` node: its gate/up stack `[E, 2I, H]`.
    pub expert_stacks: BTreeMap<usize, usize>,
    /// The arena and the MoE scratch, kept between calls (one call at a time).
    scratch: Mutex<(Vec<u64>, MoeScratch)>,
}

/// What the shims see through `ctx` during one call.
pub(crate) struct Ctx<'a> {
    pub entry: &'a CpuEntry,
    pub tensors: &'a [HostTensor<'a>],
    pub bind: Bindings,
    pub error: Option<String>,
    pub moe: MoeScratch,
}

/// A program compiled for the CPU with its weights bound.
pub struct CpuModel<'w> {
    entries: BTreeMap<Entry, CpuEntry>,
    tensors: Vec<HostTensor<'w>>,
}

/// `g` without its `logits` output, dead code removed.
pub fn without_logits(g: &Graph) -> Result<Graph, qgc_ir::IrError> {
    let mut h = g.clone();
    h.outputs.retain(|(n, _)| n != "logits");
    qgc_passes::classic::dce(&h)
}

impl<'w> CpuModel<'w> {
    /// Optimises and compiles every entry point of `program` (as lowered) and binds `weights`.
    pub fn compile(
        program: &Program,
        weights: &'w dyn RawWeights,
        opts: CpuOptions,
    ) -> Result<CpuModel<'w>, CompiledError> {
        let pass_err = |entry: Entry| {
            move |e: qgc_passes::PassError| CompiledError::Passes { entry: entry.name(), message: e.to_string() }
        };
        let popts = qgc_passes::Options::default();
        let opt =
            |g: &Graph, e: Entry| qgc_passes::optimise(g, &popts, &mut |_, _| {}).map(|(g, _)| g).map_err(pass_err(e));
        let prefill = opt(&program.prefill, Entry::Prefill)?;
        let hidden = without_logits(&prefill)
            .map_err(|e| CompiledError::Passes { entry: Entry::PrefillHidden.name(), message: e.to_string() })?;
        let mut graphs = vec![(Entry::Prefill, prefill), (Entry::PrefillHidden, hidden)];
        graphs.push((Entry::Decode, opt(&program.decode, Entry::Decode)?));
        if let Some(m) = &program.mtp {
            graphs.push((Entry::Mtp, opt(m, Entry::Mtp)?));
        }
        CpuModel::from_graphs(graphs, weights, opts)
    }

    /// Compiles already optimised entry-point graphs (e.g. one random graph as
    /// [`Entry::Prefill`]) and binds `weights`: hoisting, host code, weight binding.
    pub fn from_graphs(
        graphs: Vec<(Entry, Graph)>,
        weights: &'w dyn RawWeights,
        opts: CpuOptions,
    ) -> Result<CpuModel<'w>, CompiledError> {
        let mut model = CpuModel { entries: BTreeMap::new(), tensors: Vec::new() };
        let mut binder = Binder { weights, index: BTreeMap::new() };
        let hopts =
            HostOptions { fuse_elementwise: true, parallel_loops: opts.parallel_loops, precision: opts.precision };
        for (entry, g) in graphs {
            let fused = g;
            let (g, loads) = load::hoist(&fused)
                .map_err(|e| CompiledError::Passes { entry: entry.name(), message: e.to_string() })?;
            let symbols = required_shims(&g, &hopts);
            let table = shims::table(&symbols);
            let host = compile_entry(&g, &table, &qgc_codegen::host::ReusePlanner::for_graph(&g), &hopts)
                .map_err(|err| CompiledError::Host { entry: entry.name(), err })?;
            let e = binder.bind(&fused, g, host, &loads, &mut model.tensors)?;
            model.entries.insert(entry, e);
        }
        Ok(model)
    }

    /// Whether the model has `entry`.
    pub fn has(&self, entry: Entry) -> bool {
        self.entries.contains_key(&entry)
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
            let is_this = |v: &qgc_ir::Value| matches!(&g.nodes[v.node].op, Op::Weight { name: w, .. } if w == name);
            let uses: Vec<(&qgc_ir::Node, usize)> = g
                .nodes
                .iter()
                .flat_map(|n| n.inputs.iter().enumerate().filter(|(_, v)| is_this(v)).map(move |(j, _)| (n, j)))
                .collect();
            let bytes = tensor_bytes(&self.tensors[t]);
            total += if !uses.is_empty() && uses.iter().all(|(n, j)| matches!(n.op, Op::Embed) && *j == 0) {
                let h = uses[0].0.outputs[0].shape.last().and_then(|d| d.as_const()).unwrap_or(0) as u64;
                h * if self.tensors[t].is_bf16() { 2 } else { 4 }
            } else {
                bytes
            };
        }
        for (&node, &stack) in &e.expert_stacks {
            let n = &g.nodes[node];
            let dim = |v: usize, d: usize| g.ty(n.inputs[v]).shape[d].as_const().unwrap_or(1) as u64;
            let (experts, top_k) = (dim(3, 0), dim(1, 2));
            let down = e.operand_weights[node][5].map_or(0, |d| tensor_bytes(&self.tensors[d]));
            let all = tensor_bytes(&self.tensors[stack]) + down;
            total = total - down + all * top_k / experts.max(1);
        }
        total
    }

    /// Runs `entry` on `inputs` (`tokens`, `positions`, `state.*`, `hidden` for MTP) under `bind`;
    /// returns every named output, like `qgc_ir::interp::run`.
    pub fn run(
        &self,
        entry: Entry,
        bind: &Bindings,
        inputs: &BTreeMap<String, Tensor>,
    ) -> Result<BTreeMap<String, Tensor>, CompiledError> {
        let e = self
            .entries
            .get(&entry)
            .ok_or_else(|| CompiledError::Input(format!("the model has no {} entry point", entry.name())))?;
        let slots = &e.host.io().slots;
        let mut outs: Vec<(usize, Tensor)> = Vec::new();
        let mut io: Vec<*mut u8> = Vec::with_capacity(slots.len());
        for (k, slot) in slots.iter().enumerate() {
            match slot.kind {
                IoKind::Input => {
                    let t = inputs
                        .get(&slot.name)
                        .ok_or_else(|| CompiledError::Input(format!("missing input {:?}", slot.name)))?;
                    if !t.fits(&slot.ty, bind) {
                        let want: Vec<String> = slot.ty.eval(bind).iter().map(usize::to_string).collect();
                        return Err(CompiledError::Input(format!(
                            "input {:?}: expected [{}], got {}",
                            slot.name,
                            want.join(","),
                            t.describe()
                        )));
                    }
                    io.push(match (t.as_f32(), t.as_i32()) {
                        (Some(v), _) => v.as_ptr() as *mut u8,
                        (_, Some(v)) => v.as_ptr() as *mut u8,
                        _ => unreachable!("tensors are f32 or i32"),
                    });
                }
                IoKind::Output => {
                    let shape = slot.ty.eval(bind);
                    let n = shape.iter().product();
                    let t = match slot.ty.dtype {
                        DType::I32 => Tensor::i32(shape, vec![0; n]),
                        _ => Tensor::zeros(shape),
                    };
                    outs.push((k, t));
                    io.push(std::ptr::null_mut());
                }
                IoKind::Weight => {
                    let t = e.slot_tensors[k].expect("every weight slot is bound at load");
                    io.push(match &self.tensors[t] {
                        HostTensor::Bf16(v) => v.as_ptr() as *mut u8,
                        other => other.as_f32().unwrap_or_default().as_ptr() as *mut u8,
                    });
                }
            }
        }
        for (k, t) in &mut outs {
            io[*k] = match &mut t.data {
                qgc_ir::interp::Data::F32(v) => v.as_mut_ptr() as *mut u8,
                qgc_ir::interp::Data::I32(v) => v.as_mut_ptr() as *mut u8,
            };
        }
        let bytes = e.host.arena_bytes().eval(bind) as usize;
        let mut scratch = e.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let (arena, moe) = &mut *scratch;
        if arena.len() * 8 < bytes + 64 {
            arena.resize((bytes + 64).div_ceil(8), 0);
        }
        let base = arena.as_mut_ptr() as *mut u8;
        // SAFETY: `base` points into the arena vector, which has `bytes + 64` bytes.
        let arena_ptr = unsafe { base.add(base.align_offset(64)) };
        let mut cx = Ctx { entry: e, tensors: &self.tensors, bind: *bind, error: None, moe: std::mem::take(moe) };
        let (b, s, p) = (bind.b as i64, bind.s as i64, bind.p as i64);
        // SAFETY: io holds one buffer per slot of its type under `bind` (inputs checked above,
        // outputs freshly allocated, weights bound at load with their slot's element count), the
        // arena has the planned bytes, and ctx is the Ctx the shims expect.
        let status = unsafe { (e.host.func())(&mut cx as *mut Ctx as *mut u8, arena_ptr, io.as_ptr(), b, s, p) };
        *moe = std::mem::take(&mut cx.moe);
        drop(scratch);
        if status != 0 {
            return Err(CompiledError::Kernel(cx.error.unwrap_or_else(|| format!("{} failed", entry.name()))));
        }
        Ok(outs.into_iter().map(|(k, t)| (slots[k].name.clone(), t)).collect())
    }
}

fn tensor_bytes(t: &HostTensor) -> u64 {
    (t.len() * if t.is_bf16() { 2 } else { 4 }) as u64
}

/// Binds weights, sharing tensors between entry points.
struct Binder<'w> {
    weights: &'w dyn RawWeights,
    /// (name, kept bf16 when stored so) -> index into the model's tensors.
    index: BTreeMap<(String, bool), usize>,
}

impl<'w> Binder<'w> {
    /// The tensor `key` (computed by `make` the first time), converted to f32 unless `bf16_ok`.
    fn tensor(
        &mut self,
        key: &str,
        bf16_ok: bool,
        tensors: &mut Vec<HostTensor<'w>>,
        make: impl FnOnce(&'w dyn RawWeights) -> Result<HostTensor<'w>, String>,
    ) -> Result<usize, CompiledError> {
        if let Some(&i) = self.index.get(&(key.to_string(), bf16_ok)) {
            return Ok(i);
        }
        let t = make(self.weights).map_err(|message| CompiledError::Weight { name: key.into(), message })?;
        let t = if t.is_bf16() && !bf16_ok { HostTensor::F32(std::borrow::Cow::Owned(t.to_f32())) } else { t };
        tensors.push(t);
        self.index.insert((key.to_string(), bf16_ok), tensors.len() - 1);
        Ok(tensors.len() - 1)
    }

    /// Binds every weight of `g` (hoisted from `fused`; `loads` says which node of `fused`
    /// computes each `load:` weight).
    fn bind(
        &mut self,
        fused: &Graph,
        g: Graph,
        host: HostEntry,
        loads: &BTreeMap<String, usize>,
        tensors: &mut Vec<HostTensor<'w>>,
    ) -> Result<CpuEntry, CompiledError> {
        // How each weight is read: by a bf16-capable operand only, by the experts kernel only
        // (gate/up, read from the stack instead), or by anything else (f32).
        let mut f32_needed = BTreeSet::new();
        let mut other_use = BTreeSet::new();
        for n in &g.nodes {
            for (k, v) in n.inputs.iter().enumerate() {
                if let Op::Weight { name, .. } = &g.nodes[v.node].op {
                    if !load::bf16_operand(&n.op, k) {
                        f32_needed.insert(name.clone());
                    }
                    if !(matches!(n.op, Op::MoeExperts) && (k == 3 || k == 4)) {
                        other_use.insert(name.clone());
                    }
                }
            }
        }
        // A weight that is also an output is copied out as f32 by the host code.
        for (_, v) in &g.outputs {
            if let Op::Weight { name, .. } = &g.nodes[v.node].op {
                f32_needed.insert(name.clone());
                other_use.insert(name.clone());
            }
        }
        let mut by_name: BTreeMap<String, usize> = BTreeMap::new();
        for (i, n) in g.nodes.iter().enumerate() {
            let Op::Weight { name, .. } = &n.op else { continue };
            if by_name.contains_key(name) {
                continue;
            }
            let t = if !other_use.contains(name) {
                // Read only through the experts' stack: bound empty, never read.
                self.tensor("(unused)", false, tensors, |_| Ok(HostTensor::F32(std::borrow::Cow::Owned(Vec::new()))))?
            } else if let Some(&src) = loads.get(name) {
                self.tensor(name, !f32_needed.contains(name), tensors, |w| load::eval_load(fused, src, w))?
            } else {
                self.tensor(name, !f32_needed.contains(name), tensors, |w| load::eval_load(&g, i, w))?
            };
            by_name.insert(name.clone(), t);
        }
        let weight_of = |v: &qgc_ir::Value| match &g.nodes[v.node].op {
            Op::Weight { name, .. } => by_name.get(name).copied(),
            _ => None,
        };
        let operand_weights: Vec<Vec<Option<usize>>> =
            g.nodes.iter().map(|n| n.inputs.iter().map(weight_of).collect()).collect();
        let mut expert_stacks = BTreeMap::new();
        for (i, n) in g.nodes.iter().enumerate() {
            if !matches!(n.op, Op::MoeExperts) {
                continue;
            }
            let (gate, up) = (n.inputs[3].node, n.inputs[4].node);
            let name = |v: usize| match &g.nodes[v].op {
                Op::Weight { name, .. } => name.clone(),
                _ => g.nodes[v].name.clone(),
            };
            let experts = g.ty(n.inputs[3]).shape[0].as_const().unwrap_or(1);
            let key = format!("stack:{}+{}", name(gate), name(up));
            let stack = self.tensor(&key, true, tensors, |w| {
                let (gt, ut) = (load::eval_load(&g, gate, w)?, load::eval_load(&g, up, w)?);
                Ok(load::stack_experts(&gt, &ut, experts))
            })?;
            expert_stacks.insert(i, stack);
        }
        let slot_tensors = host
            .io()
            .slots
            .iter()
            .map(|s| if s.kind == IoKind::Weight { by_name.get(&s.name).copied() } else { None })
            .collect();
        Ok(CpuEntry {
            graph: g,
            host,
            slot_tensors,
            operand_weights,
            expert_stacks,
            scratch: Mutex::new((Vec::new(), MoeScratch::new())),
        })
    }
}
