//! The loop compiler: one Cranelift function per [`EwChain`],
//! `fn(n: i64, in_ptrs: *const *const f32, out: *mut f32, start: i64, end: i64)`, computing
//! output elements `[start, end)` of `n` (so a runtime can split `[0, n)` over threads at any
//! points; results do not depend on the split).
//!
//! Shape of the code: the range is cut into *spans* that need no index arithmetic inside — the
//! whole range for a flat chain, or the piece of each row of `L` elements for a chain with
//! suffix/row inputs (`row = i div L` once per row). In a span every full and suffix input is a
//! contiguous stream and every row/scalar input one value, splatted; the span runs an `f32x4`
//! loop (Cranelift's vector width on x86-64 and aarch64: it has no wider vector types) unrolled
//! twice, a single `f32x4` step, then a scalar tail. The vector and scalar bodies are emitted
//! from the same chain by the same functions ([`super::math`]), so every element gets the same
//! value whichever path computes it.

use super::chain::{Bcast, Binary, EwChain, EwNode, Unary};
use super::math::{self, Lanes, Precision};
use super::HostError;
use cranelift_codegen::ir::{condcodes::IntCC, types, AbiParam, Block, InstBuilder, MemFlagsData, Signature, Value};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::JITModule;
use cranelift_module::{FuncId, Linkage, Module};

/// f32 lanes per vector step.
pub const VECTOR_LANES: i64 = 4;
/// Vector steps per iteration of the main loop.
const UNROLL: i64 = 2;

/// The loop signature: `(n, in_ptrs, out, start, end)`, all pointer-sized integers.
pub(crate) fn loop_signature(module: &JITModule) -> Signature {
    let mut sig = module.make_signature();
    for _ in 0..5 {
        sig.params.push(AbiParam::new(types::I64));
    }
    sig
}

/// Declares and defines the loop of `chain` (transcendental maps in `precision`) as a local
/// function `name` of `module`.
pub(crate) fn define_loop(
    module: &mut JITModule,
    chain: &EwChain,
    precision: Precision,
    name: &str,
) -> Result<FuncId, HostError> {
    chain.validate().map_err(|message| HostError::Chain { chain: chain.to_string(), message })?;
    let sig = loop_signature(module);
    let id = module.declare_function(name, Linkage::Local, &sig).map_err(|e| HostError::cranelift(name, e))?;
    let mut ctx = module.make_context();
    ctx.func.signature = sig;
    let mut fctx = FunctionBuilderContext::new();
    {
        let mut fb = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        LoopEmitter { chain, precision }.body(&mut fb);
        fb.seal_all_blocks();
        fb.finalize(module.target_config());
    }
    module.define_function(id, &mut ctx).map_err(|e| HostError::cranelift(name, e))?;
    Ok(id)
}

fn mem() -> MemFlagsData {
    // Not `aligned`: streams start at arbitrary element offsets.
    MemFlagsData::new().with_notrap()
}

/// Where a span's operands are: per input, a stream base or a splatted value.
struct Span {
    /// Per input: `Some(ptr)` for a stream, `None` for a value in `scalars`.
    streams: Vec<Option<Value>>,
    /// Per input: `(f32, f32x4)` for row/scalar inputs.
    scalars: Vec<Option<(Value, Value)>>,
    out: Value,
    len: Value,
}

struct LoopEmitter<'a> {
    chain: &'a EwChain,
    precision: Precision,
}

impl LoopEmitter<'_> {
    fn body(&self, fb: &mut FunctionBuilder) {
        let entry = fb.create_block();
        fb.append_block_params_for_function_params(entry);
        fb.switch_to_block(entry);
        let p = fb.block_params(entry).to_vec();
        let (ins, out, start, end) = (p[1], p[2], p[3], p[4]);
        let bases: Vec<Value> =
            (0..self.chain.inputs.len()).map(|k| fb.ins().load(types::I64, mem(), ins, 8 * k as i32)).collect();
        let exit = fb.create_block();
        match self.chain.inner.filter(|_| self.chain.has_rows()) {
            None => {
                let len = fb.ins().isub(end, start);
                let span = self.span(fb, &bases, out, start, start, None, len);
                self.run_span(fb, &span, exit, &[]);
            }
            Some(l) => self.rows(fb, &bases, out, (start, end), l as i64, exit),
        }
        fb.switch_to_block(exit);
        fb.ins().return_(&[]);
    }

    /// The outer loop over rows of `l` elements: one span per (piece of a) row.
    fn rows(&self, fb: &mut FunctionBuilder, bases: &[Value], out: Value, range: (Value, Value), l: i64, exit: Block) {
        let (start, end) = range;
        let outer = fb.create_block();
        let i = fb.append_block_param(outer, types::I64);
        let seg = fb.create_block();
        fb.ins().jump(outer, &[start.into()]);
        fb.switch_to_block(outer);
        let more = fb.ins().icmp(IntCC::SignedLessThan, i, end);
        fb.ins().brif(more, seg, &[], exit, &[]);
        fb.switch_to_block(seg);
        let lc = fb.ins().iconst(types::I64, l);
        let row = fb.ins().udiv(i, lc);
        let row_start = fb.ins().imul(row, lc);
        let col = fb.ins().isub(i, row_start);
        let in_row = fb.ins().isub(lc, col);
        let left = fb.ins().isub(end, i);
        let len = fb.ins().smin(in_row, left);
        let span = self.span(fb, bases, out, i, col, Some(row), len);
        let next = fb.ins().iadd(i, len);
        self.run_span(fb, &span, outer, &[next]);
    }

    /// Stream pointers and splats of the span of `len` elements starting at element `i`
    /// (column `col` of row `row` when the chain has rows).
    #[allow(clippy::too_many_arguments)]
    fn span(
        &self,
        fb: &mut FunctionBuilder,
        bases: &[Value],
        out: Value,
        i: Value,
        col: Value,
        row: Option<Value>,
        len: Value,
    ) -> Span {
        let byte = |fb: &mut FunctionBuilder, base: Value, idx: Value| {
            let off = fb.ins().ishl_imm_u(idx, 2);
            fb.ins().iadd(base, off)
        };
        let mut streams = Vec::new();
        let mut scalars = Vec::new();
        for (k, b) in self.chain.inputs.iter().enumerate() {
            let (stream, value) = match b {
                Bcast::Full => (Some(byte(fb, bases[k], i)), None),
                Bcast::Suffix => (Some(byte(fb, bases[k], col)), None),
                Bcast::Row => {
                    let at = byte(fb, bases[k], row.expect("row inputs imply a row loop"));
                    (None, Some(fb.ins().load(types::F32, mem(), at, 0)))
                }
                Bcast::Scalar => (None, Some(fb.ins().load(types::F32, mem(), bases[k], 0))),
            };
            streams.push(stream);
            scalars.push(value.map(|v| (v, fb.ins().splat(types::F32X4, v))));
        }
        let out = byte(fb, out, i);
        Span { streams, scalars, out, len }
    }

    /// Loops over the span (unrolled vector loop, one vector step, scalar tail), then jumps to
    /// `cont(args)`; every block it creates is terminated.
    fn run_span(&self, fb: &mut FunctionBuilder, span: &Span, cont: Block, args: &[Value]) {
        let step = VECTOR_LANES * UNROLL;
        let zero = fb.ins().iconst(types::I64, 0);
        let t = self.counted_loop(fb, span, zero, step, |me, fb, t| {
            for u in 0..UNROLL {
                let tu = fb.ins().iadd_imm_s(t, u * VECTOR_LANES);
                me.element(fb, span, tu, Lanes::X4);
            }
        });
        let t = self.counted_loop(fb, span, t, VECTOR_LANES, |me, fb, t| me.element(fb, span, t, Lanes::X4));
        self.counted_loop(fb, span, t, 1, |me, fb, t| me.element(fb, span, t, Lanes::SCALAR));
        let args: Vec<_> = args.iter().map(|&a| a.into()).collect();
        fb.ins().jump(cont, &args);
    }

    /// `while t + step <= len { body(t); t += step }` from `t0`; returns the final `t` in the
    /// block after the loop (where the builder is left).
    fn counted_loop(
        &self,
        fb: &mut FunctionBuilder,
        span: &Span,
        t0: Value,
        step: i64,
        body: impl Fn(&Self, &mut FunctionBuilder, Value),
    ) -> Value {
        let (head, block, after) = (fb.create_block(), fb.create_block(), fb.create_block());
        let t = fb.append_block_param(head, types::I64);
        let t_after = fb.append_block_param(after, types::I64);
        fb.ins().jump(head, &[t0.into()]);
        fb.switch_to_block(head);
        let next = fb.ins().iadd_imm_s(t, step);
        let fits = fb.ins().icmp(IntCC::SignedLessThanOrEqual, next, span.len);
        fb.ins().brif(fits, block, &[], after, &[t.into()]);
        fb.switch_to_block(block);
        body(self, fb, t);
        fb.ins().jump(head, &[next.into()]);
        fb.switch_to_block(after);
        t_after
    }

    /// Computes and stores the element(s) at span offset `t` in lane mode `l`.
    fn element(&self, fb: &mut FunctionBuilder, span: &Span, t: Value, l: Lanes) {
        let off = fb.ins().ishl_imm_u(t, 2);
        let leaves: Vec<Value> = (0..self.chain.inputs.len())
            .map(|k| match (span.streams[k], span.scalars[k]) {
                (Some(base), _) => {
                    let at = fb.ins().iadd(base, off);
                    fb.ins().load(l.f, mem(), at, 0)
                }
                (None, Some((s, v))) => {
                    if l.f.is_vector() {
                        v
                    } else {
                        s
                    }
                }
                (None, None) => unreachable!("every input is a stream or a value"),
            })
            .collect();
        let y = eval(fb, l, self.chain, &leaves, self.precision);
        let at = fb.ins().iadd(span.out, off);
        fb.ins().store(mem(), y, at, 0);
    }
}

/// The chain's output from its input values `leaves` (one per chain input), in lane mode `l`.
pub(crate) fn eval(
    fb: &mut FunctionBuilder,
    l: Lanes,
    chain: &EwChain,
    leaves: &[Value],
    precision: Precision,
) -> Value {
    let mut vals: Vec<Value> = Vec::with_capacity(chain.nodes.len());
    for n in &chain.nodes {
        let v = match *n {
            EwNode::Input(k) => leaves[k],
            EwNode::Unary(u, a) => unary(fb, l, u, vals[a], precision),
            EwNode::Binary(Binary::Add, a, b) => fb.ins().fadd(vals[a], vals[b]),
            EwNode::Binary(Binary::Mul, a, b) => fb.ins().fmul(vals[a], vals[b]),
        };
        vals.push(v);
    }
    *vals.last().expect("validated: a chain has nodes")
}

fn unary(fb: &mut FunctionBuilder, l: Lanes, u: Unary, x: Value, precision: Precision) -> Value {
    let map: fn(&mut FunctionBuilder, Lanes, Value) -> Value = match u {
        Unary::Silu => math::silu,
        Unary::Sigmoid => math::sigmoid,
        Unary::Softplus => math::softplus,
        Unary::Exp => math::exp,
        Unary::Neg => return fb.ins().fneg(x),
        Unary::Scale(by) => {
            let k = math::fconst(fb, l, f64::from(by));
            return fb.ins().fmul(x, k);
        }
    };
    match precision {
        Precision::F32 => map(fb, l, x),
        Precision::F64 => math::in_f64(fb, l, x, map),
    }
}
