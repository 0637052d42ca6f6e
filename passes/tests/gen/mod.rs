//! The random-graph generator of the differential property tests (after Cranelift's
//! `cranelift-fuzzgen`), shared by `passes/tests/differential.rs` (pass pipeline vs interpreter)
//! and, through `runtime/tests/differential/mod.rs`, `runtime/tests/compiled_differential.rs`
//! (passes + Cranelift host code + CPU kernels vs interpreter) and
//! `runtime/tests/cuda_differential.rs` (the CUDA backend on the PTX interpreter vs
//! interpreter); each includes it with `#[path]`.
//!
//! A graph is built from a list of steps `(kind, a, b, c)`, each choice read modulo what is
//! available: elementwise, norm, matmul, slice and concat ops over `[B,S,d]` values, with the
//! patterns the fusion rules look for (add + norm, SwiGLU, sigmoid-gated matmul) mixed in.
#![allow(dead_code)]

use proptest::prelude::*;
use qgc_ir::interp::{MapWeights, Rng};
use qgc_ir::types::const_shape;
use qgc_ir::{Dim, Graph, Op, Sym, TensorType, Value};

/// Step kinds: `0..STEP_KINDS`.
pub const STEP_KINDS: u8 = 14;

/// One generator step: `(kind, a, b, c)`.
pub type Step = (u8, usize, usize, u8);

/// Step lists of length in `len`.
pub fn steps(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec((0u8..STEP_KINDS, any::<usize>(), any::<usize>(), any::<u8>()), len)
}

/// Builds a graph from `steps` (`(kind, a, b, c)` choices, read modulo what is available).
pub struct Gen {
    pub g: Graph,
    pub w: MapWeights,
    pub rng: Rng,
    /// Values so far with their last dim (all are `[B,S,d]`).
    pub pool: Vec<(Value, usize)>,
}

impl Gen {
    pub fn new() -> Gen {
        let mut gen = Gen { g: Graph::new("random"), w: MapWeights::new(), rng: Rng::new(11), pool: vec![] };
        for (i, d) in [8, 8, 4].into_iter().enumerate() {
            let ty = TensorType::f32(vec![Dim::sym(Sym::B), Dim::sym(Sym::S), Dim::c(d)]);
            let name = format!("x{i}");
            let v = gen.g.add1(name.clone(), Op::Input { name, ty }, &[]).unwrap();
            gen.pool.push((v, d));
        }
        gen
    }

    fn weight(&mut self, dims: &[usize]) -> Value {
        let name = format!("w{}", self.g.nodes.len());
        self.w.insert(name.clone(), self.rng.tensor(dims, -1.0, 1.0));
        self.g.add1(name.clone(), Op::Weight { name, ty: TensorType::f32(const_shape(dims)) }, &[]).unwrap()
    }

    fn op(&mut self, op: Op, ins: &[Value]) -> (Value, usize) {
        let v = self.g.add1(format!("n{}", self.g.nodes.len()), op, ins).unwrap();
        let d = self.g.ty(v).shape[2].as_const().unwrap();
        (v, d)
    }

    /// A pool value with last dim `d`, chosen by `k`.
    fn same(&self, d: usize, k: usize) -> Option<Value> {
        let c: Vec<Value> = self.pool.iter().filter(|p| p.1 == d).map(|p| p.0).collect();
        (!c.is_empty()).then(|| c[k % c.len()])
    }

    fn matmul(&mut self, x: (Value, usize), n: usize) -> (Value, usize) {
        let w = self.weight(&[n, x.1]);
        self.op(Op::MatMul, &[x.0, w])
    }

    pub fn step(&mut self, (kind, a, b, c): Step) {
        let x = self.pool[a % self.pool.len()];
        let unary = [Op::Silu, Op::Sigmoid, Op::Neg, Op::Softplus, Op::Scale { by: 0.5 }];
        let made = match kind {
            0..=4 => vec![self.op(unary[kind as usize].clone(), &[x.0])],
            5 | 6 => {
                let y = self.same(x.1, b).expect("x itself qualifies");
                vec![self.op(if kind == 5 { Op::Add } else { Op::Mul }, &[x.0, y])]
            }
            7 | 11 => {
                let w = self.weight(&[x.1]);
                let (s, y) =
                    if kind == 11 { (self.op(Op::Add, &[x.0, self.same(x.1, b).unwrap()]), true) } else { (x, false) };
                let n = self.op(Op::RmsNorm { eps: 1e-6, zero_centred: c % 2 == 0 }, &[s.0, w]);
                if y {
                    vec![s, n]
                } else {
                    vec![n]
                }
            }
            8 => vec![self.matmul(x, [4, 8, 1][c as usize % 3])],
            9 if x.1 >= 2 => {
                let start = b % (x.1 - 1);
                vec![self.op(Op::Slice { axis: 2, start, len: 1 + c as usize % (x.1 - start) }, &[x.0])]
            }
            10 => {
                let y = self.pool[b % self.pool.len()];
                if x.1 + y.1 > 32 {
                    vec![]
                } else {
                    vec![self.op(Op::Concat { axis: 2 }, &[x.0, y.0])]
                }
            }
            12 => {
                let n = [4, 8][c as usize % 2];
                let (g, u) = (self.matmul(x, n), self.matmul(x, n));
                let g = self.op(Op::Silu, &[g.0]);
                vec![self.op(Op::Mul, &[g.0, u.0])]
            }
            _ => {
                let m = self.matmul(x, [4, 8][c as usize % 2]);
                match self.same(m.1, b) {
                    Some(g) => {
                        let s = self.op(Op::Sigmoid, &[g]);
                        vec![self.op(Op::Mul, &[m.0, s.0])]
                    }
                    None => vec![m],
                }
            }
        };
        self.pool.extend(made);
    }
}

/// The graph of `steps`; its outputs are the last two values made and the one `pick` chooses.
pub fn build(steps: &[Step], pick: usize) -> Gen {
    let mut gen = Gen::new();
    steps.iter().for_each(|s| gen.step(*s));
    let n = gen.pool.len();
    let outs = [gen.pool[n - 1].0, gen.pool[n - 2].0, gen.pool[pick % n].0];
    gen.g.outputs = outs.iter().enumerate().map(|(i, v)| (format!("o{i}"), *v)).collect();
    gen
}
