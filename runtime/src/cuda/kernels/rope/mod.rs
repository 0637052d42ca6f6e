//! The `rope` kernels and their launchers: NeoX RoPE over `x [tokens, heads, d]` (HF's
//! partial/odd rotary-dim rule) and the per-head RMSNorm fused in front of it
//! (`rms_norm_rope`). One block per token; angles computed as the interpreter does
//! (`inv_freq` in f32 from a correctly rounded power, f32 angle, precise `sincosf`).

use super::{Loaded, Source};
use crate::cuda::{Arg, CudaError, DevPtr, Device, LaunchConfig};
use qgc_codegen::binding::Rope;

/// The `rope` kernel source.
pub const SOURCE: Source =
    Source { name: "rope", text: include_str!("kernel.cu"), kernels: &["qgc_rope", "qgc_rms_norm_rope"] };

/// Threads per block (4 warps; each warp takes whole heads).
const THREADS: u32 = 128;

/// `v` as a kernel `int`, or [`CudaError::Invalid`] naming `what`.
fn int(what: &str, v: usize) -> Result<i32, CudaError> {
    i32::try_from(v).map_err(|_| CudaError::Invalid(format!("rope: {what} = {v} does not fit a kernel int")))
}

/// Runs `k` over `tokens` tokens (`B·S`).
///
/// `ops` are the binding's operands in order: (x `[tokens, heads, d]`, positions i32
/// `[tokens]`) for plain RoPE, (x, w `[d]` f32, positions) with `k.norm`; `out`
/// `[tokens, heads, d]` may be x's buffer (in place). Rotates the first `2·ceil(rotary_dim/2)`
/// dims of every head; the others pass (normalised when `k.norm` is set).
pub fn rope(
    dev: &dyn Device,
    loaded: &Loaded,
    k: &Rope,
    tokens: usize,
    ops: &[DevPtr],
    out: DevPtr,
) -> Result<(), CudaError> {
    let want = if k.norm.is_some() { 3 } else { 2 };
    if ops.len() != want {
        return Err(CudaError::Invalid(format!("rope: {} operands given, {want} expected", ops.len())));
    }
    let half = k.rotary_dim.div_ceil(2);
    if 2 * half > k.d {
        return Err(CudaError::Invalid(format!("rope: rotary_dim {} invalid for head dim {}", k.rotary_dim, k.d)));
    }
    if tokens == 0 || k.heads == 0 || k.d == 0 {
        return Ok(());
    }
    let blocks = u32::try_from(tokens).map_err(|_| CudaError::Invalid(format!("rope: {tokens} tokens")))?;
    let shared = u32::try_from(2 * half * 4).map_err(|_| CudaError::Invalid(format!("rope: half {half}")))?;
    let cfg = LaunchConfig { grid: (blocks, 1, 1), block: (THREADS, 1, 1), shared_bytes: shared };
    let dims = [
        Arg::I32(int("tokens", tokens)?),
        Arg::I32(int("heads", k.heads)?),
        Arg::I32(int("d", k.d)?),
        Arg::I32(int("half", half)?),
        // The interpreter's base: theta rounded to f32.
        Arg::F32(k.theta as f32),
        Arg::I32(int("rotary_dim", k.rotary_dim)?),
    ];
    let (name, mut args) = match k.norm {
        None => ("qgc_rope", vec![Arg::Ptr(ops[0]), Arg::Ptr(ops[1]), Arg::Ptr(out)]),
        Some(_) => ("qgc_rms_norm_rope", vec![Arg::Ptr(ops[0]), Arg::Ptr(ops[1]), Arg::Ptr(ops[2]), Arg::Ptr(out)]),
    };
    args.extend_from_slice(&dims);
    if let Some((eps, zero_centred)) = k.norm {
        args.push(Arg::F32(eps));
        args.push(Arg::F32(if zero_centred { 1.0 } else { 0.0 }));
    }
    loaded.launch(dev, SOURCE.name, name, cfg, &args)
}
