//! Transcendental maps emitted inline as Cranelift IR, for scalars or vectors of `f32` or `f64`
//! (the same code for every lane type, so a loop's SIMD body and scalar tail agree bit for bit).
//!
//! Two precisions ([`Precision`]), per chain:
//! - `F64` (the default): the map is evaluated in f64 lanes (`f32x4` widened to two `f64x2`) and
//!   rounded once to f32 — what the interpreter does, so results equal it except where its libm
//!   and our polynomial straddle a rounding boundary (rare: the f64 error is ~1e-16).
//! - `F32`: evaluated in f32 lanes, about twice as fast. Measured against the interpreter over
//!   the whole range (`codegen/tests/host_loops.rs`): exp within 1 ulp, sigmoid 2, silu and
//!   softplus 3 (tests assert 2 and 4).
//!
//! Algorithms (both widths): `exp` reduces `x = n·ln2 + r` (the integer by the 1.5·2^mantissa
//! magic-number trick, no rounding instructions needed; ln2 in two parts), evaluates `e^r` on
//! `|r| ≤ ln2/2` by a polynomial (Cephes `expf`'s degree 7 in f32, Taylor to degree 12 in f64),
//! and applies `2^n` as two exact power-of-two factors, so overflow gives `inf` and underflow
//! rounds gradually; NaN stays NaN. `sigmoid`, `silu` use `e = exp(-|x|)`: `σ = 1/(1+e)` for
//! `x ≥ 0`, `e/(1+e)` below (nothing overflows, tiny results stay accurate). `softplus` is
//! `max(x,0) + log1p(exp(-|x|))` with `log1p(u) = 2·atanh(u/(2+u))` by its odd series
//! (`s ≤ 1/3`); above 20 the correction is below half an ulp of `x`, so the result is `x`
//! exactly, PyTorch's threshold.

use cranelift_codegen::ir::{
    condcodes::FloatCC, types, ConstantData, Endianness, InstBuilder, MemFlagsData, Type, Value,
};
use cranelift_frontend::FunctionBuilder;

/// How transcendental maps are evaluated (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// f32 lanes: fast, a few ulp.
    F32,
    /// f64 lanes rounded once to f32: the interpreter's values.
    #[default]
    F64,
}

/// A float type and the integer type with the same lanes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lanes {
    /// Float type.
    pub f: Type,
    /// Integer type with the same lane count and width.
    pub i: Type,
}

impl Lanes {
    /// One `f32`.
    pub const SCALAR: Lanes = Lanes { f: types::F32, i: types::I32 };
    /// Four `f32` lanes.
    pub const X4: Lanes = Lanes { f: types::F32X4, i: types::I32X4 };
    const D1: Lanes = Lanes { f: types::F64, i: types::I64 };
    const D2: Lanes = Lanes { f: types::F64X2, i: types::I64X2 };

    fn wide(self) -> bool {
        self.f.lane_type() == types::F64
    }
}

/// A float constant of `l.f` (rounded to f32 for f32 lanes; splatted for vectors).
pub fn fconst(fb: &mut FunctionBuilder, l: Lanes, v: f64) -> Value {
    let c = if l.wide() { fb.ins().f64const(v) } else { fb.ins().f32const(v as f32) };
    if l.f.is_vector() {
        fb.ins().splat(l.f, c)
    } else {
        c
    }
}

fn iconst(fb: &mut FunctionBuilder, l: Lanes, v: i64) -> Value {
    let c = fb.ins().iconst(l.i.lane_type(), v);
    if l.i.is_vector() {
        fb.ins().splat(l.i, c)
    } else {
        c
    }
}

fn bits(fb: &mut FunctionBuilder, to: Type, x: Value) -> Value {
    // Lane counts may differ (f32x4 <-> i8x16): say the byte order; the host is little-endian.
    fb.ins().bitcast(to, MemFlagsData::new().with_endianness(Endianness::Little), x)
}

/// `p(x)` by Horner's rule, coefficients highest degree first.
fn horner(fb: &mut FunctionBuilder, l: Lanes, x: Value, coeffs: &[f64]) -> Value {
    let mut acc = fconst(fb, l, coeffs[0]);
    for &c in &coeffs[1..] {
        let m = fb.ins().fmul(acc, x);
        let k = fconst(fb, l, c);
        acc = fb.ins().fadd(m, k);
    }
    acc
}

/// Per-width constants of `exp`.
struct ExpConsts {
    clamp: (f64, f64),
    magic: f64,
    magic_bits: i64,
    ln2: (f64, f64),
    mantissa: i64,
    bias: i64,
}

const EXP32: ExpConsts = ExpConsts {
    clamp: (-104.0, 89.0),
    magic: 12_582_912.0, // 1.5 · 2^23
    magic_bits: 0x4B40_0000,
    ln2: (0.693_359_375, -2.121_944_4e-4), // Cephes: ln2 = C1 + C2, C1 exact in 9 bits.
    mantissa: 23,
    bias: 127,
};

const EXP64: ExpConsts = ExpConsts {
    clamp: (-746.0, 710.0),
    magic: 6_755_399_441_055_744.0, // 1.5 · 2^52
    magic_bits: 0x4338_0000_0000_0000,
    // fdlibm's ln2_hi (low 32 bits zero, so n·ln2_hi is exact) + ln2_lo.
    ln2: (f64::from_bits(0x3FE6_2E42_FEE0_0000), f64::from_bits(0x3DEA_39EF_3579_3C76)),
    mantissa: 52,
    bias: 1023,
};

/// `e^x` (see the module doc).
pub fn exp(fb: &mut FunctionBuilder, l: Lanes, x: Value) -> Value {
    let k = if l.wide() { &EXP64 } else { &EXP32 };
    let input = x;
    // Clamp by compare-and-select (cheaper than NaN-propagating fmin/fmax); a NaN becomes the
    // upper bound here and is put back at the end.
    let (lo, hi) = (fconst(fb, l, k.clamp.0), fconst(fb, l, k.clamp.1));
    let below = fb.ins().fcmp(FloatCC::LessThan, x, hi);
    let x = select(fb, l, below, x, hi);
    let above = fb.ins().fcmp(FloatCC::GreaterThan, x, lo);
    let x = select(fb, l, above, x, lo);
    let (log2e, magic) = (fconst(fb, l, std::f64::consts::LOG2_E), fconst(fb, l, k.magic));
    let t = fb.ins().fmul(x, log2e);
    let t = fb.ins().fadd(t, magic);
    let nf = fb.ins().fsub(t, magic);
    let ti = bits(fb, l.i, t);
    let magic_bits = iconst(fb, l, k.magic_bits);
    let n = fb.ins().isub(ti, magic_bits);
    let (c1, c2) = (fconst(fb, l, k.ln2.0), fconst(fb, l, k.ln2.1));
    let a = fb.ins().fmul(nf, c1);
    let r = fb.ins().fsub(x, a);
    let b = fb.ins().fmul(nf, c2);
    let r = fb.ins().fsub(r, b);
    let y = if l.wide() {
        let taylor: Vec<f64> = (0..=12).rev().map(|d| 1.0 / (1..=d).map(f64::from).product::<f64>()).collect();
        horner(fb, l, r, &taylor)
    } else {
        let p = horner(fb, l, r, &[1.987_569_2e-4, 1.398_2e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5]);
        let z = fb.ins().fmul(r, r);
        let y = fb.ins().fmul(p, z);
        let y = fb.ins().fadd(y, r);
        let one = fconst(fb, l, 1.0);
        fb.ins().fadd(y, one)
    };
    // Split 2^n into two halves that are each a normal power of two.
    let n1 = fb.ins().sshr_imm_u(n, 1);
    let n2 = fb.ins().isub(n, n1);
    let (s1, s2) = (pow2(fb, l, k, n1), pow2(fb, l, k, n2));
    let y = fb.ins().fmul(y, s1);
    let y = fb.ins().fmul(y, s2);
    let nan = fb.ins().fcmp(FloatCC::Unordered, input, input);
    select(fb, l, nan, input, y)
}

/// `mask ? a : b` per lane, `mask` from an `fcmp` of lanes `l`.
fn select(fb: &mut FunctionBuilder, l: Lanes, mask: Value, a: Value, b: Value) -> Value {
    if l.f.is_vector() {
        let m = bits(fb, l.f, mask);
        fb.ins().bitselect(m, a, b)
    } else {
        fb.ins().select(mask, a, b)
    }
}

/// `2^n` for `n` in the normal exponent range, as a float.
fn pow2(fb: &mut FunctionBuilder, l: Lanes, k: &ExpConsts, n: Value) -> Value {
    let bias = iconst(fb, l, k.bias);
    let e = fb.ins().iadd(n, bias);
    let e = fb.ins().ishl_imm_u(e, k.mantissa);
    bits(fb, l.f, e)
}

/// `(num, den)` with `σ(x) = num / den`: `e = exp(-|x|)`, `num` 1 for `x ≥ 0` else `e`,
/// `den = 1 + e`.
fn sigmoid_parts(fb: &mut FunctionBuilder, l: Lanes, x: Value) -> (Value, Value) {
    let ax = fb.ins().fabs(x);
    let nax = fb.ins().fneg(ax);
    let e = exp(fb, l, nax);
    let one = fconst(fb, l, 1.0);
    let den = fb.ins().fadd(one, e);
    let zero = fconst(fb, l, 0.0);
    let nonneg = fb.ins().fcmp(FloatCC::GreaterThanOrEqual, x, zero);
    (select(fb, l, nonneg, one, e), den)
}

/// `1 / (1 + e^{-x})`.
pub fn sigmoid(fb: &mut FunctionBuilder, l: Lanes, x: Value) -> Value {
    let (num, den) = sigmoid_parts(fb, l, x);
    fb.ins().fdiv(num, den)
}

/// `x·σ(x)` as `(x·num) / den`.
pub fn silu(fb: &mut FunctionBuilder, l: Lanes, x: Value) -> Value {
    let (num, den) = sigmoid_parts(fb, l, x);
    let xn = fb.ins().fmul(x, num);
    fb.ins().fdiv(xn, den)
}

/// `ln(1 + u)` for `u` in `[0, 1]`: `2s·Σ s^{2k}/(2k+1)` with `s = u / (2 + u)`, to `k = 6`
/// (f32) or `k = 14` (f64).
fn log1p_unit(fb: &mut FunctionBuilder, l: Lanes, u: Value) -> Value {
    let two = fconst(fb, l, 2.0);
    let d = fb.ins().fadd(two, u);
    let s = fb.ins().fdiv(u, d);
    let z = fb.ins().fmul(s, s);
    let terms = if l.wide() { 15 } else { 7 };
    let coeffs: Vec<f64> = (0..terms).rev().map(|k| 1.0 / f64::from(2 * k + 1)).collect();
    let p = horner(fb, l, z, &coeffs);
    let s2 = fb.ins().fadd(s, s);
    fb.ins().fmul(s2, p)
}

/// `ln(1 + e^x)` as `max(x, 0) + log1p(e^{-|x|})` (see the module doc).
pub fn softplus(fb: &mut FunctionBuilder, l: Lanes, x: Value) -> Value {
    let ax = fb.ins().fabs(x);
    let nax = fb.ins().fneg(ax);
    let u = exp(fb, l, nax);
    let corr = log1p_unit(fb, l, u);
    let zero = fconst(fb, l, 0.0);
    // Cranelift's fmax propagates NaN (a NaN x makes the result NaN, as ln(1 + e^NaN) is).
    let base = fb.ins().fmax(x, zero);
    fb.ins().fadd(base, corr)
}

fn shuffle(fb: &mut FunctionBuilder, a: Value, b: Value, mask: [u8; 16]) -> Value {
    let (a, b) = (bits(fb, types::I8X16, a), bits(fb, types::I8X16, b));
    let imm = fb.func.dfg.immediates.push(ConstantData::from(mask.to_vec()));
    fb.ins().shuffle(a, b, imm)
}

/// `f` of `x` (f32 lanes `l`) evaluated in f64 lanes and rounded once to f32.
pub fn in_f64(
    fb: &mut FunctionBuilder,
    l: Lanes,
    x: Value,
    f: fn(&mut FunctionBuilder, Lanes, Value) -> Value,
) -> Value {
    if !l.f.is_vector() {
        let w = fb.ins().fpromote(types::F64, x);
        let y = f(fb, Lanes::D1, w);
        return fb.ins().fdemote(types::F32, y);
    }
    const HIGH: [u8; 16] = [8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15];
    const JOIN: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23];
    let lo = fb.ins().fvpromote_low(x);
    let hi = shuffle(fb, x, x, HIGH);
    let hi = bits(fb, types::F32X4, hi);
    let hi = fb.ins().fvpromote_low(hi);
    let (ylo, yhi) = (f(fb, Lanes::D2, lo), f(fb, Lanes::D2, hi));
    let (nlo, nhi) = (fb.ins().fvdemote(ylo), fb.ins().fvdemote(yhi));
    let joined = shuffle(fb, nlo, nhi, JOIN);
    bits(fb, types::F32X4, joined)
}
