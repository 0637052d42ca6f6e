//! A CPU GEMM with exactly `cublasGemmStridedBatchedEx`'s argument semantics, on interpreter
//! memory: column-major operands, `op(A)` `m × k` and `op(B)` `k × n` (transposed or not),
//! leading dimensions and batch strides in elements; `C = alpha·op(A)·op(B) + beta·C` in f32
//! (f64 accumulation, within cuBLAS's own f32 error); A and B f32 or bf16, C f32. With
//! `beta == 0` C is not read (as cuBLAS: NaNs in C do not propagate).

use crate::mem::Global;
use crate::PtxError;

/// Element type of an operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    /// f32.
    F32,
    /// bf16.
    Bf16,
}

impl Elem {
    fn bytes(self) -> usize {
        match self {
            Elem::F32 => 4,
            Elem::Bf16 => 2,
        }
    }
}

/// One operand: address, element type, leading dimension, batch stride (elements), transposed.
#[derive(Debug, Clone, Copy)]
pub struct Operand {
    /// Device address.
    pub addr: u64,
    /// Element type.
    pub elem: Elem,
    /// Leading dimension.
    pub ld: usize,
    /// Batch stride.
    pub stride: usize,
    /// `CUBLAS_OP_T`.
    pub trans: bool,
}

/// The call.
#[derive(Debug, Clone, Copy)]
pub struct Call {
    /// Rows of op(A) and C.
    pub m: usize,
    /// Columns of op(B) and C.
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
    /// alpha.
    pub alpha: f32,
    /// A.
    pub a: Operand,
    /// B.
    pub b: Operand,
    /// beta.
    pub beta: f32,
    /// C (f32; `trans` ignored).
    pub c: Operand,
    /// Batches.
    pub batch: usize,
}

fn read(g: &Global, o: &Operand, batch: usize, rows: usize, cols: usize, what: &str) -> Result<Vec<f32>, PtxError> {
    // Stored (not op'd) shape: rows_s × cols_s column-major with leading dim ld.
    let (rs, cs) = if o.trans { (cols, rows) } else { (rows, cols) };
    if rs > o.ld.max(1) && cs > 0 {
        return Err(PtxError::Invalid(format!("gemm: {what}: leading dimension {} < rows {rs}", o.ld)));
    }
    let span = if cs == 0 { 0 } else { (cs - 1) * o.ld + rs };
    let base = o.addr + (batch * o.stride * o.elem.bytes()) as u64;
    let bytes = g.slice(base, span * o.elem.bytes()).map_err(|f| {
        PtxError::Invalid(format!("gemm: {what} (batch {batch}): {}", f.describe(base, span * o.elem.bytes())))
    })?;
    // Return op(X) as a row-major rows × cols matrix.
    let at = |i: usize| -> f32 {
        match o.elem {
            Elem::F32 => f32::from_le_bytes([bytes[4 * i], bytes[4 * i + 1], bytes[4 * i + 2], bytes[4 * i + 3]]),
            Elem::Bf16 => f32::from_bits((u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]) as u32) << 16),
        }
    };
    let mut out = vec![0f32; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            // op(X)[r, c] = X[r, c] (col-major: r + c·ld) or X[c, r] (c + r·ld).
            out[r * cols + c] = if o.trans { at(c + r * o.ld) } else { at(r + c * o.ld) };
        }
    }
    Ok(out)
}

/// Runs the GEMM on `g`.
pub fn gemm(g: &mut Global, call: &Call) -> Result<(), PtxError> {
    let Call { m, n, k, alpha, beta, .. } = *call;
    if call.c.ld < m.max(1) {
        return Err(PtxError::Invalid(format!("gemm: ldc {} < m {m}", call.c.ld)));
    }
    if call.c.elem != Elem::F32 {
        return Err(PtxError::Invalid("gemm: C must be f32".into()));
    }
    for bi in 0..call.batch {
        let a = read(g, &call.a, bi, m, k, "A")?;
        let b = read(g, &call.b, bi, k, n, "B")?;
        let cbase = call.c.addr + (bi * call.c.stride * 4) as u64;
        let span = if n == 0 { 0 } else { (n - 1) * call.c.ld + m };
        let c = g
            .slice_mut(cbase, span * 4)
            .map_err(|f| PtxError::Invalid(format!("gemm: C (batch {bi}): {}", f.describe(cbase, span * 4))))?;
        for j in 0..n {
            for i in 0..m {
                let mut acc = 0f64;
                for p in 0..k {
                    acc += a[i * k + p] as f64 * b[p * n + j] as f64;
                }
                let at = 4 * (i + j * call.c.ld);
                let old = f32::from_le_bytes([c[at], c[at + 1], c[at + 2], c[at + 3]]);
                let v = if beta == 0.0 { alpha as f64 * acc } else { alpha as f64 * acc + beta as f64 * old as f64 };
                c[at..at + 4].copy_from_slice(&(v as f32).to_le_bytes());
            }
        }
    }
    Ok(())
}
