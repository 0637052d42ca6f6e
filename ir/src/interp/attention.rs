//! Full attention: RoPE, KV-cache append and causal GQA softmax attention (qwen3-next.md
//! §3.4-3.5, §4.1).

use super::{dims, dot, f32s, i32s, want, Tensor};

/// HF's default-RoPE frequencies in f32: `1 / theta^(2i / rotary_dim)` for `i < rotary_dim/2`,
/// computed as `1.0 / (base ** (arange(0, rot, 2, f32) / rot))`.
pub fn inv_freq(theta: f64, rotary_dim: usize) -> Vec<f32> {
    let base = theta as f32;
    (0..rotary_dim / 2).map(|i| 1.0 / base.powf((2 * i) as f32 / rotary_dim as f32)).collect()
}

/// `x: [B,S,N,D]`, `positions` i32 `[B,S]` -> `[B,S,N,D]`: NeoX rotate-half RoPE on the first
/// `rotary_dim` dims of every head (angle `f32(pos) · inv_freq[i]`, cos/sin in f32); the other
/// dims pass through. A negative position is an error.
pub fn rope(x: &Tensor, positions: &Tensor, theta: f64, rotary_dim: usize) -> Result<Tensor, String> {
    let [b, s, n, d] = dims::<4>(x, "rope input")?;
    let xs = f32s(x, "rope input")?;
    let pos = i32s(positions, "positions")?;
    want(positions.shape == [b, s], || format!("positions {} do not match {}", positions.describe(), x.describe()))?;
    want(rotary_dim.is_multiple_of(2) && rotary_dim <= d, || {
        format!("rotary_dim {rotary_dim} invalid for head dim {d}")
    })?;
    let (half, freqs) = (rotary_dim / 2, inv_freq(theta, rotary_dim));
    let mut out = xs.to_vec();
    for (t, &p) in pos.iter().enumerate() {
        want(p >= 0, || format!("position {p} (flat index {t}) is negative"))?;
        let angles: Vec<f32> = freqs.iter().map(|&f| p as f32 * f).collect();
        let (cos, sin): (Vec<f32>, Vec<f32>) = angles.iter().map(|a| (a.cos(), a.sin())).unzip();
        for head in out[t * n * d..(t + 1) * n * d].chunks_mut(d) {
            for i in 0..half {
                let (x0, x1) = (head[i], head[i + half]);
                head[i] = x0 * cos[i] - x1 * sin[i];
                head[i + half] = x1 * cos[i] + x0 * sin[i];
            }
        }
    }
    Ok(Tensor::f32(x.shape.clone(), out))
}

/// `cache: [B,N,P,D]`, `new: [B,S,N,D]` -> `[B,N,P+S,D]`: the new entries appended after the cached
/// ones, per batch row and head.
pub fn kv_append(cache: &Tensor, new: &Tensor) -> Result<Tensor, String> {
    let [b, n, p, d] = dims::<4>(cache, "cache")?;
    let [nb, s, nn, nd] = dims::<4>(new, "new entries")?;
    want(nb == b && nn == n && nd == d, || {
        format!("cache {} cannot take entries {}", cache.describe(), new.describe())
    })?;
    let (cs, ns) = (f32s(cache, "cache")?, f32s(new, "new entries")?);
    let mut out = Vec::with_capacity(b * n * (p + s) * d);
    for bi in 0..b {
        for h in 0..n {
            out.extend_from_slice(&cs[(bi * n + h) * p * d..(bi * n + h + 1) * p * d]);
            for t in 0..s {
                let at = ((bi * s + t) * n + h) * d;
                out.extend_from_slice(&ns[at..at + d]);
            }
        }
    }
    Ok(Tensor::f32(vec![b, n, p + s, d], out))
}

/// `q: [B,S,Nq,D]`, `k: [B,Nkv,P+S,D]`, `v: [B,Nkv,P+S,Dv]` -> `[B,S,Nq,Dv]`: causal softmax
/// attention; query `s` sits at cache index `P+s` and sees keys `0..=P+s`; query head `j` uses
/// kv head `j / (Nq/Nkv)`; scores are `scale · q·k`, softmax in f64 with max subtraction.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f32) -> Result<Tensor, String> {
    let [b, s, nq, d] = dims::<4>(q, "query")?;
    let [kb, nkv, total, kd] = dims::<4>(k, "keys")?;
    let [vb, vn, vt, dv] = dims::<4>(v, "values")?;
    want(kb == b && kd == d, || format!("query {} and keys {} differ", q.describe(), k.describe()))?;
    want([vb, vn, vt] == [b, nkv, total], || format!("keys {} and values {} differ", k.describe(), v.describe()))?;
    want(nkv > 0 && nq % nkv == 0, || format!("{nq} query heads are not a multiple of {nkv} kv heads"))?;
    want(total >= s, || format!("{total} cached keys cannot hold the {s} queries"))?;
    let (qs, ks, vs) = (f32s(q, "query")?, f32s(k, "keys")?, f32s(v, "values")?);
    let (past, group) = (total - s, nq / nkv);
    let mut out = Vec::with_capacity(b * s * nq * dv);
    for bi in 0..b {
        for t in 0..s {
            for j in 0..nq {
                let qrow = &qs[((bi * s + t) * nq + j) * d..][..d];
                let kv = bi * nkv + j / group;
                let keys = &ks[kv * total * d..][..(past + t + 1) * d];
                let vals = &vs[kv * total * dv..][..(past + t + 1) * dv];
                out.extend(attend(qrow, keys, vals, d, dv, scale));
            }
        }
    }
    Ok(Tensor::f32(vec![b, s, nq, dv], out))
}

/// One query row against `keys: [n, d]` and `vals: [n, dv]`: `Σ softmax(scale · q·k)_i v_i`.
fn attend(q: &[f32], keys: &[f32], vals: &[f32], d: usize, dv: usize, scale: f32) -> Vec<f32> {
    let scores: Vec<f64> = keys.chunks(d.max(1)).map(|kr| dot(q, kr) * f64::from(scale)).collect();
    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = scores.iter().map(|&x| (x - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    let mut o = vec![0.0f64; dv];
    for (i, &ei) in e.iter().enumerate() {
        for (acc, &x) in o.iter_mut().zip(&vals[i * dv..(i + 1) * dv]) {
            *acc += ei * f64::from(x);
        }
    }
    o.iter().map(|&x| (x / sum) as f32).collect()
}
