//! Shape and dtype inference, one function per op (the verifier's rules). The op table
//! (`op.rs`) names each row's function and calls it with the operand types and the op's
//! attributes; arity is checked before.

use crate::op::{f32_of, numel, Op};
use crate::types::{DType, Dim, Shape, TensorType};

type R = Result<Vec<TensorType>, String>;

fn fmt_ty(t: &TensorType) -> String {
    t.to_string()
}

fn want(cond: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(msg())
    }
}

fn want_dtype(t: &TensorType, d: DType, what: &str) -> Result<(), String> {
    want(t.dtype == d, || format!("{what} must be {}, got {}", d.name(), fmt_ty(t)))
}

fn want_rank(t: &TensorType, r: usize, what: &str) -> Result<(), String> {
    want(t.rank() == r, || format!("{what} must have rank {r}, got {}", fmt_ty(t)))
}

fn last(t: &TensorType) -> Option<Dim> {
    t.shape.last().copied()
}

/// The single result of `op` on `ins`.
fn one(op: &Op, ins: &[&TensorType]) -> Result<TensorType, String> {
    Ok(op.infer(ins)?.remove(0))
}

/// `Input`, `Weight`: their declared type.
pub(crate) fn source(_: &[&TensorType], _name: &String, ty: &TensorType) -> R {
    Ok(vec![ty.clone()])
}

pub(crate) fn embed(ins: &[&TensorType]) -> R {
    let (t, ids) = (ins[0], ins[1]);
    want_rank(t, 2, "embedding table")?;
    want_dtype(ids, DType::I32, "token ids")?;
    let mut s = ids.shape.clone();
    s.push(t.shape[1]);
    Ok(vec![f32_of(s)])
}

pub(crate) fn reshape(ins: &[&TensorType], shape: &Shape) -> R {
    let x = ins[0];
    want(numel(&x.shape) == numel(shape), || {
        format!("reshape of {} to {} changes the element count", fmt_ty(x), fmt_ty(&f32_of(shape.clone())))
    })?;
    Ok(vec![TensorType::new(shape.clone(), x.dtype)])
}

pub(crate) fn slice(ins: &[&TensorType], axis: &usize, start: &usize, len: &usize) -> R {
    let (x, axis, start, len) = (ins[0], *axis, *start, *len);
    let d = x.shape.get(axis).ok_or_else(|| format!("slice axis {axis} out of range for {}", fmt_ty(x)))?;
    let n = d.as_const().ok_or_else(|| format!("slice along symbolic axis {axis} of {}", fmt_ty(x)))?;
    let end = start.checked_add(len);
    want(end.is_some_and(|e| e <= n) && len > 0, || format!("slice {start}..{start}+{len} out of 0..{n}"))?;
    let mut s = x.shape.clone();
    s[axis] = Dim::c(len);
    Ok(vec![TensorType::new(s, x.dtype)])
}

pub(crate) fn concat(ins: &[&TensorType], axis: &usize) -> R {
    let axis = *axis;
    let first = ins[0];
    want(axis < first.rank(), || format!("concat axis {axis} out of range for {}", fmt_ty(first)))?;
    let mut s = first.shape.clone();
    for t in &ins[1..] {
        let mut a = t.shape.clone();
        let mut b = first.shape.clone();
        want(a.len() == b.len() && t.dtype == first.dtype, || {
            format!("concat operands {} and {} differ", fmt_ty(first), fmt_ty(t))
        })?;
        s[axis] = s[axis].plus(t.shape[axis]);
        a[axis] = Dim::c(0);
        b[axis] = Dim::c(0);
        want(a == b, || format!("concat operands {} and {} differ off axis {axis}", fmt_ty(first), fmt_ty(t)))?;
    }
    Ok(vec![TensorType::new(s, first.dtype)])
}

pub(crate) fn matmul(ins: &[&TensorType]) -> R {
    let (x, w) = (ins[0], ins[1]);
    want_rank(w, 2, "matmul weight")?;
    want(x.rank() >= 1 && last(x) == Some(w.shape[1]), || {
        format!("matmul {} x {}ᵀ: inner dims differ", fmt_ty(x), fmt_ty(w))
    })?;
    let mut s = x.shape.clone();
    *s.last_mut().expect("rank checked") = w.shape[0];
    Ok(vec![f32_of(s)])
}

/// `Add`/`Mul`: `b` broadcasts over `a` as a trailing suffix, or (`row_gate`, `Mul` only) as one
/// value per row (`a`'s shape with a trailing 1).
fn binary(ins: &[&TensorType], name: &str, row_gate: bool) -> R {
    let (a, b) = (ins[0], ins[1]);
    let suffix = b.rank() <= a.rank() && a.shape[a.rank() - b.rank()..] == b.shape[..];
    let gate = row_gate
        && a.rank() == b.rank()
        && a.rank() > 0
        && a.shape[..a.rank() - 1] == b.shape[..b.rank() - 1]
        && last(b) == Some(Dim::c(1));
    want(suffix || gate, || format!("{name} of {} and {}: second operand does not broadcast", fmt_ty(a), fmt_ty(b)))?;
    want(a.dtype == DType::F32 && b.dtype == DType::F32, || format!("{name} needs f32 operands"))?;
    Ok(vec![a.clone()])
}

pub(crate) fn add(ins: &[&TensorType]) -> R {
    binary(ins, "add", false)
}

pub(crate) fn mul(ins: &[&TensorType]) -> R {
    binary(ins, "mul", true)
}

/// Unary pointwise maps: f32 in, same type out.
pub(crate) fn unary(ins: &[&TensorType]) -> R {
    want_dtype(ins[0], DType::F32, "pointwise operand")?;
    Ok(vec![ins[0].clone()])
}

pub(crate) fn scale(ins: &[&TensorType], _by: &f32) -> R {
    unary(ins)
}

pub(crate) fn mask_padding(ins: &[&TensorType]) -> R {
    let (x, pos) = (ins[0], ins[1]);
    want_dtype(pos, DType::I32, "positions")?;
    want(pos.rank() == 2 && x.rank() >= 2 && pos.shape[..] == x.shape[..2], || {
        format!("positions {} do not match {}", fmt_ty(pos), fmt_ty(x))
    })?;
    Ok(vec![x.clone()])
}

fn norm_like(x: &TensorType, w: &TensorType) -> R {
    want(w.rank() == 1 && last(x) == Some(w.shape[0]), || {
        format!("norm weight {} does not fit {}", fmt_ty(w), fmt_ty(x))
    })?;
    want_dtype(x, DType::F32, "norm input")?;
    Ok(vec![x.clone()])
}

pub(crate) fn rms_norm(ins: &[&TensorType], _eps: &f32, _zero_centred: &bool) -> R {
    norm_like(ins[0], ins[1])
}

pub(crate) fn gated_rms_norm(ins: &[&TensorType], _eps: &f32) -> R {
    want(ins[0] == ins[1], || format!("gate {} differs from input {}", fmt_ty(ins[1]), fmt_ty(ins[0])))?;
    norm_like(ins[0], ins[2])
}

pub(crate) fn l2_norm(ins: &[&TensorType], _eps: &f32) -> R {
    want_dtype(ins[0], DType::F32, "l2_norm input")?;
    want(ins[0].rank() >= 1, || format!("l2_norm of a scalar {}", fmt_ty(ins[0])))?;
    Ok(vec![ins[0].clone()])
}

pub(crate) fn rope(ins: &[&TensorType], _theta: &f64, rotary_dim: &usize) -> R {
    let (x, pos) = (ins[0], ins[1]);
    want_rank(x, 4, "rope input")?;
    want_dtype(x, DType::F32, "rope input")?;
    want_dtype(pos, DType::I32, "positions")?;
    want(pos.shape[..] == x.shape[..2], || format!("positions {} do not match {}", fmt_ty(pos), fmt_ty(x)))?;
    let d = x.shape[3].as_const().unwrap_or(0);
    want(rotary_dim.div_ceil(2).saturating_mul(2) <= d, || {
        format!("rotary_dim {rotary_dim} invalid for head dim {d}")
    })?;
    Ok(vec![x.clone()])
}

pub(crate) fn kv_append(ins: &[&TensorType]) -> R {
    let (c, n) = (ins[0], ins[1]);
    want_rank(c, 4, "cache")?;
    want_rank(n, 4, "new entries")?;
    want_dtype(c, DType::F32, "cache")?;
    want_dtype(n, DType::F32, "new entries")?;
    want(c.shape[0] == n.shape[0] && c.shape[1] == n.shape[2] && c.shape[3] == n.shape[3], || {
        format!("cache {} cannot take entries {}", fmt_ty(c), fmt_ty(n))
    })?;
    Ok(vec![f32_of(vec![c.shape[0], c.shape[1], c.shape[2].plus(n.shape[1]), c.shape[3]])])
}

pub(crate) fn attention(ins: &[&TensorType], _scale: &f32) -> R {
    let (q, k, v, pos) = (ins[0], ins[1], ins[2], ins[3]);
    for (t, what) in [(q, "query"), (k, "keys"), (v, "values")] {
        want_dtype(t, DType::F32, what)?;
    }
    want_rank(q, 4, "query")?;
    want_rank(k, 4, "keys")?;
    want_rank(v, 4, "values")?;
    let (nq, nkv) = (q.shape[2].as_const().unwrap_or(0), k.shape[1].as_const().unwrap_or(0));
    want(nkv > 0 && nq % nkv == 0, || format!("{nq} query heads are not a multiple of {nkv} kv heads"))?;
    want(q.shape[0] == k.shape[0] && q.shape[3] == k.shape[3], || {
        format!("query {} and keys {} differ", fmt_ty(q), fmt_ty(k))
    })?;
    want(k.shape[..3] == v.shape[..3], || format!("keys {} and values {} differ", fmt_ty(k), fmt_ty(v)))?;
    want_dtype(pos, DType::I32, "positions")?;
    want(pos.shape[..] == q.shape[..2], || format!("positions {} do not match query {}", fmt_ty(pos), fmt_ty(q)))?;
    Ok(vec![f32_of(vec![q.shape[0], q.shape[1], q.shape[2], v.shape[3]])])
}

pub(crate) fn causal_conv1d(ins: &[&TensorType], kernel: &usize) -> R {
    let (x, w, st) = (ins[0], ins[1], ins[2]);
    want_rank(x, 3, "conv input")?;
    for (t, what) in [(x, "conv input"), (w, "conv weight"), (st, "conv state")] {
        want_dtype(t, DType::F32, what)?;
    }
    let c = x.shape[2];
    want(*kernel >= 1, || "conv kernel 0".into())?;
    want(w.shape == vec![c, Dim::c(*kernel)], || format!("conv weight {} must be [{c},{kernel}]", fmt_ty(w)))?;
    let sshape = vec![x.shape[0], c, Dim::c(kernel - 1)];
    want(st.shape == sshape, || format!("conv state {} must be {}", fmt_ty(st), fmt_ty(&f32_of(sshape.clone()))))?;
    Ok(vec![x.clone(), st.clone()])
}

pub(crate) fn gated_delta_rule(ins: &[&TensorType], _chunk: &Option<usize>) -> R {
    let (q, k, v, g, beta, st) = (ins[0], ins[1], ins[2], ins[3], ins[4], ins[5]);
    for (t, what) in [(q, "q"), (k, "k"), (v, "v")] {
        want_rank(t, 4, what)?;
    }
    for (t, what) in [(q, "q"), (k, "k"), (v, "v"), (g, "g"), (beta, "beta"), (st, "state")] {
        want_dtype(t, DType::F32, what)?;
    }
    want(q == k, || format!("q {} and k {} differ", fmt_ty(q), fmt_ty(k)))?;
    want(v.shape[..2] == q.shape[..2], || format!("v {} does not match q {}", fmt_ty(v), fmt_ty(q)))?;
    let (hk, hv) = (q.shape[2].as_const().unwrap_or(0), v.shape[2].as_const().unwrap_or(0));
    want(hk > 0 && hv % hk == 0, || format!("{hv} value heads are not a multiple of {hk} key heads"))?;
    want(g.shape == v.shape[..3] && beta.shape == v.shape[..3], || {
        format!("gates {} / {} must be {}", fmt_ty(g), fmt_ty(beta), fmt_ty(&f32_of(v.shape[..3].to_vec())))
    })?;
    let s = vec![v.shape[0], v.shape[2], q.shape[3], v.shape[3]];
    want(st.shape == s, || format!("state {} must be {}", fmt_ty(st), fmt_ty(&f32_of(s.clone()))))?;
    Ok(vec![v.clone(), st.clone()])
}

pub(crate) fn moe_route(ins: &[&TensorType], top_k: &usize, _renormalize: &bool) -> R {
    let l = ins[0];
    want_rank(l, 3, "router logits")?;
    want_dtype(l, DType::F32, "router logits")?;
    let e = l.shape[2].as_const().unwrap_or(0);
    want(*top_k >= 1 && *top_k <= e, || format!("top_k {top_k} not in 1..={e}"))?;
    let s: Shape = vec![l.shape[0], l.shape[1], Dim::c(*top_k)];
    Ok(vec![f32_of(s.clone()), TensorType::new(s, DType::I32)])
}

pub(crate) fn moe_experts(ins: &[&TensorType]) -> R {
    let (x, wt, ix, g, u, d) = (ins[0], ins[1], ins[2], ins[3], ins[4], ins[5]);
    want_rank(x, 3, "expert input")?;
    want_dtype(x, DType::F32, "expert input")?;
    want_dtype(wt, DType::F32, "routing weights")?;
    want_dtype(ix, DType::I32, "expert indices")?;
    want(wt.shape == ix.shape && wt.rank() == 3 && wt.shape[..2] == x.shape[..2], || {
        format!("routing {} / {} does not match {}", fmt_ty(wt), fmt_ty(ix), fmt_ty(x))
    })?;
    want_rank(g, 3, "expert gate")?;
    let (e, i, h) = (g.shape[0], g.shape[1], g.shape[2]);
    want(h == x.shape[2] && u.shape == g.shape && d.shape == vec![e, h, i], || {
        format!("expert weights {} {} {} do not fit {}", fmt_ty(g), fmt_ty(u), fmt_ty(d), fmt_ty(x))
    })?;
    Ok(vec![x.clone()])
}

/// `Softmax`, `Renormalize`: f32 rows in, same type out.
pub(crate) fn row_norm(ins: &[&TensorType]) -> R {
    want_dtype(ins[0], DType::F32, "row operand")?;
    want(ins[0].rank() >= 1, || format!("row op of a scalar {}", fmt_ty(ins[0])))?;
    Ok(vec![ins[0].clone()])
}

pub(crate) fn top_k(ins: &[&TensorType], k: &usize) -> R {
    let x = ins[0];
    want_dtype(x, DType::F32, "top_k input")?;
    want(x.rank() >= 1, || format!("top_k of a scalar {}", fmt_ty(x)))?;
    let e = last(x).and_then(|d| d.as_const()).unwrap_or(0);
    want(*k >= 1 && *k <= e, || format!("top_k {k} not in 1..={e}"))?;
    let mut s = x.shape.clone();
    *s.last_mut().expect("rank checked") = Dim::c(*k);
    Ok(vec![f32_of(s.clone()), TensorType::new(s, DType::I32)])
}

// ---- fused ops: each result type is that of the composition it stands for ------------------

pub(crate) fn add_rms_norm(ins: &[&TensorType], eps: &f32, zero_centred: &bool) -> R {
    want(ins[0] == ins[1], || format!("residual {} differs from {}", fmt_ty(ins[1]), fmt_ty(ins[0])))?;
    let sum = one(&Op::Add, &ins[..2])?;
    let y = one(&Op::RmsNorm { eps: *eps, zero_centred: *zero_centred }, &[&sum, ins[2]])?;
    Ok(vec![sum, y])
}

pub(crate) fn rms_norm_rope(ins: &[&TensorType], eps: &f32, zc: &bool, theta: &f64, rotary_dim: &usize) -> R {
    let y = one(&Op::RmsNorm { eps: *eps, zero_centred: *zc }, &ins[..2])?;
    Ok(vec![one(&Op::Rope { theta: *theta, rotary_dim: *rotary_dim }, &[&y, ins[2]])?])
}

pub(crate) fn matmul_swiglu(ins: &[&TensorType]) -> R {
    let w = ins[1];
    want_rank(w, 2, "swiglu weight")?;
    let n2 = w.shape[0].as_const().unwrap_or(1);
    want(n2.is_multiple_of(2) && n2 > 0, || format!("swiglu weight {} has an odd row count", fmt_ty(w)))?;
    let half = f32_of(vec![Dim::c(n2 / 2), w.shape[1]]);
    let y = one(&Op::MatMul, &[ins[0], &half])?;
    Ok(vec![one(&Op::Mul, &[&y, &y])?])
}

pub(crate) fn matmul_sigmoid_gate(ins: &[&TensorType]) -> R {
    let y = one(&Op::MatMul, &ins[..2])?;
    let g = one(&Op::Sigmoid, &[ins[2]])?;
    Ok(vec![one(&Op::Mul, &[&y, &g])?])
}

pub(crate) fn sigmoid_gate_matmul(ins: &[&TensorType]) -> R {
    let g = one(&Op::Sigmoid, &[ins[1]])?;
    let x = one(&Op::Mul, &[ins[0], &g])?;
    Ok(vec![one(&Op::MatMul, &[&x, ins[2]])?])
}

/// `GdnGates`: q/k of the delta rule, and gates `[B,S,Hv]` from a, b and the per-head weights.
pub(crate) fn gdn_gates(ins: &[&TensorType], _eps: &f32, _q_scale: &f32) -> R {
    let (q, k, a, b, dt, alog) = (ins[0], ins[1], ins[2], ins[3], ins[4], ins[5]);
    want_rank(q, 4, "q")?;
    want(q == k, || format!("q {} and k {} differ", fmt_ty(q), fmt_ty(k)))?;
    want(a == b && a.rank() == 3 && a.shape[..2] == q.shape[..2], || {
        format!("gate inputs {} / {} do not fit q {}", fmt_ty(a), fmt_ty(b), fmt_ty(q))
    })?;
    want(dt.rank() == 1 && alog == dt && last(a) == Some(dt.shape[0]), || {
        format!("gate weights {} / {} do not fit {}", fmt_ty(dt), fmt_ty(alog), fmt_ty(a))
    })?;
    for (t, what) in [(q, "q"), (a, "a"), (dt, "dt_bias")] {
        want_dtype(t, DType::F32, what)?;
    }
    Ok(vec![q.clone(), k.clone(), a.clone(), b.clone()])
}
