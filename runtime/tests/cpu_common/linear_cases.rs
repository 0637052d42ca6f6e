//! `linear` against `MatMul` (+ the epilogue's ops) in the interpreter.

use super::*;
use qgc_runtime::cpu::linear::{linear, Epilogue};
use qgc_runtime::cpu::WeightRef;

/// Which epilogue a case exercises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Epi {
    Plain,
    SwiGlu,
    GateElem,
    GateRow,
    Residual,
    Accumulate,
}

pub const ALL: [Epi; 6] = [Epi::Plain, Epi::SwiGlu, Epi::GateElem, Epi::GateRow, Epi::Residual, Epi::Accumulate];

/// One `linear` call of `[m, k] x [n, k]ᵀ` (f32 or bf16 weights) against the interpreter;
/// returns the max relative error after asserting it is ≤ `tol`.
pub fn linear_case(m: usize, k: usize, n: usize, use_bf16: bool, epi: Epi, seed: u64, tol: f32) -> f32 {
    let mut rng = Rng::new(seed);
    let rows = if epi == Epi::SwiGlu { 2 * n } else { n };
    let x = rvec(&mut rng, m * k, -1.0, 1.0);
    let (w32, wb) = bf16_pair(&rvec(&mut rng, rows * k, -1.0, 1.0));
    let w32 = if use_bf16 { w32 } else { rvec(&mut Rng::new(seed ^ 0x55), rows * k, -1.0, 1.0) };
    let aux = rvec(&mut rng, m * n, -3.0, 3.0);
    let y0 = rvec(&mut rng, m * n, -1.0, 1.0);
    let w = if use_bf16 { WeightRef::Bf16(&wb) } else { WeightRef::F32(&w32) };
    let mut y = y0.clone();
    let e = match epi {
        Epi::Plain => Epilogue::Plain,
        Epi::SwiGlu => Epilogue::SwiGlu,
        Epi::GateElem => Epilogue::SigmoidGate(&aux),
        Epi::GateRow => Epilogue::SigmoidGate(&aux[..m]),
        Epi::Residual => Epilogue::Residual(&aux),
        Epi::Accumulate => Epilogue::Accumulate(0.7),
    };
    linear(&x, w, m, k, n, e, &mut y);
    let want = reference(&x, &w32, m, k, n, epi, &aux, &y0);
    let what = format!("linear {epi:?} m={m} k={k} n={n} {}", if use_bf16 { "bf16" } else { "f32" });
    check(&what, &y, f(&want), tol)
}

#[allow(clippy::too_many_arguments)]
fn reference(x: &[f32], w: &[f32], m: usize, k: usize, n: usize, epi: Epi, aux: &[f32], y0: &[f32]) -> Tensor {
    let xt = t(&[m, k], x.to_vec());
    let mm =
        |rows: std::ops::Range<usize>| eval1(Op::MatMul, &[&xt, &t(&[n, k], w[rows.start * k..rows.end * k].to_vec())]);
    let acc = mm(0..n);
    match epi {
        Epi::Plain => acc,
        Epi::SwiGlu => eval1(Op::Mul, &[&eval1(Op::Silu, &[&acc]), &mm(n..2 * n)]),
        Epi::GateElem => eval1(Op::Mul, &[&acc, &eval1(Op::Sigmoid, &[&t(&[m, n], aux.to_vec())])]),
        Epi::GateRow => eval1(Op::Mul, &[&acc, &eval1(Op::Sigmoid, &[&t(&[m, 1], aux[..m].to_vec())])]),
        Epi::Residual => eval1(Op::Add, &[&acc, &t(&[m, n], aux.to_vec())]),
        Epi::Accumulate => eval1(Op::Add, &[&t(&[m, n], y0.to_vec()), &eval1(Op::Scale { by: 0.7 }, &[&acc])]),
    }
}
