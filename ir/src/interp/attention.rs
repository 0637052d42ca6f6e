//! Full attention: RoPE, KV-cache append and causal GQA softmax attention (qwen3-next.md
//! §3.4-3.5, §4.1).

use super::{dims, dot, f32s, i32s, want, Tensor};

/// HF's default-RoPE frequencies in f32: `1 / theta^(2i / rotary_dim)` for `i < ceil(rotary_dim/2)`,
/// computed as `1.0 / (base ** (arange(0, rot, 2, f32) / rot))` (an odd `rot` gives `(rot+1)/2`).
pub fn inv_freq(theta: f64, rotary_dim: usize) -> Vec<f32> {
    let base = theta as f32;
    (0..rotary_dim.div_ceil(2)).map(|i| 1.0 / base.powf((2 * i) as f32 / rotary_dim as f32)).collect()
}

/// `x: [B,S,N,D]`, `positions` i32 `[B,S]` -> `[B,S,N,D]`: NeoX rotate-half RoPE on the first
/// `2·ceil(rotary_dim/2)` dims of every head (HF rotates one more dim when `rotary_dim` is odd) (angle `f32(pos) · inv_freq[i]`, cos/sin in f32); the other
/// dims pass through. Any position is rotated by its angle: a negative one (a padding slot,
/// whose result attention never reads) rotates backwards, `rope(-p) = rope(p)⁻¹`.
pub fn rope(x: &Tensor, positions: &Tensor, theta: f64, rotary_dim: usize) -> Result<Tensor, String> {
    let [b, s, n, d] = dims::<4>(x, "rope input")?;
    let xs = f32s(x, "rope input")?;
    let pos = i32s(positions, "positions")?;
    want(positions.shape == [b, s], || format!("positions {} do not match {}", positions.describe(), x.describe()))?;
    let half = rotary_dim.div_ceil(2);
    want(2 * half <= d, || format!("rotary_dim {rotary_dim} invalid for head dim {d}"))?;
    let freqs = inv_freq(theta, rotary_dim);
    let mut out = xs.to_vec();
    for (t, &p) in pos.iter().enumerate() {
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

/// `q: [B,S,Nq,D]`, `k: [B,Nkv,P+S,D]`, `v: [B,Nkv,P+S,Dv]`, `positions` i32 `[B,S]` ->
/// `[B,S,Nq,Dv]`: causal softmax attention over left-padded rows. Row b's padding is
/// `pad_b = P − positions[b,0]` (see [`row_padding`]); query `s` sees the keys at cache indices
/// `pad_b..=P+s` (positions `0..=positions[b,s]`), none when it is itself padding (output 0).
/// Query head `j` uses kv head `j / (Nq/Nkv)`; scores are `scale · q·k`, softmax in f64 with
/// max subtraction.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, positions: &Tensor, scale: f32) -> Result<Tensor, String> {
    let [b, s, nq, d] = dims::<4>(q, "query")?;
    let [kb, nkv, total, kd] = dims::<4>(k, "keys")?;
    let [vb, vn, vt, dv] = dims::<4>(v, "values")?;
    want(kb == b && kd == d, || format!("query {} and keys {} differ", q.describe(), k.describe()))?;
    want([vb, vn, vt] == [b, nkv, total], || format!("keys {} and values {} differ", k.describe(), v.describe()))?;
    want(nkv > 0 && nq % nkv == 0, || format!("{nq} query heads are not a multiple of {nkv} kv heads"))?;
    want(total >= s, || format!("{total} cached keys cannot hold the {s} queries"))?;
    want(positions.shape == [b, s], || format!("positions {} do not match {}", positions.describe(), q.describe()))?;
    let (qs, ks, vs) = (f32s(q, "query")?, f32s(k, "keys")?, f32s(v, "values")?);
    let pos = i32s(positions, "positions")?;
    let (past, group) = (total - s, nq / nkv);
    let mut out = Vec::with_capacity(b * s * nq * dv);
    for bi in 0..b {
        let pad = row_padding(&pos[bi * s..][..s], past, bi)?;
        for t in 0..s {
            // Keys pad..=past+t; a padding query (past+t < pad) sees none.
            let seen = (pad..past + t + 1).len();
            for j in 0..nq {
                if seen == 0 {
                    out.extend(std::iter::repeat_n(0.0, dv));
                    continue;
                }
                let qrow = &qs[((bi * s + t) * nq + j) * d..][..d];
                let kv = bi * nkv + j / group;
                let keys = &ks[(kv * total + pad) * d..][..seen * d];
                let vals = &vs[(kv * total + pad) * dv..][..seen * dv];
                out.extend(attend(qrow, keys, vals, d, dv, scale));
            }
        }
    }
    Ok(Tensor::f32(vec![b, s, nq, dv], out))
}

/// The left padding of one row from its call positions `pos: [S]` after `past` cached slots:
/// `pad = past − pos[0]`. Errors unless the positions are consecutive (`pos[s] = pos[0] + s`) and
/// `pos[0] ≤ past` (a sequence cannot have more tokens before a slot than the cache holds).
pub fn row_padding(pos: &[i32], past: usize, row: usize) -> Result<usize, String> {
    let first = i64::from(pos.first().copied().unwrap_or(0));
    let consecutive = pos.iter().enumerate().all(|(t, &p)| i64::from(p) == first + t as i64);
    want(consecutive, || format!("positions {pos:?} of row {row} are not consecutive"))?;
    let pad = past as i64 - first;
    want(pad >= 0, || format!("position {first} of row {row} is past the {past} cached slots before it"))?;
    Ok(pad as usize)
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
