//! Pointwise maps and broadcasting binary ops. Each value is computed in f64 and rounded once
//! to f32.

use super::{f32s, i32s, want, Tensor};

/// σ(x) = 1 / (1 + e^{-x}).
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// silu(x) = x·σ(x).
pub fn silu(x: f64) -> f64 {
    x * sigmoid(x)
}

/// softplus(x) = ln(1 + e^x), or x where x > 20 (PyTorch's threshold).
pub fn softplus(x: f64) -> f64 {
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// `f` applied to every element of the f32 tensor `x` (any shape).
pub fn map(x: &Tensor, f: impl Fn(f64) -> f64) -> Result<Tensor, String> {
    let xs = f32s(x, "operand")?;
    Ok(Tensor::f32(x.shape.clone(), xs.iter().map(|&v| f(f64::from(v)) as f32).collect()))
}

/// `a + b`: `a` [..., D...], `b` a suffix of `a`'s shape (broadcast over the leading dims).
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor, String> {
    binary(a, b, false, "add", |x, y| x + y)
}

/// `a · b`: `b`'s shape is a suffix of `a`'s, or `b` is `a`'s shape with a trailing 1 (one
/// scalar per row of `a`, e.g. a gate `[B,S,1]` on `[B,S,H]`).
pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor, String> {
    binary(a, b, true, "mul", |x, y| x * y)
}

fn binary(a: &Tensor, b: &Tensor, row_ok: bool, name: &str, f: fn(f32, f32) -> f32) -> Result<Tensor, String> {
    let (xa, xb) = (f32s(a, name)?, f32s(b, name)?);
    let (ra, rb) = (a.shape.len(), b.shape.len());
    let suffix = rb <= ra && a.shape[ra - rb..] == b.shape[..];
    let per_row = row_ok && ra > 0 && ra == rb && a.shape[..ra - 1] == b.shape[..rb - 1] && b.shape[rb - 1] == 1;
    let out: Vec<f32> = if suffix {
        let n = xb.len().max(1);
        xa.iter().enumerate().map(|(i, &x)| f(x, xb[i % n])).collect()
    } else if per_row {
        let d = a.shape[ra - 1].max(1);
        xa.iter().enumerate().map(|(i, &x)| f(x, xb[i / d])).collect()
    } else {
        return Err(format!("{name} of {} and {}: second operand does not broadcast", a.describe(), b.describe()));
    };
    Ok(Tensor::f32(a.shape.clone(), out))
}

/// `x: [B,S,...]`, `positions` i32 `[B,S]` -> `x` with the slots whose position is negative
/// (left padding) set to 0 and the others unchanged.
pub fn mask_padding(x: &Tensor, positions: &Tensor) -> Result<Tensor, String> {
    let xs = f32s(x, "mask_padding input")?;
    let pos = i32s(positions, "positions")?;
    want(positions.shape.len() == 2 && x.shape.len() >= 2 && x.shape[..2] == positions.shape[..], || {
        format!("positions {} do not match {}", positions.describe(), x.describe())
    })?;
    let row: usize = x.shape[2..].iter().product();
    let mut out = xs.to_vec();
    for (slot, &p) in pos.iter().enumerate() {
        if p < 0 {
            out[slot * row..][..row].iter_mut().for_each(|v| *v = 0.0);
        }
    }
    Ok(Tensor::f32(x.shape.clone(), out))
}
