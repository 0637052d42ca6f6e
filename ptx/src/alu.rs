//! Pure value semantics: integer widths, float rounding modes, conversions, comparisons.
//! Everything works on raw register bits (`u64`); the instruction's type says how to read them.

use crate::inst::{Rnd, Ty};
use half::{bf16, f16};

/// The low `bits` bits set.
pub fn mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// `v`'s low `bits` bits, sign-extended.
pub fn sext(v: u64, bits: u32) -> i64 {
    if bits >= 64 {
        v as i64
    } else {
        let s = 64 - bits;
        ((v << s) as i64) >> s
    }
}

/// `v` read as type `t` into an i128 (signed or unsigned per the type).
pub fn int_of(v: u64, t: Ty) -> i128 {
    if t.signed() {
        sext(v, t.bits()) as i128
    } else {
        (v & mask(t.bits())) as i128
    }
}

/// Flushes an f32 subnormal to a signed zero.
pub fn ftz32(x: f32) -> f32 {
    if x.is_subnormal() {
        0.0f32.copysign(x)
    } else {
        x
    }
}

/// Rounds an f64 to f32 in mode `r` (the f64 is taken as the exact value).
pub fn f64_to_f32(x: f64, r: Option<Rnd>) -> f32 {
    let n = x as f32;
    if x.is_nan() || n.is_infinite() && x.is_infinite() {
        return n;
    }
    let nd = n as f64;
    match r {
        Some(Rnd::Rm | Rnd::Rmi) if nd > x => n.next_down(),
        Some(Rnd::Rp | Rnd::Rpi) if nd < x => n.next_up(),
        Some(Rnd::Rz | Rnd::Rzi) if nd.abs() > x.abs() => {
            if n > 0.0 {
                n.next_down()
            } else {
                n.next_up()
            }
        }
        _ => n,
    }
}

/// Saturates to [0, 1] (NaN → 0).
pub fn sat32(x: f32) -> f32 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

/// Reads bits as a float of type `t` widened to f64.
pub fn float_of(v: u64, t: Ty) -> f64 {
    match t {
        Ty::F(64) => f64::from_bits(v),
        Ty::F(16) => f16::from_bits(v as u16).to_f64(),
        Ty::Bf16 => bf16::from_bits(v as u16).to_f64(),
        _ => f32::from_bits(v as u32) as f64,
    }
}

/// A float of type `t` from an f64, rounded in mode `r`.
pub fn bits_of_float(x: f64, t: Ty, r: Option<Rnd>) -> u64 {
    match t {
        Ty::F(64) => x.to_bits(),
        Ty::F(16) => f16::from_f64(x).to_bits() as u64,
        Ty::Bf16 => bf16_rne(f64_to_f32(x, r)) as u64,
        _ => f64_to_f32(x, r).to_bits() as u64,
    }
}

/// f32 → bf16 bits, round to nearest even (NaN stays NaN).
pub fn bf16_rne(x: f32) -> u16 {
    bf16::from_f32(x).to_bits()
}

/// Rounds to an integral value in mode `r` (for `cvt.rXi` float→float and float→int).
pub fn round_int(x: f64, r: Option<Rnd>) -> f64 {
    match r {
        Some(Rnd::Rni | Rnd::Rn) => {
            let f = x.floor();
            let d = x - f;
            if d > 0.5 || (d == 0.5 && f % 2.0 != 0.0) {
                f + 1.0
            } else {
                f
            }
        }
        Some(Rnd::Rmi | Rnd::Rm) => x.floor(),
        Some(Rnd::Rpi | Rnd::Rp) => x.ceil(),
        _ => x.trunc(),
    }
}

/// `cvt` of raw bits from type `s` to type `d`.
pub fn cvt(v: u64, d: Ty, s: Ty, r: Option<Rnd>, sat: bool, ftz: bool) -> u64 {
    let dfloat = d.float();
    let sfloat = s.float();
    match (dfloat, sfloat) {
        (false, false) => {
            let x = int_of(v, s);
            let x = if sat { clamp_int(x, d) } else { x };
            (x as u64) & mask(d.bits())
        }
        (false, true) => {
            let x = float_of(v, s);
            if x.is_nan() {
                return 0;
            }
            let x = if ftz && s == Ty::F(32) { ftz32(x as f32) as f64 } else { x };
            let i = round_int(x, r);
            let (lo, hi) = int_range(d);
            let c = if i <= lo as f64 {
                lo
            } else if i >= hi as f64 {
                hi
            } else {
                i as i128
            };
            (c as u64) & mask(d.bits())
        }
        (true, false) => {
            let x = int_of(v, s);
            let f = x as f64; // exact for 32-bit sources; i64 sources round once to f64
            let y = if d == Ty::F(32) { x as f32 as f64 } else { f };
            float_result(y, d, None, sat, ftz)
        }
        (true, true) => {
            let x = float_of(v, s);
            let x = if ftz && s == Ty::F(32) { ftz32(x as f32) as f64 } else { x };
            let x = match r {
                Some(Rnd::Rni | Rnd::Rzi | Rnd::Rmi | Rnd::Rpi) => round_int(x, r),
                _ => x,
            };
            let rr = match r {
                Some(Rnd::Rn | Rnd::Rz | Rnd::Rm | Rnd::Rp) => r,
                _ => None,
            };
            float_result(x, d, rr, sat, ftz)
        }
    }
}

/// Rounds an exact f64 result into type `d` with the `.sat`/`.ftz` rules.
pub fn float_result(x: f64, d: Ty, r: Option<Rnd>, sat: bool, ftz: bool) -> u64 {
    match d {
        Ty::F(32) => {
            let mut y = f64_to_f32(x, r);
            if sat {
                y = sat32(y);
            }
            if ftz {
                y = ftz32(y);
            }
            y.to_bits() as u64
        }
        Ty::F(64) => {
            let y = if sat && x.is_nan() {
                0.0
            } else if sat {
                x.clamp(0.0, 1.0)
            } else {
                x
            };
            y.to_bits()
        }
        _ => bits_of_float(if sat { sat32(x as f32) as f64 } else { x }, d, r),
    }
}

fn int_range(t: Ty) -> (i128, i128) {
    let b = t.bits();
    if t.signed() {
        (-(1i128 << (b - 1)), (1i128 << (b - 1)) - 1)
    } else {
        (0, (1i128 << b) - 1)
    }
}

fn clamp_int(x: i128, t: Ty) -> i128 {
    let (lo, hi) = int_range(t);
    x.clamp(lo, hi)
}

/// A comparison of `setp` (`lt`, `geu`, `lo`, ...) on values of type `t`.
pub fn compare(cmp: &str, a: u64, b: u64, t: Ty) -> bool {
    if t.float() {
        let (x, y) = (float_of(a, t), float_of(b, t));
        let un = x.is_nan() || y.is_nan();
        return match cmp {
            "eq" => x == y,
            "ne" => !un && x != y,
            "lt" => x < y,
            "le" => x <= y,
            "gt" => x > y,
            "ge" => x >= y,
            "equ" => un || x == y,
            "neu" => un || x != y,
            "ltu" => un || x < y,
            "leu" => un || x <= y,
            "gtu" => un || x > y,
            "geu" => un || x >= y,
            "num" => !un,
            "nan" => un,
            _ => false,
        };
    }
    let signed = matches!(t, Ty::S(_)) && !matches!(cmp, "lo" | "ls" | "hi" | "hs");
    let (x, y) = if signed {
        (sext(a, t.bits()) as i128, sext(b, t.bits()) as i128)
    } else {
        ((a & mask(t.bits())) as i128, (b & mask(t.bits())) as i128)
    };
    match cmp {
        "eq" => x == y,
        "ne" => x != y,
        "lt" | "lo" => x < y,
        "le" | "ls" => x <= y,
        "gt" | "hi" => x > y,
        "ge" | "hs" => x >= y,
        _ => false,
    }
}

/// A float binary op with a rounding mode: the exact result in f64 rounded to the type.
pub fn fbin(op: fn(f64, f64) -> f64, a: u64, b: u64, t: Ty, r: Option<Rnd>, sat: bool, ftz: bool) -> u64 {
    let (x, y) = (float_of(a, t), float_of(b, t));
    let (x, y) = if ftz && t == Ty::F(32) { (ftz32(x as f32) as f64, ftz32(y as f32) as f64) } else { (x, y) };
    float_result(op(x, y), t, r, sat, ftz)
}

/// `fma`/`mad.f32` with a rounding mode (f32 through f64: `a·b` is exact there; the sum's
/// direction is settled with the rounding error of the f64 addition).
pub fn ffma(a: u64, b: u64, c: u64, t: Ty, r: Option<Rnd>, sat: bool, ftz: bool) -> u64 {
    if t == Ty::F(64) {
        let y = float_of(a, t).mul_add(float_of(b, t), float_of(c, t));
        return float_result(y, t, None, sat, false);
    }
    let f = |v: u64| {
        let x = f32::from_bits(v as u32);
        if ftz {
            ftz32(x)
        } else {
            x
        }
    };
    let (x, y, z) = (f(a), f(b), f(c));
    let rn = x.mul_add(y, z);
    let out = match r {
        None | Some(Rnd::Rn) => rn,
        _ if !rn.is_finite() => rn,
        _ => {
            // Exact value = p + z with p = x·y exact in f64; s + e = p + z exactly (two-sum).
            let p = x as f64 * y as f64;
            let s = p + z as f64;
            let bb = s - p;
            let e = (p - (s - bb)) + (z as f64 - bb);
            let d = (s - rn as f64) + e; // exact value − rn
            match r {
                Some(Rnd::Rm) if d < 0.0 => rn.next_down(),
                Some(Rnd::Rp) if d > 0.0 => rn.next_up(),
                Some(Rnd::Rz) if d != 0.0 && (d < 0.0) != (rn < 0.0) => {
                    if rn > 0.0 {
                        rn.next_down()
                    } else {
                        rn.next_up()
                    }
                }
                _ => rn,
            }
        }
    };
    let out = if sat { sat32(out) } else { out };
    (if ftz { ftz32(out) } else { out }).to_bits() as u64
}
