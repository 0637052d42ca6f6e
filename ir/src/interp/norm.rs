//! Normalisations over the last dim: RMSNorm (plain or zero-centred), the gated RMSNorm of
//! Gated DeltaNet, and L2 normalisation. Reductions and the scaling run in f64.

use super::elementwise::silu;
use super::{dims, f32s, want, Tensor};

/// Checks `x` [..., D] against `w: [D]` and returns D (> 0).
fn norm_dim(x: &Tensor, w: &Tensor, what: &str) -> Result<usize, String> {
    let [d] = dims::<1>(w, "norm weight")?;
    want(x.shape.last() == Some(&d) && d > 0, || {
        format!("{what} weight {} does not fit {}", w.describe(), x.describe())
    })?;
    Ok(d)
}

/// `1 / sqrt(Σ v² / divisor + eps)`.
fn inv_rms(row: &[f32], divisor: f64, eps: f32) -> f64 {
    let ss: f64 = row.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
    1.0 / (ss / divisor + f64::from(eps)).sqrt()
}

/// `x` [..., D], `w: [D]` -> [..., D]: `x · rsqrt(mean(x²) + eps) · (1 + w if zero_centred else w)`.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f32, zero_centred: bool) -> Result<Tensor, String> {
    let d = norm_dim(x, w, "rms_norm")?;
    let (xs, ws) = (f32s(x, "rms_norm input")?, f32s(w, "rms_norm weight")?);
    let scale: Vec<f64> = ws.iter().map(|&v| f64::from(v) + if zero_centred { 1.0 } else { 0.0 }).collect();
    let mut out = Vec::with_capacity(xs.len());
    for row in xs.chunks(d) {
        let inv = inv_rms(row, d as f64, eps);
        out.extend(row.iter().zip(&scale).map(|(&v, &s)| (f64::from(v) * inv * s) as f32));
    }
    Ok(Tensor::f32(x.shape.clone(), out))
}

/// `x`, `z` [..., D], `w: [D]` -> [..., D]: `w · (x · rsqrt(mean(x²) + eps)) · silu(z)` (plain `w`).
pub fn gated_rms_norm(x: &Tensor, z: &Tensor, w: &Tensor, eps: f32) -> Result<Tensor, String> {
    let d = norm_dim(x, w, "gated_rms_norm")?;
    want(x.shape == z.shape, || format!("gate {} differs from input {}", z.describe(), x.describe()))?;
    let (xs, zs) = (f32s(x, "gated_rms_norm input")?, f32s(z, "gated_rms_norm gate")?);
    let ws = f32s(w, "gated_rms_norm weight")?;
    let mut out = Vec::with_capacity(xs.len());
    for (row, zrow) in xs.chunks(d).zip(zs.chunks(d)) {
        let inv = inv_rms(row, d as f64, eps);
        for ((&v, &g), &s) in row.iter().zip(zrow).zip(ws) {
            out.push((f64::from(s) * (f64::from(v) * inv) * silu(f64::from(g))) as f32);
        }
    }
    Ok(Tensor::f32(x.shape.clone(), out))
}

/// `x` [..., D] -> [..., D]: `x · rsqrt(Σ x² + eps)` (eps added to the sum, not the mean).
pub fn l2_norm(x: &Tensor, eps: f32) -> Result<Tensor, String> {
    let d = *x.shape.last().ok_or_else(|| format!("l2_norm of a scalar {}", x.describe()))?;
    let xs = f32s(x, "l2_norm input")?;
    if d == 0 {
        return Ok(x.clone());
    }
    let mut out = Vec::with_capacity(xs.len());
    for row in xs.chunks(d) {
        let inv = inv_rms(row, 1.0, eps);
        out.extend(row.iter().map(|&v| (f64::from(v) * inv) as f32));
    }
    Ok(Tensor::f32(x.shape.clone(), out))
}
