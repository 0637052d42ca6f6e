//! The `argmax` kernel and its launcher: greedy token choice per row of logits on the device,
//! with `runtime::sampling::argmax`'s rules (first index on ties, NaN never chosen, 0 when a
//! row is all NaN).

use super::{Loaded, Source};
use crate::cuda::{Arg, CudaError, DevPtr, Device, LaunchConfig};

/// The `argmax` kernel source.
pub const SOURCE: Source = Source { name: "argmax", text: include_str!("kernel.cu"), kernels: &["qgc_argmax"] };

/// `out[r] = argmax(logits[r])` for `logits: [rows, vocab]` f32 -> `out: [rows]` i32 (one block
/// of up to 1024 threads per row; vocab up to `i32::MAX`, e.g. 151,936).
pub fn argmax(
    dev: &dyn Device,
    loaded: &Loaded,
    rows: usize,
    vocab: usize,
    logits: DevPtr,
    out: DevPtr,
) -> Result<(), CudaError> {
    if rows == 0 {
        return Ok(());
    }
    let blocks = u32::try_from(rows).map_err(|_| CudaError::Invalid(format!("argmax: {rows} rows")))?;
    let r = i32::try_from(rows).map_err(|_| CudaError::Invalid(format!("argmax: {rows} rows")))?;
    let v = i32::try_from(vocab).map_err(|_| CudaError::Invalid(format!("argmax: vocab {vocab}")))?;
    // At most 1024 threads, so the cast cannot truncate.
    let threads = vocab.div_ceil(32).clamp(1, 32) as u32 * 32;
    let args = [Arg::Ptr(logits), Arg::Ptr(out), Arg::I32(r), Arg::I32(v)];
    loaded.launch(dev, SOURCE.name, "qgc_argmax", LaunchConfig::linear(blocks, threads), &args)
}
