//! Emits the host function of one entry point from its [`Schedule`]: per step, operand and
//! result pointers (`arena + offset` or `io[k] + offset`, offsets evaluated from `b, s, p`), the
//! concrete shapes, and a call — into a kernel shim, into a compiled loop (directly or through
//! `qgc_parallel_for`), or to `memcpy` for an output copy. A nonzero shim status returns at once.
//!
//! Device host code ([`HostOptions::device`]) calls `qgc_chain` for a chain and `qgc_copy` for
//! an output copy instead: it never loads or stores through an arena or io pointer (the only
//! memory it reads is the host-side io pointer table, and it writes only its own stack slots).

use super::jit::{CHAIN, COPY, PARALLEL_FOR};
use super::place::{Base, Loc};
use super::poly::{emit_dim, emit_numel, emit_poly};
use super::schedule::{HostOptions, Schedule, Step};
use super::HostError;
use cranelift_codegen::ir::{
    types, AbiParam, Block, FuncRef, InstBuilder, MemFlagsData, Signature, StackSlot, StackSlotData, StackSlotKind,
    Value as ClifValue,
};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::JITModule;
use cranelift_module::{FuncId, Linkage, Module};
use qgc_ir::{Graph, Poly, TensorType, Value};
use std::collections::BTreeMap;

fn signature(module: &JITModule, params: usize, ret: bool) -> Signature {
    let mut sig = module.make_signature();
    sig.params.extend((0..params).map(|_| AbiParam::new(types::I64)));
    if ret {
        sig.returns.push(AbiParam::new(types::I32));
    }
    sig
}

/// Defines the host function `name` of `g` in `module`; `loops[k]` is chain `k`'s function.
pub(crate) fn define_host(
    module: &mut JITModule,
    g: &Graph,
    sched: &Schedule,
    loops: &[FuncId],
    opts: &HostOptions,
    name: &str,
) -> Result<FuncId, HostError> {
    let cl = |e| HostError::cranelift(name, e);
    let mut imports: BTreeMap<String, FuncId> = BTreeMap::new();
    for s in &sched.steps {
        if let Step::Kernel { symbol, .. } = s {
            if !imports.contains_key(symbol) {
                let id = module.declare_function(symbol, Linkage::Import, &signature(module, 4, true)).map_err(cl)?;
                imports.insert(symbol.clone(), id);
            }
        }
    }
    if opts.device {
        let used = sched.host_symbols(opts);
        for sym in [CHAIN, COPY].into_iter().filter(|s| used.contains(*s)) {
            let id = module.declare_function(sym, Linkage::Import, &signature(module, 4, true)).map_err(cl)?;
            imports.insert(sym.into(), id);
        }
    } else if opts.parallel_loops && !sched.chains.is_empty() {
        let id = module.declare_function(PARALLEL_FOR, Linkage::Import, &signature(module, 5, true)).map_err(cl)?;
        imports.insert(PARALLEL_FOR.into(), id);
    }
    let sig = signature(module, 6, true);
    let id = module.declare_function(name, Linkage::Local, &sig).map_err(cl)?;
    let mut ctx = module.make_context();
    ctx.func.signature = sig;
    let mut fctx = FunctionBuilderContext::new();
    {
        let mut fb = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let mut refs = BTreeMap::new();
        for (sym, &fid) in &imports {
            refs.insert(sym.clone(), module.declare_func_in_func(fid, fb.func));
        }
        let loop_refs: Vec<FuncRef> = loops.iter().map(|&l| module.declare_func_in_func(l, fb.func)).collect();
        let config = module.target_config();
        let mut e = HostEmitter::start(&mut fb, g, sched, config, refs, loop_refs, opts.device);
        for s in &sched.steps {
            e.step(&mut fb, s, opts);
        }
        e.finish(&mut fb);
        fb.seal_all_blocks();
        fb.finalize(config);
    }
    module.define_function(id, &mut ctx).map_err(cl)?;
    Ok(id)
}

/// State while emitting one host function.
struct HostEmitter<'a> {
    g: &'a Graph,
    sched: &'a Schedule,
    config: cranelift_codegen::isa::TargetFrontendConfig,
    shims: BTreeMap<String, FuncRef>,
    loops: Vec<FuncRef>,
    /// ctx, arena, io.
    ptrs: [ClifValue; 3],
    /// b, s, p.
    vars: [ClifValue; 3],
    args: StackSlot,
    dims: StackSlot,
    fail: Block,
}

fn slot(fb: &mut FunctionBuilder, words: usize) -> StackSlot {
    fb.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, (8 * words.max(1)) as u32, 3))
}

/// The io table is read-only during a call.
fn io_flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap().with_readonly()
}

impl<'a> HostEmitter<'a> {
    fn start(
        fb: &mut FunctionBuilder,
        g: &'a Graph,
        sched: &'a Schedule,
        config: cranelift_codegen::isa::TargetFrontendConfig,
        shims: BTreeMap<String, FuncRef>,
        loops: Vec<FuncRef>,
        device: bool,
    ) -> Self {
        let entry = fb.create_block();
        fb.append_block_params_for_function_params(entry);
        fb.switch_to_block(entry);
        let p = fb.block_params(entry).to_vec();
        let (mut words, mut dims) = (0, 0);
        for s in &sched.steps {
            match s {
                Step::Kernel { node, .. } => {
                    let n = &g.nodes[*node];
                    words = words.max(n.inputs.len() + n.outputs.len());
                    let ranks: usize = n.inputs.iter().map(|v| g.ty(*v).rank() + 1).sum();
                    dims = dims.max(ranks + n.outputs.iter().map(|t| t.rank() + 1).sum::<usize>());
                }
                Step::Chain { inputs, .. } if device => {
                    words = words.max(inputs.len() + 1);
                    dims = dims.max(2);
                }
                Step::Chain { inputs, .. } => words = words.max(inputs.len()),
                Step::Copy { .. } if device => {
                    words = words.max(2);
                    dims = dims.max(2);
                }
                Step::Copy { .. } => {}
            }
        }
        let (args, dims) = (slot(fb, words), slot(fb, dims));
        let fail = fb.create_block();
        fb.append_block_param(fail, types::I32);
        HostEmitter {
            g,
            sched,
            config,
            shims,
            loops,
            ptrs: [p[0], p[1], p[2]],
            vars: [p[3], p[4], p[5]],
            args,
            dims,
            fail,
        }
    }

    fn finish(&mut self, fb: &mut FunctionBuilder) {
        let ok = fb.ins().iconst(types::I32, 0);
        fb.ins().return_(&[ok]);
        fb.switch_to_block(self.fail);
        let status = fb.block_params(self.fail)[0];
        fb.ins().return_(&[status]);
    }

    fn step(&mut self, fb: &mut FunctionBuilder, s: &Step, opts: &HostOptions) {
        match s {
            Step::Kernel { node, symbol, .. } => self.kernel(fb, *node, symbol),
            Step::Chain { chain, inputs, out, .. } if opts.device => {
                let n = emit_numel(fb, &self.g.ty(*out).shape, self.vars);
                let mut ptrs: Vec<ClifValue> = inputs.iter().map(|&v| self.value_ptr(fb, v)).collect();
                ptrs.push(self.value_ptr(fb, *out));
                self.device_call(fb, CHAIN, *chain, &ptrs, n);
            }
            Step::Chain { chain, inputs, out, .. } => self.chain(fb, *chain, inputs, *out, opts),
            Step::Copy { value, slot } if opts.device => {
                let dst = self.loc_ptr(fb, &Loc { base: Base::Io(*slot), offset: Poly::zero() });
                let src = self.value_ptr(fb, *value);
                let ty = self.g.ty(*value);
                let n = emit_numel(fb, &ty.shape, self.vars);
                let size = fb.ins().imul_imm_s(n, ty.dtype.size() as i64);
                self.device_call(fb, COPY, *slot, &[src, dst], size);
            }
            Step::Copy { value, slot } => {
                let dst = self.loc_ptr(fb, &Loc { base: Base::Io(*slot), offset: Poly::zero() });
                let src = self.value_ptr(fb, *value);
                let ty = self.g.ty(*value);
                let n = emit_numel(fb, &ty.shape, self.vars);
                let size = fb.ins().imul_imm_s(n, ty.dtype.size() as i64);
                fb.call_memcpy(self.config, dst, src, size);
            }
        }
    }

    fn loc_ptr(&self, fb: &mut FunctionBuilder, loc: &Loc) -> ClifValue {
        let base = match loc.base {
            Base::Arena => self.ptrs[1],
            Base::Io(k) => fb.ins().load(types::I64, io_flags(), self.ptrs[2], (8 * k) as i32),
        };
        if loc.offset.is_zero() {
            return base;
        }
        let off = emit_poly(fb, &loc.offset, self.vars);
        fb.ins().iadd(base, off)
    }

    fn value_ptr(&self, fb: &mut FunctionBuilder, v: Value) -> ClifValue {
        let loc = self.sched.locs[v.node][v.index].as_ref().expect("a value a step touches is stored");
        self.loc_ptr(fb, loc)
    }

    /// Stores `vals` as i64 words into `slot` and returns the slot's address.
    fn words(&self, fb: &mut FunctionBuilder, slot: StackSlot, vals: &[ClifValue]) -> ClifValue {
        for (k, &v) in vals.iter().enumerate() {
            fb.ins().stack_store(types::I64, v, slot, (8 * k) as i32);
        }
        fb.ins().stack_addr(types::I64, slot, 0)
    }

    /// `rank, d0, d1, ...` of `ty` evaluated from `b, s, p`.
    fn shape_words(&self, fb: &mut FunctionBuilder, ty: &TensorType, out: &mut Vec<ClifValue>) {
        out.push(fb.ins().iconst(types::I64, ty.rank() as i64));
        for d in &ty.shape {
            out.push(emit_dim(fb, d, self.vars));
        }
    }

    /// Branches to the fail block when `status` is nonzero.
    fn check(&self, fb: &mut FunctionBuilder, status: ClifValue) {
        let cont = fb.create_block();
        fb.ins().brif(status, self.fail, &[status.into()], cont, &[]);
        fb.switch_to_block(cont);
    }

    fn kernel(&mut self, fb: &mut FunctionBuilder, node: usize, symbol: &str) {
        let n = &self.g.nodes[node];
        let results = (0..n.outputs.len()).map(|index| Value { node, index });
        let values: Vec<Value> = n.inputs.iter().copied().chain(results).collect();
        let ptrs: Vec<ClifValue> = values.iter().map(|&v| self.value_ptr(fb, v)).collect();
        let args = self.words(fb, self.args, &ptrs);
        let mut shape = Vec::new();
        for &v in &values {
            self.shape_words(fb, self.g.ty(v), &mut shape);
        }
        let dims = self.words(fb, self.dims, &shape);
        let node_c = fb.ins().iconst(types::I64, node as i64);
        let call = fb.ins().call(self.shims[symbol], &[self.ptrs[0], node_c, args, dims]);
        let status = fb.inst_results(call)[0];
        self.check(fb, status);
    }

    /// A device shim call (`qgc_chain`, `qgc_copy`): `sym(ctx, index, ptrs, [1, count])`.
    fn device_call(&mut self, fb: &mut FunctionBuilder, sym: &str, index: usize, ptrs: &[ClifValue], count: ClifValue) {
        let args = self.words(fb, self.args, ptrs);
        let one = fb.ins().iconst(types::I64, 1);
        let dims = self.words(fb, self.dims, &[one, count]);
        let index = fb.ins().iconst(types::I64, index as i64);
        let call = fb.ins().call(self.shims[sym], &[self.ptrs[0], index, args, dims]);
        let status = fb.inst_results(call)[0];
        self.check(fb, status);
    }

    fn chain(&mut self, fb: &mut FunctionBuilder, chain: usize, inputs: &[Value], out: Value, opts: &HostOptions) {
        let n = emit_numel(fb, &self.g.ty(out).shape, self.vars);
        let ptrs: Vec<ClifValue> = inputs.iter().map(|&v| self.value_ptr(fb, v)).collect();
        let ins = self.words(fb, self.args, &ptrs);
        let out = self.value_ptr(fb, out);
        let f = self.loops[chain];
        if opts.parallel_loops {
            let addr = fb.ins().func_addr(types::I64, f);
            let call = fb.ins().call(self.shims[PARALLEL_FOR], &[self.ptrs[0], addr, n, ins, out]);
            let status = fb.inst_results(call)[0];
            self.check(fb, status);
        } else {
            let zero = fb.ins().iconst(types::I64, 0);
            fb.ins().call(f, &[n, ins, out, zero, n]);
        }
    }
}
