//! The CPU side of the kernel binding: the shims the JIT host code calls (one symbol per kind of
//! call, [`Kernel::symbol`]), each decoding the host ABI and running the `runtime::cpu` kernel
//! that the node's [`Kernel`] description names ([`dispatch`] matches on it exhaustively).
//!
//! **In place.** A result the schedule placed over an operand shares its pointer; an output io
//! slot may share its input slot's buffer. Kernels that update a buffer (`add_rms_norm`'s sum,
//! norms and RoPE over their input, the conv and delta-rule state, the KV append) take the
//! result through [`Call::inout`], which copies the operand in only when the two are different
//! buffers; no shared and mutable view of one buffer ever exist at once. KV caches may be stored
//! with spare capacity along their length ([`Call::capacity`]); a KV append into the buffer it
//! reads writes only the new entries.
//!
//! The interpreter fallback ([`Kernel::Interp`]) runs `eval_op` on copies of the operands. A
//! panic inside a kernel (a broken internal invariant) becomes an error, never an abort.

use super::Ctx;
use crate::cpu::attention::{self, AttnDims, KvShape};
use crate::cpu::gdn::{self, GdnDims, GdnInputs};
use crate::cpu::linear::{linear_ordered, Epilogue as LinearEpilogue};
use crate::cpu::{embed, moe, norm, rope, HeadLayout, WeightRef};
use crate::weights::HostTensor;
use qgc_codegen::binding::{self as b, Epilogue, Gate, Kernel, NormKind};
use qgc_codegen::host::{decode_dims, Base, LoopFn, ShimFn, ShimTable};
use qgc_ir::interp::{eval_op, Tensor};
use qgc_ir::{DType, Poly, Value};
use rayon::prelude::*;

/// One shim call: the node, its operand and result pointers, and their dims.
pub(crate) struct Call {
    node: usize,
    nin: usize,
    args: *const *mut u8,
    shapes: Vec<Vec<usize>>,
}

impl Call {
    /// Decodes `dims` (`rank, d0, ..` per value) for `count` values.
    unsafe fn new(node: usize, nin: usize, count: usize, args: *const *mut u8, dims: *const i64) -> Call {
        Call { node, nin, args, shapes: decode_dims(dims, count) }
    }

    fn shape(&self, j: usize) -> &[usize] {
        &self.shapes[j]
    }

    fn numel(&self, j: usize) -> usize {
        self.shapes[j].iter().product()
    }

    fn ptr(&self, j: usize) -> *mut u8 {
        // SAFETY: the host code passes one pointer per operand and result.
        unsafe { *self.args.add(j) }
    }

    /// Operand `j` as f32.
    unsafe fn f32<'a>(&self, j: usize) -> &'a [f32] {
        std::slice::from_raw_parts(self.ptr(j) as *const f32, self.numel(j))
    }

    /// Operand `j` as i32.
    unsafe fn i32<'a>(&self, j: usize) -> &'a [i32] {
        std::slice::from_raw_parts(self.ptr(j) as *const i32, self.numel(j))
    }

    /// Result `r`, writable.
    #[allow(clippy::mut_from_ref)]
    unsafe fn out<'a>(&self, r: usize) -> &'a mut [f32] {
        std::slice::from_raw_parts_mut(self.ptr(self.nin + r) as *mut f32, self.numel(self.nin + r))
    }

    /// Result `r` holding operand `j`'s values (of the same size): the operand's own buffer
    /// when the schedule put the result there, else a copy.
    #[allow(clippy::mut_from_ref)]
    unsafe fn inout<'a>(&self, r: usize, j: usize) -> &'a mut [f32] {
        let (dst, src, n) = (self.ptr(self.nin + r) as *mut f32, self.ptr(j) as *const f32, self.numel(self.nin + r));
        if !std::ptr::eq(dst, src) {
            std::ptr::copy_nonoverlapping(src, dst, n);
        }
        std::slice::from_raw_parts_mut(dst, n)
    }

    /// Whether result `r` is operand `j`'s buffer.
    fn same(&self, r: usize, j: usize) -> bool {
        self.ptr(self.nin + r) == self.ptr(j)
    }

    /// Operand `j` as a weight: the tensor bound at load (f32 or bf16), else f32 at its pointer.
    unsafe fn weight<'a>(&self, cx: &'a Ctx, j: usize) -> WeightRef<'a> {
        match cx.entry.operand_weights[self.node][j] {
            Some(t) => host_ref(&cx.tensors[t]),
            None => WeightRef::F32(self.f32(j)),
        }
    }

    /// Operand `j` as an f32 weight (norm weights, gates: bound as f32 at load).
    unsafe fn weight_f32<'a>(&self, cx: &'a Ctx, j: usize) -> Result<&'a [f32], String> {
        match self.weight(cx, j) {
            WeightRef::F32(v) => Ok(v),
            WeightRef::Bf16(_) => Err(format!("internal: a bf16 weight reached f32-only operand {j}")),
        }
    }

    /// Entries that value `j` (operand, or `nin + r` for result `r`) holds along `axis`: the io
    /// buffer's capacity when it lives in a growing io slot, else its length.
    fn capacity(&self, cx: &Ctx, j: usize, axis: usize) -> usize {
        let n = &cx.entry.graph.nodes[self.node];
        let v = if j < self.nin { n.inputs[j] } else { Value { node: self.node, index: j - self.nin } };
        let loc = cx.entry.host.schedule.locs[v.node][v.index].as_ref();
        match (loc.map(|l| l.base), &cx.caps) {
            (Some(Base::Io(k)), caps) => match caps.get(k) {
                Some(Some((a, cap))) if *a == axis => *cap,
                _ => self.shapes[j][axis],
            },
            _ => self.shapes[j][axis],
        }
    }
}

fn host_ref<'a>(t: &'a HostTensor) -> WeightRef<'a> {
    match t {
        HostTensor::Bf16(v) => WeightRef::bf16_bits(v),
        other => WeightRef::F32(other.as_f32().unwrap_or_default()),
    }
}

/// Whether operand `k` of a call described by `kernel` may be a bf16 weight: the CPU kernels
/// that widen bf16 in registers (the matmul family's weight, the embedding table, the experts).
pub(crate) fn bf16_operand(kernel: &Kernel, k: usize) -> bool {
    match kernel {
        Kernel::MatMul(m) => k == m.weight,
        Kernel::Embed { .. } => k == 0,
        Kernel::Experts(_) => (3..=5).contains(&k),
        Kernel::Source
        | Kernel::View
        | Kernel::Pointwise
        | Kernel::Interp { .. }
        | Kernel::Norm(_)
        | Kernel::Rope(_)
        | Kernel::MaskPadding { .. }
        | Kernel::KvAppend(_)
        | Kernel::Attention(_)
        | Kernel::Conv(_)
        | Kernel::GdnGates(_)
        | Kernel::DeltaRule(_)
        | Kernel::Route(_)
        | Kernel::Slice(_)
        | Kernel::Concat(_) => false,
    }
}

type Body = fn(&mut Ctx, &Call) -> Result<(), String>;

/// Runs `body` for one shim call; returns 0, or 1 with the error (or panic) in `ctx`.
unsafe fn run(ctx: *mut u8, node: i64, args: *const *mut u8, dims: *const i64, body: Body) -> i32 {
    let cx = &mut *(ctx as *mut Ctx);
    let node = node as usize;
    let n = &cx.entry.graph.nodes[node];
    let call = Call::new(node, n.inputs.len(), n.inputs.len() + n.outputs.len(), args, dims);
    let entry = cx.entry;
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(cx, &call)));
    let msg = match r {
        Ok(Ok(())) => return 0,
        Ok(Err(m)) => m,
        Err(p) => {
            let what = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
            format!("kernel panicked: {}", what.unwrap_or_default())
        }
    };
    cx.error = Some(format!("{}: {msg}", entry.graph.nodes[node].name));
    1
}

macro_rules! shims {
    ($($sym:ident),* $(,)?) => {
        $(
            unsafe extern "C" fn $sym(ctx: *mut u8, node: i64, args: *const *mut u8, dims: *const i64) -> i32 {
                run(ctx, node, args, dims, dispatch)
            }
        )*
        /// Every shim by symbol (one function per symbol, so profiles name the kernel).
        const SHIMS: &[(&str, ShimFn)] = &[$((stringify!($sym), $sym as ShimFn)),*];
    };
}

shims! {
    qgc_interp, qgc_embed, qgc_matmul, qgc_norm, qgc_rope, qgc_mask_padding, qgc_kv_append, qgc_attention,
    qgc_causal_conv1d, qgc_gdn_gates, qgc_gated_delta_rule, qgc_moe_route, qgc_moe_experts, qgc_slice, qgc_concat,
}

/// The shims for `symbols` and `qgc_parallel_for`; the first symbol without a shim is an error.
pub(crate) fn table<'s>(symbols: impl IntoIterator<Item = &'s String>) -> Result<ShimTable, String> {
    let mut t = ShimTable::new();
    for s in symbols {
        match SHIMS.iter().find(|(k, _)| k == s) {
            Some((_, f)) => t.kernel(s.clone(), *f),
            None if s == qgc_codegen::host::PARALLEL_FOR => &mut t,
            None => return Err(format!("the CPU backend has no shim {s}")),
        };
    }
    t.parallel_for(parallel_for);
    Ok(t)
}

/// Elements below which a compiled loop runs on the calling thread.
const LOOP_PAR_MIN: i64 = 1 << 15;

/// `qgc_parallel_for`: `[0, n)` in chunks over the rayon pool (any split gives the same bits).
unsafe extern "C" fn parallel_for(_ctx: *mut u8, f: LoopFn, n: i64, ins: *const *const f32, out: *mut f32) -> i32 {
    if n < LOOP_PAR_MIN {
        f(n, ins, out, 0, n);
        return 0;
    }
    let pieces = (rayon::current_num_threads() as i64 * 4).max(1);
    let chunk = ((n / pieces).max(LOOP_PAR_MIN / 4) + 63) / 64 * 64;
    let (ins, out) = (ins as usize, out as usize);
    (0..(n + chunk - 1) / chunk).into_par_iter().for_each(|k| {
        let (a, b) = (k * chunk, ((k + 1) * chunk).min(n));
        // SAFETY: the host code passes pointers valid for [0, n); pieces are disjoint.
        unsafe { f(n, ins as *const *const f32, out as *mut f32, a, b) };
    });
    0
}

/// Runs the node's kernel: the one place the CPU backend matches on [`Kernel`].
fn dispatch(cx: &mut Ctx, c: &Call) -> Result<(), String> {
    let entry = cx.entry;
    let kernel = entry.kernels[c.node].as_ref().ok_or("internal: the node is not a kernel step")?;
    let bind = cx.bind;
    let ev = |p: &Poly| p.eval(&bind) as usize;
    // SAFETY (every arm): the host code passes buffers of the shapes the binding describes,
    // results in place only where the schedule says so.
    unsafe {
        match kernel {
            Kernel::Source | Kernel::View | Kernel::Pointwise => {
                Err(format!("internal: {kernel} is not a kernel call"))
            }
            Kernel::Interp { .. } => interp(cx, c),
            Kernel::Embed { tokens, vocab, hidden } => {
                embed::embed(c.weight(cx, 0), *vocab, *hidden, &c.i32(1)[..ev(tokens)], c.out(0))
                    .map_err(|e| e.to_string())
            }
            Kernel::MatMul(m) => matmul(cx, c, m, ev(&m.rows)),
            Kernel::Norm(n) => norm_body(cx, c, n, ev(&n.rows)),
            Kernel::Rope(r) => rope_body(cx, c, r, ev(&r.tokens)),
            Kernel::MaskPadding { rows, inner } => {
                let out = c.inout(0, 0);
                for (row, &p) in c.i32(1)[..ev(rows)].iter().enumerate() {
                    if p < 0 {
                        out[row * inner..][..*inner].fill(0.0);
                    }
                }
                Ok(())
            }
            Kernel::KvAppend(k) => kv_append(cx, c, k, (ev(&k.batch), ev(&k.past), ev(&k.new))),
            Kernel::Attention(a) => attention_body(cx, c, a, (ev(&a.batch), ev(&a.s), ev(&a.len))),
            Kernel::Conv(k) => {
                let state = c.inout(1, 2);
                let w = c.weight_f32(cx, 1)?;
                gdn::causal_conv1d(c.f32(0), w, state, ev(&k.batch), ev(&k.s), k.channels, k.kernel, false, c.out(0));
                Ok(())
            }
            Kernel::GdnGates(k) => {
                let rows = ev(&k.rows);
                let (qo, ko) = (c.inout(0, 0), c.inout(1, 1));
                let layout = HeadLayout::dense(rows, k.hk, k.dk);
                norm::l2_norm_scale(qo, layout, k.eps, k.q_scale);
                norm::l2_norm_scale(ko, layout, k.eps, 1.0);
                let (dt_bias, a_log) = (c.weight_f32(cx, 4)?, c.weight_f32(cx, 5)?);
                gdn::gdn_gates(c.f32(2), c.f32(3), a_log, dt_bias, rows, k.hv, c.out(2), c.out(3));
                Ok(())
            }
            Kernel::DeltaRule(k) => {
                let (batch, s) = (ev(&k.batch), ev(&k.s));
                let t = batch * s;
                let dims = GdnDims { batch, s, hk: k.hk, hv: k.hv, dk: k.dk, dv: k.dv };
                let qk = HeadLayout::dense(t, k.hk, k.dk);
                let inputs = GdnInputs {
                    q: c.f32(0),
                    ql: qk,
                    k: c.f32(1),
                    kl: qk,
                    v: c.f32(2),
                    vl: HeadLayout::dense(t, k.hv, k.dv),
                    g: c.f32(3),
                    beta: c.f32(4),
                };
                let state = c.inout(1, 5);
                if invariant(cx) {
                    gdn::gated_delta_rule(inputs, dims, state, c.out(0));
                } else {
                    crate::cpu::gdn_chunked::gated_delta_rule_auto(inputs, dims, state, c.out(0));
                }
                Ok(())
            }
            Kernel::Route(k) => {
                let rows = ev(&k.rows);
                let experts = std::slice::from_raw_parts_mut(c.ptr(c.nin + 1) as *mut i32, rows * k.top_k);
                moe::moe_route(c.f32(0), rows, k.experts, k.top_k, k.renormalize, c.out(0), experts);
                Ok(())
            }
            Kernel::Experts(k) => experts(cx, c, k, ev(&k.rows)),
            Kernel::Slice(k) => {
                let (outer, inner) = (ev(&k.outer), ev(&k.inner));
                let (src, dst) = (words(c, 0), words_mut(c, c.nin));
                for o in 0..outer {
                    dst[o * k.len * inner..][..k.len * inner]
                        .copy_from_slice(&src[(o * k.dim + k.start) * inner..][..k.len * inner]);
                }
                Ok(())
            }
            Kernel::Concat(k) => {
                let outer = ev(&k.outer);
                let dst = words_mut(c, c.nin);
                let mut at = 0;
                for o in 0..outer {
                    for (j, part) in k.parts.iter().enumerate() {
                        let inner = ev(part);
                        dst[at..at + inner].copy_from_slice(&words(c, j)[o * inner..][..inner]);
                        at += inner;
                    }
                }
                Ok(())
            }
        }
    }
}

/// `g` as `linear`'s gate over `[m, n]`: per element or per row as given, a suffix tiled.
fn gate_for<'a>(g: &'a [f32], how: Gate, m: usize, n: usize, tile: &'a mut Vec<f32>) -> &'a [f32] {
    match how {
        Gate::Full | Gate::Row => g,
        Gate::Suffix(len) => {
            tile.clear();
            tile.extend((0..m * n).map(|i| g[i % len.max(1)]));
            tile
        }
    }
}

/// Whether a call must give each token row the same bits whatever the number of rows and
/// tokens: decode (one token per sequence, so a sequence decodes alike alone and in any batch),
/// and prefill under [`crate::cpu::RowOrder::Invariant`] (so a token computes as decode would).
fn invariant(cx: &Ctx) -> bool {
    cx.order == crate::cpu::RowOrder::Invariant
}

unsafe fn matmul(cx: &mut Ctx, c: &Call, m: &b::MatMul, rows: usize) -> Result<(), String> {
    let w = c.weight(cx, m.weight);
    let order = cx.order;
    let linear = |x: &[f32], w, m, k, n, epi, y: &mut [f32]| linear_ordered(order, x, w, (m, k, n), epi, y);
    match m.epilogue {
        Epilogue::Plain => linear(c.f32(0), w, rows, m.k, m.n, LinearEpilogue::Plain, c.out(0)),
        Epilogue::SwiGlu => linear(c.f32(0), w, rows, m.k, m.n, LinearEpilogue::SwiGlu, c.out(0)),
        Epilogue::SigmoidGate { gate, how } => {
            let mut tile = Vec::new();
            let g = gate_for(c.f32(gate), how, rows, m.n, &mut tile);
            linear(c.f32(0), w, rows, m.k, m.n, LinearEpilogue::SigmoidGate(g), c.out(0));
        }
        Epilogue::SigmoidGatePrologue { gate, how } => {
            let (x, g, k) = (c.f32(0), c.f32(gate), m.k);
            let index = |i: usize| match how {
                Gate::Full => i,
                Gate::Row => i / k,
                Gate::Suffix(len) => i % len.max(1),
            };
            let gated: Vec<f32> = x.iter().enumerate().map(|(i, &v)| v * crate::cpu::sigmoid(g[index(i)])).collect();
            linear(&gated, w, rows, k, m.n, LinearEpilogue::Plain, c.out(0));
        }
    }
    Ok(())
}

unsafe fn norm_body(cx: &mut Ctx, c: &Call, n: &b::Norm, rows: usize) -> Result<(), String> {
    let d = n.d;
    match n.kind {
        NormKind::Rms { zero_centred } => {
            norm::rms_norm(c.f32(0), c.weight_f32(cx, 1)?, rows, d, n.eps, zero_centred, c.out(0))
        }
        NormKind::AddRms { zero_centred } => {
            // The sum goes over whichever addend the schedule gave it (addition commutes).
            let (sum, other) = if c.same(0, 1) { (c.out(0), c.f32(0)) } else { (c.inout(0, 0), c.f32(1)) };
            norm::add_rms_norm(sum, other, c.weight_f32(cx, 2)?, rows, d, n.eps, zero_centred, c.out(1));
        }
        NormKind::Gated => norm::gated_rms_norm(c.f32(0), c.f32(1), c.weight_f32(cx, 2)?, rows, d, n.eps, c.out(0)),
        NormKind::L2 => norm::l2_norm_scale(c.inout(0, 0), HeadLayout::dense(rows, 1, d), n.eps, 1.0),
    }
    Ok(())
}

/// `rope` (x, positions) or `rms_norm_rope` (x, w, positions) over `x [tokens, heads, d]`.
unsafe fn rope_body(cx: &mut Ctx, c: &Call, r: &b::Rope, tokens: usize) -> Result<(), String> {
    let half = rope::rope_half(r.rotary_dim);
    let (mut cos, mut sin) = (vec![0f32; tokens * half], vec![0f32; tokens * half]);
    rope::rope_table(&c.i32(c.nin - 1)[..tokens], r.theta, r.rotary_dim, &mut cos, &mut sin);
    let out = c.inout(0, 0);
    let layout = HeadLayout::dense(tokens, r.heads, r.d);
    match r.norm {
        Some((eps, zc)) => rope::qk_norm_rope(out, layout, c.weight_f32(cx, 1)?, eps, zc, half, &cos, &sin),
        None => rope::rope(out, layout, half, &cos, &sin),
    }
    Ok(())
}

/// (cache `[B,N,P,D]`, new `[B,S,N,D]`) -> `[B,N,P+S,D]`: only the new entries are written when
/// the result is the cache's own buffer; otherwise the old ones are copied first.
unsafe fn kv_append(
    cx: &mut Ctx,
    c: &Call,
    k: &b::KvAppend,
    (batch, past, new): (usize, usize, usize),
) -> Result<(), String> {
    let cap = c.capacity(cx, c.nin, 2);
    let shape = KvShape { batch, kv_heads: k.heads, capacity: cap, d: k.d };
    if cap < past + new {
        return Err(format!("internal: KV buffer of {cap} entries for {} ({past} + {new})", past + new));
    }
    let len = batch * k.heads * cap * k.d;
    let out = std::slice::from_raw_parts_mut(c.ptr(c.nin) as *mut f32, len);
    if !c.same(0, 0) {
        let in_cap = c.capacity(cx, 0, 2);
        let old = std::slice::from_raw_parts(c.ptr(0) as *const f32, batch * k.heads * in_cap * k.d);
        for row in 0..batch * k.heads {
            out[row * cap * k.d..][..past * k.d].copy_from_slice(&old[row * in_cap * k.d..][..past * k.d]);
        }
    }
    attention::kv_append(out, shape, past, c.f32(1), HeadLayout::dense(batch * new, k.heads, k.d))
        .map_err(|e| e.to_string())
}

/// (q `[B,S,Nq,D]`, k `[B,Nkv,P+S,D]`, v `[B,Nkv,P+S,Dv]`, positions) -> `[B,S,Nq,Dv]`.
unsafe fn attention_body(
    cx: &mut Ctx,
    c: &Call,
    a: &b::Attention,
    (batch, s, len): (usize, usize, usize),
) -> Result<(), String> {
    let (kcap, vcap) = (c.capacity(cx, 1, 2), c.capacity(cx, 2, 2));
    if kcap != vcap {
        return Err(format!("internal: K and V caches of {kcap} and {vcap} entries"));
    }
    let dims = AttnDims {
        batch,
        s,
        q_heads: a.q_heads,
        kv_heads: a.kv_heads,
        d: a.d,
        dv: a.dv,
        past: len - s,
        capacity: kcap,
    };
    let kk = std::slice::from_raw_parts(c.ptr(1) as *const f32, batch * a.kv_heads * kcap * a.d);
    let vv = std::slice::from_raw_parts(c.ptr(2) as *const f32, batch * a.kv_heads * kcap * a.dv);
    let ql = HeadLayout::dense(batch * s, a.q_heads, a.d);
    attention::attention(c.f32(0), ql, kk, vv, dims, &c.i32(3)[..batch * s], a.scale, None, c.out(0))
        .map_err(|e| e.to_string())
}

/// (x, weights, experts `[rows, k]`, gate, up `[E,I,H]`, down `[E,H,I]`) -> `[rows, H]`, gate and
/// up read from their per-expert stack made at load.
unsafe fn experts(cx: &mut Ctx, c: &Call, k: &b::Experts, rows: usize) -> Result<(), String> {
    let dims = moe::ExpertDims { experts: k.experts, hidden: k.hidden, inter: k.inter, top_k: k.top_k };
    let Some(&stack) = cx.entry.expert_stacks.get(&c.node) else {
        return Err("internal: no stacked expert weights bound at load".into());
    };
    let mut scratch = std::mem::take(&mut cx.moe);
    let routing = moe::Routing { weights: c.f32(1), experts: c.i32(2) };
    let weights = (host_ref(&cx.tensors[stack]), c.weight(cx, 5));
    let r = moe::moe_experts_ordered(cx.order, c.f32(0), rows, routing, weights, dims, &mut scratch, c.out(0));
    cx.moe = scratch;
    r.map_err(|e| e.to_string())
}

/// 4-byte elements (f32 or i32) of value `j` as raw bits.
unsafe fn words<'a>(c: &Call, j: usize) -> &'a [u32] {
    std::slice::from_raw_parts(c.ptr(j) as *const u32, c.numel(j))
}

/// Value `j` (a result) as writable raw 4-byte words.
unsafe fn words_mut<'a>(c: &Call, j: usize) -> &'a mut [u32] {
    std::slice::from_raw_parts_mut(c.ptr(j) as *mut u32, c.numel(j))
}

/// Any op through the interpreter's `eval_op` on copies of its operands (read before any
/// result is written, so results over operands are safe).
fn interp(cx: &mut Ctx, c: &Call) -> Result<(), String> {
    let node = &cx.entry.graph.nodes[c.node];
    let ins: Vec<Tensor> = (0..c.nin)
        .map(|j| unsafe {
            let shape = c.shape(j).to_vec();
            match cx.entry.graph.ty(node.inputs[j]).dtype {
                DType::I32 => Tensor::i32(shape, c.i32(j).to_vec()),
                _ => match c.weight(cx, j) {
                    WeightRef::F32(v) => Tensor::f32(shape, v.to_vec()),
                    WeightRef::Bf16(v) => Tensor::f32(shape, v.iter().map(|x| x.to_f32()).collect()),
                },
            }
        })
        .collect();
    let refs: Vec<&Tensor> = ins.iter().collect();
    let outs = eval_op(&node.op, &refs, &cx.bind)?;
    for (r, t) in outs.iter().enumerate() {
        unsafe {
            let dst = c.ptr(c.nin + r);
            match (t.as_f32(), t.as_i32()) {
                (Some(v), _) => std::ptr::copy_nonoverlapping(v.as_ptr(), dst as *mut f32, v.len()),
                (_, Some(v)) => std::ptr::copy_nonoverlapping(v.as_ptr(), dst as *mut i32, v.len()),
                _ => {}
            }
        }
    }
    Ok(())
}
