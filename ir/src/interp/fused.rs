//! Router primitives and fused ops (and `MoeRoute`, the fused router). Every fused op is defined here as the composition of the
//! op functions it replaces, so a fused graph means exactly what the unfused one did and the
//! oracle stays obviously right; backends implement each as one kernel.

use super::elementwise::{self, sigmoid, silu, softplus};
use super::{attention, f32s, linear, movement, norm, want, Tensor};

/// `x` [..., E] -> softmax over the last dim, in f64 with the row maximum subtracted.
pub fn softmax(x: &Tensor) -> Result<Tensor, String> {
    let xs = f32s(x, "softmax input")?;
    let e = *x.shape.last().ok_or_else(|| format!("softmax of a scalar {}", x.describe()))?;
    let mut out = Vec::with_capacity(xs.len());
    for row in xs.chunks(e.max(1)) {
        let max = row.iter().map(|&v| f64::from(v)).fold(f64::NEG_INFINITY, f64::max);
        let ex: Vec<f64> = row.iter().map(|&v| (f64::from(v) - max).exp()).collect();
        let sum: f64 = ex.iter().sum();
        out.extend(ex.iter().map(|v| (v / sum) as f32));
    }
    Ok(Tensor::f32(x.shape.clone(), out))
}

/// `x` [..., E] -> (values f32 [..., k], indices i32 [..., k]): the k largest of each row in
/// descending order, ties broken towards the lower index.
pub fn top_k(x: &Tensor, k: usize) -> Result<(Tensor, Tensor), String> {
    let xs = f32s(x, "top_k input")?;
    let e = *x.shape.last().ok_or_else(|| format!("top_k of a scalar {}", x.describe()))?;
    want(k >= 1 && k <= e && e <= i32::MAX as usize, || format!("top_k {k} not in 1..={e}"))?;
    let (mut vals, mut idx) = (Vec::new(), Vec::new());
    for row in xs.chunks(e) {
        let mut order: Vec<usize> = (0..e).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        vals.extend(order[..k].iter().map(|&i| row[i]));
        idx.extend(order[..k].iter().map(|&i| i as i32));
    }
    let mut shape = x.shape.clone();
    *shape.last_mut().expect("rank checked above") = k;
    Ok((Tensor::f32(shape.clone(), vals), Tensor::i32(shape, idx)))
}

/// `x` [..., k] -> `x / Σ x` over the last dim (sum in f64).
pub fn renormalize_rows(x: &Tensor) -> Result<Tensor, String> {
    let xs = f32s(x, "renormalize input")?;
    let k = *x.shape.last().ok_or_else(|| format!("renormalize of a scalar {}", x.describe()))?;
    let mut out = Vec::with_capacity(xs.len());
    for row in xs.chunks(k.max(1)) {
        let sum: f64 = row.iter().map(|&v| f64::from(v)).sum();
        out.extend(row.iter().map(|&v| (f64::from(v) / sum) as f32));
    }
    Ok(Tensor::f32(x.shape.clone(), out))
}

/// `logits: [B,S,E]` -> (weights f32 `[B,S,k]`, experts i32 `[B,S,k]`): the definition of
/// `MoeRoute` — `top_k(softmax(logits))`, values renormalised when `renormalize` (each step
/// rounded to f32, as HF computes it; [`super::moe::moe_route`] is the same in f64 throughout).
pub fn moe_route(logits: &Tensor, k: usize, renormalize: bool) -> Result<(Tensor, Tensor), String> {
    super::dims::<3>(logits, "router logits")?;
    let (w, ix) = top_k(&softmax(logits)?, k)?;
    Ok((if renormalize { renormalize_rows(&w)? } else { w }, ix))
}

/// `x`, `r` [..., D], `w: [D]` -> (`x + r`, `rms_norm(x + r, w)`).
pub fn add_rms_norm(x: &Tensor, r: &Tensor, w: &Tensor, eps: f32, zc: bool) -> Result<(Tensor, Tensor), String> {
    want(x.shape == r.shape, || format!("residual {} differs from {}", r.describe(), x.describe()))?;
    let sum = elementwise::add(x, r)?;
    let y = norm::rms_norm(&sum, w, eps, zc)?;
    Ok((sum, y))
}

/// `x: [B,S,N,D]`, `w: [D]`, `positions` i32 `[B,S]` -> `rope(rms_norm(x, w), positions)`.
pub fn rms_norm_rope(
    x: &Tensor,
    w: &Tensor,
    pos: &Tensor,
    norm: (f32, bool),
    rope: (f64, usize),
) -> Result<Tensor, String> {
    let y = super::norm::rms_norm(x, w, norm.0, norm.1)?;
    attention::rope(&y, pos, rope.0, rope.1)
}

/// `x` [..., K], `w: [2N, K]` -> [..., N]: `silu(x w[..N]ᵀ) ⊙ (x w[N..]ᵀ)`.
pub fn matmul_swiglu(x: &Tensor, w: &Tensor) -> Result<Tensor, String> {
    let n2 = *w.shape.first().ok_or_else(|| format!("swiglu weight {} is a scalar", w.describe()))?;
    want(n2.is_multiple_of(2), || format!("swiglu weight {} has an odd row count", w.describe()))?;
    let gate = linear::matmul(x, &movement::slice(w, 0, 0, n2 / 2)?)?;
    let up = linear::matmul(x, &movement::slice(w, 0, n2 / 2, n2 / 2)?)?;
    elementwise::mul(&elementwise::map(&gate, silu)?, &up)
}

/// `x` [..., K], `w: [N, K]`, `g` -> `(x wᵀ) ⊙ σ(g)`.
pub fn matmul_sigmoid_gate(x: &Tensor, w: &Tensor, g: &Tensor) -> Result<Tensor, String> {
    elementwise::mul(&linear::matmul(x, w)?, &elementwise::map(g, sigmoid)?)
}

/// `x` [..., K], `g`, `w: [N, K]` -> `(x ⊙ σ(g)) wᵀ`.
pub fn sigmoid_gate_matmul(x: &Tensor, g: &Tensor, w: &Tensor) -> Result<Tensor, String> {
    linear::matmul(&elementwise::mul(x, &elementwise::map(g, sigmoid)?)?, w)
}

/// `q`, `k: [B,S,Hk,Dk]`, `a`, `b: [B,S,Hv]`, `dt_bias`, `a_log: [Hv]` (passed as `ins`, in that
/// order) -> (`l2(q)·q_scale`, `l2(k)`, `softplus(a + dt_bias) · -exp(a_log)`, `σ(b)`).
pub fn gdn_gates(ins: &[&Tensor], eps: f32, q_scale: f32) -> Result<Vec<Tensor>, String> {
    let [q, k, a, b, dt, alog] = <[&Tensor; 6]>::try_from(ins).map_err(|_| "gdn_gates takes 6 operands")?;
    let q = elementwise::map(&norm::l2_norm(q, eps)?, |v| v * f64::from(q_scale))?;
    let k = norm::l2_norm(k, eps)?;
    let decay = elementwise::map(&elementwise::map(alog, f64::exp)?, |v| -v)?;
    let g = elementwise::mul(&elementwise::map(&elementwise::add(a, dt)?, softplus)?, &decay)?;
    let beta = elementwise::map(b, sigmoid)?;
    Ok(vec![q, k, g, beta])
}
