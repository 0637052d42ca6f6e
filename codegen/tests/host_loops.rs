//! The elementwise loop compiler against `interp::eval_op` compositions, at the odd sizes
//! (1, 3, 50, 783, 4096), with trailing-suffix and per-row broadcasting, split ranges, and an
//! accuracy sweep of the inline transcendental maps.
//!
//! Tolerances: add, mul, scale and neg chains are bit-exact (f32 arithmetic is what the
//! interpreter rounds to). With `Precision::F64` every map is within 1 ulp of the interpreter
//! and differs from it on at most 1 element in 10⁵ of the sweeps. With `Precision::F32`, exp
//! within 2 ulp and sigmoid/silu/softplus within 4 ulp where the result is at least 2⁻¹²⁰ in
//! magnitude (smaller results, where f32 intermediates go subnormal, within 2⁻¹³⁶ absolute:
//! sigmoid(-103) underflows to 0); longer chains within 1e-6 relative to the largest output.

use qgc_codegen::host::{compile_loop, Bcast, Binary, EwChain, EwNode, LoopFn, Precision, Unary};
use qgc_ir::interp::{eval_op, Rng, Tensor};
use qgc_ir::{Bindings, Op};

const SIZES: [usize; 5] = [1, 3, 50, 783, 4096];

/// Runs `f` over `[start, end)` pieces given by `cuts` (interior split points).
fn run(f: LoopFn, ins: &[&[f32]], n: usize, cuts: &[usize]) -> Vec<f32> {
    let mut out = vec![f32::NAN; n];
    let ptrs: Vec<*const f32> = ins.iter().map(|s| s.as_ptr()).collect();
    let mut bounds = vec![0];
    bounds.extend(cuts.iter().copied().filter(|&c| c > 0 && c < n));
    bounds.push(n);
    for w in bounds.windows(2) {
        // SAFETY: every input holds the elements the chain reads for [0, n) (built by the
        // tests for their broadcasts), and `out` holds n elements.
        unsafe { f(n as i64, ptrs.as_ptr(), out.as_mut_ptr(), w[0] as i64, w[1] as i64) };
    }
    out
}

/// Distance in representable f32 values (0 for equal values, both NaN, or ±0).
fn ulps(a: f32, b: f32) -> u64 {
    if a.is_nan() && b.is_nan() {
        return 0;
    }
    let ord = |x: f32| {
        let i = x.to_bits() as i32;
        if i < 0 {
            -(i64::from(i & 0x7fff_ffff))
        } else {
            i64::from(i)
        }
    };
    (ord(a) - ord(b)).unsigned_abs()
}

/// Absolute tolerance for results below 2⁻¹²⁰: 2⁻¹³⁶.
const TINY_ABS: f32 = 1.0 / (1u128 << 68) as f32 / (1u128 << 68) as f32;

/// Whether `w` is below 2⁻¹²⁰ in magnitude (not NaN).
fn tiny(w: f32) -> bool {
    w.abs() < 1.0 / (1u128 << 120) as f32
}

fn f32s(t: &Tensor) -> &[f32] {
    t.as_f32().expect("f32 tensor")
}

/// The chain composed from `eval_op` on the input tensors (binary operands ordered so the
/// broadcast one is second, as the IR requires).
fn reference(chain: &EwChain, ins: &[Tensor]) -> Vec<f32> {
    let bind = Bindings::default();
    let mut vals: Vec<Tensor> = Vec::new();
    for n in &chain.nodes {
        let v = match *n {
            EwNode::Input(k) => ins[k].clone(),
            EwNode::Unary(u, a) => eval_op(&u.op(), &[&vals[a]], &bind).expect("unary").remove(0),
            EwNode::Binary(b, x, y) => {
                let (x, y) = if vals[x].numel() >= vals[y].numel() { (x, y) } else { (y, x) };
                eval_op(&b.op(), &[&vals[x], &vals[y]], &bind).expect("binary").remove(0)
            }
        };
        vals.push(v);
    }
    f32s(vals.last().unwrap()).to_vec()
}

/// Random operands for `chain` over `rows × inner` elements: full `[rows, inner]`, suffix
/// `[inner]`, row `[rows, 1]`, scalar `[1]` (for a `[.., 1]`-shaped chain).
fn operands(chain: &EwChain, rows: usize, inner: usize, rng: &mut Rng, lo: f32, hi: f32) -> Vec<Tensor> {
    chain
        .inputs
        .iter()
        .map(|b| match b {
            Bcast::Full => rng.tensor(&[rows, inner], lo, hi),
            Bcast::Suffix => rng.tensor(&[inner], lo, hi),
            Bcast::Row => rng.tensor(&[rows, 1], lo, hi),
            Bcast::Scalar => rng.tensor(&[1], lo, hi),
        })
        .collect()
}

/// Largest divisor of `n` not above 32 (odd inner lengths included: 50 → 25, 783 → 29).
fn inner_len(n: usize) -> usize {
    (1..=32.min(n)).rev().find(|d| n.is_multiple_of(*d)).unwrap()
}

/// Checks `chain` at every size: against the reference within `max_ulp` (or `rel`), and the
/// split runs bit-identical to the whole run.
fn check(chain: EwChain, precision: Precision, max_ulp: u64, rel: f64, range: (f32, f32)) {
    let mut rng = Rng::new(7);
    for n in SIZES {
        let inner = inner_len(n);
        let c = EwChain { inner: Some(inner), ..chain.clone() };
        let f = compile_loop(&c, precision).expect("chain compiles");
        let ins = operands(&c, n / inner, inner, &mut rng, range.0, range.1);
        let slices: Vec<&[f32]> = ins.iter().map(f32s).collect();
        let got = run(f.func(), &slices, n, &[]);
        let want = reference(&c, &ins);
        let scale = want.iter().fold(0f64, |m, v| m.max(f64::from(v.abs())));
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            let ok = ulps(g, w) <= max_ulp || (f64::from(g) - f64::from(w)).abs() <= rel * scale.max(1e-30);
            assert!(ok, "{c}: n={n} element {i}: got {g:e}, want {w:e} ({} ulp)", ulps(g, w));
        }
        let split = run(f.func(), &slices, n, &[n / 3, n / 3 + 1, n / 2 + 5, n.saturating_sub(2)]);
        assert_eq!(
            split.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            got.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }
}

fn unary(u: Unary) -> EwChain {
    EwChain { inputs: vec![Bcast::Full], nodes: vec![EwNode::Input(0), EwNode::Unary(u, 0)], inner: None }
}

fn binary(b: Binary, second: Bcast) -> EwChain {
    EwChain {
        inputs: vec![Bcast::Full, second],
        nodes: vec![EwNode::Input(0), EwNode::Input(1), EwNode::Binary(b, 0, 1)],
        inner: None,
    }
}

#[test]
fn exact_maps_are_bit_exact() {
    let p = Precision::F32;
    for u in [Unary::Neg, Unary::Scale(0.37), Unary::Scale(-3.0)] {
        check(unary(u), p, 0, 0.0, (-10.0, 10.0));
    }
    for b in [Binary::Add, Binary::Mul] {
        check(binary(b, Bcast::Full), p, 0, 0.0, (-10.0, 10.0));
        check(binary(b, Bcast::Suffix), p, 0, 0.0, (-10.0, 10.0));
    }
    check(binary(Binary::Mul, Bcast::Row), p, 0, 0.0, (-10.0, 10.0));
}

#[test]
fn transcendental_maps_at_odd_sizes() {
    for (p, exp_ulp, act_ulp) in [(Precision::F32, 2, 4), (Precision::F64, 1, 1)] {
        check(unary(Unary::Exp), p, exp_ulp, 0.0, (-20.0, 20.0));
        for u in [Unary::Sigmoid, Unary::Silu, Unary::Softplus] {
            check(unary(u), p, act_ulp, 0.0, (-30.0, 30.0));
        }
    }
}

/// The GDN gate chain `softplus(a + dt_bias) · -exp(a_log)` with `[Hv]` suffix operands, and a
/// sigmoid gate `x · σ(g)` with one `g` per row.
#[test]
fn broadcast_chains() {
    let gate = EwChain {
        inputs: vec![Bcast::Full, Bcast::Suffix, Bcast::Suffix],
        nodes: vec![
            EwNode::Input(0),
            EwNode::Input(1),
            EwNode::Binary(Binary::Add, 0, 1),
            EwNode::Unary(Unary::Softplus, 2),
            EwNode::Input(2),
            EwNode::Unary(Unary::Exp, 4),
            EwNode::Unary(Unary::Neg, 5),
            EwNode::Binary(Binary::Mul, 3, 6),
        ],
        inner: Some(1),
    };
    check(gate.clone(), Precision::F32, 8, 1e-6, (-3.0, 3.0));
    check(gate, Precision::F64, 1, 0.0, (-3.0, 3.0));
    let sig_gate = EwChain {
        inputs: vec![Bcast::Full, Bcast::Row],
        nodes: vec![
            EwNode::Input(0),
            EwNode::Input(1),
            EwNode::Unary(Unary::Sigmoid, 1),
            EwNode::Binary(Binary::Mul, 0, 2),
        ],
        inner: Some(1),
    };
    check(sig_gate.clone(), Precision::F32, 8, 1e-6, (-6.0, 6.0));
    check(sig_gate, Precision::F64, 1, 0.0, (-6.0, 6.0));
    let residual = EwChain {
        inputs: vec![Bcast::Full, Bcast::Full, Bcast::Full],
        nodes: vec![
            EwNode::Input(0),
            EwNode::Unary(Unary::Silu, 0),
            EwNode::Input(1),
            EwNode::Binary(Binary::Mul, 1, 2),
            EwNode::Input(2),
            EwNode::Binary(Binary::Add, 3, 4),
            EwNode::Unary(Unary::Scale(0.5), 5),
        ],
        inner: None,
    };
    check(residual.clone(), Precision::F32, 8, 1e-6, (-5.0, 5.0));
    check(residual, Precision::F64, 1, 0.0, (-5.0, 5.0));
}

/// A scalar input (`[.., 1]` shapes broadcast by `Mul`'s row form over rows of one element).
#[test]
fn scalar_inputs_splat() {
    let c = binary(Binary::Mul, Bcast::Scalar);
    let f = compile_loop(&c, Precision::F32).unwrap();
    let x: Vec<f32> = (0..783).map(|i| i as f32 - 300.0).collect();
    let got = run(f.func(), &[&x, &[2.5]], x.len(), &[100, 101]);
    assert!(got.iter().zip(&x).all(|(g, x)| *g == x * 2.5));
}

/// `(worst ulp, elements that differ)` of `got` against `want`; asserts `max_ulp` where the
/// result is not tiny and [`TINY_ABS`] where it is.
fn compare(what: &str, xs: &[f32], got: &[f32], want: &[f32], max_ulp: u64) -> (u64, usize) {
    let (mut worst, mut differ) = (0, 0);
    for ((&x, &g), &w) in xs.iter().zip(got).zip(want) {
        differ += usize::from(ulps(g, w) != 0);
        if !tiny(w) {
            assert!(ulps(g, w) <= max_ulp, "{what}({x:e}) = {g:e}, want {w:e}");
            worst = worst.max(ulps(g, w));
        } else {
            assert!((g - w).abs() <= TINY_ABS, "{what}({x:e}) = {g:e}, want {w:e}");
        }
    }
    (worst, differ)
}

/// Sweeps exp over its whole useful range (every 97th f32 in [-104, 89]) plus the specials.
#[test]
fn exp_accuracy_sweep() {
    let (lo, hi) = ((-104f32).to_bits(), 89f32.to_bits());
    let mut xs: Vec<f32> = (0..lo).step_by(97).chain((0..hi).step_by(97)).map(f32::from_bits).collect();
    xs.iter_mut().filter(|x| x.to_bits() < lo).for_each(|x| *x = -*x);
    xs.extend([
        0.0,
        -0.0,
        88.72,
        88.73,
        89.0,
        100.0,
        -87.3,
        -103.9,
        -200.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
    ]);
    let want: Vec<f32> = xs.iter().map(|&x| f64::from(x).exp() as f32).collect();
    for (p, max_ulp) in [(Precision::F32, 2), (Precision::F64, 1)] {
        let f = compile_loop(&unary(Unary::Exp), p).unwrap();
        let got = run(f.func(), &[&xs], xs.len(), &[]);
        let (worst, differ) = compare("exp", &xs, &got, &want, max_ulp);
        println!("exp {p:?}: worst {worst} ulp, {differ} of {} differ", xs.len());
        if p == Precision::F64 {
            assert!(differ * 100_000 <= xs.len(), "{differ} differ");
        }
    }
}

/// Sigmoid, silu and softplus over [-120, 120] in small steps, plus the specials.
#[test]
fn activation_accuracy_sweep() {
    let mut xs: Vec<f32> = (-120_000..=120_000).map(|i| i as f32 * 1e-3).collect();
    xs.extend([20.0, 20.0001, 19.9999, 1e-30, -1e-30, 1e30, -1e30, f32::INFINITY, f32::NEG_INFINITY]);
    let t = Tensor::f32(vec![xs.len()], xs.clone());
    for (u, op) in [(Unary::Sigmoid, Op::Sigmoid), (Unary::Silu, Op::Silu), (Unary::Softplus, Op::Softplus)] {
        let want = eval_op(&op, &[&t], &Bindings::default()).unwrap().remove(0);
        for (p, max_ulp) in [(Precision::F32, 4), (Precision::F64, 1)] {
            let f = compile_loop(&unary(u), p).unwrap();
            let got = run(f.func(), &[&xs], xs.len(), &[]);
            let (worst, differ) = compare(op.name(), &xs, &got, f32s(&want), max_ulp);
            println!("{} {p:?}: worst {worst} ulp, {differ} of {} differ", op.name(), xs.len());
            if p == Precision::F64 {
                assert!(differ * 100_000 <= xs.len(), "{differ} differ");
            }
        }
    }
}

#[test]
fn malformed_chains_are_rejected() {
    let bad = EwChain { inputs: vec![Bcast::Full], nodes: vec![EwNode::Unary(Unary::Neg, 0)], inner: None };
    assert!(compile_loop(&bad, Precision::F64).is_err());
    let no_inner = EwChain { inner: None, ..binary(Binary::Add, Bcast::Suffix) };
    assert!(compile_loop(&no_inner, Precision::F64).unwrap_err().to_string().contains("inner length"));
}
