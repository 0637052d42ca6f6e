//! The gated delta rule in its chunked (WY / UT-transform) form for prefill: the same contract
//! as [`gated_delta_rule`] (qwen3-next.md §3.8, the interpreter's
//! `GatedDeltaRule { chunk: Some(C) }`), computed per chunk of `C` tokens with small dense
//! products instead of one pass over the state per token.
//!
//! Per value head and chunk of `n ≤ C` tokens, with `G_i = Σ_{t≤i} γ_t` inside the chunk and
//! `S` the state before it:
//!
//! ```text
//! L[i,j] = β_i (k_i·k_j) e^{G_i−G_j}  (j < i)        T = (I + L)⁻¹   (forward substitution)
//! Z = diag(β) V − diag(β e^G) K S                    V' = T Z
//! O = diag(e^G) Q S + M V',   M[i,j] = (q_i·k_j) e^{G_i−G_j}  (j ≤ i)
//! S ← e^{G_{n−1}} S + Kᵀ diag(e^{G_{n−1}−G}) V'
//! ```
//!
//! This is the interpreter's `V' = U − W S` with `U = T diag(β) V`, `W = T diag(β e^G) K`
//! regrouped as `T (diag(β) V − diag(β e^G) K S)`: `K S` and `Q S` become one product over the
//! stacked `[K; Q]` (whose epilogue forms `Z` and `diag(e^G) Q S`), and one triangular product
//! replaces the two for `U` and `W`.
//!
//! **Decays.** `G` is summed with TwoSum compensation (`G ≈ hi + lo`), so a difference
//! `G_i − G_j = (hi_i − hi_j) + (lo_i − lo_j)` keeps f32 precision relative to itself however
//! long the chunk (a plain f32 cumulative sum would put its rounding error, up to ~|G|·6e-8,
//! into every difference). Every factor is `exp` of such a difference over a range that ends at
//! the later token (≤ 0 for decaying gates), never `exp` of a large positive number or a
//! quotient of two decays. Measured against the interpreter's f64 recurrence: ≤ 5e-7 relative
//! (`runtime/tests/cpu_gdn_chunked.rs`).
//!
//! **Layout.** Per-thread scratch copies padded to whole register tiles (chunk rows to 8, chunk
//! columns to 16, `Dk`, `Dv` to 64) feed one register-blocked microkernel (`mm`) that skips
//! the zero triangles of `T`, `M` and the chunk-square products. The state is updated in the
//! caller's buffer (a padded copy only when `Dk` or `Dv` is not a multiple of 64).
//!
//! **Cost.** Per token and value head ≈ `3·Dk·Dv + 2·C·D` multiply-adds in products (`K S`,
//! `Q S`, the state update; `K Kᵀ`, `Q Kᵀ`, `T Z`, `M V'`) against the recurrence's `3·Dk·Dv`
//! FMAs plus a decay multiply per state element and token, so at most ~25 % can be gained and
//! the `C·D` terms must stay small. On 2 Zen 5 cores with `Dk = Dv = 128`, `C = 64` about
//! matches the recurrence; `C = 16` and `32` are 10-25 % faster for 8 to 256 tokens and 0-10 %
//! at 512 (where both forms wait on memory more) ([`DEFAULT_CHUNK`], [`use_chunked`]; timings
//! from `cargo run --release -p qgc-runtime --example cpu_kernels -- --gdn`).

use super::gdn::{check_rule_call, gated_delta_rule, GdnDims, GdnInputs};
use super::simd::{dispatch, exp, exp_in_place, Simd};
use super::{for_ranges, with_scratch, SharedMut};

/// The chunk length [`gated_delta_rule_auto`] uses: measured best on CPU (Zen 5, AVX-512, `Dk =
/// Dv = 128`), where 16 and 32 are within noise of each other and 64 (flash-linear-attention's
/// and the interpreter's choice) is ~10 % slower, its `C·D` terms eating the gain.
pub const DEFAULT_CHUNK: usize = 32;

/// Tokens per row from which [`use_chunked`] prefers the chunked form: measured crossover
/// (at 4 tokens the recurrence is ~20 % faster, at 8 the chunked form ~15 %).
pub const CHUNKED_MIN_TOKENS: usize = 8;

/// Whether a call with `s` tokens per row should use [`gated_delta_rule_chunked`] (with
/// [`DEFAULT_CHUNK`]) rather than the token-by-token recurrence: from [`CHUNKED_MIN_TOKENS`]
/// tokens. Decode (`s = 1`) and short continuations stay recurrent.
pub fn use_chunked(s: usize) -> bool {
    s >= CHUNKED_MIN_TOKENS
}

/// The gated delta rule in whichever form [`use_chunked`] picks for `dims.s` (the chunked one
/// with [`DEFAULT_CHUNK`]); same contract as [`gated_delta_rule`].
pub fn gated_delta_rule_auto(inp: GdnInputs, dims: GdnDims, state: &mut [f32], out: &mut [f32]) {
    if use_chunked(dims.s) {
        gated_delta_rule_chunked(inp, dims, DEFAULT_CHUNK, state, out)
    } else {
        gated_delta_rule(inp, dims, state, out)
    }
}

/// Chunk rows are padded to this (every microkernel row block divides it).
const ROW_PAD: usize = 8;
/// Columns of the chunk-square matrices (and of `Kᵀ`) are padded to this.
const SQ_PAD: usize = 16;
/// `Dk` and `Dv` are padded to this (the widest microkernel column block, 4 AVX-512 vectors).
const D_PAD: usize = 64;

/// The gated delta rule over chunks of `chunk` tokens: the same operands, dims, in-place
/// `state: [B, Hv, Dk, Dv]` and `out: [B, S, Hv, Dv]` as [`gated_delta_rule`], and the same
/// values to f32 rounding (see the module docs for the math). `S` need not be a multiple of
/// `chunk`; the last chunk is shorter. Panics if `chunk == 0` or the operands do not cover
/// `dims`.
///
/// Threads split over (batch row, value head), or over (batch row, key head) with the
/// `Hv/Hk` value heads of a key head in one task when that still gives every thread two tasks:
/// they then share the gathered keys and queries and `K Kᵀ`, `Q Kᵀ`. Every head runs the same
/// arithmetic either way, so results do not depend on the thread count.
pub fn gated_delta_rule_chunked(inp: GdnInputs, dims: GdnDims, chunk: usize, state: &mut [f32], out: &mut [f32]) {
    assert!(chunk > 0, "gated_delta_rule_chunked: chunk 0");
    check_rule_call(&inp, dims, state, out);
    let GdnDims { batch, s, hk, hv, dk, dv } = dims;
    if s == 0 || batch * hv == 0 {
        return;
    }
    let group = if batch * hk >= 2 * rayon::current_num_threads().max(1) { hv / hk } else { 1 };
    let plan = Plan::new(chunk.min(s), dk, dv, group);
    let (st, o) = (SharedMut::new(state), SharedMut::new(out));
    let par = batch * hv * s * dk * dv >= 1 << 15;
    for_ranges(batch * hv / group, 1, par, |i, _| {
        // SAFETY: the task's heads own their state blocks and their output columns.
        let sh = unsafe { st.slice(i * group * dk * dv, group * dk * dv) };
        let (b, h0) = (i * group / hv, i * group % hv);
        let task = Task { inp: &inp, dims, plan, b, h0, out: o };
        // Scratch outside the SIMD body: no closure between the dispatch and the intrinsics.
        with_scratch(plan.len(dk, dv), |buf| dispatch!(S => run_task::<S>(&task, sh, buf)));
    });
}

/// Scratch geometry: chunk `c` tokens, the padded sizes, and value heads per task.
#[derive(Debug, Clone, Copy)]
struct Plan {
    c: usize,
    /// `c` padded to [`ROW_PAD`] (rows of chunk matrices; `Q` rows start at row `cr`).
    cr: usize,
    /// `c` padded to [`SQ_PAD`] (columns of the chunk-square matrices and of `Kᵀ`).
    cc: usize,
    /// `Dk`, `Dv` padded to [`D_PAD`].
    dkp: usize,
    dvp: usize,
    group: usize,
}

impl Plan {
    fn new(c: usize, dk: usize, dv: usize, group: usize) -> Plan {
        let pad = |x: usize, p: usize| x.next_multiple_of(p);
        Plan { c, cr: pad(c, ROW_PAD), cc: pad(c, SQ_PAD), dkp: pad(dk, D_PAD), dvp: pad(dv, D_PAD), group }
    }

    /// Padded copies of the states when `Dk` or `Dv` is not a multiple of [`D_PAD`] (otherwise
    /// the kernel works on the caller's state in place).
    fn state_len(&self, dk: usize, dv: usize) -> usize {
        if dk == self.dkp && dv == self.dvp {
            0
        } else {
            self.group * self.dkp * self.dvp
        }
    }

    /// Scratch floats: [`Bufs`] and the state copies (placed first).
    fn len(&self, dk: usize, dv: usize) -> usize {
        let Plan { cr, cc, dkp, dvp, .. } = *self;
        self.state_len(dk, dv) + dkp * cc + 2 * cr * dkp + 3 * cr * dvp + 4 * cr * cc + 7 * cc + 4 * cr
    }
}

/// One task: value heads `h0..h0+group` of batch row `b`, which share key head `h0 / (Hv/Hk)`.
struct Task<'a, 'b> {
    inp: &'a GdnInputs<'b>,
    dims: GdnDims,
    plan: Plan,
    b: usize,
    h0: usize,
    out: SharedMut,
}

/// Splits the first `n` floats off `buf`.
fn take<'a>(buf: &mut &'a mut [f32], n: usize) -> &'a mut [f32] {
    let (a, b) = std::mem::take(buf).split_at_mut(n);
    *buf = b;
    a
}

/// One task's scratch, row-major with the padded row lengths of [`Plan`]. The padding that a
/// product reads along its `k` dimension is zero (columns `Dk..` of `kq`, rows `Dk..` of `kt` and
/// of a padded state); rows past a chunk's length may hold anything (even NaN from an earlier
/// user of the scratch) and reach only padded output rows; padded `Dv` columns stay zero.
struct Bufs<'a> {
    /// Keys (rows `0..n`) and queries (rows `cr..cr+n`), `[2cr, Dkp]`.
    kq: &'a mut [f32],
    /// Keys transposed, `[Dkp, cc]`.
    kt: &'a mut [f32],
    /// `K Kᵀ` and `Q Kᵀ` (lower triangles), `[cr, cc]`, shared by the task's heads.
    kk: &'a mut [f32],
    qk: &'a mut [f32],
    /// Per head: `T`, `M`, `[cr, cc]`.
    tt: &'a mut [f32],
    mt: &'a mut [f32],
    /// Per head: `V'`, `[cr, Dvp]`.
    vz: &'a mut [f32],
    /// Per head: values, then `Z` (rows `0..cr`), and `O` (rows `cr..2cr`), `[2cr, Dvp]`.
    y: &'a mut [f32],
    /// Per head: the row scales of the `[K; Q] S` product's epilogue, `[2cr]` each: `Z` rows
    /// `β V − β e^G (K S)`, `O` rows `e^G (Q S)`.
    ra: &'a mut [f32],
    rb: &'a mut [f32],
    /// Per head and token: log-decay γ, β, compensated `G ≈ hi + lo`, `e^G`, `e^{G_last − G}`,
    /// and one row of decays.
    gv: &'a mut [f32],
    bv: &'a mut [f32],
    hi: &'a mut [f32],
    lo: &'a mut [f32],
    eg: &'a mut [f32],
    er: &'a mut [f32],
    drow: &'a mut [f32],
}

impl<'a> Bufs<'a> {
    fn new(p: &Plan, buf: &'a mut [f32]) -> Bufs<'a> {
        let Plan { cr, cc, dkp, dvp, .. } = *p;
        let mut r = buf;
        let (kq, kt) = (take(&mut r, 2 * cr * dkp), take(&mut r, dkp * cc));
        let [kk, qk, tt, mt] = [(); 4].map(|_| take(&mut r, cr * cc));
        let (vz, y) = (take(&mut r, cr * dvp), take(&mut r, 2 * cr * dvp));
        let [gv, bv, hi, lo, eg, er, drow] = [(); 7].map(|_| take(&mut r, cc));
        let (ra, rb) = (take(&mut r, 2 * cr), take(&mut r, 2 * cr));
        Bufs { kq, kt, kk, qk, tt, mt, vz, y, ra, rb, gv, bv, hi, lo, eg, er, drow }
    }
}

/// All chunks of one task; `sh: [group, Dk, Dv]` are its states, `buf` the scratch of
/// [`Plan::len`].
#[inline(always)]
fn run_task<S: Simd>(task: &Task, sh: &mut [f32], buf: &mut [f32]) {
    let GdnDims { s, dk, dv, .. } = task.dims;
    let plan = task.plan;
    let Plan { c, cc, dkp, dvp, .. } = plan;
    let (stpad, rest) = buf.split_at_mut(plan.state_len(dk, dv));
    let mut x = Bufs::new(&plan, rest);
    // Zero the padding read along k dimensions.
    x.kt[dk * cc..].fill(0.0);
    if dk < dkp {
        x.kq.chunks_exact_mut(dkp).for_each(|r| r[dk..].fill(0.0));
    }
    // `y` is read (scaled by 0 where unused) before it is first written.
    x.y.fill(0.0);
    let padded = !stpad.is_empty();
    if padded {
        stpad.fill(0.0);
        for (i, row) in sh.chunks_exact(dv).enumerate() {
            stpad[i / dk * dkp * dvp + i % dk * dvp..][..dv].copy_from_slice(row);
        }
    }
    let st = if padded { &mut *stpad } else { &mut *sh };
    for t0 in (0..s).step_by(c) {
        chunk::<S>(task, t0, &mut x, st);
    }
    if padded {
        for (i, row) in sh.chunks_exact_mut(dv).enumerate() {
            row.copy_from_slice(&stpad[i / dk * dkp * dvp + i % dk * dvp..][..dv]);
        }
    }
}

/// Copies the keys and queries of tokens `t0..t0+n` into `kq` and `kt`.
#[inline(always)]
fn gather_kq(task: &Task, t0: usize, n: usize, x: &mut Bufs) {
    let GdnDims { s, hk, hv, dk, .. } = task.dims;
    let Plan { cr, cc, dkp, .. } = task.plan;
    let (inp, kh) = (task.inp, task.h0 / (hv / hk));
    for i in 0..n {
        let tok = task.b * s + t0 + i;
        x.kq[i * dkp..][..dk].copy_from_slice(&inp.k[inp.kl.at(tok, kh)..][..dk]);
        x.kq[(cr + i) * dkp..][..dk].copy_from_slice(&inp.q[inp.ql.at(tok, kh)..][..dk]);
    }
    for d in 0..dk {
        let row = &mut x.kt[d * cc..][..n];
        row.iter_mut().enumerate().for_each(|(i, v)| *v = x.kq[i * dkp + d]);
    }
}

/// Copies the values, γ and β of value head `h` for tokens `t0..t0+n`.
#[inline(always)]
fn gather_v(task: &Task, h: usize, t0: usize, n: usize, x: &mut Bufs) {
    let GdnDims { s, hv, dv, .. } = task.dims;
    let (inp, dvp) = (task.inp, task.plan.dvp);
    for i in 0..n {
        let tok = task.b * s + t0 + i;
        x.y[i * dvp..][..dv].copy_from_slice(&inp.v[inp.vl.at(tok, h)..][..dv]);
        (x.gv[i], x.bv[i]) = (inp.g[tok * hv + h], inp.beta[tok * hv + h]);
    }
}

/// Asks for `len` floats from `p` to be brought into L2 ahead of use (no-op off x86-64).
#[inline(always)]
fn prefetch(p: *const f32, len: usize) {
    #[cfg(target_arch = "x86_64")]
    for i in (0..len).step_by(16) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        // SAFETY: a prefetch never faults; callers pass addresses inside one buffer.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(i) as *const i8) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, len);
}

/// Prefetches, while row `i` of `T` is solved for head `h` (the `j`-th of the task), the
/// inputs of token `i` of the next chunk (keys and queries once per task) and the output row of
/// token `i` of this chunk, spreading the misses over the chunk instead of bursting them.
#[inline(always)]
fn prefetch_row(task: &Task, t0: usize, i: usize, j: usize, h: usize) {
    let GdnDims { s, hk, hv, dk, dv, .. } = task.dims;
    let (inp, kh) = (task.inp, task.h0 / (hv / hk));
    let (next, row) = (t0 + task.plan.c + i, task.b * s);
    if next < s {
        let tok = row + next;
        if j == 0 {
            prefetch(inp.k[inp.kl.at(tok, kh)..].as_ptr(), dk);
            prefetch(inp.q[inp.ql.at(tok, kh)..].as_ptr(), dk);
        }
        prefetch(inp.v[inp.vl.at(tok, h)..].as_ptr(), dv);
    }
    prefetch(task.out.ptr(((row + t0 + i) * hv + h) * dv), dv);
}

/// The decay factors of a chunk of `n` tokens from TwoSum-compensated prefix sums of γ: `hi`,
/// `lo` (padded to `nc` with the last sums), `e^G`, `e^{G_last − G}`, the row scales `ra`, `rb`;
/// returns `e^{G_last}`.
#[inline(always)]
fn decays<S: Simd>(n: usize, nc: usize, x: &mut Bufs) -> f32 {
    let (mut hi, mut lo) = (0.0f32, 0.0f32);
    for i in 0..n {
        let (a, b) = (hi, x.gv[i]);
        hi = a + b;
        let bb = hi - a;
        lo += (a - (hi - bb)) + (b - bb);
        (x.hi[i], x.lo[i]) = (hi, lo);
    }
    x.hi[n..nc].fill(hi);
    x.lo[n..nc].fill(lo);
    for j in 0..nc {
        x.eg[j] = x.hi[j] + x.lo[j];
        x.er[j] = (hi - x.hi[j]) + (lo - x.lo[j]);
    }
    exp_in_place::<S>(&mut x.eg[..nc]);
    exp_in_place::<S>(&mut x.er[..nc]);
    let cr = x.ra.len() / 2;
    x.ra.fill(0.0);
    x.rb.fill(0.0);
    for i in 0..n {
        (x.ra[i], x.rb[i], x.ra[cr + i]) = (-x.bv[i] * x.eg[i], x.bv[i], x.eg[i]);
    }
    (hi + lo).exp()
}

/// Row by row: the decays `d_j = e^{G_i − G_j}` (used for j ≤ i); `M[i,·] = (q_i·k_j) d_j`;
/// row `i` of `T = (I + L)⁻¹` by forward substitution `T[i,·] = e_i − Σ_{j<i} L[i,j] T[j,·]`,
/// `L[i,j] = β_i (k_i·k_j) d_j`, a vector of columns at a time with four partial sums in
/// registers. `nc` columns. `pf(i)` runs first in row `i` ([`prefetch_row`]).
#[inline(always)]
fn solve_t<S: Simd>(n: usize, nc: usize, plan: &Plan, x: &mut Bufs, pf: impl Fn(usize)) {
    let (l, cc) = (S::LANES, plan.cc);
    for i in 0..n {
        pf(i);
        let d = &mut x.drow[..nc];
        let (qk, m) = (&x.qk[i * cc..][..nc], &mut x.mt[i * cc..][..nc]);
        // SAFETY: every access is a whole vector below nc (a multiple of the lanes), and hi,
        // lo, d, qk, m hold at least nc floats.
        unsafe {
            let (vh, vl) = (S::splat(x.hi[i]), S::splat(x.lo[i]));
            for c0 in (0..nc).step_by(l) {
                let g = S::add(S::sub(vh, S::load(x.hi.as_ptr().add(c0))), S::sub(vl, S::load(x.lo.as_ptr().add(c0))));
                let e = exp::<S>(g);
                S::store(d.as_mut_ptr().add(c0), e);
                S::store(m.as_mut_ptr().add(c0), S::mul(e, S::load(qk.as_ptr().add(c0))));
            }
        }
        m[i + 1..].fill(0.0);
        // −L[i, j] into d (j < i).
        let nb = -x.bv[i];
        let kk = &x.kk[i * cc..][..i];
        d[..i].iter_mut().zip(kk).for_each(|(dj, &k)| *dj *= nb * k);
        let (done, rowi) = x.tt.split_at_mut(i * cc);
        for c0 in (0..nc).step_by(l) {
            // SAFETY: rows j < i of `done`, columns c0..c0+l ≤ nc ≤ cc.
            unsafe {
                let mut a = [S::zero(); 4];
                // T[j, c] = 0 for c > j: only rows j ≥ c0 reach this block.
                let mut j = c0;
                while j + 4 <= i {
                    for (u, au) in a.iter_mut().enumerate() {
                        *au = S::fma(S::splat(d[j + u]), S::load(done.as_ptr().add((j + u) * cc + c0)), *au);
                    }
                    j += 4;
                }
                while j < i {
                    a[0] = S::fma(S::splat(d[j]), S::load(done.as_ptr().add(j * cc + c0)), a[0]);
                    j += 1;
                }
                S::store(rowi.as_mut_ptr().add(c0), S::add(S::add(a[0], a[1]), S::add(a[2], a[3])));
            }
        }
        rowi[i] = 1.0;
    }
}

/// One chunk from token `t0` for every head of the task; `st: [group, Dkp, Dvp]`.
#[inline(always)]
fn chunk<S: Simd>(task: &Task, t0: usize, x: &mut Bufs, st: &mut [f32]) {
    let GdnDims { s, hv, dv, .. } = task.dims;
    let plan = task.plan;
    let Plan { c, cr, cc, dkp, dvp, group } = plan;
    let n = c.min(s - t0);
    let (np, nc) = (n.next_multiple_of(ROW_PAD), n.next_multiple_of(SQ_PAD));
    gather_kq(task, t0, n, x);
    // K Kᵀ and Q Kᵀ, lower triangles (with the diagonal tiles).
    let tri = Mm { tri: Tri::LowerOut, ..Mm::new(np, nc, dkp, dkp, cc, cc) };
    mm_sq::<S>(tri, x.kq, x.kt, x.kk);
    mm_sq::<S>(tri, &x.kq[cr * dkp..], x.kt, x.qk);
    for (j, sj) in st.chunks_exact_mut(dkp * dvp).enumerate().take(group) {
        let h = task.h0 + j;
        gather_v(task, h, t0, n, x);
        let decay = decays::<S>(n, nc, x);
        // [K; Q] S with the epilogue: Z = β V − β e^G (K S) in rows 0..n of y (which hold V),
        // e^G (Q S) in rows cr..cr+n.
        let full = Mm { alpha: Cb::Rows(x.ra), cb: Cb::Rows(x.rb), ..Mm::new(cr + n, dvp, dkp, dkp, dvp, dvp) };
        mmx::<S>(full, x.kq, sj, x.y);
        solve_t::<S>(n, nc, &plan, x, |i| prefetch_row(task, t0, i, j, h));
        // V' = T Z; O = e^G (Q S) + M V' in rows cr..cr+n of y.
        let (z, o) = x.y.split_at_mut(cr * dvp);
        let low = Mm { tri: Tri::LowerA, ..Mm::new(np, dvp, n, cc, dvp, dvp) };
        mmx::<S>(low, x.tt, z, x.vz);
        mmx::<S>(Mm { cb: Cb::All(1.0), ..low }, x.mt, x.vz, o);
        for i in 0..n {
            // SAFETY: (token, h) belongs to this task.
            let dst = unsafe { task.out.slice(((task.b * s + t0 + i) * hv + h) * dv, dv) };
            dst.copy_from_slice(&o[i * dvp..][..dv]);
            super::simd::scale::<S>(&mut x.vz[i * dvp..][..dv], x.er[i]);
        }
        // S ← e^{G_last} S + Kᵀ (e^{G_last − G} ⊙ V').
        let upd = Mm { cb: Cb::All(decay), ..Mm::new(dkp, dvp, n, cc, dvp, dvp) };
        mmx::<S>(upd, x.kt, x.vz, sj);
    }
}

/// Which zero triangle a product may skip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tri {
    /// Dense.
    None,
    /// Only the lower triangle of C is wanted: skip column blocks right of a row block.
    LowerOut,
    /// A is lower triangular: row `i` stops its k loop after its row block.
    LowerA,
}

/// A factor of a product's epilogue `C[i,·] = cb_i·C[i,·] + alpha_i·(A·B)[i,·]`.
#[derive(Debug, Clone, Copy)]
enum Cb<'a> {
    /// 0: C is overwritten without being read.
    Zero,
    /// The same for every row.
    All(f32),
    /// One per row.
    Rows(&'a [f32]),
}

/// One product `C = cb·C + alpha·A·B` (per-row factors, see [`Cb`]) on padded scratch, all
/// row-major: `A: [m, k]` with `ars` floats per row, `B: [k, ldb]`, `C: [m, ldc]`, using the
/// first `n` columns of B and C.
#[derive(Debug, Clone, Copy)]
struct Mm<'a> {
    m: usize,
    n: usize,
    k: usize,
    ars: usize,
    ldb: usize,
    ldc: usize,
    /// The scale of `A·B`.
    alpha: Cb<'a>,
    cb: Cb<'a>,
    tri: Tri,
}

impl Mm<'_> {
    /// A dense `C = A·B`.
    fn new(m: usize, n: usize, k: usize, ars: usize, ldb: usize, ldc: usize) -> Self {
        Mm { m, n, k, ars, ldb, ldc, alpha: Cb::All(1.0), cb: Cb::Zero, tri: Tri::None }
    }
}

/// [`mm`] for the products with `Dv` columns: 8 rows × 2 vectors with 32 registers (measured
/// faster than 4 × 4 on Zen 5: a 16 KiB panel of B stays in L1), 4 × 2 with 16, 8 × 2 lanes
/// for scalar code.
#[inline(always)]
fn mmx<S: Simd>(p: Mm<'_>, a: &[f32], b: &[f32], c: &mut [f32]) {
    if S::REGS >= 32 || S::LANES == 1 {
        mm::<S, 8, 2>(p, a, b, c)
    } else {
        mm::<S, 4, 2>(p, a, b, c)
    }
}

/// [`mm`] for the chunk-square products (`[SQ_PAD]`-column blocks): 8 rows × 1 vector with 32
/// registers, 4 × 2 with 16, 4 × 4 lanes for scalar code.
#[inline(always)]
fn mm_sq<S: Simd>(p: Mm<'_>, a: &[f32], b: &[f32], c: &mut [f32]) {
    if S::LANES == 16 {
        mm::<S, 8, 1>(p, a, b, c)
    } else if S::LANES == 8 {
        mm::<S, 4, 2>(p, a, b, c)
    } else {
        mm::<S, 4, 4>(p, a, b, c)
    }
}

/// The blocked product of [`Mm`]: column blocks of `NV` vectors outer (a `k × NV` panel of B stays
/// in L1), row blocks of `MR` rows inner, `MR × NV` accumulators in registers. The last row
/// block may run past `m` up to the next multiple of `MR` (within the buffers, asserted).
#[inline(always)]
fn mm<S: Simd, const MR: usize, const NV: usize>(p: Mm<'_>, a: &[f32], b: &[f32], c: &mut [f32]) {
    let nb = NV * S::LANES;
    assert!(p.n.is_multiple_of(nb), "mm: {p:?}");
    if p.m == 0 || p.n == 0 {
        return;
    }
    let rows = p.m.next_multiple_of(MR);
    assert!(p.k == 0 || (rows - 1) * p.ars + p.k <= a.len(), "mm: A of {} for {p:?}", a.len());
    assert!(p.k == 0 || (p.k - 1) * p.ldb + p.n <= b.len(), "mm: B of {} for {p:?}", b.len());
    assert!((rows - 1) * p.ldc + p.n <= c.len() && p.n <= p.ldc, "mm: C of {} for {p:?}", c.len());
    assert!(!matches!(p.cb, Cb::Rows(r) if r.len() < rows), "mm: row scales for {p:?}");
    assert!(!matches!(p.alpha, Cb::Rows(r) if r.len() < rows), "mm: row scales for {p:?}");
    for j0 in (0..p.n).step_by(nb) {
        for i0 in (0..p.m).step_by(MR) {
            if p.tri == Tri::LowerOut && j0 >= i0 + MR {
                continue;
            }
            let k = if p.tri == Tri::LowerA { p.k.min(i0 + MR) } else { p.k };
            // SAFETY: rows i0..i0+MR ≤ rows, columns j0..j0+nb ≤ n, kk < k (asserted above).
            unsafe { tile::<S, MR, NV>(&p, a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), i0, j0, k) };
        }
    }
}

/// One `MR × NV·LANES` block of C at (`i0`, `j0`) over `k` terms.
///
/// # Safety
/// The block and its A rows / B columns must lie inside the buffers (checked by [`mm`]), and
/// `S`'s instruction set must be available.
#[inline(always)]
unsafe fn tile<S: Simd, const MR: usize, const NV: usize>(
    p: &Mm<'_>,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    i0: usize,
    j0: usize,
    k: usize,
) {
    let l = S::LANES;
    let mut acc = [[S::zero(); NV]; MR];
    let arow: [*const f32; MR] = std::array::from_fn(|r| a.add((i0 + r) * p.ars));
    for kk in 0..k {
        let brow = b.add(kk * p.ldb + j0);
        let bv: [S::V; NV] = std::array::from_fn(|v| S::load(brow.add(v * l)));
        for r in 0..MR {
            let av = S::splat(*arow[r].add(kk));
            for v in 0..NV {
                acc[r][v] = S::fma(av, bv[v], acc[r][v]);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        let crow = c.add((i0 + r) * p.ldc + j0);
        for (v, &x) in row.iter().enumerate() {
            let cp = crow.add(v * l);
            let x = match p.alpha {
                Cb::All(1.0) => x,
                Cb::All(a) => S::mul(x, S::splat(a)),
                Cb::Rows(a) => S::mul(x, S::splat(*a.get_unchecked(i0 + r))),
                Cb::Zero => S::zero(),
            };
            let y = match p.cb {
                Cb::Zero => x,
                Cb::All(cb) => S::fma(S::load(cp), S::splat(cb), x),
                Cb::Rows(cb) => S::fma(S::load(cp), S::splat(*cb.get_unchecked(i0 + r)), x),
            };
            S::store(cp, y);
        }
    }
}
