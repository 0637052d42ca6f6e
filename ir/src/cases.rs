//! Example instances of every op, with operands a kernel can run on: the data of the
//! table-driven op test (`tests/op_table.rs`) and of the per-op backend table
//! (`runtime/tests/ops.rs`), which every backend runs (ggml's `test-backend-ops`).
//!
//! A case is one op on operands of symbolic type (in `B`, `S`, `P`) with odd sizes — 1, and
//! sizes that are not multiples of any vector width — evaluated at several bindings. Each
//! operand says how to fill it ([`Fill`]: random values in a range, positions, ids below a
//! bound) and whether it is a checkpoint weight (stored f32 or bf16 by a backend). [`OpCase::graph`]
//! is the one-node graph a backend compiles; [`OpCase::inputs`] draws its inputs; the reference
//! is `interp::eval_op` on the same values. Each case states its tolerance: the largest
//! `max |got − want| / max |want|` a backend may show.

use crate::graph::{Graph, Value};
use crate::interp::{Rng, Tensor};
use crate::op::Op;
use crate::types::{Bindings, DType, Dim, Shape, Sym, TensorType};

/// How an operand's values are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fill {
    /// Uniform f32 in `[lo, hi)`.
    Uniform(f32, f32),
    /// i32 `[B,S]` positions `P-pad_b .. P-pad_b+S`, with `pad_b = b % 2` left padding when the
    /// flag is set (padding slots get negative positions).
    Positions(bool),
    /// i32 uniform in `0..n`.
    Ids(usize),
    /// i32 rows of distinct values in `0..n` (expert choices).
    Distinct(usize),
}

/// One operand of a case.
#[derive(Debug, Clone, PartialEq)]
pub struct Operand {
    /// Its type (symbolic in `B`, `S`, `P`).
    pub ty: TensorType,
    /// How to fill it.
    pub fill: Fill,
    /// A checkpoint weight (a `Weight` node; f32 or bf16 as a backend stores it), otherwise a
    /// graph input.
    pub weight: bool,
}

/// One op on example operands.
#[derive(Debug, Clone, PartialEq)]
pub struct OpCase {
    /// What it is, for messages (`rms_norm d=50`).
    pub label: String,
    /// The op.
    pub op: Op,
    /// Its operands.
    pub operands: Vec<Operand>,
    /// The bindings to evaluate it at.
    pub binds: Vec<Bindings>,
    /// Largest relative error a backend may show (f32 results; i32 results must be exact).
    pub tol: f64,
}

impl OpCase {
    /// The one-node graph: operand `k` is input `x{k}` or weight `w{k}`, result `r` is output
    /// `y{r}`.
    pub fn graph(&self) -> Result<Graph, crate::IrError> {
        let mut g = Graph::new(self.label.replace(' ', "_"));
        let mut ins = Vec::with_capacity(self.operands.len());
        for (k, o) in self.operands.iter().enumerate() {
            let (name, op) = match o.weight {
                true => (format!("w{k}"), Op::Weight { name: format!("w{k}"), ty: o.ty.clone() }),
                false => (format!("x{k}"), Op::Input { name: format!("x{k}"), ty: o.ty.clone() }),
            };
            ins.push(g.add1(name, op, &[])?);
        }
        let outs = g.add("node", self.op.clone(), &ins)?;
        g.outputs = outs.iter().enumerate().map(|(r, v)| (format!("y{r}"), *v)).collect::<Vec<(String, Value)>>();
        crate::verify(&g)?;
        Ok(g)
    }

    /// Operand values at `bind`, deterministic in `seed`.
    pub fn inputs(&self, bind: &Bindings, seed: u64) -> Vec<Tensor> {
        let mut rng = Rng::new(seed ^ 0x0c_a5e5);
        self.operands.iter().map(|o| fill(o, bind, &mut rng)).collect()
    }
}

fn fill(o: &Operand, bind: &Bindings, rng: &mut Rng) -> Tensor {
    let shape = o.ty.eval(bind);
    let n: usize = shape.iter().product();
    match o.fill {
        Fill::Uniform(lo, hi) => rng.tensor(&shape, lo, hi),
        Fill::Positions(pad) => {
            let (b, s) = (shape[0], shape[1]);
            let pos = (0..b)
                .flat_map(|r| {
                    let first = bind.p as i64 - if pad { (r % 2) as i64 } else { 0 };
                    (0..s).map(move |t| (first + t as i64) as i32)
                })
                .collect();
            Tensor::i32(shape, pos)
        }
        Fill::Ids(v) => Tensor::i32(shape, (0..n).map(|_| rng.below(v) as i32).collect()),
        Fill::Distinct(e) => {
            let k = *shape.last().unwrap_or(&1);
            let mut out = Vec::with_capacity(n);
            for _ in 0..n / k.max(1) {
                let mut row: Vec<i32> = Vec::with_capacity(k);
                while row.len() < k {
                    let c = rng.below(e) as i32;
                    if !row.contains(&c) {
                        row.push(c);
                    }
                }
                out.extend(row);
            }
            Tensor::i32(shape, out)
        }
    }
}

// ---- building blocks ------------------------------------------------------------------------

fn b() -> Dim {
    Dim::sym(Sym::B)
}
fn s() -> Dim {
    Dim::sym(Sym::S)
}
fn p() -> Dim {
    Dim::sym(Sym::P)
}
fn c(n: usize) -> Dim {
    Dim::c(n)
}

/// An activation `[B,S,dims..]` uniform in ±2.
fn act(dims: &[usize]) -> Operand {
    act_in(dims, -2.0, 2.0)
}
fn act_in(dims: &[usize], lo: f32, hi: f32) -> Operand {
    let mut shape = vec![b(), s()];
    shape.extend(dims.iter().map(|&d| c(d)));
    Operand { ty: TensorType::f32(shape), fill: Fill::Uniform(lo, hi), weight: false }
}
/// Any f32 input of `shape`.
fn input(shape: Shape, lo: f32, hi: f32) -> Operand {
    Operand { ty: TensorType::f32(shape), fill: Fill::Uniform(lo, hi), weight: false }
}
/// A weight of constant `dims`, uniform in `[lo, hi)`.
fn weight(dims: &[usize], lo: f32, hi: f32) -> Operand {
    Operand { ty: TensorType::f32(dims.iter().map(|&d| c(d)).collect()), fill: Fill::Uniform(lo, hi), weight: true }
}
/// A matrix weight `[n, k]` scaled for unit-variance outputs.
fn matrix(n: usize, k: usize) -> Operand {
    let a = (3.0 / k as f32).sqrt();
    weight(&[n, k], -a, a)
}
fn ids(shape: Shape, fill: Fill) -> Operand {
    Operand { ty: TensorType::new(shape, DType::I32), fill, weight: false }
}
fn positions(pad: bool) -> Operand {
    ids(vec![b(), s()], Fill::Positions(pad))
}

/// Prefill-like and decode-like bindings: (B, S, P) = (1,1,0), (2,3,0), (1,7,0).
fn binds() -> Vec<Bindings> {
    vec![Bindings { b: 1, s: 1, p: 0 }, Bindings { b: 2, s: 3, p: 0 }, Bindings { b: 1, s: 7, p: 0 }]
}
/// With state already held: (1,1,5), (2,3,2), (1,9,0).
fn binds_p() -> Vec<Bindings> {
    vec![Bindings { b: 1, s: 1, p: 5 }, Bindings { b: 2, s: 3, p: 2 }, Bindings { b: 1, s: 9, p: 0 }]
}

fn case(label: String, op: Op, operands: Vec<Operand>, tol: f64) -> OpCase {
    OpCase { label, op, operands, binds: binds(), tol }
}

// ---- the cases ------------------------------------------------------------------------------

/// Tolerances (relative to the largest |value| of the reference).
const EXACT: f64 = 0.0;
const POINTWISE: f64 = 1e-6;
const REDUCE: f64 = 1e-5;
const RECURRENT: f64 = 1e-4;

/// Every case of every op but the sources (which are the operands of all the others).
pub fn cases() -> Vec<OpCase> {
    let mut v = Vec::new();
    movement(&mut v);
    linear(&mut v);
    pointwise(&mut v);
    norms(&mut v);
    attention(&mut v);
    gdn(&mut v);
    moe(&mut v);
    fused(&mut v);
    v
}

fn movement(v: &mut Vec<OpCase>) {
    for (vocab, h) in [(5, 1), (33, 50)] {
        let ops = vec![weight(&[vocab, h], -1.0, 1.0), ids(vec![b(), s()], Fill::Ids(vocab))];
        v.push(case(format!("embed v={vocab} h={h}"), Op::Embed, ops, EXACT));
    }
    for (n, d) in [(1, 3), (3, 17)] {
        let op = Op::Reshape { shape: vec![b(), s(), c(n), c(d)] };
        v.push(case(format!("reshape {n}x{d}"), op, vec![act(&[n * d])], EXACT));
    }
    for (w, start, len) in [(1, 0, 1), (50, 7, 29), (17, 16, 1)] {
        let op = Op::Slice { axis: 2, start, len };
        v.push(case(format!("slice {start}+{len} of {w}"), op, vec![act(&[w])], EXACT));
    }
    v.push(case("slice axis 3".into(), Op::Slice { axis: 3, start: 2, len: 3 }, vec![act(&[3, 7])], EXACT));
    v.push(case("concat 3".into(), Op::Concat { axis: 2 }, vec![act(&[1]), act(&[17]), act(&[5])], EXACT));
    v.push(case("concat inner".into(), Op::Concat { axis: 3 }, vec![act(&[2, 3]), act(&[2, 1])], EXACT));
}

fn linear(v: &mut Vec<OpCase>) {
    for (k, n) in [(1, 1), (3, 50), (50, 129), (133, 17)] {
        v.push(case(format!("matmul k={k} n={n}"), Op::MatMul, vec![act(&[k]), matrix(n, k)], REDUCE));
    }
}

fn pointwise(v: &mut Vec<OpCase>) {
    let unary = [Op::Silu, Op::Sigmoid, Op::Softplus, Op::Exp, Op::Neg, Op::Scale { by: 0.37 }];
    for op in unary {
        for d in [1, 37] {
            let x = if matches!(op, Op::Softplus) { act_in(&[d], -25.0, 25.0) } else { act_in(&[d], -8.0, 8.0) };
            v.push(case(format!("{} d={d}", op.name()), op.clone(), vec![x], POINTWISE));
        }
    }
    for op in [Op::Add, Op::Mul] {
        let name = op.name();
        v.push(case(format!("{name} full"), op.clone(), vec![act(&[3, 17]), act(&[3, 17])], POINTWISE));
        v.push(case(format!("{name} suffix"), op.clone(), vec![act(&[3, 17]), weight(&[17], -1.0, 1.0)], POINTWISE));
        let suffix2 = input(vec![c(3), c(17)], -1.0, 1.0);
        v.push(case(format!("{name} suffix2"), op.clone(), vec![act(&[3, 17]), suffix2], POINTWISE));
    }
    v.push(case("mul row".into(), Op::Mul, vec![act(&[3, 17]), act(&[3, 1])], POINTWISE));
    for d in [1, 19] {
        let mut c0 = case(format!("mask_padding d={d}"), Op::MaskPadding, vec![act(&[d]), positions(true)], EXACT);
        c0.binds = binds_p();
        v.push(c0);
    }
}

fn norms(v: &mut Vec<OpCase>) {
    for (d, zc) in [(1, false), (50, true), (129, false)] {
        let op = Op::RmsNorm { eps: 1e-6, zero_centred: zc };
        v.push(case(format!("rms_norm d={d} zc={zc}"), op, vec![act(&[d]), weight(&[d], -0.5, 1.5)], REDUCE));
    }
    for d in [1, 33] {
        let op = Op::GatedRmsNorm { eps: 1e-6 };
        let ops = vec![act(&[3, d]), act_in(&[3, d], -4.0, 4.0), weight(&[d], 0.5, 1.5)];
        v.push(case(format!("gated_rms_norm d={d}"), op, ops, REDUCE));
    }
    for d in [1, 67] {
        v.push(case(format!("l2_norm d={d}"), Op::L2Norm { eps: 1e-6 }, vec![act(&[2, d])], REDUCE));
    }
    for e in [1, 9, 64] {
        v.push(case(format!("softmax e={e}"), Op::Softmax, vec![act_in(&[e], -6.0, 6.0)], REDUCE));
        v.push(case(format!("renormalize k={e}"), Op::Renormalize, vec![act_in(&[e], 0.05, 1.0)], REDUCE));
    }
    for (e, k) in [(1, 1), (9, 4), (64, 10)] {
        v.push(case(format!("top_k e={e} k={k}"), Op::TopK { k }, vec![act_in(&[e], 0.0, 1.0)], EXACT));
    }
}

fn attention(v: &mut Vec<OpCase>) {
    for (n, d, rot) in [(1, 2, 2), (3, 16, 5), (2, 33, 8)] {
        let op = Op::Rope { theta: 1e4, rotary_dim: rot };
        let mut c0 = case(format!("rope n={n} d={d} rot={rot}"), op, vec![act(&[n, d]), positions(true)], REDUCE);
        c0.binds = binds_p();
        v.push(c0);
    }
    for (n, d) in [(1, 1), (2, 17)] {
        let cache = input(vec![b(), c(n), p(), c(d)], -1.0, 1.0);
        let mut c0 = case(format!("kv_append n={n} d={d}"), Op::KvAppend, vec![cache, act(&[n, d])], EXACT);
        c0.binds = binds_p();
        v.push(c0);
    }
    for (nq, nkv, d, dv, pad) in [(1, 1, 1, 1, false), (4, 2, 17, 9, true), (3, 3, 32, 32, false)] {
        let kv = |dd: usize| input(vec![b(), c(nkv), p().plus(s()), c(dd)], -1.0, 1.0);
        let ops = vec![act(&[nq, d]), kv(d), kv(dv), positions(pad)];
        let op = Op::Attention { scale: 1.0 / (d as f32).sqrt() };
        let mut c0 = case(format!("attention nq={nq} nkv={nkv} d={d} dv={dv} pad={pad}"), op, ops, REDUCE);
        c0.binds = binds_p();
        v.push(c0);
    }
}

fn gdn(v: &mut Vec<OpCase>) {
    for (ch, k) in [(1, 2), (37, 4)] {
        let state = input(vec![b(), c(ch), c(k - 1)], -1.0, 1.0);
        let a = (1.0 / k as f32).sqrt();
        let ops = vec![act(&[ch]), weight(&[ch, k], -a, a), state];
        v.push(case(format!("causal_conv1d c={ch} k={k}"), Op::CausalConv1d { kernel: k }, ops, REDUCE));
    }
    for (hk, hv, dk, dv, chunk) in
        [(1, 1, 1, 1, None), (2, 4, 8, 5, None), (2, 2, 16, 16, Some(4)), (1, 3, 7, 9, Some(3))]
    {
        let qk = || act_in(&[hk, dk], -0.3, 0.3);
        let state = input(vec![b(), c(hv), c(dk), c(dv)], -0.5, 0.5);
        let ops = vec![qk(), qk(), act(&[hv, dv]), act_in(&[hv], -1.0, -0.01), act_in(&[hv], 0.0, 1.0), state];
        let label = format!("gated_delta_rule hk={hk} hv={hv} dk={dk} dv={dv} chunk={chunk:?}");
        let mut c0 = case(label, Op::GatedDeltaRule { chunk }, ops, RECURRENT);
        c0.binds = binds_p();
        v.push(c0);
    }
    // Prefill lengths (backends switch to a chunked form from ~16 tokens): one past a chunk of
    // 16, whole chunks, a ragged last chunk; odd dims, GQA, batch 2, strong and mild decay.
    let long = vec![Bindings { b: 2, s: 17, p: 0 }, Bindings { b: 1, s: 64, p: 3 }, Bindings { b: 1, s: 70, p: 0 }];
    for (hk, hv, dk, dv, decay) in [(1, 3, 7, 9, -1.0), (2, 4, 17, 67, -6.0)] {
        let qk = || act_in(&[hk, dk], -0.3, 0.3);
        let state = input(vec![b(), c(hv), c(dk), c(dv)], -0.5, 0.5);
        let ops = vec![qk(), qk(), act(&[hv, dv]), act_in(&[hv], decay, -0.01), act_in(&[hv], 0.0, 1.0), state];
        let label = format!("gated_delta_rule long hk={hk} hv={hv} dk={dk} dv={dv} decay={decay}");
        let mut c0 = case(label, Op::GatedDeltaRule { chunk: None }, ops, RECURRENT);
        c0.binds = long.clone();
        v.push(c0);
    }
}

fn moe(v: &mut Vec<OpCase>) {
    for (e, k, renorm) in [(1, 1, true), (9, 3, false), (64, 10, true)] {
        let op = Op::MoeRoute { top_k: k, renormalize: renorm };
        v.push(case(format!("moe_route e={e} k={k} renorm={renorm}"), op, vec![act(&[e])], REDUCE));
    }
    for (e, k, h, i) in [(1, 1, 3, 1), (7, 2, 17, 5), (9, 3, 33, 19)] {
        let a = |fan: usize| (3.0 / fan as f32).sqrt();
        let ops = vec![
            act(&[h]),
            act_in(&[k], 0.05, 1.0),
            ids(vec![b(), s(), c(k)], Fill::Distinct(e)),
            weight(&[e, i, h], -a(h), a(h)),
            weight(&[e, i, h], -a(h), a(h)),
            weight(&[e, h, i], -a(i), a(i)),
        ];
        v.push(case(format!("moe_experts e={e} k={k} h={h} i={i}"), Op::MoeExperts, ops, REDUCE));
    }
}

fn fused(v: &mut Vec<OpCase>) {
    for (d, zc) in [(1, true), (50, false)] {
        let op = Op::AddRmsNorm { eps: 1e-6, zero_centred: zc };
        let ops = vec![act(&[d]), act(&[d]), weight(&[d], -0.5, 1.5)];
        v.push(case(format!("add_rms_norm d={d} zc={zc}"), op, ops, REDUCE));
    }
    for (n, d, rot) in [(1, 4, 4), (3, 17, 6)] {
        let op = Op::RmsNormRope { eps: 1e-6, zero_centred: true, theta: 1e4, rotary_dim: rot };
        let ops = vec![act(&[n, d]), weight(&[d], -0.3, 0.3), positions(false)];
        let mut c0 = case(format!("rms_norm_rope n={n} d={d} rot={rot}"), op, ops, REDUCE);
        c0.binds = binds_p();
        v.push(c0);
    }
    for (k, n) in [(1, 1), (50, 17)] {
        v.push(case(format!("matmul_swiglu k={k} n={n}"), Op::MatMulSwiGlu, vec![act(&[k]), matrix(2 * n, k)], REDUCE));
    }
    for (k, n) in [(3, 17), (50, 1)] {
        let full = vec![act(&[k]), matrix(n, k), act(&[n])];
        v.push(case(format!("matmul_sigmoid_gate full k={k} n={n}"), Op::MatMulSigmoidGate, full, REDUCE));
        let row = vec![act(&[k]), matrix(n, k), act(&[1])];
        v.push(case(format!("matmul_sigmoid_gate row k={k} n={n}"), Op::MatMulSigmoidGate, row, REDUCE));
        let full = vec![act(&[k]), act(&[k]), matrix(n, k)];
        v.push(case(format!("sigmoid_gate_matmul full k={k} n={n}"), Op::SigmoidGateMatMul, full, REDUCE));
        let row = vec![act(&[k]), act(&[1]), matrix(n, k)];
        v.push(case(format!("sigmoid_gate_matmul row k={k} n={n}"), Op::SigmoidGateMatMul, row, REDUCE));
    }
    for (hk, hv, dk) in [(1, 1, 1), (2, 6, 17)] {
        let op = Op::GdnGates { eps: 1e-6, q_scale: 1.0 / (dk as f32).sqrt() };
        let ops = vec![
            act(&[hk, dk]),
            act(&[hk, dk]),
            act(&[hv]),
            act(&[hv]),
            weight(&[hv], -1.0, 1.0),
            weight(&[hv], -1.0, 1.5),
        ];
        v.push(case(format!("gdn_gates hk={hk} hv={hv} dk={dk}"), op, ops, REDUCE));
    }
}
