//! The "interp shim" backend for host-code tests: every kernel shim is one function that reads
//! its operands from the arena/io pointers, runs `interp::eval_op`, and writes the results back;
//! `qgc_parallel_for` splits `[0, n)` at odd points over scoped threads. [`run_host`] lays out
//! the io table and the arena like a runtime would and calls the host function.

#![allow(dead_code)]

use qgc_codegen::host::{
    compile_entry, compile_loop, decode_dims, required_shims, ArenaPlanner, BumpPlanner, CompiledLoop, HostEntry,
    HostOptions, IoKind, LoopFn, Precision, ShimFn, ShimTable, CHAIN, COPY,
};
use qgc_ir::interp::{eval_op, MapWeights, Tensor};
use qgc_ir::{Bindings, DType, Graph};
use std::collections::BTreeMap;

/// What the shims see through `ctx`.
pub struct InterpCtx<'a> {
    /// The graph the host function was compiled from.
    pub graph: &'a Graph,
    /// The call's bindings.
    pub bind: Bindings,
    /// The first shim error.
    pub error: Option<String>,
    /// Kernel calls made.
    pub calls: usize,
    /// Loop pieces run through `qgc_parallel_for`.
    pub pieces: usize,
}

/// Reads `numel(shape)` elements of `dtype` at `p`.
unsafe fn read(p: *const u8, shape: &[usize], dtype: DType) -> Tensor {
    let n: usize = shape.iter().product();
    match dtype {
        DType::I32 => Tensor::i32(shape.to_vec(), std::slice::from_raw_parts(p as *const i32, n).to_vec()),
        _ => Tensor::f32(shape.to_vec(), std::slice::from_raw_parts(p as *const f32, n).to_vec()),
    }
}

/// Writes `t`'s elements at `p`.
unsafe fn write(p: *mut u8, t: &Tensor) {
    match (t.as_f32(), t.as_i32()) {
        (Some(v), _) => std::ptr::copy_nonoverlapping(v.as_ptr(), p as *mut f32, v.len()),
        (_, Some(v)) => std::ptr::copy_nonoverlapping(v.as_ptr(), p as *mut i32, v.len()),
        _ => unreachable!(),
    }
}

unsafe fn shim_body(cx: &mut InterpCtx, node: usize, args: *const *mut u8, dims: *const i64) -> Result<(), String> {
    let n = &cx.graph.nodes[node];
    let (nin, nout) = (n.inputs.len(), n.outputs.len());
    let shapes = decode_dims(dims, nin + nout);
    for (j, ty) in n.inputs.iter().map(|v| cx.graph.ty(*v)).chain(&n.outputs).enumerate() {
        if shapes[j] != ty.eval(&cx.bind) {
            return Err(format!("{}: value {j} has dims {:?}, expected {}", n.name, shapes[j], ty));
        }
    }
    let ins: Vec<Tensor> =
        n.inputs.iter().enumerate().map(|(j, v)| read(*args.add(j), &shapes[j], cx.graph.ty(*v).dtype)).collect();
    let refs: Vec<&Tensor> = ins.iter().collect();
    let outs = eval_op(&n.op, &refs, &cx.bind).map_err(|m| format!("{}: {m}", n.name))?;
    for (j, t) in outs.iter().enumerate() {
        write(*args.add(nin + j), t);
    }
    cx.calls += 1;
    Ok(())
}

/// The one kernel shim, registered under every `qgc_{op}_{dtype}` symbol.
pub unsafe extern "C" fn interp_shim(ctx: *mut u8, node: i64, args: *const *mut u8, dims: *const i64) -> i32 {
    let cx = &mut *(ctx as *mut InterpCtx);
    match shim_body(cx, node as usize, args, dims) {
        Ok(()) => 0,
        Err(e) => {
            cx.error = Some(e);
            1
        }
    }
}

/// `qgc_parallel_for`: four pieces at odd cut points, on scoped threads.
pub unsafe extern "C" fn split_for(ctx: *mut u8, f: LoopFn, n: i64, ins: *const *const f32, out: *mut f32) -> i32 {
    let cx = &mut *(ctx as *mut InterpCtx);
    let cuts = [0, n / 3, n / 3 + 1, (2 * n) / 3 + 3, n];
    let (ins, out) = (ins as usize, out as usize);
    std::thread::scope(|s| {
        for w in cuts.windows(2) {
            let (a, b) = (w[0].min(n), w[1].min(n));
            if a < b {
                // SAFETY: the host function passes pointers valid for [0, n); pieces are disjoint.
                s.spawn(move || unsafe { f(n, ins as *const *const f32, out as *mut f32, a, b) });
                cx.pieces += 1;
            }
        }
    });
    0
}

/// Shims for every symbol `g` needs under `opts`.
pub fn shims(g: &Graph, opts: &HostOptions) -> ShimTable {
    let mut t = ShimTable::new();
    for s in required_shims(g, opts).expect("schedules") {
        t.kernel(s, interp_shim);
    }
    t.parallel_for(split_for);
    t
}

/// Compiles `g` with the interp shims and the bump planner.
pub fn compile(g: &Graph, opts: &HostOptions) -> HostEntry {
    compile_with(g, opts, &BumpPlanner)
}

/// Compiles `g` with the interp shims and `planner`.
pub fn compile_with(g: &Graph, opts: &HostOptions, planner: &dyn ArenaPlanner) -> HostEntry {
    compile_entry(g, &shims(g, opts), planner, opts).expect("host code compiles")
}

/// One call's statistics.
#[derive(Debug, Clone, Copy)]
pub struct CallStats {
    /// Kernel shim calls.
    pub calls: usize,
    /// Parallel loop pieces.
    pub pieces: usize,
}

/// Element type of a tensor's bits in an io buffer.
fn bits(t: &Tensor) -> Vec<u32> {
    match (t.as_f32(), t.as_i32()) {
        (Some(v), _) => v.iter().map(|x| x.to_bits()).collect(),
        (_, Some(v)) => v.iter().map(|&x| x as u32).collect(),
        _ => unreachable!(),
    }
}

/// Calls `entry` (compiled from `g`) on `inputs` with `weights` under `bind`, like a runtime:
/// io buffers in table order, an arena of the planned size (64-aligned, poisoned with NaNs).
pub fn run_host(
    entry: &HostEntry,
    g: &Graph,
    bind: Bindings,
    inputs: &BTreeMap<String, Tensor>,
    weights: &MapWeights,
) -> (BTreeMap<String, Tensor>, CallStats) {
    let mut cx = InterpCtx { graph: g, bind, error: None, calls: 0, pieces: 0 };
    let (status, outs) = call(entry, bind, inputs, weights, 0, &mut cx as *mut InterpCtx as *mut u8);
    assert_eq!(status, 0, "host function failed: {:?}", cx.error);
    (outs, CallStats { calls: cx.calls, pieces: cx.pieces })
}

/// Lays out the io buffers and the arena, calls `entry` with every arena and io address
/// XOR-ed with `tag`, and returns its status and the output buffers.
fn call(
    entry: &HostEntry,
    bind: Bindings,
    inputs: &BTreeMap<String, Tensor>,
    weights: &MapWeights,
    tag: usize,
    ctx: *mut u8,
) -> (i32, BTreeMap<String, Tensor>) {
    let mut bufs: Vec<Vec<u32>> = Vec::new();
    let mut io: Vec<*mut u8> = Vec::new();
    for slot in &entry.io().slots {
        let n: usize = slot.ty.eval(&bind).iter().product();
        match slot.kind {
            IoKind::Input => bufs.push(bits(&inputs[&slot.name])),
            IoKind::Output => bufs.push(vec![0x7fc0_0001; n]),
            IoKind::Weight => bufs.push(Vec::new()),
        }
        let p = match slot.kind {
            IoKind::Weight => weights.tensors[&slot.name].as_f32().expect("f32 weight").as_ptr() as *mut u8,
            _ => bufs.last_mut().unwrap().as_mut_ptr() as *mut u8,
        };
        io.push((p as usize ^ tag) as *mut u8);
    }
    let bytes = entry.arena_bytes().eval(&bind) as usize;
    let mut arena = vec![0x7fc0_0002u32; bytes / 4 + 16];
    let base = arena.as_mut_ptr() as *mut u8;
    let arena_ptr = (unsafe { base.add(base.align_offset(64)) } as usize ^ tag) as *mut u8;
    let (b, s, p) = (bind.b as i64, bind.s as i64, bind.p as i64);
    // SAFETY: io holds one buffer per slot of its type under `bind` (outputs fresh), the arena
    // has the planned bytes, and ctx is what the shims the entry was compiled with expect (which
    // undo `tag` before touching memory).
    let status = unsafe { (entry.func())(ctx, arena_ptr, io.as_ptr(), b, s, p) };
    let mut outs = BTreeMap::new();
    for (slot, buf) in entry.io().slots.iter().zip(&bufs) {
        if slot.kind == IoKind::Output {
            let shape = slot.ty.eval(&bind);
            let t = match slot.ty.dtype {
                DType::I32 => Tensor::i32(shape, buf.iter().map(|&x| x as i32).collect()),
                _ => Tensor::f32(shape, buf.iter().map(|&x| f32::from_bits(x)).collect()),
            };
            outs.insert(slot.name.clone(), t);
        }
    }
    (status, outs)
}

/// Address tag of the emulated device: a "device address" is a host address with bit 62 set,
/// non-canonical on x86-64 and aarch64, so host code that dereferenced one would fault.
pub const DEVICE_TAG: usize = 1 << 62;

/// What the emulated device's shims see through `ctx`.
pub struct DeviceCtx<'a> {
    /// The kernel shims' context (they run on untagged pointers).
    pub inner: InterpCtx<'a>,
    /// Per chain of the schedule: its loop, compiled on its own.
    pub loops: Vec<CompiledLoop>,
    /// `qgc_chain` calls.
    pub chains: usize,
    /// `qgc_copy` calls.
    pub copies: usize,
}

fn untag(p: *mut u8) -> *mut u8 {
    assert!(p as usize & DEVICE_TAG != 0, "a device shim got a host address");
    (p as usize ^ DEVICE_TAG) as *mut u8
}

unsafe extern "C" fn device_kernel(ctx: *mut u8, node: i64, args: *const *mut u8, dims: *const i64) -> i32 {
    let cx = &mut *(ctx as *mut DeviceCtx);
    let n = &cx.inner.graph.nodes[node as usize];
    let host: Vec<*mut u8> = (0..n.inputs.len() + n.outputs.len()).map(|j| untag(*args.add(j))).collect();
    interp_shim(&mut cx.inner as *mut InterpCtx as *mut u8, node, host.as_ptr(), dims)
}

unsafe extern "C" fn device_chain(ctx: *mut u8, chain: i64, args: *const *mut u8, dims: *const i64) -> i32 {
    let cx = &mut *(ctx as *mut DeviceCtx);
    let l = &cx.loops[chain as usize];
    let k = l.chain.inputs.len();
    let ins: Vec<*const f32> = (0..k).map(|j| untag(*args.add(j)) as *const f32).collect();
    let out = untag(*args.add(k)) as *mut f32;
    assert_eq!(*dims, 1, "qgc_chain dims are [1, n]");
    let n = *dims.add(1);
    (l.func())(n, ins.as_ptr(), out, 0, n);
    cx.chains += 1;
    0
}

unsafe extern "C" fn device_copy(ctx: *mut u8, _slot: i64, args: *const *mut u8, dims: *const i64) -> i32 {
    let cx = &mut *(ctx as *mut DeviceCtx);
    assert_eq!(*dims, 1, "qgc_copy dims are [1, bytes]");
    std::ptr::copy_nonoverlapping(untag(*args) as *const u8, untag(*args.add(1)), *dims.add(1) as usize);
    cx.copies += 1;
    0
}

/// Device shims for every symbol `g` needs under `opts` (which must have `device` set).
pub fn device_shims(g: &Graph, opts: &HostOptions) -> ShimTable {
    let mut t = ShimTable::new();
    for s in required_shims(g, opts).expect("schedules") {
        let f: ShimFn = match s.as_str() {
            CHAIN => device_chain,
            COPY => device_copy,
            _ => device_kernel,
        };
        t.kernel(s, f);
    }
    t
}

/// Device statistics of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceStats {
    /// Kernel shim calls.
    pub kernels: usize,
    /// Chain shim calls.
    pub chains: usize,
    /// Copy shim calls.
    pub copies: usize,
}

/// As [`run_host`] for device host code (`entry` compiled with [`device_shims`]): every arena
/// and io address it gets is tagged with [`DEVICE_TAG`], chains run their loops compiled on
/// their own in `precision`.
pub fn run_device(
    entry: &HostEntry,
    g: &Graph,
    bind: Bindings,
    inputs: &BTreeMap<String, Tensor>,
    weights: &MapWeights,
    precision: Precision,
) -> (BTreeMap<String, Tensor>, DeviceStats) {
    let loops = entry.schedule.chains.iter().map(|c| compile_loop(c, precision).expect("loop compiles")).collect();
    let inner = InterpCtx { graph: g, bind, error: None, calls: 0, pieces: 0 };
    let mut cx = DeviceCtx { inner, loops, chains: 0, copies: 0 };
    let (status, outs) = call(entry, bind, inputs, weights, DEVICE_TAG, &mut cx as *mut DeviceCtx as *mut u8);
    assert_eq!(status, 0, "host function failed: {:?}", cx.inner.error);
    (outs, DeviceStats { kernels: cx.inner.calls, chains: cx.chains, copies: cx.copies })
}
