//! Sparse mixture of experts: routing (softmax, top-k, renormalisation) and the routed experts'
//! SwiGLU, computed only for the experts each token was routed to (qwen3-next.md §3.9).

use super::elementwise::silu;
use super::{dims, dot, f32s, i32s, want, Tensor};

/// `logits: [B,S,E]` -> (`weights` f32 `[B,S,k]`, `experts` i32 `[B,S,k]`): softmax over E (f64, max
/// subtracted), the k most probable experts in descending order (ties: lower index first),
/// renormalised to sum to 1 when `renormalize`.
pub fn moe_route(logits: &Tensor, top_k: usize, renormalize: bool) -> Result<(Tensor, Tensor), String> {
    let [b, s, e] = dims::<3>(logits, "router logits")?;
    want(top_k >= 1 && top_k <= e, || format!("top_k {top_k} not in 1..={e}"))?;
    want(e <= i32::MAX as usize, || format!("{e} experts do not fit i32 indices"))?;
    let ls = f32s(logits, "router logits")?;
    let (mut weights, mut experts) = (Vec::with_capacity(b * s * top_k), Vec::with_capacity(b * s * top_k));
    for row in ls.chunks(e) {
        let max = row.iter().map(|&x| f64::from(x)).fold(f64::NEG_INFINITY, f64::max);
        let ex: Vec<f64> = row.iter().map(|&x| (f64::from(x) - max).exp()).collect();
        let sum: f64 = ex.iter().sum();
        let p: Vec<f64> = ex.iter().map(|x| x / sum).collect();
        let mut order: Vec<usize> = (0..e).collect();
        // Stable sort on descending probability keeps equal probabilities in index order.
        order.sort_by(|&a, &c| p[c].total_cmp(&p[a]));
        let chosen = &order[..top_k];
        let norm: f64 = if renormalize { chosen.iter().map(|&i| p[i]).sum() } else { 1.0 };
        weights.extend(chosen.iter().map(|&i| (p[i] / norm) as f32));
        experts.extend(chosen.iter().map(|&i| i as i32));
    }
    let shape = vec![b, s, top_k];
    Ok((Tensor::f32(shape.clone(), weights), Tensor::i32(shape, experts)))
}

/// `x: [B,S,H]`, `weights` f32 `[B,S,k]`, `experts` i32 `[B,S,k]`, `gate: [E,I,H]`, `up: [E,I,H]`,
/// `down: [E,H,I]` (passed as `ins`, in that order) -> `[B,S,H]`:
/// `Σ_i weights_i · down_e (silu(gate_e x) ⊙ up_e x)` with `e = experts_i`; the routing weight
/// multiplies after down_proj. An expert index outside `0..E` is an error.
pub fn moe_experts(ins: &[&Tensor]) -> Result<Tensor, String> {
    let [x, wt, ix, gate, up, down] = <[&Tensor; 6]>::try_from(ins).map_err(|_| "moe_experts takes 6 operands")?;
    let [b, s, h] = dims::<3>(x, "expert input")?;
    let [e, i, gh] = dims::<3>(gate, "expert gate")?;
    want(wt.shape == ix.shape && wt.shape.len() == 3 && wt.shape[..2] == [b, s], || {
        format!("routing {} / {} does not match {}", wt.describe(), ix.describe(), x.describe())
    })?;
    want(gh == h && up.shape == gate.shape && down.shape == [e, h, i], || {
        format!("expert weights {} {} {} do not fit {}", gate.describe(), up.describe(), down.describe(), x.describe())
    })?;
    let k = wt.shape[2];
    let (xs, ws, ids) = (f32s(x, "expert input")?, f32s(wt, "routing weights")?, i32s(ix, "expert indices")?);
    let mats = [f32s(gate, "expert gate")?, f32s(up, "expert up")?, f32s(down, "expert down")?];
    let mut out = Vec::with_capacity(b * s * h);
    for tok in 0..b * s {
        let xt = &xs[tok * h..][..h];
        let mut acc = vec![0.0f64; h];
        for slot in tok * k..(tok + 1) * k {
            let id = ids[slot];
            let ex = usize::try_from(id).ok().filter(|&v| v < e);
            let ex = ex.ok_or_else(|| format!("expert index {id} (token {tok}) is outside 0..{e}"))?;
            let y = expert(xt, mats, ex, i, h);
            let w = f64::from(ws[slot]);
            acc.iter_mut().zip(&y).for_each(|(a, &v)| *a += w * v);
        }
        out.extend(acc.iter().map(|&v| v as f32));
    }
    Ok(Tensor::f32(x.shape.clone(), out))
}

/// Expert `ex`'s SwiGLU on one token: `down (silu(gate x) ⊙ up x)`, `[H]`, with `mats` the
/// stacked `[gate, up, down]` weights.
fn expert(x: &[f32], mats: [&[f32]; 3], ex: usize, i: usize, h: usize) -> Vec<f64> {
    let [gate, up, down] = mats;
    let (gate, up, down) = (&gate[ex * i * h..][..i * h], &up[ex * i * h..][..i * h], &down[ex * h * i..][..h * i]);
    let mid: Vec<f32> =
        (0..i).map(|r| (silu(dot(&gate[r * h..][..h], x)) * dot(&up[r * h..][..h], x)) as f32).collect();
    (0..h).map(|o| dot(&down[o * i..][..i], &mid)).collect()
}
