//! Shared helpers for the CPU kernel tests: the interpreter as oracle, error measures, bf16
//! weights, thread pools.
#![allow(dead_code)]

use half::bf16;
pub use qgc_ir::interp::{eval_op, Rng, Tensor};
use qgc_ir::Bindings;
pub use qgc_ir::Op;

/// `eval_op` on concrete tensors; panics with the op's message on failure.
pub fn eval(op: Op, ins: &[&Tensor]) -> Vec<Tensor> {
    eval_op(&op, ins, &Bindings::default()).unwrap_or_else(|e| panic!("{op:?}: {e}"))
}

/// The single result of `op`.
pub fn eval1(op: Op, ins: &[&Tensor]) -> Tensor {
    eval(op, ins).remove(0)
}

/// The f32 data of a tensor.
pub fn f(t: &Tensor) -> &[f32] {
    t.as_f32().expect("f32 tensor")
}

/// `max |got − want| / max |want|` (absolute when `want` is all zero).
pub fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if got.iter().chain(want).any(|v| !v.is_finite()) {
        return f32::NAN;
    }
    let diff = got.iter().zip(want).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    if scale > 0.0 {
        diff / scale
    } else {
        diff
    }
}

/// Asserts `rel_err(got, want) <= tol` (NaN fails), printing the error (run tests with
/// `--nocapture` to see every measurement).
pub fn check(what: &str, got: &[f32], want: &[f32], tol: f32) -> f32 {
    let e = rel_err(got, want);
    eprintln!("max rel err {e:.2e} (tol {tol:.0e}): {what}");
    assert!(e <= tol, "{what}: max relative error {e:e} exceeds {tol:e}");
    e
}

/// Random f32 values uniform in `[lo, hi)`.
pub fn rvec(rng: &mut Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    rng.vec(n, lo, hi)
}

/// f32 values rounded to bf16 (what a bf16 checkpoint holds), and their bf16 bits.
pub fn bf16_pair(v: &[f32]) -> (Vec<f32>, Vec<bf16>) {
    let b: Vec<bf16> = v.iter().map(|&x| bf16::from_f32(x)).collect();
    (b.iter().map(|x| x.to_f32()).collect(), b)
}

/// Runs `f` inside rayon pools of 1 and 3 threads.
pub fn in_pools(mut f: impl FnMut(usize) + Send) {
    for threads in [1usize, 3] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
        pool.install(|| f(threads));
    }
}

/// An f32 tensor.
pub fn t(shape: &[usize], data: Vec<f32>) -> Tensor {
    Tensor::f32(shape.to_vec(), data)
}

/// An i32 tensor.
pub fn ti(shape: &[usize], data: Vec<i32>) -> Tensor {
    Tensor::i32(shape.to_vec(), data)
}

pub mod attn_cases;
pub mod gdn_cases;
pub mod linear_cases;
pub mod moe_cases;
pub mod norm_cases;

/// `n` pseudo-random token ids below `vocab` (xorshift from `seed`).
pub fn tokens(seed: u64, n: usize, vocab: usize) -> Vec<i32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % vocab as u64) as i32
        })
        .collect()
}
