//! The `gdn` kernels and their launchers: the Gated DeltaNet gate chain (`Kernel::GdnGates`,
//! oracle `qgc_ir::interp::fused::gdn_gates`) and the gated delta rule (`Kernel::DeltaRule`,
//! oracle `qgc_ir::interp::gdn::gated_delta_rule`): recurrent for decode and short calls,
//! chunked (WY / UT form, [`CHUNK`] tokens per chunk) from [`CHUNKED_MIN_TOKENS`] tokens.

use super::{Loaded, Source};
use crate::cuda::{Arg, CudaError, DevPtr, Device, LaunchConfig};
use qgc_codegen::binding;

/// The `gdn` kernel source.
pub const SOURCE: Source = Source {
    name: "gdn",
    text: include_str!("kernel.cu"),
    kernels: &["qgc_gdn_l2norm", "qgc_gdn_gates", "qgc_gdn_delta_rule", "qgc_gdn_delta_rule_chunked"],
};

/// Tokens per chunk of `qgc_gdn_delta_rule_chunked` (`GDN_CHUNK` in `kernel.cu`).
pub const CHUNK: usize = 16;

/// Tokens per batch row from which [`delta_rule`] launches the chunked kernel (when its shared
/// memory fits); decode and shorter calls run the per-token recurrence.
pub const CHUNKED_MIN_TOKENS: usize = 16;

/// Column-tile width (threads per block) of the chunked kernel: each tile's block recomputes
/// the chunk's `C × C` matrices, so narrower tiles trade that for more blocks.
const CHUNKED_THREADS: usize = 64;

/// Shared-memory budget of one block (the default without an opt-in).
const SHARED_MAX: usize = 48 * 1024;

/// Threads per block of the elementwise and per-warp kernels.
const THREADS: usize = 128;

fn int(v: usize, what: &str) -> Result<i32, CudaError> {
    i32::try_from(v).map_err(|_| CudaError::Invalid(format!("gdn: {what} {v} does not fit i32")))
}

/// Blocks of [`THREADS`] covering `n` work items.
fn blocks(n: usize, what: &str) -> Result<u32, CudaError> {
    u32::try_from(n.div_ceil(THREADS))
        .ok()
        .filter(|&b| b <= i32::MAX as u32)
        .ok_or_else(|| CudaError::Invalid(format!("gdn: {n} {what}")))
}

/// The GDN gate chain: `q' = l2(q)·q_scale`, `k' = l2(k)` (`x·rsqrt(Σx² + eps)` per head),
/// `g = −exp(a_log) · softplus(a + dt_bias)`, `beta = σ(b)` — two launches.
///
/// Operands `q, k: [rows, hk, dk]`, `a, b: [rows, hv]`, `dt_bias, a_log: [hv]` (f32); results
/// `q_out, k_out: [rows, hk, dk]` (may be `q`, `k`: normalised in place), `g, beta: [rows, hv]`
/// (may be `a`, `b`).
#[allow(clippy::too_many_arguments)]
pub fn gdn_gates(
    dev: &dyn Device,
    loaded: &Loaded,
    k: &binding::GdnGates,
    rows: usize,
    (q, kk, a, b, dt_bias, a_log): (DevPtr, DevPtr, DevPtr, DevPtr, DevPtr, DevPtr),
    (q_out, k_out, g, beta): (DevPtr, DevPtr, DevPtr, DevPtr),
) -> Result<(), CudaError> {
    let overflow = || CudaError::Invalid("gdn_gates: size overflow".into());
    let heads = rows.checked_mul(k.hk).ok_or_else(overflow)?;
    let warps = heads.checked_mul(2).and_then(|w| w.checked_mul(32)).ok_or_else(overflow)?;
    if warps > 0 && k.dk > 0 {
        let cfg = LaunchConfig::linear(blocks(warps, "l2-norm threads")?, THREADS as u32);
        let args = [
            Arg::Ptr(q),
            Arg::Ptr(kk),
            Arg::Ptr(q_out),
            Arg::Ptr(k_out),
            Arg::I32(int(heads, "q/k head rows")?),
            Arg::I32(int(k.dk, "dk")?),
            Arg::F32(k.eps),
            Arg::F32(k.q_scale),
        ];
        loaded.launch(dev, SOURCE.name, "qgc_gdn_l2norm", cfg, &args)?;
    }
    let n = rows.checked_mul(k.hv).ok_or_else(overflow)?;
    if n > 0 {
        int(n, "gate elements")?;
        let cfg = LaunchConfig::linear(blocks(n, "gate elements")?, THREADS as u32);
        let args = [
            Arg::Ptr(a),
            Arg::Ptr(b),
            Arg::Ptr(dt_bias),
            Arg::Ptr(a_log),
            Arg::Ptr(g),
            Arg::Ptr(beta),
            Arg::I32(int(rows, "rows")?),
            Arg::I32(int(k.hv, "hv")?),
        ];
        loaded.launch(dev, SOURCE.name, "qgc_gdn_gates", cfg, &args)?;
    }
    Ok(())
}

/// The gated delta rule (`S ← e^g S; m = Sᵀk; S += k ⊗ β(v − m); o = Sᵀq` per token), one
/// block per (column tile of value columns, value head, batch row); value head `h` reads q/k
/// head `h / (hv/hk)`. From [`CHUNKED_MIN_TOKENS`] tokens (and `dk` small enough for its
/// shared memory) `qgc_gdn_delta_rule_chunked` runs it chunk by chunk (tiles of
/// [`CHUNKED_THREADS`] columns); otherwise `qgc_gdn_delta_rule` token by token (tiles of ≤ 128).
///
/// Operands `q, k: [batch, s, hk, dk]`, `v: [batch, s, hv, dv]`, `g, beta: [batch, s, hv]`,
/// `state: [batch, hv, dk, dv]`; results `o: [batch, s, hv, dv]` (may be `v`) and
/// `state_out: [batch, hv, dk, dv]` (may be `state`: updated in place).
#[allow(clippy::too_many_arguments)]
pub fn delta_rule(
    dev: &dyn Device,
    loaded: &Loaded,
    k: &binding::DeltaRule,
    (batch, s): (usize, usize),
    (q, kk, v, g, beta, state): (DevPtr, DevPtr, DevPtr, DevPtr, DevPtr, DevPtr),
    (o, state_out): (DevPtr, DevPtr),
    invariant: bool,
) -> Result<(), CudaError> {
    let bad = |m: String| Err(CudaError::Invalid(format!("delta_rule: {m}")));
    if k.hk == 0 || !k.hv.is_multiple_of(k.hk) {
        return bad(format!("{} value heads are not a multiple of {} key heads", k.hv, k.hk));
    }
    if batch == 0 || k.hv == 0 || k.dv == 0 {
        return Ok(());
    }
    if k.hv > 65535 || batch > 65535 {
        return bad(format!("{batch} batch rows × {} value heads exceed the grid", k.hv));
    }
    let floats = |n: Option<usize>| n.and_then(|n| n.checked_mul(4)).filter(|&n| n <= SHARED_MAX);
    // Chunked: [2C, dk] keys and queries, three [C, C] matrices, four [C] vectors.
    let chunked = k.dk.checked_mul(2 * CHUNK).and_then(|n| n.checked_add(3 * CHUNK * CHUNK + 4 * CHUNK));
    let (kernel, shared, width) = match floats(chunked) {
        Some(n) if s >= CHUNKED_MIN_TOKENS && !invariant => ("qgc_gdn_delta_rule_chunked", n, CHUNKED_THREADS),
        _ => match floats(k.dk.checked_mul(2)) {
            Some(n) => ("qgc_gdn_delta_rule", n, THREADS),
            None => return bad(format!("key head dim {} needs too much shared memory", k.dk)),
        },
    };
    let threads = k.dv.min(width).div_ceil(32) * 32;
    let tiles = u32::try_from(k.dv.div_ceil(threads)).map_err(|_| CudaError::Invalid("delta_rule: dv".into()))?;
    let cfg = LaunchConfig {
        grid: (tiles, k.hv as u32, batch as u32),
        block: (threads as u32, 1, 1),
        shared_bytes: shared as u32,
    };
    let args = [
        Arg::Ptr(q),
        Arg::Ptr(kk),
        Arg::Ptr(v),
        Arg::Ptr(g),
        Arg::Ptr(beta),
        Arg::Ptr(state),
        Arg::Ptr(o),
        Arg::Ptr(state_out),
        Arg::I32(int(s, "tokens")?),
        Arg::I32(int(k.hk, "hk")?),
        Arg::I32(int(k.hv, "hv")?),
        Arg::I32(int(k.dk, "dk")?),
        Arg::I32(int(k.dv, "dv")?),
    ];
    loaded.launch(dev, SOURCE.name, kernel, cfg, &args)
}
