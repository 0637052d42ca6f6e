//! The `embed` kernels and their launchers: the row gather of `Kernel::Embed` from an f32 or
//! bf16 table (bf16 widened exactly).

use super::{Loaded, Source};
use crate::cuda::{Arg, CudaError, DevPtr, Device, LaunchConfig};
use qgc_ir::DType;

/// The `embed` kernel source.
pub const SOURCE: Source =
    Source { name: "embed", text: include_str!("kernel.cu"), kernels: &["qgc_embed_f32", "qgc_embed_bf16"] };

/// `v` as a kernel `int`, or [`CudaError::Invalid`] naming `what`.
fn int(what: &str, v: usize) -> Result<i32, CudaError> {
    i32::try_from(v).map_err(|_| CudaError::Invalid(format!("embed: {what} = {v} does not fit a kernel int")))
}

/// `Kernel::Embed { tokens, vocab, hidden }` (counts evaluated): `out[n] = table[ids[n]]`.
///
/// `table`: `[vocab, hidden]` of `dtype` (`F32` or `BF16`); `ids`: i32 `[tokens]`; `out`:
/// f32 `[tokens, hidden]`. An id outside `0..vocab` reads nothing: its row is written as zeros
/// and, when `bad` is given (an i32 the caller set to `i32::MAX`), the smallest such flat index
/// is stored there (`atomicMin`) so the caller can raise the CPU path's token-id error.
#[allow(clippy::too_many_arguments)]
pub fn embed(
    dev: &dyn Device,
    loaded: &Loaded,
    tokens: usize,
    vocab: usize,
    hidden: usize,
    table: DevPtr,
    dtype: DType,
    ids: DevPtr,
    out: DevPtr,
    bad: Option<DevPtr>,
) -> Result<(), CudaError> {
    let name = match dtype {
        DType::F32 => "qgc_embed_f32",
        DType::BF16 => "qgc_embed_bf16",
        other => return Err(CudaError::Invalid(format!("embed: a {other:?} table (f32 or bf16 expected)"))),
    };
    if tokens == 0 || hidden == 0 {
        return Ok(());
    }
    let blocks = u32::try_from(tokens.min(i32::MAX as usize)).unwrap_or(u32::MAX);
    let threads = hidden.div_ceil(32).clamp(1, 8) as u32 * 32; // at most 256
    let args = [
        Arg::Ptr(table),
        Arg::Ptr(ids),
        Arg::Ptr(out),
        Arg::Ptr(bad.unwrap_or(DevPtr(0))),
        Arg::I32(int("tokens", tokens)?),
        Arg::I32(int("vocab", vocab)?),
        Arg::I32(int("hidden", hidden)?),
    ];
    loaded.launch(dev, SOURCE.name, name, LaunchConfig::linear(blocks, threads), &args)
}
