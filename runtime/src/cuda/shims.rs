//! The CUDA side of the host ABI: the shims that device host code calls — the schedule of an
//! entry point compiled by `qgc_codegen::host` with [`HostOptions::device`] — with device
//! addresses where the CPU shims get host pointers.
//!
//! - one kernel shim per [`qgc_codegen::binding::Kernel::symbol`] (`qgc_matmul`, ...), each
//!   decoding the node, its operand and result addresses and dims, and running
//!   [`CudaModel::dispatch`] (the launcher its binding names);
//! - [`CHAIN`]: one elementwise chain, the CUDA C that `qgc_codegen::cuda` renders from the
//!   chain description, over the element count the host code computed;
//! - [`COPY`]: an output copy, device to device.
//!
//! `ctx` is a [`Ctx`] (the model, the entry, the bindings, the state capacities, the call's
//! device buffers). A shim returns 0, or 1 with its error in [`Ctx::error`] — a panic inside a
//! launcher becomes an error too, never an unwind across the host code.

use super::device::{DevPtr, LaunchConfig};
use super::dispatch::Call;
use super::model::{Buffers, CudaModel};
use super::{Arg, CudaError};
use crate::compiled::{CpuEntry, CpuModel, Entry};
use qgc_codegen::host::{compile_schedule, decode_dims, Base, HostEntry, HostOptions, ShimFn, ShimTable, CHAIN, COPY};
use qgc_ir::{Bindings, DType, Value};
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;

/// What the CUDA shims see through `ctx` during one call.
pub(super) struct Ctx<'a, 'w, 'd> {
    model: &'a CudaModel<'w>,
    entry: &'a CpuEntry,
    bind: &'a Bindings,
    /// Per io slot: `(axis, capacity)` of a state buffer with spare capacity along `axis`.
    caps: &'a [Option<(usize, usize)>],
    /// The call's scratch buffers (freed when the call ends).
    bufs: &'a mut Buffers<'d>,
    /// The first error a shim reported.
    error: Option<CudaError>,
    /// Shim calls made.
    calls: usize,
}

/// Device host-code options: fused chains (as the CPU schedule has them), no loops.
fn device_options() -> HostOptions {
    HostOptions { device: true, ..HostOptions::default() }
}

/// Device host code for every entry point of `cpu`, from the very schedules its CPU host code
/// runs.
pub(super) fn host_code(cpu: &CpuModel) -> Result<BTreeMap<Entry, HostEntry>, CudaError> {
    let opts = device_options();
    let mut out = BTreeMap::new();
    for entry in cpu.entry_points() {
        let Some(e) = cpu.entry(entry) else { continue };
        let sched = &e.host.schedule;
        let host_err = |message: String| CudaError::Host { entry: entry.name(), message };
        let shims = table(&sched.host_symbols(&opts)).map_err(host_err)?;
        let host = compile_schedule(&e.graph, sched.clone(), &shims, &opts).map_err(|h| host_err(h.to_string()))?;
        out.insert(entry, host);
    }
    Ok(out)
}

/// The shims for `symbols` (kernel shims, [`CHAIN`], [`COPY`]); the first symbol without a shim
/// is an error.
fn table<'s>(symbols: impl IntoIterator<Item = &'s String>) -> Result<ShimTable, String> {
    let mut t = ShimTable::new();
    for s in symbols {
        let f = match s.as_str() {
            CHAIN => qgc_chain as ShimFn,
            COPY => qgc_copy as ShimFn,
            _ => match SHIMS.iter().find(|(k, _)| k == s) {
                Some((_, f)) => *f,
                None => return Err(format!("the CUDA backend has no shim {s}")),
            },
        };
        t.kernel(s.clone(), f);
    }
    Ok(t)
}

impl<'w> CudaModel<'w> {
    /// The device host code of `entry`.
    pub fn host(&self, entry: Entry) -> Option<&HostEntry> {
        self.hosts.get(&entry)
    }

    /// Shim calls the host code made in the last [`CudaModel::run`] that reached it (one per
    /// kernel, chain and copy step it ran).
    pub fn shim_calls(&self) -> usize {
        self.shim_calls.load(Ordering::Relaxed)
    }

    /// Calls the device host code of `entry` over `arena` and the `io` device buffers.
    pub(super) fn run_host(
        &self,
        entry: Entry,
        bind: &Bindings,
        arena: DevPtr,
        io: &[DevPtr],
        caps: &[Option<(usize, usize)>],
        bufs: &mut Buffers<'_>,
    ) -> Result<(), CudaError> {
        let internal = |m: String| CudaError::Invalid(format!("internal: {m}"));
        let e = self.cpu().entry(entry).ok_or_else(|| internal(format!("no {} entry point", entry.name())))?;
        let host = self.host(entry).ok_or_else(|| internal(format!("no device host code for {}", entry.name())))?;
        if io.len() != host.io().slots.len() || caps.len() != io.len() {
            return Err(internal(format!("{} io buffers for {} slots", io.len(), host.io().slots.len())));
        }
        let table: Vec<*mut u8> = io.iter().map(|p| p.0 as usize as *mut u8).collect();
        let mut cx = Ctx { model: self, entry: e, bind, caps, bufs, error: None, calls: 0 };
        let (b, s, p) = (bind.b as i64, bind.s as i64, bind.p as i64);
        // SAFETY: the host code was compiled for device mode (it only adds offsets to `arena` and
        // the io entries and passes them to the shims, never dereferencing them); `table` holds
        // one device buffer per io slot of its type under `bind` and the arena has the planned
        // bytes (the caller's contract); `ctx` is the `Ctx` the shims below expect, living for
        // the call.
        let status = unsafe {
            (host.func())(&mut cx as *mut Ctx as *mut u8, arena.0 as usize as *mut u8, table.as_ptr(), b, s, p)
        };
        self.shim_calls.store(cx.calls, Ordering::Relaxed);
        match (status, cx.error) {
            (0, _) => Ok(()),
            (_, Some(err)) => Err(err),
            (st, None) => Err(internal(format!("{} host code returned {st} without an error", entry.name()))),
        }
    }
}

/// Runs one shim body with `ctx`; returns 0, or 1 with the error (or panic, labelled by
/// `what`) in the ctx.
///
/// # Safety
/// `ctx` must be the `Ctx` that [`CudaModel::run_host`] passed to the host function.
unsafe fn guarded(
    ctx: *mut u8,
    what: impl FnOnce(&Ctx) -> String,
    body: impl FnOnce(&mut Ctx) -> Result<(), CudaError>,
) -> i32 {
    let cx = &mut *(ctx as *mut Ctx);
    cx.calls += 1;
    let err = match catch_unwind(AssertUnwindSafe(|| body(&mut *cx))) {
        Ok(Ok(())) => return 0,
        Ok(Err(e)) => e,
        Err(p) => {
            let m = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
            CudaError::Launch { kernel: what(cx), message: format!("panicked: {}", m.unwrap_or_default()) }
        }
    };
    cx.error = Some(err);
    1
}

/// The `count` addresses at `args`.
///
/// # Safety
/// `args` must hold `count` words (what the host code passes).
unsafe fn addresses(args: *const *mut u8, count: usize) -> Vec<DevPtr> {
    (0..count).map(|j| DevPtr(*args.add(j) as usize as u64)).collect()
}

/// A kernel shim: node `node`'s launcher, its operand then result addresses at `args`.
///
/// # Safety
/// As [`guarded`]; `args` and `dims` as the host code passes them for `node`.
unsafe fn kernel(ctx: *mut u8, node: i64, args: *const *mut u8, dims: *const i64) -> i32 {
    let node = node as usize;
    let name = |cx: &Ctx| cx.entry.graph.nodes.get(node).map_or_else(|| format!("node {node}"), |n| n.name.clone());
    guarded(ctx, name, |cx| {
        let (model, e, bind, caps) = (cx.model, cx.entry, cx.bind, cx.caps);
        let n = e.graph.nodes.get(node).ok_or_else(|| CudaError::Invalid(format!("internal: no node {node}")))?;
        let kernel = (e.kernels[node].as_ref())
            .ok_or_else(|| CudaError::Invalid(format!("internal: {} is not a kernel step", n.name)))?;
        let (nin, count) = (n.inputs.len(), n.inputs.len() + n.outputs.len());
        // SAFETY: the host code passes one address and one shape per operand and result of `node`.
        let (mut ops, shapes) = unsafe { (addresses(args, count), decode_dims(dims, count)) };
        let res = ops.split_off(nin);
        let locs = &e.host.schedule.locs;
        let cap_of = |v: &Value, axis: usize, dflt: usize| -> usize {
            match locs[v.node][v.index].as_ref().map(|l| l.base) {
                Some(Base::Io(s)) => match caps[s] {
                    Some((a, c)) if a == axis => c,
                    _ => dflt,
                },
                _ => dflt,
            }
        };
        let wdt = |j: usize| e.operand_weight(node, j).map_or(DType::F32, |t| model.tensors[t].1);
        let call = Call { node, ops, res, shapes, bind, cap_of: &cap_of, wdt: &wdt, bufs: &mut *cx.bufs };
        model.dispatch(e, kernel, call).map_err(|err| match err {
            CudaError::Launch { kernel, message } => {
                CudaError::Launch { kernel: format!("{kernel} ({})", n.name), message }
            }
            other => other,
        })
    })
}

macro_rules! shims {
    ($($sym:ident),* $(,)?) => {
        $(
            unsafe extern "C" fn $sym(ctx: *mut u8, node: i64, args: *const *mut u8, dims: *const i64) -> i32 {
                kernel(ctx, node, args, dims)
            }
        )*
        /// Every kernel shim by symbol (one function per symbol, so profiles name the kernel).
        const SHIMS: &[(&str, ShimFn)] = &[$((stringify!($sym), $sym as ShimFn)),*];
    };
}

shims! {
    qgc_interp, qgc_embed, qgc_matmul, qgc_norm, qgc_rope, qgc_mask_padding, qgc_kv_append, qgc_attention,
    qgc_causal_conv1d, qgc_gdn_gates, qgc_gated_delta_rule, qgc_moe_route, qgc_moe_experts, qgc_slice, qgc_concat,
}

/// The count of a device shim's `dims` (`[1, count]`).
///
/// # Safety
/// `dims` must be what the host code passes to [`CHAIN`] or [`COPY`].
unsafe fn count(dims: *const i64) -> Result<usize, CudaError> {
    match decode_dims(dims, 1).pop() {
        Some(d) if d.len() == 1 => Ok(d[0]),
        d => Err(CudaError::Invalid(format!("internal: device shim dims {d:?}, expected [count]"))),
    }
}

/// [`CHAIN`]: chain `chain` of the schedule, its input addresses then its output address at
/// `args`, its element count as `dims = [1, n]`.
unsafe extern "C" fn qgc_chain(ctx: *mut u8, chain: i64, args: *const *mut u8, dims: *const i64) -> i32 {
    let chain = chain as usize;
    guarded(
        ctx,
        |_| format!("elementwise chain {chain}"),
        |cx| {
            let ch = (cx.entry.host.schedule.chains.get(chain))
                .ok_or_else(|| CudaError::Invalid(format!("internal: no elementwise chain {chain}")))?;
            let k = ch.inputs.len();
            // SAFETY: the host code passes the chain's input addresses, its output's, and [1, n].
            let (ptrs, n) = unsafe { (addresses(args, k + 1), count(dims)?) };
            let name = qgc_codegen::cuda::chain_kernel_name(ch);
            let m = cx.model.chain_module(&name, || qgc_codegen::cuda::render_chain(&name, ch))?;
            if n == 0 {
                return Ok(());
            }
            let mut args = vec![Arg::Ptr(ptrs[k])];
            args.extend(ptrs[..k].iter().map(|p| Arg::Ptr(*p)));
            args.push(Arg::I64(n as i64));
            if ch.has_rows() {
                args.push(Arg::I64(ch.inner.unwrap_or(1) as i64));
            }
            let blocks = n.div_ceil(256).min(65_535) as u32;
            cx.model.dev.launch(m, &name, LaunchConfig::linear(blocks, 256), &args)
        },
    )
}

/// [`COPY`]: output io slot `slot` gets `dims = [1, bytes]` bytes from `args[0]` at `args[1]`.
unsafe extern "C" fn qgc_copy(ctx: *mut u8, slot: i64, args: *const *mut u8, dims: *const i64) -> i32 {
    guarded(
        ctx,
        |_| format!("copy into io slot {slot}"),
        |cx| {
            // SAFETY: the host code passes the source and destination addresses and [1, bytes].
            let (ptrs, bytes) = unsafe { (addresses(args, 2), count(dims)?) };
            if bytes == 0 {
                return Ok(());
            }
            cx.model.dev.dtod(ptrs[0], ptrs[1], bytes)
        },
    )
}
