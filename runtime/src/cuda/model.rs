//! A compiled program on a CUDA device: the very schedule the CPU backend's host code runs
//! (`qgc_codegen::host::Schedule`: kernel steps with their bindings, elementwise chains, output
//! copies, value locations in one planned arena), walked step by step with device pointers —
//! one device arena of the plan's size, weights uploaded once as bound (bf16 stays bf16 where
//! the kernel reads bf16), each kernel step launching its family's launcher, each chain the CUDA
//! C that `qgc_codegen::cuda` renders from the same chain description.
//!
//! Runs on any [`Device`]: a GPU (cudarc) or the PTX interpreter. State tensors are uploaded
//! for the call and read back after it (KV caches with their spare capacity).

use super::device::{DevPtr, Device, LaunchConfig};
use super::kernels::{self as k, Loaded};
use super::{nvrtc, Arg, CudaError, ModuleId};
use crate::compiled::{CpuModel, Entry};
use crate::tensor::{StateTensor, Tensor};
use crate::weights::HostTensor;
use qgc_codegen::binding::{Epilogue, Kernel};
use qgc_codegen::cuda::CudaKernels;
use qgc_codegen::host::{Base, IoKind, Step};
use qgc_ir::interp::{eval_op, Tensor as ITensor};
use qgc_ir::{Bindings, DType, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A program compiled for a CUDA device, weights uploaded.
pub struct CudaModel<'w> {
    cpu: CpuModel<'w>,
    dev: Arc<dyn Device>,
    loaded: Loaded,
    /// Device copies of the CPU model's bound tensors (same index), with their dtype.
    tensors: Vec<(DevPtr, DType, usize)>,
    chains: Mutex<BTreeMap<String, ModuleId>>,
    /// The artifact's PTX, when the model came from one (chains are loaded from it).
    embedded: Option<CudaKernels>,
}

/// Device buffers freed when the call ends, however it ends.
struct Buffers<'d> {
    dev: &'d dyn Device,
    list: Vec<DevPtr>,
}

impl Buffers<'_> {
    fn alloc(&mut self, bytes: usize) -> Result<DevPtr, CudaError> {
        let p = self.dev.alloc(bytes.max(4))?;
        self.list.push(p);
        Ok(p)
    }
    fn upload(&mut self, bytes: &[u8]) -> Result<DevPtr, CudaError> {
        let p = self.alloc(bytes.len())?;
        self.dev.htod(bytes, p)?;
        Ok(p)
    }
}

impl Drop for Buffers<'_> {
    fn drop(&mut self) {
        for p in self.list.drain(..) {
            let _ = self.dev.free(p);
        }
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn bytes_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn tensor_bytes(t: &Tensor) -> Vec<u8> {
    match (t.as_f32(), t.as_i32()) {
        (Some(v), _) => f32_bytes(v),
        (_, Some(v)) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        _ => Vec::new(),
    }
}

/// Compiles every kernel source for `dev`'s arch (through the PTX cache) and loads it.
pub fn load_kernels(dev: &dyn Device) -> Result<Loaded, CudaError> {
    load_kernels_from(dev, None)
}

/// Loads every kernel source on `dev`: from `embedded` PTX (an artifact's) when given — no
/// NVRTC needed; a module it lacks or PTX for another arch is an error — else compiled.
pub fn load_kernels_from(dev: &dyn Device, embedded: Option<&CudaKernels>) -> Result<Loaded, CudaError> {
    if let Some(e) = embedded {
        if e.arch != dev.arch() {
            return Err(CudaError::Load {
                module: "the artifact's kernels".into(),
                message: format!(
                    "compiled for sm_{}, this device is sm_{}; recompile with --target cuda:sm_{}",
                    e.arch,
                    dev.arch(),
                    dev.arch()
                ),
            });
        }
    }
    let mut loaded = Loaded::default();
    for s in k::SOURCES {
        let ptx = match embedded {
            Some(e) => e.modules.get(s.name).cloned().ok_or_else(|| CudaError::Load {
                module: s.name.into(),
                message: "the artifact carries no PTX for it".into(),
            })?,
            None => nvrtc::compile(s, dev.arch())?,
        };
        loaded.insert(s.name, dev.load_module(s.name, &ptx)?);
    }
    Ok(loaded)
}

impl<'w> CudaModel<'w> {
    /// Takes a CPU-compiled model (its schedules and bound weights) to `dev`: compiles and
    /// loads the kernels, checks the weights fit the device's free memory, uploads them.
    pub fn new(cpu: CpuModel<'w>, dev: Arc<dyn Device>) -> Result<CudaModel<'w>, CudaError> {
        CudaModel::with_kernels(cpu, dev, None)
    }

    /// As [`CudaModel::new`], with the kernels' PTX taken from `embedded` (an artifact's) when
    /// given: chains and families are loaded from it and NVRTC is never called.
    pub fn with_kernels(
        cpu: CpuModel<'w>,
        dev: Arc<dyn Device>,
        embedded: Option<&CudaKernels>,
    ) -> Result<CudaModel<'w>, CudaError> {
        let loaded = load_kernels_from(dev.as_ref(), embedded)?;
        let host = cpu.bound_tensors();
        let need: usize = host.iter().map(|t| t.len() * if t.is_bf16() { 2 } else { 4 }).sum();
        let (free, _) = dev.memory()?;
        if need > free {
            return Err(CudaError::OutOfMemory {
                what: "model weights".into(),
                needed: qgc_ir::poly::human_bytes(need as u64, 1),
                free: qgc_ir::poly::human_bytes(free as u64, 1),
            });
        }
        let mut tensors = Vec::with_capacity(host.len());
        for t in host {
            let (bytes, dt): (Vec<u8>, DType) = match t {
                HostTensor::Bf16(v) => (v.iter().flat_map(|x| x.to_le_bytes()).collect(), DType::BF16),
                other => (f32_bytes(&other.to_f32()), DType::F32),
            };
            let p = dev.alloc(bytes.len().max(4))?;
            dev.htod(&bytes, p)?;
            tensors.push((p, dt, t.len()));
        }
        let embedded = embedded.cloned();
        Ok(CudaModel { cpu, dev, loaded, tensors, chains: Mutex::new(BTreeMap::new()), embedded })
    }

    /// The device.
    pub fn device(&self) -> &dyn Device {
        self.dev.as_ref()
    }

    /// The CPU model this was made from (schedules, graphs).
    pub fn cpu(&self) -> &CpuModel<'w> {
        &self.cpu
    }

    fn chain_module(&self, name: &str, text: impl FnOnce() -> String) -> Result<ModuleId, CudaError> {
        let mut c = self.chains.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = c.get(name) {
            return Ok(*m);
        }
        let ptx = match &self.embedded {
            Some(e) => e.modules.get(name).cloned().ok_or_else(|| CudaError::Load {
                module: name.into(),
                message: "the artifact carries no PTX for this elementwise chain".into(),
            })?,
            None => nvrtc::compile_text(name, &text(), self.dev.arch())?,
        };
        let m = self.dev.load_module(name, &ptx)?;
        c.insert(name.to_string(), m);
        Ok(m)
    }

    /// Runs `entry` under `bind` (as [`CpuModel::run`]: state by name in `state`, other inputs
    /// in `inputs`; state outputs written back into `state`, other outputs returned).
    pub fn run(
        &self,
        entry: Entry,
        bind: &Bindings,
        inputs: &BTreeMap<String, Tensor>,
        state: &mut BTreeMap<String, StateTensor>,
    ) -> Result<BTreeMap<String, Tensor>, CudaError> {
        let bad = |m: String| CudaError::Invalid(m);
        let e = self.cpu.entry(entry).ok_or_else(|| bad(format!("the model has no {} entry point", entry.name())))?;
        let sched = &e.host.schedule;
        let slots = &sched.io.slots;
        let g = &e.graph;
        let dev = self.dev.as_ref();
        let mut bufs = Buffers { dev, list: Vec::new() };
        // State outputs that share their input's buffer.
        let aliased: BTreeMap<usize, usize> = (sched.aliases.iter())
            .filter(|a| slots[a.output].name == slots[a.input].name)
            .filter(|a| state.get(&slots[a.input].name).is_some_and(|st| st.axis() == a.grows))
            .map(|a| (a.output, a.input))
            .collect();
        for &o in aliased.keys() {
            let want = slots[o].ty.eval(bind);
            if let Some(st) = state.get_mut(&slots[o].name) {
                if let Some(len) = st.axis().and_then(|a| want.get(a)) {
                    st.reserve(*len);
                }
            }
        }
        let mut io = vec![DevPtr(0); slots.len()];
        let mut caps: Vec<Option<(usize, usize)>> = vec![None; slots.len()];
        for (kk, slot) in slots.iter().enumerate() {
            match slot.kind {
                IoKind::Input => match state.get(&slot.name) {
                    Some(st) => {
                        if st.shape() != slot.ty.eval(bind) {
                            return Err(bad(format!(
                                "state {:?}: expected {:?}, got {:?}",
                                slot.name,
                                slot.ty.eval(bind),
                                st.shape()
                            )));
                        }
                        io[kk] = bufs.upload(&f32_bytes(st.data()))?;
                        caps[kk] = st.axis().map(|a| (a, st.capacity()));
                    }
                    None => {
                        let t = inputs.get(&slot.name).ok_or_else(|| bad(format!("missing input {:?}", slot.name)))?;
                        if !t.fits(&slot.ty, bind) {
                            return Err(bad(format!(
                                "input {:?}: expected {:?}, got {}",
                                slot.name,
                                slot.ty.eval(bind),
                                t.describe()
                            )));
                        }
                        io[kk] = bufs.upload(&tensor_bytes(t))?;
                    }
                },
                IoKind::Weight => {
                    let t =
                        e.slot_tensor(kk).ok_or_else(|| bad(format!("internal: weight slot {} unbound", slot.name)))?;
                    io[kk] = self.tensors[t].0;
                }
                IoKind::Output => {}
            }
        }
        let mut fresh: Vec<usize> = Vec::new();
        for (kk, slot) in slots.iter().enumerate() {
            if slot.kind != IoKind::Output {
                continue;
            }
            if let Some(&i) = aliased.get(&kk) {
                io[kk] = io[i];
                caps[kk] = caps[i];
                continue;
            }
            let n: usize = slot.ty.eval(bind).iter().product();
            io[kk] = bufs.alloc(4 * n)?;
            dev.zero(io[kk], 4 * n)?;
            fresh.push(kk);
        }
        let arena_bytes =
            sched.arena_bytes.checked_eval(bind).ok_or_else(|| bad("arena size overflows".into()))? as usize;
        let arena = bufs.alloc(arena_bytes + 256)?;
        let at = |v: &Value| -> Result<DevPtr, CudaError> {
            let loc = sched.locs[v.node][v.index]
                .as_ref()
                .ok_or_else(|| bad(format!("internal: value of {} has no location", g.nodes[v.node].name)))?;
            let base = match loc.base {
                Base::Arena => arena,
                Base::Io(s) => io[s],
            };
            Ok(base.offset(loc.offset.eval(bind) as usize))
        };
        let cap_of = |v: &Value, axis: usize, dflt: usize| -> usize {
            match sched.locs[v.node][v.index].as_ref().map(|l| l.base) {
                Some(Base::Io(s)) => match caps[s] {
                    Some((a, c)) if a == axis => c,
                    _ => dflt,
                },
                _ => dflt,
            }
        };
        for step in &sched.steps {
            match step {
                Step::Kernel { node, kernel, .. } => {
                    let n = &g.nodes[*node];
                    let ops: Vec<DevPtr> = n.inputs.iter().map(&at).collect::<Result<_, _>>()?;
                    let res: Vec<DevPtr> =
                        (0..n.outputs.len()).map(|r| at(&Value { node: *node, index: r })).collect::<Result<_, _>>()?;
                    let wdt = |j: usize| e.operand_weight(*node, j).map_or(DType::F32, |t| self.tensors[t].1);
                    let ctx = Call { node: *node, ops, res, bind, cap_of: &cap_of, wdt: &wdt, bufs: &mut bufs };
                    self.dispatch(e, kernel, ctx).map_err(|err| match err {
                        CudaError::Launch { kernel, message } => {
                            CudaError::Launch { kernel: format!("{kernel} ({})", n.name), message }
                        }
                        other => other,
                    })?;
                }
                Step::Chain { chain, inputs: ins, out, .. } => {
                    let ch = &sched.chains[*chain];
                    let name = qgc_codegen::cuda::chain_kernel_name(ch);
                    let m = self.chain_module(&name, || qgc_codegen::cuda::render_chain(&name, ch))?;
                    let numel: usize = g.ty(*out).eval(bind).iter().product();
                    if numel == 0 {
                        continue;
                    }
                    let mut args = vec![Arg::Ptr(at(out)?)];
                    for v in ins {
                        args.push(Arg::Ptr(at(v)?));
                    }
                    args.push(Arg::I64(numel as i64));
                    if ch.has_rows() {
                        args.push(Arg::I64(ch.inner.unwrap_or(1) as i64));
                    }
                    let blocks = numel.div_ceil(256).min(65_535) as u32;
                    dev.launch(m, &name, LaunchConfig::linear(blocks, 256), &args)?;
                }
                Step::Copy { value, slot } => {
                    let n: usize = g.ty(*value).eval(bind).iter().product();
                    dev.dtod(at(value)?, io[*slot], 4 * n)?;
                }
            }
        }
        // Results back.
        let mut outs = BTreeMap::new();
        for &o in aliased.keys() {
            let want = slots[o].ty.eval(bind);
            if let Some(st) = state.get_mut(&slots[o].name) {
                let mut b = vec![0u8; 4 * st.data().len()];
                dev.dtoh(io[o], &mut b)?;
                st.data_mut().copy_from_slice(&bytes_f32(&b));
                if let Some(a) = st.axis() {
                    st.set_len(want[a]);
                }
            }
        }
        for kk in fresh {
            let slot = &slots[kk];
            let shape = slot.ty.eval(bind);
            let n: usize = shape.iter().product();
            let mut b = vec![0u8; 4 * n];
            dev.dtoh(io[kk], &mut b)?;
            match state.get(&slot.name).map(|s| s.axis()) {
                Some(axis) => {
                    let mut st = StateTensor::zeros(shape, axis);
                    st.data_mut().copy_from_slice(&bytes_f32(&b));
                    state.insert(slot.name.clone(), st);
                }
                None => {
                    let t = match slot.ty.dtype {
                        DType::I32 => Tensor::i32(
                            shape,
                            b.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
                        ),
                        _ => Tensor::f32(shape, bytes_f32(&b)),
                    };
                    outs.insert(slot.name.clone(), t);
                }
            }
        }
        Ok(outs)
    }
}

/// One kernel step's pointers and helpers.
struct Call<'a, 'd> {
    node: usize,
    ops: Vec<DevPtr>,
    res: Vec<DevPtr>,
    bind: &'a Bindings,
    cap_of: &'a dyn Fn(&Value, usize, usize) -> usize,
    wdt: &'a dyn Fn(usize) -> DType,
    bufs: &'a mut Buffers<'d>,
}

impl CudaModel<'_> {
    fn dispatch(&self, e: &crate::compiled::CpuEntry, kernel: &Kernel, c: Call) -> Result<(), CudaError> {
        let (dev, l) = (self.dev.as_ref(), &self.loaded);
        let ev = |p: &qgc_ir::Poly| p.eval(c.bind) as usize;
        let n = &e.graph.nodes[c.node];
        let (ops, res) = (&c.ops, &c.res);
        match kernel {
            Kernel::Source | Kernel::View | Kernel::Pointwise => Ok(()),
            Kernel::Interp { .. } => {
                let mut ins = Vec::new();
                for (j, v) in n.inputs.iter().enumerate() {
                    let ty = e.graph.ty(*v);
                    let shape = ty.eval(c.bind);
                    let mut b = vec![0u8; 4 * shape.iter().product::<usize>()];
                    dev.dtoh(ops[j], &mut b)?;
                    ins.push(match ty.dtype {
                        DType::I32 => ITensor::i32(
                            shape,
                            b.chunks_exact(4).map(|x| i32::from_le_bytes([x[0], x[1], x[2], x[3]])).collect(),
                        ),
                        _ => ITensor::f32(shape, bytes_f32(&b)),
                    });
                }
                let refs: Vec<&ITensor> = ins.iter().collect();
                let outs = eval_op(&n.op, &refs, c.bind)
                    .map_err(|m| CudaError::Launch { kernel: "interpreter fallback".into(), message: m })?;
                for (r, t) in outs.iter().enumerate() {
                    let b = match (t.as_f32(), t.as_i32()) {
                        (Some(v), _) => f32_bytes(v),
                        (_, Some(v)) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                        _ => Vec::new(),
                    };
                    dev.htod(&b, res[r])?;
                }
                Ok(())
            }
            Kernel::Embed { tokens, vocab, hidden } => {
                let flag = c.bufs.upload(&i32::MAX.to_le_bytes())?;
                k::embed::embed(dev, l, ev(tokens), *vocab, *hidden, ops[0], (c.wdt)(0), ops[1], res[0], Some(flag))?;
                let mut b = [0u8; 4];
                dev.dtoh(flag, &mut b)?;
                let i = i32::from_le_bytes(b);
                if i != i32::MAX {
                    return Err(CudaError::Launch {
                        kernel: "qgc_embed".into(),
                        message: format!("token id at position {i} is outside the vocabulary of {vocab}"),
                    });
                }
                Ok(())
            }
            Kernel::MatMul(m) => {
                let rows = ev(&m.rows);
                let gate = match m.epilogue {
                    Epilogue::SigmoidGate { gate, .. } | Epilogue::SigmoidGatePrologue { gate, .. } => Some(ops[gate]),
                    _ => None,
                };
                let sb = k::linear::matmul_scratch_bytes(m, rows);
                let scratch = if sb > 0 { Some(c.bufs.alloc(sb)?) } else { None };
                k::linear::matmul(dev, l, m, rows, ops[0], ops[m.weight], (c.wdt)(m.weight), gate, res[0], scratch)
            }
            Kernel::Norm(nm) => k::norm::norm(dev, l, nm, ev(&nm.rows), ops, res),
            Kernel::Rope(r) => k::rope::rope(dev, l, r, ev(&r.tokens), ops, res[0]),
            Kernel::MaskPadding { rows, inner } => {
                k::movement::mask_padding(dev, l, ev(rows), *inner, ops[0], ops[1], res[0])
            }
            Kernel::KvAppend(kv) => {
                let (b, p, s) = (ev(&kv.batch), ev(&kv.past), ev(&kv.new));
                let in_cap = (c.cap_of)(&n.inputs[0], 2, p);
                let out_cap = (c.cap_of)(&Value { node: c.node, index: 0 }, 2, p + s);
                k::movement::kv_append(dev, l, kv, (b, p, s), (in_cap, out_cap), ops[0], ops[1], res[0])
            }
            Kernel::Attention(a) => {
                let (b, s, len) = (ev(&a.batch), ev(&a.s), ev(&a.len));
                let cap = (c.cap_of)(&n.inputs[1], 2, len);
                k::attention::attention(dev, l, a, (b, s, len), cap, ops[0], ops[1], ops[2], ops[3], res[0])
            }
            Kernel::Conv(cv) => {
                k::conv::conv(dev, l, cv, (ev(&cv.batch), ev(&cv.s)), ops[0], ops[1], ops[2], res[0], res[1])
            }
            Kernel::GdnGates(gg) => k::gdn::gdn_gates(
                dev,
                l,
                gg,
                ev(&gg.rows),
                (ops[0], ops[1], ops[2], ops[3], ops[4], ops[5]),
                (res[0], res[1], res[2], res[3]),
            ),
            Kernel::DeltaRule(d) => k::gdn::delta_rule(
                dev,
                l,
                d,
                (ev(&d.batch), ev(&d.s)),
                (ops[0], ops[1], ops[2], ops[3], ops[4], ops[5]),
                (res[0], res[1]),
            ),
            Kernel::Route(r) => k::moe::route(dev, l, r, ev(&r.rows), ops[0], res[0], res[1]),
            Kernel::Experts(x) => {
                let rows = ev(&x.rows);
                let stack = e
                    .expert_stack(c.node)
                    .ok_or_else(|| CudaError::Invalid(format!("internal: {} has no expert stack", n.name)))?;
                let (sp, sdt, _) = self.tensors[stack];
                let scratch = c.bufs.alloc(k::moe::experts_scratch_bytes(x, rows))?;
                k::moe::experts(
                    dev,
                    l,
                    x,
                    rows,
                    (ops[0], ops[1], ops[2]),
                    (k::moe::GateUp::Fused(sp), sdt),
                    (ops[5], (c.wdt)(5)),
                    res[0],
                    scratch,
                )
            }
            Kernel::Slice(s) => k::movement::slice(dev, l, s, (ev(&s.outer), ev(&s.inner)), ops[0], res[0]),
            Kernel::Concat(cc) => {
                let inners: Vec<usize> = cc.parts.iter().map(ev).collect();
                k::movement::concat(dev, l, cc, ev(&cc.outer), &inners, ops, res[0])
            }
        }
    }
}
