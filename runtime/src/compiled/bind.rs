//! Weight binding: every weight a compiled entry point reads, in the dtype its kernel wants
//! (bf16 stays bf16 where the CPU kernel widens it in registers, [`bf16_operand`]), shared
//! between entry points; `load:` weights evaluated from their weight-only subgraph; routed
//! experts' gate/up stacked per expert.

use super::load;
use super::shims::bf16_operand;
use super::{CompiledError, CpuEntry};
use crate::cpu::moe::MoeScratch;
use crate::weights::{HostTensor, RawWeights};
use qgc_codegen::binding::Kernel;
use qgc_codegen::host::{HostEntry, IoKind, Step};
use qgc_ir::interp::InterpError;
use qgc_ir::{Graph, Op};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

/// Binds weights, sharing tensors between entry points.
pub(super) struct Binder<'w> {
    pub weights: &'w dyn RawWeights,
    /// (name, kept bf16 when stored so) -> index into the model's tensors.
    pub index: BTreeMap<(String, bool), usize>,
}

impl<'w> Binder<'w> {
    /// The tensor `key` (computed by `make` the first time), converted to f32 unless `bf16_ok`.
    fn tensor(
        &mut self,
        key: &str,
        bf16_ok: bool,
        tensors: &mut Vec<HostTensor<'w>>,
        make: impl FnOnce(&'w dyn RawWeights) -> Result<HostTensor<'w>, InterpError>,
    ) -> Result<usize, CompiledError> {
        if let Some(&i) = self.index.get(&(key.to_string(), bf16_ok)) {
            return Ok(i);
        }
        let t = make(self.weights).map_err(|source| CompiledError::Weight { name: key.into(), source })?;
        let t = if t.is_bf16() && !bf16_ok { HostTensor::F32(Cow::Owned(t.to_f32())) } else { t };
        tensors.push(t);
        self.index.insert((key.to_string(), bf16_ok), tensors.len() - 1);
        Ok(tensors.len() - 1)
    }

    /// Binds every weight of `g` (its `load:` weights computed by `load`'s outputs).
    pub fn bind(
        &mut self,
        load: &Graph,
        g: Graph,
        host: HostEntry,
        tensors: &mut Vec<HostTensor<'w>>,
    ) -> Result<CpuEntry, CompiledError> {
        let mut kernels: Vec<Option<Kernel>> = vec![None; g.nodes.len()];
        for s in &host.schedule.steps {
            if let Step::Kernel { node, kernel, .. } = s {
                kernels[*node] = Some(kernel.clone());
            }
        }
        // How each weight is read: by a bf16-capable operand only, by the experts kernel only
        // (gate/up, read from the stack instead), or by anything else (f32).
        let mut f32_needed = BTreeSet::new();
        let mut other_use = BTreeSet::new();
        for (i, n) in g.nodes.iter().enumerate() {
            for (k, v) in n.inputs.iter().enumerate() {
                if let Op::Weight { name, .. } = &g.nodes[v.node].op {
                    if !kernels[i].as_ref().is_some_and(|kern| bf16_operand(kern, k)) {
                        f32_needed.insert(name.clone());
                    }
                    if !(matches!(kernels[i], Some(Kernel::Experts(_))) && (k == 3 || k == 4)) {
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
            let bf16_ok = !f32_needed.contains(name);
            let want: usize = n.outputs[0].eval(&Default::default()).iter().product();
            let t = if !other_use.contains(name) {
                // Read only through the experts' stack: bound empty, never read.
                self.tensor("(unused)", false, tensors, |_| Ok(HostTensor::F32(Cow::Owned(Vec::new()))))?
            } else if let Some(v) = load.output(name) {
                self.tensor(name, bf16_ok, tensors, |w| load::eval_load(load, v.node, w))?
            } else {
                self.tensor(name, bf16_ok, tensors, |w| load::eval_load(&g, i, w))?
            };
            if other_use.contains(name) && tensors[t].len() != want {
                let message = format!("{} elements bound for a weight of type {}", tensors[t].len(), n.outputs[0]);
                return Err(CompiledError::Weight {
                    name: name.clone(),
                    source: InterpError::Weight { name: name.clone(), message },
                });
            }
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
            if !matches!(kernels[i], Some(Kernel::Experts(_))) {
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
                let source = |v: usize| match &g.nodes[v].op {
                    Op::Weight { name, .. } => load.output(name).map_or((&g, v), |o| (load, o.node)),
                    _ => (&g, v),
                };
                let ((gg, gi), (ug, ui)) = (source(gate), source(up));
                let (gt, ut) = (load::eval_load(gg, gi, w)?, load::eval_load(ug, ui, w)?);
                Ok(load::stack_experts(&gt, &ut, experts))
            })?;
            let want = 2 * g.ty(n.inputs[3]).eval(&Default::default()).iter().product::<usize>();
            if tensors[stack].len() != want {
                let message = format!("{} stacked elements for {want}", tensors[stack].len());
                return Err(CompiledError::Weight {
                    name: key.clone(),
                    source: InterpError::Weight { name: key, message },
                });
            }
            expert_stacks.insert(i, stack);
        }
        let slot_tensors = (host.io().slots.iter())
            .map(|s| if s.kind == IoKind::Weight { by_name.get(&s.name).copied() } else { None })
            .collect();
        Ok(CpuEntry {
            graph: g,
            host,
            kernels,
            slot_tensors,
            operand_weights,
            expert_stacks,
            scratch: Mutex::new((Vec::new(), MoeScratch::new(), crate::budget::Reservation::none())),
        })
    }
}

/// Bytes the weight binding of `compiled` may copy (at most, counting every copy as f32): the
/// routed experts' gate/up stacks, the `load:` weights computed from their load graphs, and the
/// f32 conversions of weights read by kernels that take f32 only. Checked before binding.
pub(super) fn copies_at_load(compiled: &qgc_codegen::compile::CompiledProgram) -> Option<u64> {
    let mut seen = BTreeSet::new();
    let mut total = 0u64;
    for e in &compiled.entries {
        let g = &e.graph;
        let mut kernels: Vec<Option<&Kernel>> = vec![None; g.nodes.len()];
        for s in &e.schedule.steps {
            if let Step::Kernel { node, kernel, .. } = s {
                kernels[*node] = Some(kernel);
            }
        }
        for (i, n) in g.nodes.iter().enumerate() {
            for (k, v) in n.inputs.iter().enumerate() {
                let Op::Weight { name, ty } = &g.nodes[v.node].op else { continue };
                let stacked = matches!(kernels[i], Some(Kernel::Experts(_))) && k == 3;
                let copied = name.starts_with(qgc_codegen::hoist::LOAD_PREFIX)
                    || stacked
                    || !kernels[i].is_some_and(|kern| bf16_operand(kern, k));
                let key = if stacked { format!("stack:{name}") } else { name.clone() };
                if copied && seen.insert(key) {
                    let bytes = crate::budget::bytes_of(&ty.eval(&Default::default()), if stacked { 8 } else { 4 })?;
                    total = total.checked_add(bytes)?;
                }
            }
        }
    }
    Some(total)
}
