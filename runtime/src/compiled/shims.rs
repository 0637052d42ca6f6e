//! The kernel shims the JIT host code calls (`qgc_{op}_{dtype}`, see `qgc_codegen::host`): each
//! decodes its operand pointers and dims, and runs the `runtime::cpu` kernel for the node.
//!
//! Kernels read their operands and write their results; a result never shares bytes with an
//! operand (the arena plan keeps live intervals apart), so a kernel that updates in place
//! (`add_rms_norm`, the conv and delta-rule state, the KV append) first copies its operand into
//! the result and works there. Ops without a fast kernel (the unfused router primitives,
//! elementwise ops when chains are not compiled) run the interpreter's `eval_op` on copies.
//! A panic inside a kernel (a broken internal invariant) becomes an error, never an abort.

use super::load::{concat_into, slice_into};
use super::Ctx;
use crate::cpu::attention::{self, AttnDims, KvShape};
use crate::cpu::gdn::{self, GdnDims, GdnInputs};
use crate::cpu::linear::{linear, Epilogue};
use crate::cpu::{embed, moe, norm, rope, HeadLayout, WeightRef};
use crate::weights::HostTensor;
use qgc_codegen::host::{decode_dims, LoopFn, ShimFn, ShimTable};
use qgc_ir::interp::{eval_op, Tensor};
use qgc_ir::{DType, Op};
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

    fn last(&self, j: usize) -> usize {
        self.shapes[j].last().copied().unwrap_or(1)
    }

    /// Operand `j` as f32.
    unsafe fn f32<'a>(&self, j: usize) -> &'a [f32] {
        std::slice::from_raw_parts(*self.args.add(j) as *const f32, self.numel(j))
    }

    /// Operand `j` as i32.
    unsafe fn i32<'a>(&self, j: usize) -> &'a [i32] {
        std::slice::from_raw_parts(*self.args.add(j) as *const i32, self.numel(j))
    }

    /// Result `r`, writable.
    #[allow(clippy::mut_from_ref)]
    unsafe fn out<'a>(&self, r: usize) -> &'a mut [f32] {
        std::slice::from_raw_parts_mut(*self.args.add(self.nin + r) as *mut f32, self.numel(self.nin + r))
    }

    /// Operand `j` as a weight: the tensor bound at load (f32 or bf16), else f32 at its pointer.
    unsafe fn weight<'a>(&self, cx: &'a Ctx, j: usize) -> WeightRef<'a> {
        match cx.entry.operand_weights[self.node][j] {
            Some(t) => host_ref(&cx.tensors[t]),
            None => WeightRef::F32(self.f32(j)),
        }
    }
}

fn host_ref<'a>(t: &'a HostTensor) -> WeightRef<'a> {
    match t {
        HostTensor::Bf16(v) => WeightRef::bf16_bits(v),
        other => WeightRef::F32(other.as_f32().unwrap_or_default()),
    }
}

/// f32 view of a weight that must be f32 (norm weights, gates: bound as f32 at load).
fn f32_of<'a>(w: WeightRef<'a>) -> Result<&'a [f32], String> {
    match w {
        WeightRef::F32(v) => Ok(v),
        WeightRef::Bf16(_) => Err("internal: a bf16 weight reached an f32-only operand".into()),
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
    ($($sym:ident => $body:expr),* $(,)?) => {
        $(
            unsafe extern "C" fn $sym(ctx: *mut u8, node: i64, args: *const *mut u8, dims: *const i64) -> i32 {
                run(ctx, node, args, dims, $body)
            }
        )*
        /// The fast kernels by op name.
        const KERNELS: &[(&str, ShimFn)] = &[$((stringify!($sym), $sym as ShimFn)),*];
    };
}

shims! {
    matmul => |cx, c| mm(cx, c, Epilogue::Plain),
    matmul_swiglu => |cx, c| mm(cx, c, Epilogue::SwiGlu),
    matmul_sigmoid_gate => matmul_sigmoid_gate_body,
    sigmoid_gate_matmul => sigmoid_gate_matmul_body,
    embed => embed_body,
    rms_norm => rms_norm_body,
    add_rms_norm => add_rms_norm_body,
    gated_rms_norm => gated_rms_norm_body,
    l2_norm => l2_norm_body,
    rope => |cx, c| rope_body(cx, c, false),
    rms_norm_rope => |cx, c| rope_body(cx, c, true),
    kv_append => kv_append_body,
    attention => attention_body,
    causal_conv1d => conv_body,
    gdn_gates => gdn_gates_body,
    gated_delta_rule => delta_rule_body,
    moe_route => moe_route_body,
    moe_experts => moe_experts_body,
    mask_padding => mask_padding_body,
    slice => slice_body,
    concat => concat_body,
    interp => interp_body,
}

/// Shims for every symbol in `symbols` (`qgc_{op}_{dtype}`): the fast kernel of the op, else the
/// interpreter fallback; and `qgc_parallel_for` over rayon.
pub(crate) fn table<'s>(symbols: impl IntoIterator<Item = &'s String>) -> ShimTable {
    let mut t = ShimTable::new();
    for s in symbols {
        let op = s.strip_prefix("qgc_").and_then(|r| r.rsplit_once('_')).map_or("", |(op, _)| op);
        let f = KERNELS.iter().find(|(k, _)| *k == op && *k != "interp").map_or(interp as ShimFn, |(_, f)| *f);
        t.kernel(s.clone(), f);
    }
    t.parallel_for(parallel_for);
    t
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

/// `x [.., K] · w [N, K]ᵀ` with `epi`; N is the result's last dim.
fn mm(cx: &mut Ctx, c: &Call, epi: Epilogue) -> Result<(), String> {
    let (k, n) = (c.last(0), c.last(2));
    let m = c.numel(0) / k.max(1);
    // SAFETY (here and in every body): the host code passes buffers of the dims it passes.
    unsafe { linear(c.f32(0), c.weight(cx, 1), m, k, n, epi, c.out(0)) };
    Ok(())
}

/// `g` broadcast over `[m, n]` as `Mul`'s second operand: elementwise, per row, or a suffix.
fn gate_for<'a>(g: &'a [f32], m: usize, n: usize, tile: &'a mut Vec<f32>) -> &'a [f32] {
    if g.len() == m * n || g.len() == m {
        return g;
    }
    tile.clear();
    tile.extend((0..m * n).map(|i| g[i % g.len().max(1)]));
    tile
}

fn matmul_sigmoid_gate_body(cx: &mut Ctx, c: &Call) -> Result<(), String> {
    let (k, n) = (c.last(0), c.last(3));
    let m = c.numel(0) / k.max(1);
    let mut tile = Vec::new();
    unsafe {
        let g = gate_for(c.f32(2), m, n, &mut tile);
        linear(c.f32(0), c.weight(cx, 1), m, k, n, Epilogue::SigmoidGate(g), c.out(0));
    }
    Ok(())
}

fn sigmoid_gate_matmul_body(cx: &mut Ctx, c: &Call) -> Result<(), String> {
    let (k, n) = (c.last(0), c.last(3));
    let m = c.numel(0) / k.max(1);
    unsafe {
        let (x, g) = (c.f32(0), c.f32(1));
        let per_row = g.len() == m && g.len() != x.len();
        let gated: Vec<f32> = x
            .iter()
            .enumerate()
            .map(|(i, &v)| v * crate::cpu::sigmoid(if per_row { g[i / k] } else { g[i % g.len()] }))
            .collect();
        linear(&gated, c.weight(cx, 2), m, k, n, Epilogue::Plain, c.out(0));
    }
    Ok(())
}

fn embed_body(cx: &mut Ctx, c: &Call) -> Result<(), String> {
    let (v, h) = (c.shape(0)[0], c.shape(0)[1]);
    unsafe { embed::embed(c.weight(cx, 0), v, h, c.i32(1), c.out(0)) }.map_err(|e| e.to_string())
}

fn rms_norm_body(cx: &mut Ctx, c: &Call) -> Result<(), String> {
    let Op::RmsNorm { eps, zero_centred } = cx.entry.graph.nodes[c.node].op else { unreachable!() };
    let d = c.last(0);
    unsafe { norm::rms_norm(c.f32(0), f32_of(c.weight(cx, 1))?, c.numel(0) / d, d, eps, zero_centred, c.out(0)) };
    Ok(())
}

fn add_rms_norm_body(cx: &mut Ctx, c: &Call) -> Result<(), String> {
    let Op::AddRmsNorm { eps, zero_centred } = cx.entry.graph.nodes[c.node].op else { unreachable!() };
    let d = c.last(0);
    unsafe {
        let sum = c.out(0);
        sum.copy_from_slice(c.f32(0));
        norm::add_rms_norm(sum, c.f32(1), f32_of(c.weight(cx, 2))?, c.numel(0) / d, d, eps, zero_centred, c.out(1));
    }
    Ok(())
}

fn gated_rms_norm_body(cx: &mut Ctx, c: &Call) -> Result<(), String> {
    let Op::GatedRmsNorm { eps } = cx.entry.graph.nodes[c.node].op else { unreachable!() };
    let d = c.last(0);
    unsafe { norm::gated_rms_norm(c.f32(0), c.f32(1), f32_of(c.weight(cx, 2))?, c.numel(0) / d, d, eps, c.out(0)) };
    Ok(())
}

fn l2_norm_body(cx: &mut Ctx, c: &Call) -> Result<(), String> {
    let Op::L2Norm { eps } = cx.entry.graph.nodes[c.node].op else { unreachable!() };
    let d = c.last(0);
    unsafe {
        let out = c.out(0);
        out.copy_from_slice(c.f32(0));
        norm::l2_norm_scale(out, HeadLayout::dense(c.numel(0) / d.max(1), 1, d), eps, 1.0);
    }
    Ok(())
}

/// `rope` (x, positions) or `rms_norm_rope` (x, w, positions) over `x [B,S,N,D]`.
fn rope_body(cx: &mut Ctx, c: &Call, norm: bool) -> Result<(), String> {
    let (theta, rotary_dim, pre) = match cx.entry.graph.nodes[c.node].op {
        Op::Rope { theta, rotary_dim } => (theta, rotary_dim, None),
        Op::RmsNormRope { eps, zero_centred, theta, rotary_dim } => (theta, rotary_dim, Some((eps, zero_centred))),
        _ => unreachable!(),
    };
    let x = c.shape(0);
    let (t, heads, d) = (x[0] * x[1], x[2], x[3]);
    let half = rope::rope_half(rotary_dim);
    let (mut cos, mut sin) = (vec![0f32; t * half], vec![0f32; t * half]);
    unsafe {
        rope::rope_table(c.i32(if norm { 2 } else { 1 }), theta, rotary_dim, &mut cos, &mut sin);
        let out = c.out(0);
        out.copy_from_slice(c.f32(0));
        let layout = HeadLayout::dense(t, heads, d);
        match pre {
            Some((eps, zc)) => rope::qk_norm_rope(out, layout, f32_of(c.weight(cx, 1))?, eps, zc, half, &cos, &sin),
            None => rope::rope(out, layout, half, &cos, &sin),
        }
    }
    Ok(())
}

/// (cache `[B,N,P,D]`, new `[B,S,N,D]`) -> `[B,N,P+S,D]`.
fn kv_append_body(_cx: &mut Ctx, c: &Call) -> Result<(), String> {
    let (b, n, p, d) = (c.shape(0)[0], c.shape(0)[1], c.shape(0)[2], c.shape(0)[3]);
    let s = c.shape(1)[1];
    let shape = KvShape { batch: b, kv_heads: n, capacity: p + s, d };
    unsafe {
        let (old, out) = (c.f32(0), c.out(0));
        for row in 0..b * n {
            out[row * (p + s) * d..][..p * d].copy_from_slice(&old[row * p * d..][..p * d]);
        }
        attention::kv_append(out, shape, p, c.f32(1), HeadLayout::dense(b * s, n, d)).map_err(|e| e.to_string())
    }
}

/// (q `[B,S,Nq,D]`, k `[B,Nkv,P+S,D]`, v `[B,Nkv,P+S,Dv]`, positions) -> `[B,S,Nq,Dv]`.
fn attention_body(cx: &mut Ctx, c: &Call) -> Result<(), String> {
    let Op::Attention { scale } = cx.entry.graph.nodes[c.node].op else { unreachable!() };
    let (q, k, v) = (c.shape(0), c.shape(1), c.shape(2));
    let (batch, s, q_heads, d) = (q[0], q[1], q[2], q[3]);
    let (kv_heads, capacity, dv) = (k[1], k[2], v[3]);
    let dims = AttnDims { batch, s, q_heads, kv_heads, d, dv, past: capacity - s, capacity };
    let ql = HeadLayout::dense(batch * s, q_heads, d);
    unsafe { attention::attention(c.f32(0), ql, c.f32(1), c.f32(2), dims, c.i32(3), scale, None, c.out(0)) }
        .map_err(|e| e.to_string())
}

/// (x `[B,S,C]`, w `[C,K]`, state `[B,C,K-1]`) -> (y, state').
fn conv_body(cx: &mut Ctx, c: &Call) -> Result<(), String> {
    let Op::CausalConv1d { kernel } = cx.entry.graph.nodes[c.node].op else { unreachable!() };
    let (b, s, ch) = (c.shape(0)[0], c.shape(0)[1], c.shape(0)[2]);
    unsafe {
        let state = c.out(1);
        state.copy_from_slice(c.f32(2));
        gdn::causal_conv1d(c.f32(0), f32_of(c.weight(cx, 1))?, state, b, s, ch, kernel, false, c.out(0));
    }
    Ok(())
}

/// (q, k `[B,S,Hk,Dk]`, a, b `[B,S,Hv]`, dt_bias, a_log) -> (q', k', g, beta).
fn gdn_gates_body(cx: &mut Ctx, c: &Call) -> Result<(), String> {
    let Op::GdnGates { eps, q_scale } = cx.entry.graph.nodes[c.node].op else { unreachable!() };
    let q = c.shape(0);
    let (rows, hk, dk, hv) = (q[0] * q[1], q[2], q[3], c.last(2));
    unsafe {
        let (qo, ko) = (c.out(0), c.out(1));
        qo.copy_from_slice(c.f32(0));
        ko.copy_from_slice(c.f32(1));
        let layout = HeadLayout::dense(rows, hk, dk);
        norm::l2_norm_scale(qo, layout, eps, q_scale);
        norm::l2_norm_scale(ko, layout, eps, 1.0);
        let (dt_bias, a_log) = (f32_of(c.weight(cx, 4))?, f32_of(c.weight(cx, 5))?);
        gdn::gdn_gates(c.f32(2), c.f32(3), a_log, dt_bias, rows, hv, c.out(2), c.out(3));
    }
    Ok(())
}

/// (q, k `[B,S,Hk,Dk]`, v `[B,S,Hv,Dv]`, g, beta `[B,S,Hv]`, state `[B,Hv,Dk,Dv]`) -> (o, state').
fn delta_rule_body(_cx: &mut Ctx, c: &Call) -> Result<(), String> {
    let (q, v) = (c.shape(0), c.shape(2));
    let dims = GdnDims { batch: q[0], s: q[1], hk: q[2], hv: v[2], dk: q[3], dv: v[3] };
    let t = q[0] * q[1];
    unsafe {
        let inputs = GdnInputs {
            q: c.f32(0),
            ql: HeadLayout::dense(t, q[2], q[3]),
            k: c.f32(1),
            kl: HeadLayout::dense(t, q[2], q[3]),
            v: c.f32(2),
            vl: HeadLayout::dense(t, v[2], v[3]),
            g: c.f32(3),
            beta: c.f32(4),
        };
        let state = c.out(1);
        state.copy_from_slice(c.f32(5));
        crate::cpu::gdn_chunked::gated_delta_rule_auto(inputs, dims, state, c.out(0));
    }
    Ok(())
}

fn moe_route_body(cx: &mut Ctx, c: &Call) -> Result<(), String> {
    let Op::MoeRoute { top_k, renormalize } = cx.entry.graph.nodes[c.node].op else { unreachable!() };
    let e = c.last(0);
    unsafe {
        let experts = std::slice::from_raw_parts_mut(*c.args.add(2) as *mut i32, c.numel(2));
        moe::moe_route(c.f32(0), c.numel(0) / e.max(1), e, top_k, renormalize, c.out(0), experts);
    }
    Ok(())
}

/// (x `[B,S,H]`, weights, experts `[B,S,k]`, gate, up `[E,I,H]`, down `[E,H,I]`) -> `[B,S,H]`,
/// gate and up read from their per-expert stack made at load.
fn moe_experts_body(cx: &mut Ctx, c: &Call) -> Result<(), String> {
    let gate = c.shape(3);
    let (experts, inter, hidden) = (gate[0], gate[1], gate[2]);
    let top_k = c.last(1);
    let dims = moe::ExpertDims { experts, hidden, inter, top_k };
    let Some(&stack) = cx.entry.expert_stacks.get(&c.node) else {
        return Err("internal: no stacked expert weights bound at load".into());
    };
    let mut scratch = std::mem::take(&mut cx.moe);
    let r = unsafe {
        moe::moe_experts(
            c.f32(0),
            c.numel(0) / hidden.max(1),
            c.f32(1),
            c.i32(2),
            host_ref(&cx.tensors[stack]),
            c.weight(cx, 5),
            dims,
            &mut scratch,
            c.out(0),
        )
    };
    cx.moe = scratch;
    r.map_err(|e| e.to_string())
}

/// (x `[B,S,..]`, positions `[B,S]`) -> x with padding slots zeroed.
fn mask_padding_body(_cx: &mut Ctx, c: &Call) -> Result<(), String> {
    unsafe {
        let (x, pos, out) = (c.f32(0), c.i32(1), c.out(0));
        let inner = x.len() / pos.len().max(1);
        out.copy_from_slice(x);
        for (row, &p) in pos.iter().enumerate() {
            if p < 0 {
                out[row * inner..][..inner].fill(0.0);
            }
        }
    }
    Ok(())
}

/// 4-byte elements (f32 or i32) of value `j` as raw bits.
unsafe fn words<'a>(c: &Call, j: usize) -> &'a [u32] {
    std::slice::from_raw_parts(*c.args.add(j) as *const u32, c.numel(j))
}

/// Value `j` (a result) as writable raw 4-byte words.
unsafe fn words_mut<'a>(c: &Call, j: usize) -> &'a mut [u32] {
    std::slice::from_raw_parts_mut(*c.args.add(j) as *mut u32, c.numel(j))
}

fn slice_body(cx: &mut Ctx, c: &Call) -> Result<(), String> {
    let Op::Slice { axis, start, len } = cx.entry.graph.nodes[c.node].op else { unreachable!() };
    unsafe { slice_into(c.shape(0), words(c, 0), axis, start, len, words_mut(c, 1)) };
    Ok(())
}

fn concat_body(cx: &mut Ctx, c: &Call) -> Result<(), String> {
    let Op::Concat { axis } = cx.entry.graph.nodes[c.node].op else { unreachable!() };
    unsafe {
        let parts: Vec<(&[usize], &[u32])> = (0..c.nin).map(|j| (c.shape(j), words(c, j))).collect();
        concat_into(&parts, axis, words_mut(c, c.nin));
    }
    Ok(())
}

/// Any op through the interpreter's `eval_op` on copies of its operands.
fn interp_body(cx: &mut Ctx, c: &Call) -> Result<(), String> {
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
            let dst = *c.args.add(c.nin + r);
            match (t.as_f32(), t.as_i32()) {
                (Some(v), _) => std::ptr::copy_nonoverlapping(v.as_ptr(), dst as *mut f32, v.len()),
                (_, Some(v)) => std::ptr::copy_nonoverlapping(v.as_ptr(), dst as *mut i32, v.len()),
                _ => {}
            }
        }
    }
    Ok(())
}
