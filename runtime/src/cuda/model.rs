//! A compiled program on a CUDA device: the very schedule the CPU backend's host code runs
//! (`qgc_codegen::host::Schedule`: kernel steps with their bindings, elementwise chains, output
//! copies, value locations in one planned arena), compiled by Cranelift into device host code
//! (`HostOptions::device`) whose pointers are device addresses — one device arena of the plan's
//! size, weights uploaded once as bound (bf16 stays bf16 where the kernel reads bf16) — and
//! whose calls go to the CUDA shims (`shims`): each kernel step its family's launcher, each
//! chain the CUDA C that `qgc_codegen::cuda` renders from the same chain description.
//!
//! Runs on any [`Device`]: a GPU (cudarc) or the PTX interpreter. State tensors are uploaded
//! for the call and read back after it (KV caches with their spare capacity).

use super::device::{DevPtr, Device};
use super::kernels::{self as k, Loaded};
use super::state::DeviceState;
use super::{nvrtc, CudaError, ModuleId};
use crate::compiled::{CpuModel, Entry};
use crate::tensor::{StateTensor, Tensor};
use crate::weights::HostTensor;
use qgc_codegen::cuda::CudaKernels;
use qgc_codegen::host::{HostEntry, IoKind};
use qgc_ir::{Bindings, DType};
use std::collections::BTreeMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

/// A program compiled for a CUDA device, weights uploaded.
pub struct CudaModel<'w> {
    cpu: CpuModel<'w>,
    pub(super) dev: Arc<dyn Device>,
    pub(super) loaded: Loaded,
    /// Device copies of the CPU model's bound tensors (same index), with their dtype.
    pub(super) tensors: Vec<(DevPtr, DType, usize)>,
    chains: Mutex<BTreeMap<String, ModuleId>>,
    /// The artifact's PTX, when the model came from one (chains are loaded from it).
    embedded: Option<CudaKernels>,
    /// Per entry point: its device host code.
    pub(super) hosts: BTreeMap<Entry, HostEntry>,
    /// Shim calls of the last call (see `CudaModel::shim_calls`).
    pub(super) shim_calls: AtomicUsize,
}

/// Device buffers freed when the call ends, however it ends.
pub(super) struct Buffers<'d> {
    dev: &'d dyn Device,
    list: Vec<DevPtr>,
}

impl Buffers<'_> {
    pub(super) fn alloc(&mut self, bytes: usize) -> Result<DevPtr, CudaError> {
        let p = self.dev.alloc(bytes.max(4))?;
        self.list.push(p);
        Ok(p)
    }
    pub(super) fn upload(&mut self, bytes: &[u8]) -> Result<DevPtr, CudaError> {
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

pub(super) fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub(super) fn bytes_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

pub(super) fn bytes_i32(b: &[u8]) -> Vec<i32> {
    b.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
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
        let hosts = super::shims::host_code(&cpu)?;
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
        let chains = Mutex::new(BTreeMap::new());
        Ok(CudaModel { cpu, dev, loaded, tensors, chains, embedded, hosts, shim_calls: AtomicUsize::new(0) })
    }

    /// The device.
    pub fn device(&self) -> &dyn Device {
        self.dev.as_ref()
    }

    /// The CPU model this was made from (schedules, graphs).
    pub fn cpu(&self) -> &CpuModel<'w> {
        &self.cpu
    }

    pub(super) fn chain_module(&self, name: &str, text: impl FnOnce() -> String) -> Result<ModuleId, CudaError> {
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
        self.run_resident(entry, bind, inputs, state, None, None)
    }

    /// A fresh [`DeviceState`] on this model's device (for [`CudaModel::run_resident`]).
    pub fn device_state(&self) -> DeviceState {
        DeviceState::new(self.dev.clone())
    }

    /// As [`CudaModel::run`], with the state kept on the device when `resident` is given: state
    /// buffers come from it (uploaded from `state` only the first time), results stay in it, and
    /// `state` keeps only shapes and capacities (its values are stale until read back through
    /// [`DeviceState::dense`]). Only non-state outputs (logits, hidden) come back to the host;
    /// with `argmax` naming an output (`[.., vocab]` logits), its rows' argmax is computed on
    /// the device and returned as `argmax` (i32, the output's shape without the last dim) in its
    /// place, so only the chosen ids cross the bus.
    pub fn run_resident(
        &self,
        entry: Entry,
        bind: &Bindings,
        inputs: &BTreeMap<String, Tensor>,
        state: &mut BTreeMap<String, StateTensor>,
        mut resident: Option<&mut DeviceState>,
        argmax: Option<&str>,
    ) -> Result<BTreeMap<String, Tensor>, CudaError> {
        let bad = |m: String| CudaError::Invalid(m);
        let e = self.cpu.entry(entry).ok_or_else(|| bad(format!("the model has no {} entry point", entry.name())))?;
        let sched = &e.host.schedule;
        let slots = &sched.io.slots;
        let dev = self.dev.as_ref();
        let mut bufs = Buffers { dev, list: Vec::new() };
        // State outputs that share their input's buffer.
        let aliased = crate::compiled::state_aliases(sched, state);
        let before: BTreeMap<String, usize> =
            state.iter().map(|(n, st)| (n.clone(), st.axis().map_or(0, |a| st.shape()[a]))).collect();
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
                        io[kk] = match resident.as_deref_mut() {
                            Some(ds) => ds.buffer(&slot.name, st, before.get(&slot.name).copied().unwrap_or(0))?,
                            None => bufs.upload(&f32_bytes(st.data()))?,
                        };
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
            io[kk] = match (resident.as_deref(), state.get(&slot.name)) {
                (Some(ds), Some(st)) => ds.fresh(&StateTensor::zeros(slot.ty.eval(bind), st.axis()))?,
                _ => {
                    let p = bufs.alloc(4 * n)?;
                    dev.zero(p, 4 * n)?;
                    p
                }
            };
            fresh.push(kk);
        }
        let arena_bytes =
            sched.arena_bytes.checked_eval(bind).ok_or_else(|| bad("arena size overflows".into()))? as usize;
        let arena = bufs.alloc(arena_bytes + 256)?;
        self.run_host(entry, bind, arena, &io, &caps, &mut bufs)?;
        // Results back.
        let mut outs = BTreeMap::new();
        for &o in aliased.keys() {
            let want = slots[o].ty.eval(bind);
            if let Some(st) = state.get_mut(&slots[o].name) {
                if resident.is_none() {
                    let mut b = vec![0u8; 4 * st.data().len()];
                    dev.dtoh(io[o], &mut b)?;
                    st.data_mut().copy_from_slice(&bytes_f32(&b));
                }
                if let Some(a) = st.axis() {
                    st.set_len(want[a]);
                }
            }
        }
        for kk in fresh {
            let slot = &slots[kk];
            let shape = slot.ty.eval(bind);
            let n: usize = shape.iter().product();
            if let (Some(ds), Some(axis)) = (resident.as_deref_mut(), state.get(&slot.name).map(|s| s.axis())) {
                let st = StateTensor::zeros(shape, axis);
                ds.commit(&slot.name, &st, io[kk]);
                state.insert(slot.name.clone(), st);
                continue;
            }
            if argmax == Some(slot.name.as_str()) {
                let vocab = shape.last().copied().unwrap_or(1).max(1);
                let rows = n / vocab;
                let ids = bufs.alloc(4 * rows)?;
                k::argmax::argmax(dev, &self.loaded, rows, vocab, io[kk], ids)?;
                let mut b = vec![0u8; 4 * rows];
                dev.dtoh(ids, &mut b)?;
                let v = bytes_i32(&b);
                outs.insert("argmax".to_string(), Tensor::i32(shape[..shape.len() - 1].to_vec(), v));
                continue;
            }
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
                        DType::I32 => Tensor::i32(shape, bytes_i32(&b)),
                        _ => Tensor::f32(shape, bytes_f32(&b)),
                    };
                    outs.insert(slot.name.clone(), t);
                }
            }
        }
        Ok(outs)
    }
}
