//! The `moe` kernels and their launchers: the fused router (`Kernel::Route`, oracle
//! `qgc_ir::interp::fused::moe_route`) and the routed experts (`Kernel::Experts`, oracle
//! `qgc_ir::interp::moe::moe_experts`).

use super::{Loaded, Source};
use crate::cuda::{Arg, CudaError, DevPtr, Device, LaunchConfig};
use qgc_codegen::binding;
use qgc_ir::DType;

/// The `moe` kernel source.
pub const SOURCE: Source = Source {
    name: "moe",
    text: include_str!("kernel.cu"),
    kernels: &["qgc_moe_route", "qgc_moe_gate_up_f32", "qgc_moe_gate_up_bf16", "qgc_moe_down_f32", "qgc_moe_down_bf16"],
};

/// Threads per block of the per-warp expert kernels.
const THREADS: usize = 128;

fn int(v: usize, what: &str) -> Result<i32, CudaError> {
    i32::try_from(v).map_err(|_| CudaError::Invalid(format!("moe: {what} {v} does not fit i32")))
}

/// Blocks of [`THREADS`] threads holding one warp per item of `items`.
fn warp_blocks(items: usize, what: &str) -> Result<u32, CudaError> {
    let per = THREADS / 32;
    u32::try_from(items.div_ceil(per))
        .ok()
        .filter(|&b| b <= i32::MAX as u32)
        .ok_or_else(|| CudaError::Invalid(format!("moe: {items} {what}")))
}

/// The router: per row, softmax over `experts` (f64, rounded to f32), the `top_k` most probable
/// in descending order (ties: lower index first), renormalised by their sum when asked. One
/// warp per row.
///
/// `logits: [rows, experts]`; results `weights: [rows, top_k]` f32 and `ids: [rows, top_k]` i32.
pub fn route(
    dev: &dyn Device,
    loaded: &Loaded,
    k: &binding::Route,
    rows: usize,
    logits: DevPtr,
    weights: DevPtr,
    ids: DevPtr,
) -> Result<(), CudaError> {
    if k.top_k == 0 || k.top_k > k.experts {
        return Err(CudaError::Invalid(format!("moe_route: top_k {} not in 1..={}", k.top_k, k.experts)));
    }
    if rows == 0 {
        return Ok(());
    }
    let grid = u32::try_from(rows).ok().filter(|&g| g <= i32::MAX as u32);
    let grid = grid.ok_or_else(|| CudaError::Invalid(format!("moe_route: {rows} rows")))?;
    let shared = k.experts.checked_mul(4).and_then(|n| u32::try_from(n).ok()).filter(|&n| n <= 48 * 1024);
    let shared = shared.ok_or_else(|| CudaError::Invalid(format!("moe_route: {} experts", k.experts)))?;
    let cfg = LaunchConfig { grid: (grid, 1, 1), block: (32, 1, 1), shared_bytes: shared };
    let args = [
        Arg::Ptr(logits),
        Arg::Ptr(weights),
        Arg::Ptr(ids),
        Arg::I32(int(rows, "rows")?),
        Arg::I32(int(k.experts, "experts")?),
        Arg::I32(int(k.top_k, "top_k")?),
        Arg::I32(i32::from(k.renormalize)),
    ];
    loaded.launch(dev, SOURCE.name, "qgc_moe_route", cfg, &args)
}

/// Where the experts' gate and up projections live (both of the same dtype).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateUp {
    /// Separate stacks `gate, up: [experts, inter, hidden]` (the op's operands 3 and 4).
    Separate {
        /// The gate stack.
        gate: DevPtr,
        /// The up stack.
        up: DevPtr,
    },
    /// One fused stack `[experts, 2·inter, hidden]`: per expert its `inter` gate rows, then its
    /// `inter` up rows (the CPU backend's load-time layout).
    Fused(DevPtr),
}

/// Bytes of the scratch [`experts`] needs: `mid: [rows, top_k, inter]` f32.
pub fn experts_scratch_bytes(k: &binding::Experts, rows: usize) -> usize {
    rows.saturating_mul(k.top_k).saturating_mul(k.inter).saturating_mul(4)
}

fn elem_bytes(d: DType, what: &str) -> Result<(usize, bool), CudaError> {
    match d {
        DType::F32 => Ok((4, false)),
        DType::BF16 => Ok((2, true)),
        other => Err(CudaError::Invalid(format!("moe_experts: {what} weights of dtype {other:?}"))),
    }
}

/// The routed experts: `out[r] = Σ_kk weights[r, kk] · down_e(silu(gate_e x[r]) ⊙ up_e x[r])`
/// with `e = ids[r, kk]` (slots with an index outside `0..experts` contribute nothing; the
/// oracle rejects them). Two launches: gate/up into `scratch` (`mid: [rows, top_k, inter]` f32,
/// [`experts_scratch_bytes`]), then down and the weighted sum over the slots in order.
///
/// `x: [rows, hidden]`; `weights: [rows, top_k]` f32; `ids: [rows, top_k]` i32; gate/up as
/// [`GateUp`] in `gate_up_dtype` (f32 or bf16); `down: [experts, hidden, inter]` in
/// `down_dtype`; result `out: [rows, hidden]` (may be `x`).
#[allow(clippy::too_many_arguments)]
pub fn experts(
    dev: &dyn Device,
    loaded: &Loaded,
    k: &binding::Experts,
    rows: usize,
    (x, weights, ids): (DevPtr, DevPtr, DevPtr),
    (gate_up, gate_up_dtype): (GateUp, DType),
    (down, down_dtype): (DevPtr, DType),
    out: DevPtr,
    scratch: DevPtr,
) -> Result<(), CudaError> {
    let overflow = || CudaError::Invalid("moe_experts: size overflow".into());
    let (ebytes, gu_bf16) = elem_bytes(gate_up_dtype, "gate/up")?;
    let (_, down_bf16) = elem_bytes(down_dtype, "down")?;
    let ih = k.inter.checked_mul(k.hidden).ok_or_else(overflow)?;
    let (gate, up, estride) = match gate_up {
        GateUp::Separate { gate, up } => (gate, up, ih),
        GateUp::Fused(p) => {
            (p, p.offset(ih.checked_mul(ebytes).ok_or_else(overflow)?), ih.checked_mul(2).ok_or_else(overflow)?)
        }
    };
    let estride = i64::try_from(estride).map_err(|_| overflow())?;
    let dims = [
        Arg::I32(int(rows, "rows")?),
        Arg::I32(int(k.experts, "experts")?),
        Arg::I32(int(k.hidden, "hidden")?),
        Arg::I32(int(k.inter, "inter")?),
        Arg::I32(int(k.top_k, "top_k")?),
    ];
    let mids = rows.checked_mul(k.top_k).and_then(|n| n.checked_mul(k.inter)).ok_or_else(overflow)?;
    if mids > 0 {
        let cfg = LaunchConfig::linear(warp_blocks(mids, "expert rows")?, THREADS as u32);
        let mut args = vec![Arg::Ptr(x), Arg::Ptr(ids), Arg::Ptr(gate), Arg::Ptr(up), Arg::Ptr(scratch)];
        args.extend_from_slice(&dims);
        args.push(Arg::I64(estride));
        let name = if gu_bf16 { "qgc_moe_gate_up_bf16" } else { "qgc_moe_gate_up_f32" };
        loaded.launch(dev, SOURCE.name, name, cfg, &args)?;
    }
    let outs = rows.checked_mul(k.hidden).ok_or_else(overflow)?;
    if outs > 0 {
        let cfg = LaunchConfig::linear(warp_blocks(outs, "outputs")?, THREADS as u32);
        let mut args = vec![Arg::Ptr(scratch), Arg::Ptr(weights), Arg::Ptr(ids), Arg::Ptr(down), Arg::Ptr(out)];
        args.extend_from_slice(&dims);
        let name = if down_bf16 { "qgc_moe_down_bf16" } else { "qgc_moe_down_f32" };
        loaded.launch(dev, SOURCE.name, name, cfg, &args)?;
    }
    Ok(())
}
