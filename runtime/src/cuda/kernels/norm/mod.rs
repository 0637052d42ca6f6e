//! The `norm` kernels and their launchers: the row-wise norms of [`NormKind`] (RMSNorm, the
//! residual add fused with it, the gated RMSNorm, L2), one block per row with a shuffle + shared
//! block sum in f32. Every result may be the buffer of any operand (in place).

use super::{Loaded, Source};
use crate::cuda::{Arg, CudaError, DevPtr, Device, LaunchConfig};
use qgc_codegen::binding::{Norm, NormKind};

/// The `norm` kernel source.
pub const SOURCE: Source = Source {
    name: "norm",
    text: include_str!("kernel.cu"),
    kernels: &["qgc_rms_norm", "qgc_add_rms_norm", "qgc_gated_rms_norm", "qgc_l2_norm"],
};

/// Threads per block: a multiple of 32 covering `d`, at most 256.
fn threads(d: usize) -> u32 {
    // At most 256, so the cast cannot truncate.
    d.div_ceil(32).clamp(1, 8) as u32 * 32
}

/// `v` as a kernel `int`, or [`CudaError::Invalid`] naming `what`.
fn int(what: &str, v: usize) -> Result<i32, CudaError> {
    i32::try_from(v).map_err(|_| CudaError::Invalid(format!("norm: {what} = {v} does not fit a kernel int")))
}

/// Runs the norm `k` over `rows` rows of `k.d`.
///
/// `ops` are the binding's operands in order, `results` its results (weights f32):
/// - `Rms`: ops (x `[rows, d]`, w `[d]`) -> (out `[rows, d]`): `x · rsqrt(mean(x²) + eps) · (1 + w | w)`;
/// - `AddRms`: ops (x, r `[rows, d]`, w `[d]`) -> (sum = x + r, norm = rms_norm(sum)), both `[rows, d]`;
/// - `Gated`: ops (x, z `[rows, d]`, w `[d]`) -> (out): `w · rmsnorm(x) · silu(z)`;
/// - `L2`: ops (x) -> (out): `x · rsqrt(Σ x² + eps)`.
///
/// Any result may be any operand's buffer. Zero rows launch nothing.
pub fn norm(
    dev: &dyn Device,
    loaded: &Loaded,
    k: &Norm,
    rows: usize,
    ops: &[DevPtr],
    results: &[DevPtr],
) -> Result<(), CudaError> {
    let (want_ops, want_res) = match k.kind {
        NormKind::Rms { .. } => (2, 1),
        NormKind::AddRms { .. } => (3, 2),
        NormKind::Gated => (3, 1),
        NormKind::L2 => (1, 1),
    };
    if ops.len() != want_ops || results.len() != want_res {
        return Err(CudaError::Invalid(format!(
            "norm {:?}: {} operands and {} results given, {want_ops} and {want_res} expected",
            k.kind,
            ops.len(),
            results.len()
        )));
    }
    if rows == 0 || k.d == 0 {
        return Ok(());
    }
    let (r, d) = (int("rows", rows)?, int("d", k.d)?);
    let cfg = LaunchConfig::linear(
        u32::try_from(rows).map_err(|_| CudaError::Invalid(format!("norm: {rows} rows")))?,
        threads(k.d),
    );
    let bias = |zc: bool| Arg::F32(if zc { 1.0 } else { 0.0 });
    let (name, args) = match k.kind {
        NormKind::Rms { zero_centred } => (
            "qgc_rms_norm",
            vec![
                Arg::Ptr(ops[0]),
                Arg::Ptr(ops[1]),
                Arg::Ptr(results[0]),
                Arg::I32(r),
                Arg::I32(d),
                Arg::F32(k.eps),
                bias(zero_centred),
            ],
        ),
        NormKind::AddRms { zero_centred } => (
            "qgc_add_rms_norm",
            vec![
                Arg::Ptr(ops[0]),
                Arg::Ptr(ops[1]),
                Arg::Ptr(ops[2]),
                Arg::Ptr(results[0]),
                Arg::Ptr(results[1]),
                Arg::I32(r),
                Arg::I32(d),
                Arg::F32(k.eps),
                bias(zero_centred),
            ],
        ),
        NormKind::Gated => (
            "qgc_gated_rms_norm",
            vec![
                Arg::Ptr(ops[0]),
                Arg::Ptr(ops[1]),
                Arg::Ptr(ops[2]),
                Arg::Ptr(results[0]),
                Arg::I32(r),
                Arg::I32(d),
                Arg::F32(k.eps),
            ],
        ),
        NormKind::L2 => {
            ("qgc_l2_norm", vec![Arg::Ptr(ops[0]), Arg::Ptr(results[0]), Arg::I32(r), Arg::I32(d), Arg::F32(k.eps)])
        }
    };
    loaded.launch(dev, SOURCE.name, name, cfg, &args)
}
