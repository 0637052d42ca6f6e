//! The `conv` kernels and their launchers: the depthwise causal conv1d with state
//! (`Kernel::Conv`, oracle `qgc_ir::interp::gdn::causal_conv1d`).

use super::{Loaded, Source};
use crate::cuda::{Arg, CudaError, DevPtr, Device, LaunchConfig};
use qgc_codegen::binding;

/// The `conv` kernel source.
pub const SOURCE: Source = Source { name: "conv", text: include_str!("kernel.cu"), kernels: &["qgc_conv1d"] };

/// Threads per block.
const THREADS: usize = 128;
/// Widest kernel the CUDA conv takes (`CONV_KMAX`).
pub const MAX_KERNEL: usize = 8;

fn int(v: usize, what: &str) -> Result<i32, CudaError> {
    i32::try_from(v).map_err(|_| CudaError::Invalid(format!("conv: {what} {v} does not fit i32")))
}

/// Depthwise causal conv over `state ++ x`, no activation (one thread per batch row and
/// channel).
///
/// `x: [batch, s, channels]`; `w: [channels, kernel]` (f32); `state: [batch, channels, kernel−1]`;
/// results `y: [batch, s, channels]` (may be `x`'s buffer) and
/// `state_out: [batch, channels, kernel−1]` (may be `state`'s buffer: updated in place).
#[allow(clippy::too_many_arguments)]
pub fn conv(
    dev: &dyn Device,
    loaded: &Loaded,
    k: &binding::Conv,
    (batch, s): (usize, usize),
    x: DevPtr,
    w: DevPtr,
    state: DevPtr,
    y: DevPtr,
    state_out: DevPtr,
) -> Result<(), CudaError> {
    if k.kernel == 0 || k.kernel > MAX_KERNEL {
        return Err(CudaError::Invalid(format!("conv: kernel width {} not in 1..={MAX_KERNEL}", k.kernel)));
    }
    let threads = batch.checked_mul(k.channels).ok_or_else(|| CudaError::Invalid("conv: size overflow".into()))?;
    if threads == 0 {
        return Ok(());
    }
    let blocks = u32::try_from(threads.div_ceil(THREADS)).ok().filter(|&b| b <= i32::MAX as u32);
    let blocks = blocks.ok_or_else(|| CudaError::Invalid(format!("conv: {threads} threads")))?;
    let cfg = LaunchConfig::linear(blocks, THREADS as u32);
    let args = [
        Arg::Ptr(x),
        Arg::Ptr(w),
        Arg::Ptr(state),
        Arg::Ptr(y),
        Arg::Ptr(state_out),
        Arg::I32(int(batch, "batch")?),
        Arg::I32(int(s, "tokens")?),
        Arg::I32(int(k.channels, "channels")?),
        Arg::I32(int(k.kernel, "kernel")?),
    ];
    loaded.launch(dev, SOURCE.name, "qgc_conv1d", cfg, &args)
}
