//! Matrix products.

use super::{dims, dot, f32s, want, Tensor};

/// `x` [..., K], `w: [N, K]` -> [..., N]: `y = x wᵀ`, each output a dot product of a row of `x`
/// with a row of `w`, accumulated in f64.
pub fn matmul(x: &Tensor, w: &Tensor) -> Result<Tensor, String> {
    let [n, k] = dims::<2>(w, "matmul weight")?;
    let (xs, ws) = (f32s(x, "matmul input")?, f32s(w, "matmul weight")?);
    want(x.shape.last() == Some(&k), || format!("matmul {} x {}ᵀ: inner dims differ", x.describe(), w.describe()))?;
    let rows: usize = x.shape[..x.shape.len() - 1].iter().product();
    let mut out = Vec::with_capacity(rows * n);
    for r in 0..rows {
        let xr = &xs[r * k..(r + 1) * k];
        out.extend((0..n).map(|o| dot(xr, &ws[o * k..(o + 1) * k]) as f32));
    }
    let mut shape = x.shape.clone();
    *shape.last_mut().expect("rank checked above") = n;
    Ok(Tensor::f32(shape, out))
}
