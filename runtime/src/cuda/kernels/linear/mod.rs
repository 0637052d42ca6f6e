//! The `linear` kernels and their launchers: the matmul family (`Kernel::MatMul` with its
//! epilogues, oracles `qgc_ir::interp::linear::matmul` and the fused forms in
//! `qgc_ir::interp::fused`).
//!
//! `y [rows, n] = x [rows, k] · w [n, k]ᵀ`. Up to [`GEMV_ROWS`] rows run the warp-per-column
//! GEMV `qgc_gemv_{f32,bf16}` with the epilogue fused; more rows of f32 weights run one
//! [`Device::gemm`] and then an elementwise epilogue kernel.
//!
//! **bf16 weights above [`GEMV_ROWS`] rows** run the bf16 GEMV once per chunk of at most
//! [`GEMV_ROWS`] rows (x, out offset to the chunk; the gate left whole and indexed by the
//! global row, which the kernel gets as `row0`). cuBLAS takes one type for A and B
//! (`gpu/blas.rs`), so bf16 weights × f32 activations is no cuBLAS call: rounding x to bf16 would
//! lose precision, and widening the weight to f32 would need a scratch as large as the weight
//! per call. The chunked GEMV is exact in f32 accumulation and reuses the fused epilogues, so
//! it is correct first; it reads the weight `⌈rows / 8⌉` times, which is slow for long prefills —
//! a bf16 tensor-core GEMM with f32 activations is the speed work that comes next.
//!
//! In cuBLAS's column-major terms the row-major `y` is
//! `C = yᵀ` (`n × rows`, `ldc = n`); `w` as stored is the column-major `k × n` matrix `A`
//! (`lda = k`), used transposed (`op(A) = Aᵀ`, `n × k`, which is `w`); `x` as stored is
//! the column-major `k × rows` matrix `B` (`ldb = k`), used as is. So `C = Aᵀ·B` with `m = n`,
//! `n = rows`, `k = k`: `C[j, r] = Σ_i w[j, i]·x[r, i] = y[r, j]`.

use super::{Loaded, Source};
use crate::cuda::{Arg, CudaError, DevPtr, Device, Gemm, GemmType, LaunchConfig, Transpose};
use qgc_codegen::binding::{self, Epilogue, Gate};
use qgc_ir::DType;

/// The `linear` kernel source.
pub const SOURCE: Source = Source {
    name: "linear",
    text: include_str!("kernel.cu"),
    kernels: &["qgc_gemv_f32", "qgc_gemv_bf16", "qgc_swiglu", "qgc_sigmoid_gate", "qgc_sigmoid_gate_prologue"],
};

/// Most rows the GEMV takes (`LIN_ROWS`); more go to the GEMM.
pub const GEMV_ROWS: usize = 8;
/// Threads per block (the GEMV: 4 warps, one output column each).
const THREADS: usize = 128;
/// Elements per vector load of the GEMV (`LIN_VEC`).
const VEC: usize = 8;

fn int(v: usize, what: &str) -> Result<i32, CudaError> {
    i32::try_from(v).map_err(|_| CudaError::Invalid(format!("matmul: {what} {v} does not fit i32")))
}

fn blocks(threads: usize, what: &str) -> Result<u32, CudaError> {
    u32::try_from(threads.div_ceil(THREADS))
        .ok()
        .filter(|&b| b <= i32::MAX as u32)
        .ok_or_else(|| CudaError::Invalid(format!("matmul: {threads} {what}")))
}

/// A gate's indexing as the kernels take it: `(how, glen)` with how 0 = Full, 1 = Row,
/// 2 = Suffix(glen).
fn gate_args(how: Gate) -> Result<[Arg; 2], CudaError> {
    let (h, len) = match how {
        Gate::Full => (0, 1),
        Gate::Row => (1, 1),
        Gate::Suffix(len) => (2, len.max(1)),
    };
    let len = i64::try_from(len).map_err(|_| CudaError::Invalid(format!("matmul: gate suffix of {len}")))?;
    Ok([Arg::I32(h), Arg::I64(len)])
}

/// Bytes of the scratch [`matmul`] needs for `rows` rows: `x ⊙ σ(g)` (`[rows, k]` f32) for the
/// sigmoid-gate prologue; the `[rows, 2n]` f32 GEMM result for SwiGLU above [`GEMV_ROWS`]
/// rows (f32 weights; bf16 weights, which take the chunked GEMV, leave it unused); else none.
pub fn matmul_scratch_bytes(m: &binding::MatMul, rows: usize) -> usize {
    matmul_scratch_bytes_ordered(m, rows, false)
}

/// [`matmul_scratch_bytes`] for [`matmul_ordered`]: with `invariant` no GEMM result is stored.
pub fn matmul_scratch_bytes_ordered(m: &binding::MatMul, rows: usize, invariant: bool) -> usize {
    match m.epilogue {
        Epilogue::SigmoidGatePrologue { .. } => rows.saturating_mul(m.k).saturating_mul(4),
        Epilogue::SwiGlu if rows > GEMV_ROWS && !invariant => rows.saturating_mul(m.n).saturating_mul(8),
        _ => 0,
    }
}

/// One matmul-family call: `y = x·wᵀ` with the binding's epilogue (SwiGLU over the stacked
/// `[2n, k]` weight, `y ⊙ σ(g)`, or the prologue `(x ⊙ σ(g))·wᵀ`).
///
/// `x: [rows, k]` f32; `w: [n, k]` (`[2n, k]` for SwiGLU) in `w_dtype` (F32 or BF16); `gate`:
/// the epilogue's `g` operand (required exactly for the sigmoid-gate forms, indexed as its
/// [`Gate`] over `y` or, for the prologue, over `x`); `out: [rows, n]` (must not overlap `x`,
/// `w` or `scratch`); `scratch`: [`matmul_scratch_bytes`] bytes (may be `None` when that is 0).
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    dev: &dyn Device,
    loaded: &Loaded,
    m: &binding::MatMul,
    rows: usize,
    x: DevPtr,
    w: DevPtr,
    w_dtype: DType,
    gate: Option<DevPtr>,
    out: DevPtr,
    scratch: Option<DevPtr>,
) -> Result<(), CudaError> {
    matmul_ordered(dev, loaded, m, rows, (x, w, w_dtype, gate, out, scratch), false)
}

/// [`matmul`], and with `invariant` every row summed as the GEMV sums it whatever `rows` (f32
/// weights too take the chunked GEMV instead of cuBLAS): a row's bits do not depend on the
/// other rows of the call (batch-invariant decode, token-invariant prefill).
pub fn matmul_ordered(
    dev: &dyn Device,
    loaded: &Loaded,
    m: &binding::MatMul,
    rows: usize,
    (x, w, w_dtype, gate, out, scratch): (DevPtr, DevPtr, DType, Option<DevPtr>, DevPtr, Option<DevPtr>),
    invariant: bool,
) -> Result<(), CudaError> {
    let bf16 = match w_dtype {
        DType::F32 => false,
        DType::BF16 => true,
        other => return Err(CudaError::Invalid(format!("matmul: weight dtype {other:?}"))),
    };
    if rows == 0 || m.n == 0 {
        return Ok(());
    }
    let need_gate = || gate.ok_or_else(|| CudaError::Invalid("matmul: sigmoid gate operand missing".into()));
    let need_scratch = || scratch.ok_or_else(|| CudaError::Invalid("matmul: scratch missing".into()));
    // The prologue first: x ⊙ σ(g) into the scratch, which is then the GEMV/GEMM input.
    let mut src = x;
    if let Epilogue::SigmoidGatePrologue { how, .. } = m.epilogue {
        let xs = need_scratch()?;
        let total = rows.checked_mul(m.k).ok_or_else(|| CudaError::Invalid("matmul: size overflow".into()))?;
        if total > 0 {
            let cfg = LaunchConfig::linear(blocks(total, "prologue elements")?, THREADS as u32);
            let [h, len] = gate_args(how)?;
            let args = [
                Arg::Ptr(x),
                Arg::Ptr(need_gate()?),
                Arg::Ptr(xs),
                Arg::I32(int(rows, "rows")?),
                Arg::I32(int(m.k, "k")?),
                h,
                len,
            ];
            loaded.launch(dev, SOURCE.name, "qgc_sigmoid_gate_prologue", cfg, &args)?;
        }
        src = xs;
    }
    let cols = if m.epilogue == Epilogue::SwiGlu { m.n.checked_mul(2) } else { Some(m.n) };
    let cols = cols.ok_or_else(|| CudaError::Invalid("matmul: size overflow".into()))?;
    if rows <= GEMV_ROWS || bf16 || invariant {
        // The GEMV, over chunks of at most GEMV_ROWS rows (one chunk unless bf16 weights have
        // more rows; see the module docs).
        let (mode, how) = match m.epilogue {
            Epilogue::Plain | Epilogue::SigmoidGatePrologue { .. } => (0, Gate::Full),
            Epilogue::SwiGlu => (1, Gate::Full),
            Epilogue::SigmoidGate { how, .. } => (2, how),
        };
        let g = if mode == 2 { need_gate()? } else { gate.unwrap_or(out) };
        let ebytes = if bf16 { 2 } else { 4 };
        let cfg = LaunchConfig::linear(blocks(m.n.saturating_mul(32), "GEMV threads")?, THREADS as u32);
        int(cols, "weight rows")?;
        int(rows, "rows")?;
        let overflow = || CudaError::Invalid("matmul: size overflow".into());
        let name = if bf16 { "qgc_gemv_bf16" } else { "qgc_gemv_f32" };
        for row0 in (0..rows).step_by(GEMV_ROWS) {
            let chunk = GEMV_ROWS.min(rows - row0);
            let xs = src.offset(row0.checked_mul(m.k).and_then(|v| v.checked_mul(4)).ok_or_else(overflow)?);
            let ys = out.offset(row0.checked_mul(m.n).and_then(|v| v.checked_mul(4)).ok_or_else(overflow)?);
            let vec = m.k.is_multiple_of(VEC)
                && xs.0.is_multiple_of(16)
                && w.0.is_multiple_of(16)
                && (m.k * ebytes).is_multiple_of(16);
            let [h, len] = gate_args(how)?;
            let args = [
                Arg::Ptr(xs),
                Arg::Ptr(w),
                Arg::Ptr(g),
                Arg::Ptr(ys),
                Arg::I32(int(chunk, "rows")?),
                Arg::I32(int(m.k, "k")?),
                Arg::I32(int(m.n, "n")?),
                Arg::I32(mode),
                h,
                len,
                Arg::I32(i32::from(vec)),
                Arg::I64(row0 as i64),
            ];
            loaded.launch(dev, SOURCE.name, name, cfg, &args)?;
        }
        return Ok(());
    }
    // f32 weights: the GEMM (see the module docs for the column-major mapping), into `out` or,
    // for SwiGLU, into the scratch.
    let dst = if m.epilogue == Epilogue::SwiGlu { need_scratch()? } else { out };
    dev.gemm(&Gemm {
        trans_a: Transpose::T,
        trans_b: Transpose::N,
        m: cols,
        n: rows,
        k: m.k,
        alpha: 1.0,
        a: (w, GemmType::F32, m.k, 0),
        b: (src, GemmType::F32, m.k, 0),
        beta: 0.0,
        c: (dst, cols, 0),
        batch: 1,
    })?;
    let total = rows.checked_mul(m.n).ok_or_else(|| CudaError::Invalid("matmul: size overflow".into()))?;
    let cfg = LaunchConfig::linear(blocks(total, "output elements")?, THREADS as u32);
    match m.epilogue {
        Epilogue::Plain | Epilogue::SigmoidGatePrologue { .. } => Ok(()),
        Epilogue::SwiGlu => {
            let args = [Arg::Ptr(dst), Arg::Ptr(out), Arg::I32(int(rows, "rows")?), Arg::I32(int(m.n, "n")?)];
            loaded.launch(dev, SOURCE.name, "qgc_swiglu", cfg, &args)
        }
        Epilogue::SigmoidGate { how, .. } => {
            let [h, len] = gate_args(how)?;
            let args =
                [Arg::Ptr(out), Arg::Ptr(need_gate()?), Arg::I32(int(rows, "rows")?), Arg::I32(int(m.n, "n")?), h, len];
            loaded.launch(dev, SOURCE.name, "qgc_sigmoid_gate", cfg, &args)
        }
    }
}
