//! The JIT module owner, the typed function pointers it hands out, the shim symbol table, and
//! [`compile_loop`] (one elementwise chain as a standalone function).
//!
//! The whole unsafe surface of `codegen` is in this file: turning a finalized code address into
//! a typed `unsafe extern "C" fn` (`JitCode::loop_fn`, `JitCode::host_fn`) and freeing the code
//! when its owner drops. *Calling* the functions is the caller's unsafe act (the runtime's, or a test's): only it knows
//! that the arena, the io table and the shims fit what the code was compiled for. Typed pointers
//! are `Copy + Send + Sync`, so a runtime can hand a loop to rayon threads without wrappers.

use super::chain::EwChain;
use super::loops;
use super::math::Precision;
use super::HostError;
use cranelift_jit::{ArenaMemoryProvider, JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, FuncId};
use std::collections::BTreeMap;

/// A compiled elementwise loop: writes `out[i]` for `i` in `[start, end)` of the chain's `n`
/// elements, reading chain input `k` at `in_ptrs[k]` (indexed as its [`super::Bcast`] says).
pub type LoopFn = unsafe extern "C" fn(n: i64, in_ptrs: *const *const f32, out: *mut f32, start: i64, end: i64);

/// A compiled entry point: runs the schedule over `arena` and the `io` pointer table for the
/// bindings `b`, `s`, `p`; returns 0, or the first nonzero status a shim returned (the rest of
/// the schedule is then skipped).
pub type HostFn = unsafe extern "C" fn(ctx: *mut u8, arena: *mut u8, io: *const *mut u8, b: i64, s: i64, p: i64) -> i32;

/// A kernel shim (`qgc_{op}_{dtype}`): runs node `node` of the entry point's graph. `args` holds
/// the operand pointers then the result pointers; `dims` the concrete shapes of the same values,
/// each as its rank followed by its dims. Returns 0 or an error status (details stay in `ctx`).
pub type ShimFn = unsafe extern "C" fn(ctx: *mut u8, node: i64, args: *const *mut u8, dims: *const i64) -> i32;

/// Decodes a shim's `dims` argument: `count` shapes (operands then results), each written as
/// `rank, d0, .., d{rank-1}`.
///
/// # Safety
/// `dims` must be what the host code passed to a [`ShimFn`] whose node has `count` values.
pub unsafe fn decode_dims(dims: *const i64, count: usize) -> Vec<Vec<usize>> {
    let mut at = dims;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let r = *at as usize;
        out.push((1..=r).map(|k| *at.add(k) as usize).collect());
        at = at.add(r + 1);
    }
    out
}

/// The `qgc_parallel_for` shim: runs `f(n, in_ptrs, out, start, end)` over pieces covering
/// `[0, n)` (on threads, in any order). Returns 0 or an error status.
pub type ParallelForFn =
    unsafe extern "C" fn(ctx: *mut u8, f: LoopFn, n: i64, in_ptrs: *const *const f32, out: *mut f32) -> i32;

/// Symbol name of the parallel-for shim.
pub const PARALLEL_FOR: &str = "qgc_parallel_for";

/// Symbol name of the device chain shim, a [`ShimFn`] called for each chain step under
/// [`super::HostOptions::device`]: `node` is the chain's index in [`super::Schedule::chains`],
/// `args` the chain's input pointers then its output pointer, `dims` the one shape `1, n` (the
/// output's element count).
pub const CHAIN: &str = "qgc_chain";

/// Symbol name of the device copy shim, a [`ShimFn`] called for each output copy under
/// [`super::HostOptions::device`]: `node` is the output's io slot, `args` the source pointer then
/// the destination pointer, `dims` the one shape `1, bytes` (the byte count).
pub const COPY: &str = "qgc_copy";

/// The shim symbols a host function may call, by name.
#[derive(Debug, Clone, Default)]
pub struct ShimTable {
    symbols: BTreeMap<String, *const u8>,
}

impl ShimTable {
    /// An empty table.
    pub fn new() -> ShimTable {
        ShimTable::default()
    }

    /// Registers kernel shim `name` (e.g. `qgc_matmul`).
    pub fn kernel(&mut self, name: impl Into<String>, f: ShimFn) -> &mut Self {
        self.symbols.insert(name.into(), f as *const u8);
        self
    }

    /// Registers the [`PARALLEL_FOR`] shim.
    pub fn parallel_for(&mut self, f: ParallelForFn) -> &mut Self {
        self.symbols.insert(PARALLEL_FOR.into(), f as *const u8);
        self
    }

    /// Whether `name` is registered.
    pub fn has(&self, name: &str) -> bool {
        self.symbols.contains_key(name)
    }

    fn register(&self, b: &mut JITBuilder) {
        for (name, &ptr) in &self.symbols {
            b.symbol(name.clone(), ptr);
        }
    }
}

/// Address space reserved for one module's code (not committed until used).
pub const CODE_RESERVE: usize = 256 << 20;

/// Owns finalized JIT code; the code is freed when this drops, so every typed pointer taken
/// from it must not be called afterwards.
pub struct JitCode {
    module: Option<JITModule>,
}

impl std::fmt::Debug for JitCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JitCode")
    }
}

impl JitCode {
    /// A module for the host machine (`opt_level=speed`, target features detected by
    /// `cranelift-native`) that resolves `shims` by name; `memcpy` comes from the C library.
    ///
    /// Its code lives in one reserved region ([`CODE_RESERVE`] bytes of address space): calls
    /// between the functions of a module are 32-bit PC-relative, and with one mapping per
    /// function (cranelift-jit's default provider) a large heap allocation between two of them
    /// (the weights of a real model) puts them out of range.
    pub(crate) fn module(shims: &ShimTable) -> Result<JITModule, HostError> {
        let mut b = JITBuilder::with_flags(&[("opt_level", "speed")], default_libcall_names())
            .map_err(|e| HostError::cranelift("jit", e))?;
        shims.register(&mut b);
        let arena =
            ArenaMemoryProvider::new_with_size(CODE_RESERVE).map_err(|e| HostError::cranelift("code region", e))?;
        b.memory_provider(Box::new(arena));
        Ok(JITModule::new(b))
    }

    /// Links `module` and takes ownership of its code.
    pub(crate) fn finalize(mut module: JITModule) -> Result<JitCode, HostError> {
        module.finalize_definitions().map_err(|e| HostError::cranelift("finalize", e))?;
        Ok(JitCode { module: Some(module) })
    }

    fn address(&self, id: FuncId) -> *const u8 {
        self.module.as_ref().expect("module lives until drop").get_finalized_function(id)
    }

    /// The loop function `id`, which must have been defined with [`loops::loop_signature`].
    pub(crate) fn loop_fn(&self, id: FuncId) -> LoopFn {
        // SAFETY: `id` was defined with the loop signature (five i64 parameters, no result, the
        // platform's default C calling convention), which is `LoopFn`'s ABI; the code stays
        // mapped while `self` lives, as `LoopFn`'s users are told.
        unsafe { std::mem::transmute::<*const u8, LoopFn>(self.address(id)) }
    }

    /// The host function `id`, which must have been defined with the host signature.
    pub(crate) fn host_fn(&self, id: FuncId) -> HostFn {
        // SAFETY: `id` was defined with the host signature (six i64 parameters, an i32 result, the
        // default C calling convention), which is `HostFn`'s ABI; the code stays mapped while
        // `self` lives.
        unsafe { std::mem::transmute::<*const u8, HostFn>(self.address(id)) }
    }
}

impl Drop for JitCode {
    fn drop(&mut self) {
        if let Some(m) = self.module.take() {
            // SAFETY: the owner of this code is going away; its documentation forbids calling
            // pointers taken from it afterwards, and no call can be in progress through `&self`.
            unsafe { m.free_memory() }
        }
    }
}

/// One elementwise chain compiled on its own: see [`compile_loop`].
#[derive(Debug)]
pub struct CompiledLoop {
    /// The chain.
    pub chain: EwChain,
    func: LoopFn,
    _code: JitCode,
}

impl CompiledLoop {
    /// The loop function; valid while `self` lives. Calling it is unsafe: `in_ptrs` must hold
    /// one pointer per chain input, each readable at every index the chain reads for
    /// `[start, end)`, and `out` writable at `[start, end)`.
    pub fn func(&self) -> LoopFn {
        self.func
    }
}

/// Compiles `chain` into a standalone [`LoopFn`], transcendental maps in `precision`.
pub fn compile_loop(chain: &EwChain, precision: Precision) -> Result<CompiledLoop, HostError> {
    let mut module = JitCode::module(&ShimTable::new())?;
    let id = loops::define_loop(&mut module, chain, precision, "qgc_ew")?;
    let code = JitCode::finalize(module)?;
    Ok(CompiledLoop { chain: chain.clone(), func: code.loop_fn(id), _code: code })
}
