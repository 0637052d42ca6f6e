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
//! Kernel shims ([`ShimFn`]), one symbol per op kind and result dtype, `qgc_{op}_{dtype}`
//! (`qgc_matmul_f32`, `qgc_top_k_f32`, ...; [`required_shims`] lists a graph's):
//! `extern "C" fn(ctx: *mut u8, node: i64, args: *const *mut u8, dims: *const i64) -> i32` —
//! `args`: operand pointers then result pointers; `dims`: for the same values in the same order,
//! `rank, d0, .., d{rank-1}` evaluated by the host code. Attributes (eps, theta, top-k, ...) are
//! the node's: the runtime looks `node` up in the graph it compiled. One generic signature keeps
//! the emitter op-agnostic while the per-op symbol lets the runtime bind each op to its kernel
//! without a dispatch `match` per call. `qgc_parallel_for` ([`ParallelForFn`]) runs a loop over
//! `[0, n)` on threads when [`HostOptions::parallel_loops`] is set; otherwise loops are called
//! directly over `[0, n)`.
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
//! # Wiring the CPU kernels (runtime)
//!
//! Each row: the symbol to register in a [`ShimTable`], and the `runtime::cpu` kernel it calls
//! (shapes from `dims`, attributes from the node; `m` = product of leading dims).
//!
//! | op | symbol | kernel |
//! |---|---|---|
//! | `matmul` | `qgc_matmul_f32` | `linear::linear(x, w, m, k, n, Epilogue::Plain, y)` |
//! | `matmul_swiglu` | `qgc_matmul_swiglu_f32` | `linear::linear(.., Epilogue::SwiGlu, y)` |
//! | `matmul_sigmoid_gate` | `qgc_matmul_sigmoid_gate_f32` | `linear::linear(.., Epilogue::SigmoidGate(g), y)` |
//! | `sigmoid_gate_matmul` | `qgc_sigmoid_gate_matmul_f32` | `elementwise::sigmoid_mul` into scratch, then `linear` |
//! | `embed` | `qgc_embed_f32` | `embed::embed(table, v, h, ids, out)` |
//! | `rms_norm` | `qgc_rms_norm_f32` | `norm::rms_norm(x, w, rows, d, eps, zc, out)` |
//! | `add_rms_norm` | `qgc_add_rms_norm_f32` | copy x to `sum`, `norm::add_rms_norm(sum, r, w, ..)` |
//! | `gated_rms_norm` | `qgc_gated_rms_norm_f32` | `norm::gated_rms_norm(x, z, w, rows, d, eps, out)` |
//! | `l2_norm` | `qgc_l2_norm_f32` | copy, `norm::l2_norm_scale(x, layout, eps, 1.0)` |
//! | `rope`, `rms_norm_rope` | `qgc_rope_f32`, `qgc_rms_norm_rope_f32` | `rope::rope_table` + `rope::rope` / `rope::qk_norm_rope` |
//! | `kv_append` | `qgc_kv_append_f32` | `attention::kv_append` (needs the cache placed with capacity) |
//! | `attention` | `qgc_attention_f32` | `attention::attention(q, ql, k, v, dims, positions, scale, None, out)` |
//! | `causal_conv1d` | `qgc_causal_conv1d_f32` | `gdn::causal_conv1d(.., silu_act = false, y)` |
//! | `gdn_gates` | `qgc_gdn_gates_f32` | `gdn::gdn_gates` + `norm::l2_norm_scale` on q, k |
//! | `gated_delta_rule` | `qgc_gated_delta_rule_f32` | `gdn::gated_delta_rule(inputs, dims, state, out)` |
//! | `moe_route` | `qgc_moe_route_f32` | `moe::moe_route(logits, t, e, top_k, renorm, w, experts)` |
//! | `moe_experts` | `qgc_moe_experts_f32` | `moe::moe_experts(x, t, w, experts, gate_up, down, dims, scratch, out)` |
//! | `mask_padding` | `qgc_mask_padding_f32` | zero the rows whose position is negative |
//! | `slice`, `concat` | `qgc_slice_{f32,i32}`, `qgc_concat_{f32,i32}` | strided row copies |
//! | elementwise | compiled loops | (`qgc_add_f32`, ... only with `fuse_elementwise = false`) |
//!
//! The runtime side lives in `qgc_runtime::compiled`: its `ctx`, the shim bodies above, a
//! `qgc_parallel_for` over rayon, weight-only nodes (`[load]`) hoisted out and evaluated once at
//! load, and [`ReusePlanner`] (the memory plan's slot placement over the requests' step
//! intervals; no in-place roles: a step's results never share bytes with its operands).

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
pub use entry::{compile_entry, required_shims, HostEntry, StepCounts};
pub use jit::{
    compile_loop, decode_dims, CompiledLoop, HostFn, JitCode, LoopFn, ParallelForFn, ShimFn, ShimTable, PARALLEL_FOR,
};
pub use math::Precision;
pub use place::{
    check_plan, ArenaPlan, ArenaPlanner, ArenaRequest, Base, BumpPlanner, IoKind, IoSlot, IoTable, Loc, ReusePlanner,
};
pub use schedule::{HostOptions, Schedule, Step};

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
