//! Shape arithmetic in machine code: dims, element counts and byte offsets evaluated from the
//! host function's `b, s, p` parameters.
//!
//! Offsets and sizes are [`qgc_ir::Poly`]s (the memory plan's type: non-negative polynomials over
//! `B, S, P`); dims are linear [`Dim`]s, emitted exactly (negative parts included, clamped at 0
//! as `Dim::eval` does), so element counts and copy sizes are exact even where a size `Poly`
//! is only an upper bound (`S-1`).

use cranelift_codegen::ir::{types, InstBuilder, Value as ClifValue};
use cranelift_frontend::FunctionBuilder;
use qgc_ir::{Dim, Poly};

/// `p` as an `i64` from `vars` = (b, s, p). Cranelift's GVN shares repeated monomials between
/// the polynomials of one function.
pub fn emit_poly(fb: &mut FunctionBuilder, p: &Poly, vars: [ClifValue; 3]) -> ClifValue {
    let mut acc: Option<ClifValue> = None;
    for &(m, c) in p.terms() {
        let mut term: Option<ClifValue> = None;
        for (k, &e) in m.iter().enumerate() {
            for _ in 0..e {
                term = Some(match term {
                    Some(t) => fb.ins().imul(t, vars[k]),
                    None => vars[k],
                });
            }
        }
        let term = match term {
            None => fb.ins().iconst(types::I64, c as i64),
            Some(t) if c == 1 => t,
            Some(t) => fb.ins().imul_imm_s(t, c as i64),
        };
        acc = Some(match acc {
            Some(a) => fb.ins().iadd(a, term),
            None => term,
        });
    }
    acc.unwrap_or_else(|| fb.ins().iconst(types::I64, 0))
}

/// The dimension `d` under `vars` = (b, s, p), at least 0 (as [`Dim::eval`]).
pub fn emit_dim(fb: &mut FunctionBuilder, d: &Dim, vars: [ClifValue; 3]) -> ClifValue {
    let mut acc = fb.ins().iconst(types::I64, d.constant);
    // Dim's coefficient slots are (B, S, P), the order of `vars`.
    for (k, &c) in d.coeffs.iter().enumerate() {
        if c != 0 {
            let t = if c == 1 { vars[k] } else { fb.ins().imul_imm_s(vars[k], c) };
            acc = fb.ins().iadd(acc, t);
        }
    }
    if d.as_const().is_some() {
        return acc;
    }
    let zero = fb.ins().iconst(types::I64, 0);
    fb.ins().smax(acc, zero)
}

/// The element count of `shape` (product of its dims; 1 for a scalar).
pub fn emit_numel(fb: &mut FunctionBuilder, shape: &[Dim], vars: [ClifValue; 3]) -> ClifValue {
    let mut acc: Option<ClifValue> = None;
    for d in shape {
        let v = emit_dim(fb, d, vars);
        acc = Some(match acc {
            Some(a) => fb.ins().imul(a, v),
            None => v,
        });
    }
    acc.unwrap_or_else(|| fb.ins().iconst(types::I64, 1))
}
