//! The `movement` kernels and their launchers: `MaskPadding`, `KvAppend` (caches with spare
//! capacity along the length, in place or copying), `Slice` and `Concat` (4-byte words). All
//! are grid-stride loops over the output elements.

use super::{Loaded, Source};
use crate::cuda::{Arg, CudaError, DevPtr, Device, LaunchConfig};
use qgc_codegen::binding::{Concat, KvAppend, Slice};

/// The `movement` kernel source.
pub const SOURCE: Source = Source {
    name: "movement",
    text: include_str!("kernel.cu"),
    kernels: &["qgc_mask_padding", "qgc_kv_append", "qgc_slice", "qgc_concat_part"],
};

/// Threads per block.
const THREADS: u32 = 256;
/// Most blocks per launch (the loops stride over the rest).
const MAX_BLOCKS: usize = 1 << 16;

/// `v` as a kernel `int`, or [`CudaError::Invalid`] naming `what`.
fn int(what: &str, v: usize) -> Result<i32, CudaError> {
    i32::try_from(v).map_err(|_| CudaError::Invalid(format!("movement: {what} = {v} does not fit a kernel int")))
}

/// A grid-stride launch over `n` elements.
fn cfg(n: usize) -> LaunchConfig {
    // At most MAX_BLOCKS (2^16), so the cast cannot truncate.
    LaunchConfig::linear(n.div_ceil(THREADS as usize).clamp(1, MAX_BLOCKS) as u32, THREADS)
}

/// `Kernel::MaskPadding { rows, inner }` (rows evaluated): `out[r] = 0` where `pos[r] < 0`,
/// else `x[r]`. x, out: `[rows, inner]` (out may be x's buffer); pos: i32 `[rows]`.
#[allow(clippy::too_many_arguments)]
pub fn mask_padding(
    dev: &dyn Device,
    loaded: &Loaded,
    rows: usize,
    inner: usize,
    x: DevPtr,
    pos: DevPtr,
    out: DevPtr,
) -> Result<(), CudaError> {
    let n = rows.saturating_mul(inner);
    if n == 0 {
        return Ok(());
    }
    let args =
        [Arg::Ptr(x), Arg::Ptr(pos), Arg::Ptr(out), Arg::I32(int("rows", rows)?), Arg::I32(int("inner", inner)?)];
    loaded.launch(dev, SOURCE.name, "qgc_mask_padding", cfg(n), &args)
}

/// `Kernel::KvAppend` with `(batch, past, new)` evaluated: cache `[B, heads, in_cap, d]`
/// (holding `past` entries), new `[B, new, heads, d]` -> out `[B, heads, out_cap, d]`.
///
/// `in_cap` / `out_cap` are the entries the cache / result buffers hold along the length (their
/// capacity when they live in a growing io slot, else their length, as the CPU shim's
/// `capacity`). When `out` is the cache's buffer only the new entries are written; otherwise
/// the `past` old ones are copied first. Errors when `past + new > out_cap` (or, when copying,
/// `past > in_cap`).
#[allow(clippy::too_many_arguments)]
pub fn kv_append(
    dev: &dyn Device,
    loaded: &Loaded,
    k: &KvAppend,
    (batch, past, new): (usize, usize, usize),
    (in_cap, out_cap): (usize, usize),
    cache: DevPtr,
    entries: DevPtr,
    out: DevPtr,
) -> Result<(), CudaError> {
    if out_cap < past + new {
        return Err(CudaError::Invalid(format!(
            "internal: KV buffer of {out_cap} entries for {} ({past} + {new})",
            past + new
        )));
    }
    let copy_old = out != cache;
    if copy_old && in_cap < past {
        return Err(CudaError::Invalid(format!("internal: KV cache of {in_cap} entries holds {past}")));
    }
    let len = if copy_old { past + new } else { new };
    let n = batch.saturating_mul(k.heads).saturating_mul(len).saturating_mul(k.d);
    if n == 0 {
        return Ok(());
    }
    let args = [
        Arg::Ptr(cache),
        Arg::Ptr(entries),
        Arg::Ptr(out),
        Arg::I32(int("batch", batch)?),
        Arg::I32(int("heads", k.heads)?),
        Arg::I32(int("past", past)?),
        Arg::I32(int("new", new)?),
        Arg::I32(int("d", k.d)?),
        Arg::I32(int("in_cap", in_cap)?),
        Arg::I32(int("out_cap", out_cap)?),
        Arg::I32(i32::from(copy_old)),
    ];
    loaded.launch(dev, SOURCE.name, "qgc_kv_append", cfg(n), &args)
}

/// `Kernel::Slice` with `outer`, `inner` evaluated: src `[outer, dim, inner]` -> dst
/// `[outer, len, inner]`, entries `start..start+len` (4-byte words).
pub fn slice(
    dev: &dyn Device,
    loaded: &Loaded,
    k: &Slice,
    (outer, inner): (usize, usize),
    src: DevPtr,
    dst: DevPtr,
) -> Result<(), CudaError> {
    if k.start + k.len > k.dim {
        return Err(CudaError::Invalid(format!("slice {}..{} of {} entries", k.start, k.start + k.len, k.dim)));
    }
    let n = outer.saturating_mul(k.len).saturating_mul(inner);
    if n == 0 {
        return Ok(());
    }
    let args = [
        Arg::Ptr(src),
        Arg::Ptr(dst),
        Arg::I32(int("outer", outer)?),
        Arg::I32(int("dim", k.dim)?),
        Arg::I32(int("start", k.start)?),
        Arg::I32(int("len", k.len)?),
        Arg::I32(int("inner", inner)?),
    ];
    loaded.launch(dev, SOURCE.name, "qgc_slice", cfg(n), &args)
}

/// `Kernel::Concat` with `outer` and the parts' sizes evaluated: part `j` (`parts[j]`,
/// `[outer, inners[j]]`) goes to columns `Σ inners[..j] ..` of dst `[outer, Σ inners]`
/// (4-byte words); one launch per non-empty part.
pub fn concat(
    dev: &dyn Device,
    loaded: &Loaded,
    k: &Concat,
    outer: usize,
    inners: &[usize],
    parts: &[DevPtr],
    dst: DevPtr,
) -> Result<(), CudaError> {
    if inners.len() != k.parts.len() || parts.len() != k.parts.len() {
        return Err(CudaError::Invalid(format!(
            "concat of {} parts given {} sizes and {} operands",
            k.parts.len(),
            inners.len(),
            parts.len()
        )));
    }
    let row: usize = inners.iter().sum();
    let row_i = int("row", row)?;
    let o = int("outer", outer)?;
    let mut offset = 0;
    for (&inner, &part) in inners.iter().zip(parts) {
        let n = outer.saturating_mul(inner);
        if n > 0 {
            let args = [
                Arg::Ptr(part),
                Arg::Ptr(dst),
                Arg::I32(o),
                Arg::I32(int("inner", inner)?),
                Arg::I32(row_i),
                Arg::I32(int("offset", offset)?),
            ];
            loaded.launch(dev, SOURCE.name, "qgc_concat_part", cfg(n), &args)?;
        }
        offset += inner;
    }
    Ok(())
}
