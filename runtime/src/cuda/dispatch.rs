//! One kernel step on the device: the launcher that a node's [`Kernel`] binding names, matched
//! exhaustively (as the CPU shims match it), with the step's device pointers and dims.

use super::device::DevPtr;
use super::kernels as k;
use super::model::{bytes_f32, bytes_i32, f32_bytes, Buffers, CudaModel};
use super::CudaError;
use qgc_codegen::binding::{Epilogue, Kernel};
use qgc_ir::interp::{eval_op, Tensor as ITensor};
use qgc_ir::{Bindings, DType, Value};

/// One kernel step's pointers and helpers.
pub(super) struct Call<'a, 'd> {
    pub(super) node: usize,
    pub(super) ops: Vec<DevPtr>,
    pub(super) res: Vec<DevPtr>,
    /// The concrete shapes of the operands then the results (the host code's `dims`).
    pub(super) shapes: Vec<Vec<usize>>,
    pub(super) bind: &'a Bindings,
    pub(super) cap_of: &'a dyn Fn(&Value, usize, usize) -> usize,
    pub(super) wdt: &'a dyn Fn(usize) -> DType,
    pub(super) bufs: &'a mut Buffers<'d>,
}

impl CudaModel<'_> {
    /// Runs one kernel step: the launcher its binding names, with the step's pointers.
    pub(super) fn dispatch(&self, e: &crate::compiled::CpuEntry, kernel: &Kernel, c: Call) -> Result<(), CudaError> {
        let (dev, l) = (self.dev.as_ref(), &self.loaded);
        let ev = |p: &qgc_ir::Poly| p.eval(c.bind) as usize;
        let n = &e.graph.nodes[c.node];
        let (ops, res) = (&c.ops, &c.res);
        // Decode (one token per sequence), and prefill under `RowOrder::Invariant`: every row in
        // one summation order whatever the call's size, as on the CPU backend.
        let invariant = c.bind.s == 1 || self.cpu().prefill_order() == crate::cpu::RowOrder::Invariant;
        match kernel {
            Kernel::Source | Kernel::View | Kernel::Pointwise => Ok(()),
            Kernel::Interp { .. } => {
                let mut ins = Vec::new();
                for (j, v) in n.inputs.iter().enumerate() {
                    let ty = e.graph.ty(*v);
                    let shape = c.shapes[j].clone();
                    let mut b = vec![0u8; 4 * shape.iter().product::<usize>()];
                    dev.dtoh(ops[j], &mut b)?;
                    ins.push(match ty.dtype {
                        DType::I32 => ITensor::i32(shape, bytes_i32(&b)),
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
                let sb = k::linear::matmul_scratch_bytes_ordered(m, rows, invariant);
                let scratch = if sb > 0 { Some(c.bufs.alloc(sb)?) } else { None };
                let operands = (ops[0], ops[m.weight], (c.wdt)(m.weight), gate, res[0], scratch);
                k::linear::matmul_ordered(dev, l, m, rows, operands, invariant)
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
                invariant,
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
