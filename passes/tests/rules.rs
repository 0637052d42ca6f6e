//! Each rule on a small graph where it applies: the rule fires, every phase saturates, and the
//! optimised graph computes the same values. (The language's op <-> node round trip of every op
//! is in `tests/op_table.rs` at the root.)

#[path = "common.rs"]
mod common;

use qgc_ir::interp::{MapWeights, Rng};
use qgc_ir::types::const_shape;
use qgc_ir::{Bindings, DType, Dim, Graph, Op, Shape, Sym, TensorType, Value};
use qgc_passes::{optimise, Options};

/// A graph under construction with its random weights.
struct B {
    g: Graph,
    w: MapWeights,
    rng: Rng,
}

impl B {
    fn new() -> B {
        B { g: Graph::new("t"), w: MapWeights::new(), rng: Rng::new(3) }
    }
    /// Input `name` f32 `[B,S,dims...]`.
    fn input(&mut self, name: &str, dims: &[usize]) -> Value {
        let mut shape: Shape = vec![Dim::sym(Sym::B), Dim::sym(Sym::S)];
        shape.extend(dims.iter().map(|&d| Dim::c(d)));
        self.g.add1(name, Op::Input { name: name.into(), ty: TensorType::f32(shape) }, &[]).unwrap()
    }
    fn positions(&mut self) -> Value {
        let ty = TensorType::new(vec![Dim::sym(Sym::B), Dim::sym(Sym::S)], DType::I32);
        self.g.add1("positions", Op::Input { name: "positions".into(), ty }, &[]).unwrap()
    }
    fn weight(&mut self, name: &str, dims: &[usize]) -> Value {
        self.w.insert(name, self.rng.tensor(dims, -1.0, 1.0));
        self.g.add1(name, Op::Weight { name: name.into(), ty: TensorType::f32(const_shape(dims)) }, &[]).unwrap()
    }
    fn op(&mut self, op: Op, ins: &[Value]) -> Value {
        let name = format!("n{}", self.g.nodes.len());
        self.g.add1(name, op, ins).unwrap()
    }
    fn ops(&mut self, op: Op, ins: &[Value]) -> Vec<Value> {
        let name = format!("n{}", self.g.nodes.len());
        self.g.add(name, op, ins).unwrap()
    }
    /// Optimises with `outs` as outputs; asserts `rule` fired and values are unchanged.
    fn check(mut self, rule: &str, outs: &[Value]) {
        self.g.outputs = outs.iter().enumerate().map(|(i, v)| (format!("o{i}"), *v)).collect();
        let (opt, report) = optimise(&self.g, &Options::default(), &mut |_, _| {}).unwrap();
        assert!(report.applied(rule) > 0, "{rule} did not fire:\n{report}\n{}", qgc_ir::print(&self.g));
        assert!(report.saturated(), "{report}");
        let bind = Bindings { b: 2, s: 3, p: 0 };
        let ins = common::inputs(&self.g, &bind, 8, 5);
        let e = common::max_rel(&common::run(&opt, &bind, &ins, &self.w), &common::run(&self.g, &bind, &ins, &self.w));
        assert!(e <= 1e-5, "{rule}: rel {e:.3e}\n{}", qgc_ir::print(&opt));
    }
}

fn shape4(a: usize, b: usize) -> Shape {
    vec![Dim::sym(Sym::B), Dim::sym(Sym::S), Dim::c(a), Dim::c(b)]
}

#[test]
fn movement_rules() {
    let mut b = B::new();
    let x = b.input("x", &[8]);
    let s = b.op(Op::Slice { axis: 2, start: 2, len: 6 }, &[x]);
    let y = b.op(Op::Slice { axis: 2, start: 1, len: 3 }, &[s]);
    b.check("slice-of-slice", &[y]);

    let mut b = B::new();
    let x = b.input("x", &[8]);
    let y = b.op(Op::Slice { axis: 2, start: 0, len: 8 }, &[x]);
    let y = b.op(Op::Silu, &[y]);
    b.check("slice-whole", &[y]);

    let mut b = B::new();
    let x = b.input("x", &[8]);
    let r = b.op(Op::Reshape { shape: shape4(2, 4) }, &[x]);
    let r = b.op(Op::Reshape { shape: shape4(4, 2) }, &[r]);
    b.check("reshape-of-reshape", &[r]);

    let mut b = B::new();
    let x = b.input("x", &[8]);
    let r = b.op(Op::Reshape { shape: vec![Dim::sym(Sym::B), Dim::sym(Sym::S), Dim::c(8)] }, &[x]);
    let r = b.op(Op::Sigmoid, &[r]);
    b.check("reshape-identity", &[r]);

    let mut b = B::new();
    let x = b.input("x", &[8]);
    let n = b.op(Op::Neg, &[x]);
    let n = b.op(Op::Neg, &[n]);
    let y = b.op(Op::Exp, &[n]);
    b.check("neg-neg", &[y]);
}

#[test]
fn norm_rules() {
    let mut b = B::new();
    let (x, r) = (b.input("x", &[8]), b.input("r", &[8]));
    let w = b.weight("w", &[8]);
    let s = b.op(Op::Add, &[x, r]);
    let y = b.op(Op::RmsNorm { eps: 1e-6, zero_centred: true }, &[s, w]);
    b.check("fuse-residual-rmsnorm", &[s, y]);

    let mut b = B::new();
    let (x, pos) = (b.input("x", &[2, 8]), b.positions());
    let w = b.weight("w", &[8]);
    let y = b.op(Op::RmsNorm { eps: 1e-6, zero_centred: false }, &[x, w]);
    let y = b.op(Op::Rope { theta: 1e4, rotary_dim: 4 }, &[y, pos]);
    b.check("fuse-qk-norm-rope", &[y]);
}

#[test]
fn projection_and_epilogue_rules() {
    let mut b = B::new();
    let x = b.input("x", &[8]);
    let outs: Vec<Value> = [4, 6, 2]
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let w = b.weight(&format!("w{i}"), &[n, 8]);
            b.op(Op::MatMul, &[x, w])
        })
        .collect();
    b.check("merge-projections", &outs);

    for (rule, swapped) in [("fuse-swiglu", false), ("fuse-swiglu-swapped", true)] {
        let mut b = B::new();
        let x = b.input("x", &[8]);
        let (wg, wu) = (b.weight("wg", &[6, 8]), b.weight("wu", &[6, 8]));
        let (g, u) = (b.op(Op::MatMul, &[x, wg]), b.op(Op::MatMul, &[x, wu]));
        let g = b.op(Op::Silu, &[g]);
        let y = if swapped { b.op(Op::Mul, &[u, g]) } else { b.op(Op::Mul, &[g, u]) };
        b.check(rule, &[y]);
    }
    for (rule, swapped) in [("matmul-sigmoid-gate", false), ("matmul-sigmoid-gate-swapped", true)] {
        let mut b = B::new();
        let (x, g) = (b.input("x", &[8]), b.input("g", &[4]));
        let w = b.weight("w", &[4, 8]);
        let m = b.op(Op::MatMul, &[x, w]);
        let s = b.op(Op::Sigmoid, &[g]);
        let y = if swapped { b.op(Op::Mul, &[s, m]) } else { b.op(Op::Mul, &[m, s]) };
        b.check(rule, &[y]);
    }
    for (rule, swapped) in [("sigmoid-gate-matmul", false), ("sigmoid-gate-matmul-swapped", true)] {
        let mut b = B::new();
        let (x, g) = (b.input("x", &[8]), b.input("g", &[8]));
        let w = b.weight("w", &[4, 8]);
        let s = b.op(Op::Sigmoid, &[g]);
        let m = if swapped { b.op(Op::Mul, &[s, x]) } else { b.op(Op::Mul, &[x, s]) };
        let y = b.op(Op::MatMul, &[m, w]);
        b.check(rule, &[y]);
    }
}

#[test]
fn router_rules() {
    for (rule, renorm) in [("fuse-router", true), ("fuse-router-plain", false)] {
        let mut b = B::new();
        let l = b.input("logits", &[8]);
        let p = b.op(Op::Softmax, &[l]);
        let t = b.ops(Op::TopK { k: 3 }, &[p]);
        let w = if renorm { b.op(Op::Renormalize, &[t[0]]) } else { t[0] };
        let x = b.input("x", &[4]);
        let (g, u, d) = (b.weight("g", &[8, 5, 4]), b.weight("u", &[8, 5, 4]), b.weight("d", &[8, 4, 5]));
        let y = b.op(Op::MoeExperts, &[x, w, t[1], g, u, d]);
        b.check(rule, &[y, w]);
    }
}

#[test]
fn gdn_gates_rule() {
    let mut b = B::new();
    let (q, k, v) = (b.input("q", &[2, 4]), b.input("k", &[2, 4]), b.input("v", &[4, 3]));
    let (a, bb) = (b.input("a", &[4]), b.input("b", &[4]));
    let (dt, alog) = (b.weight("dt", &[4]), b.weight("alog", &[4]));
    let st_ty = TensorType::f32(vec![Dim::sym(Sym::B), Dim::c(4), Dim::c(4), Dim::c(3)]);
    let st = b.g.add1("ssm", Op::Input { name: "ssm".into(), ty: st_ty }, &[]).unwrap();
    let qn = b.op(Op::L2Norm { eps: 1e-6 }, &[q]);
    let qs = b.op(Op::Scale { by: 0.5 }, &[qn]);
    let kn = b.op(Op::L2Norm { eps: 1e-6 }, &[k]);
    let adt = b.op(Op::Add, &[a, dt]);
    let sp = b.op(Op::Softplus, &[adt]);
    let ea = b.op(Op::Exp, &[alog]);
    let na = b.op(Op::Neg, &[ea]);
    let g = b.op(Op::Mul, &[sp, na]);
    let beta = b.op(Op::Sigmoid, &[bb]);
    let o = b.ops(Op::GatedDeltaRule { chunk: None }, &[qs, kn, v, g, beta, st]);
    b.check("fuse-gdn-gates", &[o[0], o[1]]);
}
