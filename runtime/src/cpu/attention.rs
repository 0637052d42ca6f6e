//! The KV cache and causal GQA softmax attention (`KvAppend`, `Attention` in the IR), with the
//! output sigmoid gate of Qwen3-Next's gated attention fused in.
//!
//! **Cache layout.** Each attention layer owns one K and one V buffer, `[B, Nkv, capacity, D]`
//! (`Dv` for V), allocated once. Entries `0..len` of every (row, head) are valid; `len` is the
//! same for all batch rows (left padding lives in the positions, as in the IR). [`kv_append`]
//! writes new entries at `len..len+S` in place; nothing is copied or reallocated.
//!
//! **Attention.** Per task (batch row, kv head, group of its query heads, block of query tokens)
//! the queries share every key/value row they read; keys stream in blocks of 32 with an
//! online (running max) softmax in f32, so prefill and decode are the same code.
//!
//! **Batch invariance.** What a query computes depends only on its own row: key blocks start
//! at the row's first real slot (after its left padding), every score is one [`dot4`] in a fixed
//! order, and the softmax and value sums run per query; the split into tasks (which follows the
//! batch size and the thread count) changes no bits.

use super::simd::{axpy, dispatch, exp_in_place, scale, Simd};
use super::{for_ranges, sigmoid, with_scratch, CpuError, HeadLayout, SharedMut};

/// Keys per online-softmax block.
const KB: usize = 32;
/// Queries per task at most (tokens × heads of one kv group).
const QT: usize = 32;

/// Shape of one layer's K or V cache: `[batch, kv_heads, capacity, d]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvShape {
    /// Batch rows.
    pub batch: usize,
    /// KV heads.
    pub kv_heads: usize,
    /// Positions the cache can hold.
    pub capacity: usize,
    /// Elements per head (D for K, Dv for V).
    pub d: usize,
}

impl KvShape {
    /// Elements of the whole cache buffer.
    pub fn len(&self) -> usize {
        self.batch * self.kv_heads * self.capacity * self.d
    }

    /// Whether the cache has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Start of entry `pos` of head `h` in batch row `b`.
    pub fn at(&self, b: usize, h: usize, pos: usize) -> usize {
        ((b * self.kv_heads + h) * self.capacity + pos) * self.d
    }
}

/// Appends `S` new entries per batch row and head at positions `len..len+S` of `cache`.
/// `new` holds `[B, S, Nkv, d]` as described by `layout` (`tokens = B·S`, `heads = Nkv`), e.g.
/// the k or v part of a projection output. Errors when `len + S > capacity`.
pub fn kv_append(
    cache: &mut [f32],
    shape: KvShape,
    len: usize,
    new: &[f32],
    layout: HeadLayout,
) -> Result<(), CpuError> {
    assert!(cache.len() >= shape.len(), "kv_append: cache shorter than {shape:?}");
    assert!(layout.heads == shape.kv_heads && layout.d == shape.d, "kv_append: {layout:?} does not fit {shape:?}");
    assert!(shape.batch > 0 && layout.tokens.is_multiple_of(shape.batch), "kv_append: tokens not a multiple of batch");
    layout.check(new.len(), "kv_append");
    let s = layout.tokens / shape.batch;
    if len + s > shape.capacity {
        return Err(CpuError::CacheFull { len, capacity: shape.capacity, new: s });
    }
    for b in 0..shape.batch {
        for h in 0..shape.kv_heads {
            for t in 0..s {
                let src = &new[layout.at(b * s + t, h)..][..shape.d];
                cache[shape.at(b, h, len + t)..][..shape.d].copy_from_slice(src);
            }
        }
    }
    Ok(())
}

/// Dimensions of one [`attention`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttnDims {
    /// Batch rows.
    pub batch: usize,
    /// New query tokens per row (S).
    pub s: usize,
    /// Query heads (Nq), a multiple of `kv_heads`.
    pub q_heads: usize,
    /// KV heads (Nkv).
    pub kv_heads: usize,
    /// Query/key head dim.
    pub d: usize,
    /// Value head dim.
    pub dv: usize,
    /// Entries in the cache before this call (P); the call's own S entries follow them.
    pub past: usize,
    /// Cache capacity (see [`KvShape`]).
    pub capacity: usize,
}

/// Causal GQA attention of the `S` new queries over cache entries `0..P+S` (the new ones already
/// appended), `out: [B, S, Nq, Dv]`; optionally `out ⊙= σ(gate)` with `gate` one `[Dv]` vector per
/// query head (Qwen3-Next's output gate).
///
/// `q` holds `[B·S, Nq, D]` per `ql`; `k_cache: [B, Nkv, capacity, D]`, `v_cache: [B, Nkv,
/// capacity, Dv]`; `positions: [B, S]` as in the IR: row b's positions must be consecutive and
/// its padding `pad_b = P − positions[b,0] ≥ 0`; query s sees cache entries `pad_b..=P+s`, and
/// outputs 0 when it sees none (a padding slot). Head j reads kv head `j / (Nq/Nkv)`; scores are
/// `scale · q·k`. Errors on positions that break those rules.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    ql: HeadLayout,
    k_cache: &[f32],
    v_cache: &[f32],
    dims: AttnDims,
    positions: &[i32],
    scale: f32,
    gate: Option<(&[f32], HeadLayout)>,
    out: &mut [f32],
) -> Result<(), CpuError> {
    let AttnDims { batch, s, q_heads, kv_heads, d, dv, past, capacity } = dims;
    check(q, ql, k_cache, v_cache, dims, positions, gate, out);
    for b in 0..batch {
        row_padding(&positions[b * s..][..s], past, b)?;
    }
    let group = q_heads / kv_heads;
    let (gsub, qb) = split(dims, group);
    let (hsplit, tblocks) = (group / gsub, s.div_ceil(qb));
    let tasks = batch * kv_heads * hsplit * tblocks;
    let o = SharedMut::new(out);
    let work = batch * s * q_heads * (past + s) * (d + dv);
    for_ranges(tasks, 1, work >= 1 << 15, |i, _| {
        let (tb, rest) = (i % tblocks, i / tblocks);
        let (hs, rest) = (rest % hsplit, rest / hsplit);
        let (g, b) = (rest % kv_heads, rest / kv_heads);
        let heads = g * group + hs * gsub..g * group + (hs + 1) * gsub;
        let toks = tb * qb..((tb + 1) * qb).min(s);
        let keys = &k_cache[KvShape { batch, kv_heads, capacity, d }.at(b, g, 0)..];
        let vals = &v_cache[KvShape { batch, kv_heads, capacity, d: dv }.at(b, g, 0)..];
        // Validated above: consecutive, and positions[b·s] ≤ past.
        let pad = (past as i64 - i64::from(positions.get(b * s).copied().unwrap_or(0))) as usize;
        let task = Task { q, ql, dims, b, pad, heads, toks, scale, gate };
        let nq = task.heads.len() * task.toks.len();
        // The scratch is taken outside the SIMD body so no closure sits between the dispatch and
        // the intrinsics (closures are not guaranteed to inline into the target-feature context).
        with_scratch(nq * (dv + KB + 2), |buf| dispatch!(S => task.run::<S>(keys, vals, o, buf)));
    });
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn check(
    q: &[f32],
    ql: HeadLayout,
    k_cache: &[f32],
    v_cache: &[f32],
    dims: AttnDims,
    positions: &[i32],
    gate: Option<(&[f32], HeadLayout)>,
    out: &[f32],
) {
    let AttnDims { batch, s, q_heads, kv_heads, d, dv, past, capacity } = dims;
    assert!(kv_heads > 0 && q_heads % kv_heads == 0, "attention: {q_heads} q heads, {kv_heads} kv heads");
    assert!(past + s <= capacity, "attention: {past}+{s} entries exceed capacity {capacity}");
    assert!(ql.tokens == batch * s && ql.heads == q_heads && ql.d == d, "attention: q layout {ql:?} vs {dims:?}");
    ql.check(q.len(), "attention q");
    assert!(k_cache.len() >= batch * kv_heads * capacity * d, "attention: k cache too short");
    assert!(v_cache.len() >= batch * kv_heads * capacity * dv, "attention: v cache too short");
    assert!(positions.len() >= batch * s && out.len() >= batch * s * q_heads * dv, "attention: positions/out");
    if let Some((g, gl)) = gate {
        assert!(gl.tokens == batch * s && gl.heads == q_heads && gl.d == dv, "attention: gate layout {gl:?}");
        gl.check(g.len(), "attention gate");
    }
}

/// Query heads per task and query tokens per task: all of a group's heads share the keys; split
/// the group when there would be too few tasks for the threads (decode).
fn split(dims: AttnDims, group: usize) -> (usize, usize) {
    let threads = rayon::current_num_threads().max(1);
    let mut gsub = group;
    loop {
        let qb = (QT / gsub).max(1);
        let tasks = dims.batch * dims.kv_heads * (group / gsub) * dims.s.div_ceil(qb);
        if tasks >= 2 * threads || !gsub.is_multiple_of(2) {
            return (gsub, qb);
        }
        gsub /= 2;
    }
}

/// The left padding of one row (as `interp::attention::row_padding`).
fn row_padding(pos: &[i32], past: usize, row: usize) -> Result<usize, CpuError> {
    let first = i64::from(pos.first().copied().unwrap_or(0));
    if !pos.iter().enumerate().all(|(t, &p)| i64::from(p) == first + t as i64) {
        return Err(CpuError::Positions { row, message: format!("{pos:?} are not consecutive") });
    }
    let pad = past as i64 - first;
    if pad < 0 {
        let message = format!("position {first} is past the {past} cached slots before it");
        return Err(CpuError::Positions { row, message });
    }
    Ok(pad as usize)
}

/// One task: query heads `heads` × tokens `toks` of batch row `b` against one kv head.
struct Task<'a> {
    q: &'a [f32],
    ql: HeadLayout,
    dims: AttnDims,
    b: usize,
    pad: usize,
    heads: std::ops::Range<usize>,
    toks: std::ops::Range<usize>,
    scale: f32,
    gate: Option<(&'a [f32], HeadLayout)>,
}

impl Task<'_> {
    /// `keys: [capacity, D]`, `vals: [capacity, Dv]` of this task's (row, kv head); `buf` holds
    /// `nq·(Dv + KB + 2)` f32 of scratch.
    #[inline(always)]
    fn run<S: Simd>(&self, keys: &[f32], vals: &[f32], out: SharedMut, buf: &mut [f32]) {
        let AttnDims { s, q_heads, d, dv, past, .. } = self.dims;
        let nh = self.heads.len();
        let nq = nh * self.toks.len();
        // Query i is token toks.start + i / nh, head heads.start + i % nh; it sees keys pad..end(i).
        let end = |i: usize| past + self.toks.start + i / nh + 1;
        let qrow =
            |i: usize| &self.q[self.ql.at(self.b * s + self.toks.start + i / nh, self.heads.start + i % nh)..][..d];
        let hi = past + self.toks.end;
        {
            let (acc, rest) = buf.split_at_mut(nq * dv);
            let (sc, rest) = rest.split_at_mut(nq * KB);
            let (mx, sum) = rest.split_at_mut(nq);
            acc.fill(0.0);
            mx.fill(f32::NEG_INFINITY);
            sum.fill(0.0);
            let mut k0 = self.pad;
            while k0 < hi {
                let k1 = (k0 + KB).min(hi);
                for kk in k0..k1 {
                    let key = &keys[kk * d..][..d];
                    let mut i = 0;
                    while i + 4 <= nq {
                        let r = dot4::<S>(key, [qrow(i), qrow(i + 1), qrow(i + 2), qrow(i + 3)]);
                        for (u, &v) in r.iter().enumerate() {
                            sc[(i + u) * KB + kk - k0] =
                                if kk < end(i + u) { v * self.scale } else { f32::NEG_INFINITY };
                        }
                        i += 4;
                    }
                    if i < nq {
                        // The last 1-3 queries through the same four-way dot (the last one
                        // repeated): every score is summed in one order, however the queries
                        // are grouped into tasks (which depends on the batch and the threads).
                        let last = nq - 1;
                        let r = dot4::<S>(key, [qrow(i), qrow((i + 1).min(last)), qrow((i + 2).min(last)), qrow(last)]);
                        for (u, &v) in r.iter().enumerate().take(nq - i) {
                            sc[(i + u) * KB + kk - k0] =
                                if kk < end(i + u) { v * self.scale } else { f32::NEG_INFINITY };
                        }
                    }
                }
                let nk = k1 - k0;
                for i in 0..nq {
                    softmax_block::<S>(&mut sc[i * KB..][..nk], &mut mx[i], &mut sum[i], &mut acc[i * dv..][..dv]);
                    pv_block::<S>(&sc[i * KB..][..nk], &vals[k0 * dv..][..nk * dv], &mut acc[i * dv..][..dv]);
                }
                k0 = k1;
            }
            for i in 0..nq {
                let (t, j) = (self.b * s + self.toks.start + i / nh, self.heads.start + i % nh);
                // SAFETY: (t, j) belongs to this task only.
                let o = unsafe { out.slice((t * q_heads + j) * dv, dv) };
                let a = &mut acc[i * dv..][..dv];
                scale::<S>(a, if sum[i] > 0.0 { 1.0 / sum[i] } else { 0.0 });
                if let Some((g, gl)) = self.gate {
                    let g = &g[gl.at(t, j)..][..dv];
                    a.iter_mut().zip(g).for_each(|(v, &gv)| *v *= sigmoid(gv));
                }
                o.copy_from_slice(a);
            }
        }
    }
}

/// Four dot products sharing the loads of `key`: `[key·q_0, …, key·q_3]` (each `q_u` at least
/// as long as `key`).
#[inline(always)]
fn dot4<S: Simd>(key: &[f32], q: [&[f32]; 4]) -> [f32; 4] {
    let (d, l) = (key.len(), S::LANES);
    assert!(q.iter().all(|x| x.len() >= d));
    let mut out = [0.0f32; 4];
    let mut j = 0;
    // SAFETY: every load stays below d ≤ all lengths.
    unsafe {
        let mut acc = [S::zero(); 4];
        while j + l <= d {
            let kv = S::load(key.as_ptr().add(j));
            for u in 0..4 {
                acc[u] = S::fma(kv, S::load(q[u].as_ptr().add(j)), acc[u]);
            }
            j += l;
        }
        for u in 0..4 {
            out[u] = S::hsum(acc[u]);
        }
    }
    for j in j..d {
        for u in 0..4 {
            out[u] += key[j] * q[u][j];
        }
    }
    out
}

/// `acc += Σ_kk p[kk] · vals[kk]` (`vals: [p.len(), Dv]`), by column blocks held in registers so
/// `acc` is loaded and stored once per key block.
#[inline(always)]
fn pv_block<S: Simd>(p: &[f32], vals: &[f32], acc: &mut [f32]) {
    const CB: usize = 4;
    let (dv, l, nk) = (acc.len(), S::LANES, p.len());
    assert!(vals.len() >= nk * dv);
    let mut j0 = 0;
    // SAFETY: column blocks stay below dv; rows below nk.
    unsafe {
        while j0 + CB * l <= dv {
            let a = acc.as_mut_ptr().add(j0);
            let mut r: [S::V; CB] = std::array::from_fn(|c| S::load(a.add(c * l)));
            for (kk, &pk) in p.iter().enumerate() {
                let v = vals.as_ptr().add(kk * dv + j0);
                let pv = S::splat(pk);
                for (c, rc) in r.iter_mut().enumerate() {
                    *rc = S::fma(S::load(v.add(c * l)), pv, *rc);
                }
            }
            for (c, rc) in r.iter().enumerate() {
                S::store(a.add(c * l), *rc);
            }
            j0 += CB * l;
        }
    }
    if j0 < dv {
        for (kk, &pk) in p.iter().enumerate() {
            axpy::<S>(&mut acc[j0..], pk, &vals[kk * dv + j0..]);
        }
    }
}

/// Online-softmax update for one query over one key block: `scores` (masked = −∞) become the
/// block's unnormalised probabilities relative to the new running max; `acc` and `sum` are
/// rescaled to that max.
#[inline(always)]
fn softmax_block<S: Simd>(scores: &mut [f32], mx: &mut f32, sum: &mut f32, acc: &mut [f32]) {
    let bm = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if bm == f32::NEG_INFINITY {
        scores.fill(0.0);
        return;
    }
    let m_new = mx.max(bm);
    if *mx != m_new && *sum > 0.0 {
        let corr = (*mx - m_new).exp();
        *sum *= corr;
        scale::<S>(acc, corr);
    }
    *mx = m_new;
    scores.iter_mut().for_each(|v| *v -= m_new);
    exp_in_place::<S>(scores);
    *sum += scores.iter().sum::<f32>();
}
