//! Cranelift host code: per entry point one JIT-compiled host function — a straight-line
//! schedule of kernel calls with the shape arithmetic done in machine code — and the fused
//! elementwise chains as SIMD loops (the `cranelift-jit-demo` pattern: runtime shims are
//! registered as JIT symbols and called by name).
//!
//! Pipeline: [`schedule`] (steps, chain grouping, io table, arena requests → planner →
//! locations) → [`loops`] (one function per distinct chain) and `emit` (the host function) in
//! one JIT module → [`HostEntry`]. [`compile_loop`] compiles a single chain on its own.
//!
//! # ABI
//!
//! Host function ([`HostFn`]), one per entry point:
//! `extern "C" fn(ctx: *mut u8, arena: *mut u8, io: *const *mut u8, b: i64, s: i64, p: i64) -> i32`
//! - `ctx`: opaque, passed to every shim (the runtime's per-call state);
//! - `arena`: [`HostEntry::arena_bytes`] evaluated at `(b, s, p)` writable bytes (64-aligned
//!   recommended); values live at the planner's offsets;
//! - `io`: the pointer table [`place::IoTable`], in order: every graph `Input` (graph order:
//!   `tokens`, `positions`, `state.*`), every named output (`logits`, `hidden`, `state.*`, in
//!   `Graph::outputs` order), every distinct `Weight` (first-use order); each a dense row-major
//!   buffer of its slot's type. Outputs are written in place by the kernel that makes them,
//!   or copied at the end (`memcpy`) when they are views, inputs, or named twice;
//! - returns 0, or the first nonzero shim status (the schedule stops there).
//!
//! Loop ([`LoopFn`]), one per distinct chain:
//! `extern "C" fn(n: i64, in_ptrs: *const *const f32, out: *mut f32, start: i64, end: i64)`
//! writes elements `[start, end)`; any split of `[0, n)` gives the same bits.
//!
//! Kernel shims ([`ShimFn`]), one symbol per kind of kernel call ([`crate::binding::Kernel::symbol`]:
//! `qgc_matmul`, `qgc_norm`, ..., and `qgc_interp` for the interpreter fallback;
//! [`required_shims`] lists a graph's):
//! `extern "C" fn(ctx: *mut u8, node: i64, args: *const *mut u8, dims: *const i64) -> i32` —
//! `args`: operand pointers then result pointers; `dims`: for the same values in the same order,
//! `rank, d0, .., d{rank-1}` evaluated by the host code. What the call computes is the node's
//! [`crate::binding::Kernel`] in the schedule (`Step::Kernel`), which the runtime looks up by
//! `node`. One generic signature keeps the emitter op-agnostic. A result the schedule placed in
//! place shares its operand's pointer (`Schedule::in_place`), and an output io slot may share an
//! input slot's buffer (`Schedule::aliases`): kernels compare pointers and skip their copy.
//! `qgc_parallel_for` ([`ParallelForFn`]) runs a loop over
//! `[0, n)` on threads when [`HostOptions::parallel_loops`] is set; otherwise loops are called
//! directly over `[0, n)`.
//!
//! Device host code ([`HostOptions::device`]): `arena` and the `io` entries are device
//! addresses (the `io` table itself is host memory), which the host code only adds offsets to
//! and passes on — it never loads or stores through them. Kernel steps call the same kernel
//! shims; chain steps call [`CHAIN`] and output copies [`COPY`], both with the [`ShimFn`]
//! signature (`qgc_chain(ctx, chain, [inputs.., out], [1, n])`,
//! `qgc_copy(ctx, slot, [src, dst], [1, bytes])`), and no loop is compiled.
//!
//! Costs nothing: `Input`/`Weight` (io pointers), `Reshape`, and `Slice` whose leading dims are
//! all 1 (pointer + offset). Strided slices and concats are `qgc_slice_*`/`qgc_concat_*` calls.
//!
//! # Unsafe
//!
//! All of it is in [`jit`]: the typed function pointers are produced there (one `transmute`
//! per function type, each tied to the signature the emitter used) and the code is freed on
//! drop. `codegen` never calls JIT code: [`HostEntry::func`] and [`CompiledLoop::func`] hand
//! out `unsafe extern "C" fn` pointers, and the runtime, which owns the arena, the io buffers
//! and the shims, makes the call under the documented contract. That keeps the safety argument
//! where the buffers are, and the pointers (`Copy + Send + Sync`) go to rayon as they are.
//!
//! # SIMD and accuracy
//!
//! Loops use `f32x4` (Cranelift's only f32 vector width on x86-64/aarch64), unrolled twice,
//! then a scalar tail; add/mul/neg/scale are bit-exact against the interpreter. exp, sigmoid,
//! silu and softplus are inline polynomials ([`math`]) in one of two [`Precision`]s: `F64`
//! (default; two `f64x2` per vector, rounded once) equals the interpreter on every value of the
//! sweeps (45M exp inputs, 240k activations; ≤ 1 ulp asserted), `F32` is ~3x faster and within
//! 1 ulp (exp) / 3 ulp (activations) measured, 2 / 4 asserted.
//!
//! # Kernels
//!
//! Which kernel runs each node is [`crate::binding`]'s description, matched exhaustively by each
//! backend (the CPU one: `qgc_runtime::compiled::shims`). Weight-only nodes (`[load]`) are
//! hoisted out and evaluated once at load; the arena is planned by [`ReusePlanner`] (the memory
//! plan's slot placement over the requests' step intervals, in-place results sharing their
//! operand's request).

pub mod chain;
mod emit;
pub mod entry;
pub mod jit;
pub mod loops;
pub mod math;
pub mod place;
pub mod poly;
pub mod schedule;

pub use chain::{Bcast, Binary, EwChain, EwNode, Unary};
pub use entry::{compile_entry, compile_schedule, required_shims, HostEntry, StepCounts};
pub use jit::{
    compile_loop, decode_dims, CompiledLoop, HostFn, JitCode, LoopFn, ParallelForFn, ShimFn, ShimTable, CHAIN, COPY,
    PARALLEL_FOR,
};
pub use math::Precision;
pub use place::{
    check_plan, ArenaPlan, ArenaPlanner, ArenaRequest, Base, BumpPlanner, IoKind, IoSlot, IoTable, Loc, ReusePlanner,
};
pub use schedule::{HostOptions, IoAlias, Schedule, Step};

/// Host code generation failures (all but [`HostError::MissingShim`] are compiler bugs).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HostError {
    /// An elementwise chain is malformed.
    #[error("elementwise chain {chain}: {message}")]
    Chain {
        /// The chain, printed.
        chain: String,
        /// What is wrong.
        message: String,
    },
    /// A node has no kernel binding (a shape no kernel takes).
    #[error(transparent)]
    Bind(#[from] crate::binding::BindError),
    /// A kernel shim the schedule calls is not registered.
    #[error("node {node}: shim {symbol} is not registered")]
    MissingShim {
        /// The symbol (`qgc_matmul_f32`).
        symbol: String,
        /// The first node that needs it.
        node: String,
    },
    /// The arena planner's answer does not fit its requests.
    #[error("arena plan: {message}")]
    Plan {
        /// What does not fit.
        message: String,
    },
    /// Cranelift rejected a function or could not link.
    #[error("cranelift, {what}: {message}")]
    Cranelift {
        /// The function or stage.
        what: String,
        /// Cranelift's message.
        message: String,
    },
}

impl HostError {
    pub(crate) fn cranelift(what: &str, e: impl std::fmt::Debug) -> HostError {
        HostError::Cranelift { what: what.to_string(), message: format!("{e:?}") }
    }
}
