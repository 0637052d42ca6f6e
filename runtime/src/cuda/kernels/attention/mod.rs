//! The `attention` kernels and their launchers: causal GQA attention over a KV cache
//! (`Kernel::Attention`, oracle `qgc_ir::interp::attention::attention`).

use super::{Loaded, Source};
use crate::cuda::{Arg, CudaError, DevPtr, Device, LaunchConfig};
use qgc_codegen::binding;

/// The `attention` kernel source.
pub const SOURCE: Source = Source { name: "attention", text: include_str!("kernel.cu"), kernels: &["qgc_attention"] };

/// Threads per block of `qgc_attention` (`ATTN_THREADS`).
const THREADS: u32 = 128;
/// Keys per score tile (`ATTN_TILE`).
const TILE: usize = 32;
/// Largest `dv` the kernel takes (`ATTN_THREADS · ATTN_DV_PER_THREAD`).
pub const MAX_DV: usize = 512;

fn int(v: usize, what: &str) -> Result<i32, CudaError> {
    i32::try_from(v).map_err(|_| CudaError::Invalid(format!("attention: {what} {v} does not fit i32")))
}

/// Causal GQA attention (one block per query row and head, online softmax in f32).
///
/// `q: [batch, s, q_heads, d]`; `k: [batch, kv_heads, capacity, d]` and
/// `v: [batch, kv_heads, capacity, dv]` (the first `len` entries of each row valid, `capacity ≥
/// len` the row stride); `positions: [batch, s]` i32; `out: [batch, s, q_heads, dv]`. Row b's
/// padding is `len − s − positions[b, 0]`; query t sees entries `pad..=len−s+t`, and a query that
/// sees none (a padding slot) gets zeros. `out` must not overlap `q`, `k` or `v`.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    dev: &dyn Device,
    loaded: &Loaded,
    a: &binding::Attention,
    (batch, s, len): (usize, usize, usize),
    capacity: usize,
    q: DevPtr,
    k: DevPtr,
    v: DevPtr,
    positions: DevPtr,
    out: DevPtr,
) -> Result<(), CudaError> {
    let bad = |m: String| Err(CudaError::Invalid(format!("attention: {m}")));
    if a.kv_heads == 0 || !a.q_heads.is_multiple_of(a.kv_heads) {
        return bad(format!("{} query heads are not a multiple of {} kv heads", a.q_heads, a.kv_heads));
    }
    if len < s || capacity < len {
        return bad(format!("{len} cache entries for {s} queries in a capacity of {capacity}"));
    }
    if a.dv > MAX_DV {
        return bad(format!("value head dim {} above {MAX_DV}", a.dv));
    }
    let blocks = batch.checked_mul(s).and_then(|n| n.checked_mul(a.q_heads)).unwrap_or(usize::MAX);
    if blocks == 0 {
        return Ok(());
    }
    let grid = u32::try_from(blocks).ok().filter(|&g| g <= i32::MAX as u32);
    let grid = grid.ok_or_else(|| CudaError::Invalid(format!("attention: {blocks} blocks")))?;
    let shared = a.d.checked_add(TILE).and_then(|n| n.checked_mul(4)).and_then(|n| u32::try_from(n).ok());
    let shared = shared
        .filter(|&b| b <= 48 * 1024)
        .ok_or_else(|| CudaError::Invalid(format!("attention: head dim {} needs too much shared memory", a.d)))?;
    // Every cache offset is computed in 64 bits in the kernel; the element counts must fit i32.
    int(batch * a.kv_heads, "batch·kv_heads")?;
    let cfg = LaunchConfig { grid: (grid, 1, 1), block: (THREADS, 1, 1), shared_bytes: shared };
    let args = [
        Arg::Ptr(q),
        Arg::Ptr(k),
        Arg::Ptr(v),
        Arg::Ptr(positions),
        Arg::Ptr(out),
        Arg::I32(int(batch, "batch")?),
        Arg::I32(int(s, "queries")?),
        Arg::I32(int(len, "cache length")?),
        Arg::I32(int(capacity, "capacity")?),
        Arg::I32(int(a.q_heads, "q_heads")?),
        Arg::I32(int(a.kv_heads, "kv_heads")?),
        Arg::I32(int(a.d, "d")?),
        Arg::I32(int(a.dv, "dv")?),
        Arg::F32(a.scale),
    ];
    loaded.launch(dev, SOURCE.name, "qgc_attention", cfg, &args)
}
