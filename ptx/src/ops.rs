//! The semantics of each instruction (one arm per [`Op`]), on a thread of a block.

use crate::alu::{self, ftz32, int_of, mask, sext};
use crate::exec::Block;
use crate::inst::{Inst, Op, Operand, Rnd, Space, Ty};
use crate::mem::{self, Global};
use crate::PtxError;

fn src<'a>(m: &Block, t: usize, i: &'a Inst, k: usize) -> Result<&'a Operand, PtxError> {
    i.ops.get(k).ok_or_else(|| m.err(t, format!("missing operand {k}")))
}

fn rd(m: &Block, t: usize, i: &Inst, k: usize, ty: Ty) -> Result<u64, PtxError> {
    m.val(t, src(m, t, i, k)?, ty)
}

fn f32_of(v: u64, ftz: bool) -> f32 {
    let x = f32::from_bits(v as u32);
    if ftz {
        ftz32(x)
    } else {
        x
    }
}

fn out32(x: f32, ftz: bool, sat: bool) -> u64 {
    let x = if sat { alu::sat32(x) } else { x };
    (if ftz { ftz32(x) } else { x }).to_bits() as u64
}

/// Executes `i` on thread `t`.
pub(crate) fn exec(m: &mut Block, t: usize, i: &Inst, glob: &mut Global) -> Result<(), PtxError> {
    let ty = i.m.ty();
    let w = ty.bits();
    let d = src(m, t, i, 0);
    match i.op {
        Op::Bra => {
            let Some(Operand::Label(l)) = i.ops.first() else { return Err(m.err(t, "bra without a label".into())) };
            m.jump(t, *l);
        }
        Op::Ret | Op::Exit => m.exit(t),
        Op::BarSync => m.barrier(t),
        Op::Membar => {}
        Op::BarWarpSync => {
            let mask = rd(m, t, i, 0, Ty::B(32))? as u32;
            m.collective(t, Op::BarWarpSync, "", mask, [0; 3]);
        }
        Op::Shfl => {
            let mode = i.m.words.iter().copied().find(|w| ["bfly", "down", "up", "idx"].contains(w)).unwrap_or("idx");
            let a = rd(m, t, i, 1, Ty::B(32))?;
            let b = rd(m, t, i, 2, Ty::B(32))?;
            let c = rd(m, t, i, 3, Ty::B(32))?;
            let mask = if i.ops.len() > 4 { rd(m, t, i, 4, Ty::B(32))? as u32 } else { 0xffff_ffff };
            m.collective(t, Op::Shfl, mode, mask, [a, b, c]);
        }
        Op::Vote => {
            let mode = i.m.words.iter().copied().find(|w| ["all", "any", "uni", "ballot"].contains(w)).unwrap_or("any");
            let a = rd(m, t, i, 1, Ty::Pred)?;
            let mask = if i.ops.len() > 2 { rd(m, t, i, 2, Ty::B(32))? as u32 } else { 0xffff_ffff };
            m.collective(t, Op::Vote, mode, mask, [a, 0, 0]);
        }
        Op::Activemask => {
            let v = m.active_mask(t) as u64;
            m.set(t, d?, v)?;
        }
        Op::Mov => mov(m, t, i, ty)?,
        Op::Ld => {
            let sp = i.m.space.unwrap_or(Space::Generic);
            let addr = m.addr(t, src(m, t, i, 1)?)?;
            let n = i.m.vec as usize;
            let es = ty.bytes();
            if n > 1 && addr % (es * n) as u64 != 0 {
                return Err(m.err(t, format!("memcheck: misaligned vector load of {} bytes at {addr:#x}", es * n)));
            }
            let d = d?;
            let dsts: &[Operand] = match d {
                Operand::Vec(v) => v,
                o => std::slice::from_ref(o),
            };
            for (k, o) in dsts.iter().enumerate() {
                let raw = m.load(t, glob, sp, addr + (k * es) as u64, es)?;
                let v = if ty.signed() { sext(raw, w) as u64 } else { raw };
                m.set(t, o, v)?;
            }
        }
        Op::St => {
            let sp = i.m.space.unwrap_or(Space::Generic);
            let addr = m.addr(t, d?)?;
            let n = i.m.vec as usize;
            let es = ty.bytes();
            if n > 1 && addr % (es * n) as u64 != 0 {
                return Err(m.err(t, format!("memcheck: misaligned vector store of {} bytes at {addr:#x}", es * n)));
            }
            let vals: &[Operand] = match src(m, t, i, 1)? {
                Operand::Vec(v) => v,
                o => std::slice::from_ref(o),
            };
            for (k, o) in vals.iter().enumerate() {
                let v = m.val(t, o, ty)?;
                m.store(t, glob, (sp, addr + (k * es) as u64), es, v)?;
            }
        }
        Op::Cvta => {
            let a = rd(m, t, i, 1, Ty::B(64))?;
            let (gen, off) = match i.m.space {
                Some(Space::Shared) => (mem::GENERIC_SHARED, mem::SHARED_BASE),
                Some(Space::Local) => (mem::GENERIC_LOCAL, mem::LOCAL_BASE),
                _ => (0, 0),
            };
            let v = if gen == 0 {
                a
            } else if i.m.to {
                a.wrapping_sub(gen).wrapping_add(off)
            } else {
                a.wrapping_sub(off).wrapping_add(gen)
            };
            m.set(t, d?, v & mask(w))?;
        }
        Op::Cvt => {
            let (dt, st) = match i.m.types.as_slice() {
                [a, b] => (*a, *b),
                _ => return Err(m.err(t, "cvt needs two types".into())),
            };
            if dt == Ty::Bf16x2 || dt == Ty::F16x2 {
                let a = f32_of(rd(m, t, i, 1, Ty::F(32))?, false);
                let b = f32_of(rd(m, t, i, 2, Ty::F(32))?, false);
                let h = |x: f32| if dt == Ty::Bf16x2 { alu::bf16_rne(x) } else { half::f16::from_f32(x).to_bits() };
                let v = ((h(a) as u64) << 16) | h(b) as u64;
                return m.set(t, d?, v);
            }
            let a = rd(m, t, i, 1, st)?;
            let v = alu::cvt(a, dt, st, i.m.rnd, i.m.sat, i.m.ftz);
            m.set(t, d?, if dt.signed() { sext(v, dt.bits()) as u64 & mask(64) } else { v })?;
        }
        Op::Setp => {
            let cmp = i.m.words.first().copied().unwrap_or("eq");
            let a = rd(m, t, i, 1, ty)?;
            let b = rd(m, t, i, 2, ty)?;
            let a = if i.m.ftz && ty == Ty::F(32) { ftz32(f32::from_bits(a as u32)).to_bits() as u64 } else { a };
            let b = if i.m.ftz && ty == Ty::F(32) { ftz32(f32::from_bits(b as u32)).to_bits() as u64 } else { b };
            let r = alu::compare(cmp, a, b, ty);
            let (p, q) = match d? {
                Operand::Pair(p, q) => (Operand::Reg(*p), Some(Operand::Reg(*q))),
                o => (o.clone(), None),
            };
            let comb = i.m.words.get(1).copied();
            let c = if comb.is_some() { rd(m, t, i, 3, Ty::Pred)? != 0 } else { false };
            let f = |x: bool| match comb {
                Some("and") => x && c,
                Some("or") => x || c,
                Some("xor") => x ^ c,
                _ => x,
            };
            m.set(t, &p, f(r) as u64)?;
            if let Some(q) = q {
                m.set(t, &q, f(!r) as u64)?;
            }
        }
        Op::Selp => {
            let p = rd(m, t, i, 3, Ty::Pred)?;
            let v = if p != 0 { rd(m, t, i, 1, ty)? } else { rd(m, t, i, 2, ty)? };
            m.set(t, d?, v)?;
        }
        Op::Atom | Op::Red => atom(m, t, i, glob)?,
        _ if ty.float() => float_op(m, t, i, ty)?,
        _ => int_op(m, t, i, ty)?,
    }
    Ok(())
}

fn mov(m: &mut Block, t: usize, i: &Inst, ty: Ty) -> Result<(), PtxError> {
    let d = src(m, t, i, 0)?;
    let s = src(m, t, i, 1)?;
    match (d, s) {
        (Operand::Vec(parts), _) => {
            let v = m.val(t, s, ty)?;
            let w = ty.bits() / parts.len().max(1) as u32;
            for (k, p) in parts.iter().enumerate() {
                m.set(t, p, (v >> (w * k as u32)) & mask(w))?;
            }
        }
        (_, Operand::Sym(name)) => return Err(m.err(t, format!("unresolved symbol {name}"))),
        _ => {
            let v = m.val(t, s, ty)?;
            m.set(t, d, if ty == Ty::Pred { (v != 0) as u64 } else { v & mask(ty.bits()) })?;
        }
    }
    Ok(())
}

fn float_op(m: &mut Block, t: usize, i: &Inst, ty: Ty) -> Result<(), PtxError> {
    let d = src(m, t, i, 0)?;
    let (ftz, sat, r) = (i.m.ftz, i.m.sat, i.m.rnd);
    let f32ty = ty == Ty::F(32);
    let a = rd(m, t, i, 1, ty)?;
    let b = || rd(m, t, i, 2, ty);
    let native = f32ty && matches!(r, None | Some(Rnd::Rn));
    let v = match i.op {
        Op::Add if native => out32(f32_of(a, ftz) + f32_of(b()?, ftz), ftz, sat),
        Op::Sub if native => out32(f32_of(a, ftz) - f32_of(b()?, ftz), ftz, sat),
        Op::Mul if native => out32(f32_of(a, ftz) * f32_of(b()?, ftz), ftz, sat),
        Op::Add => alu::fbin(|x, y| x + y, a, b()?, ty, r, sat, ftz),
        Op::Sub => alu::fbin(|x, y| x - y, a, b()?, ty, r, sat, ftz),
        Op::Mul => alu::fbin(|x, y| x * y, a, b()?, ty, r, sat, ftz),
        Op::Fma | Op::Mad => alu::ffma(a, b()?, rd(m, t, i, 3, ty)?, ty, r, sat, ftz),
        Op::Div if f32ty => out32(f32_of(a, ftz) / f32_of(b()?, ftz), ftz, sat),
        Op::Div => alu::fbin(|x, y| x / y, a, b()?, ty, r, sat, ftz),
        Op::Min | Op::Max => {
            let (x, y) = (alu::float_of(a, ty), alu::float_of(b()?, ty));
            let v = match (x.is_nan(), y.is_nan()) {
                (true, true) => f64::NAN,
                (true, false) => y,
                (false, true) => x,
                _ if i.op == Op::Min => {
                    if x == y && x == 0.0 {
                        if x.is_sign_negative() {
                            x
                        } else {
                            y
                        }
                    } else {
                        x.min(y)
                    }
                }
                _ => {
                    if x == y && x == 0.0 {
                        if x.is_sign_positive() {
                            x
                        } else {
                            y
                        }
                    } else {
                        x.max(y)
                    }
                }
            };
            alu::float_result(v, ty, None, false, ftz)
        }
        Op::Abs => match ty {
            Ty::F(64) => a & !(1u64 << 63),
            _ => out32(f32_of(a, ftz).abs(), ftz, false),
        },
        Op::Neg => match ty {
            Ty::F(64) => a ^ (1u64 << 63),
            _ => out32(-f32_of(a, ftz), ftz, false),
        },
        Op::Copysign => {
            let bb = b()?;
            match ty {
                Ty::F(64) => (bb & !(1u64 << 63)) | (a & (1u64 << 63)),
                _ => ((bb as u32 & 0x7fff_ffff) | (a as u32 & 0x8000_0000)) as u64,
            }
        }
        Op::Rcp if f32ty => out32(1.0 / f32_of(a, ftz), ftz, false),
        Op::Sqrt if f32ty => out32(f32_of(a, ftz).sqrt(), ftz, false),
        Op::Rsqrt if f32ty => out32(((f32_of(a, ftz) as f64).sqrt().recip()) as f32, ftz, false),
        Op::Ex2 if f32ty => out32((f32_of(a, ftz) as f64).exp2() as f32, ftz, false),
        Op::Lg2 if f32ty => out32((f32_of(a, ftz) as f64).log2() as f32, ftz, false),
        Op::Sin if f32ty => out32((f32_of(a, ftz) as f64).sin() as f32, ftz, false),
        Op::Cos if f32ty => out32((f32_of(a, ftz) as f64).cos() as f32, ftz, false),
        Op::Tanh if f32ty => out32((f32_of(a, ftz) as f64).tanh() as f32, ftz, false),
        Op::Rcp => (1.0 / f64::from_bits(a)).to_bits(),
        Op::Sqrt => f64::from_bits(a).sqrt().to_bits(),
        Op::Rsqrt => f64::from_bits(a).sqrt().recip().to_bits(),
        Op::Testp => {
            let x = alu::float_of(a, ty);
            let r = match i.m.words.first().copied() {
                Some("finite") => x.is_finite(),
                Some("infinite") => x.is_infinite(),
                Some("number") => !x.is_nan(),
                Some("notanumber") => x.is_nan(),
                Some("normal") => x.is_normal(),
                Some("subnormal") => x.is_subnormal(),
                _ => false,
            };
            r as u64
        }
        op => return Err(m.err(t, format!("{op:?} is not supported on {ty:?}"))),
    };
    m.set(t, d, v)
}

fn int_op(m: &mut Block, t: usize, i: &Inst, ty: Ty) -> Result<(), PtxError> {
    let d = src(m, t, i, 0)?;
    let w = ty.bits();
    let a = rd(m, t, i, 1, ty)?;
    let b = || rd(m, t, i, 2, ty);
    let signed = ty.signed();
    let (ai, wide) = (int_of(a, ty), i.m.has("wide"));
    let hi = i.m.has("hi");
    let mulx = |x: i128, y: i128| -> u64 {
        let p = x.wrapping_mul(y);
        if hi {
            ((p >> w) as u64) & mask(w)
        } else if wide {
            (p as u64) & mask(2 * w)
        } else {
            (p as u64) & mask(w)
        }
    };
    let v = match i.op {
        Op::Add => a.wrapping_add(b()?) & mask(w),
        Op::Sub => a.wrapping_sub(b()?) & mask(w),
        Op::Mul => mulx(ai, int_of(b()?, ty)),
        Op::Mad => {
            let p = mulx(ai, int_of(b()?, ty));
            let cty = if wide { width_ty(ty, 2 * w) } else { ty };
            let c = rd(m, t, i, 3, cty)?;
            let rw = if wide { 2 * w } else { w };
            p.wrapping_add(c) & mask(rw)
        }
        Op::Div | Op::Rem => {
            let bi = int_of(b()?, ty);
            if bi == 0 {
                mask(w) // undefined in PTX; all ones like the hardware's unsigned result
            } else if i.op == Op::Div {
                (ai.wrapping_div(bi) as u64) & mask(w)
            } else {
                (ai.wrapping_rem(bi) as u64) & mask(w)
            }
        }
        Op::Min => (ai.min(int_of(b()?, ty)) as u64) & mask(w),
        Op::Max => (ai.max(int_of(b()?, ty)) as u64) & mask(w),
        Op::Abs => (ai.unsigned_abs() as u64) & mask(w),
        Op::Neg => (ai.wrapping_neg() as u64) & mask(w),
        Op::And if ty == Ty::Pred => ((a != 0) && (b()? != 0)) as u64,
        Op::Or if ty == Ty::Pred => ((a != 0) || (b()? != 0)) as u64,
        Op::Xor if ty == Ty::Pred => ((a != 0) ^ (b()? != 0)) as u64,
        Op::Not if ty == Ty::Pred => (a == 0) as u64,
        Op::And => a & b()? & mask(w),
        Op::Or => (a | b()?) & mask(w),
        Op::Xor => (a ^ b()?) & mask(w),
        Op::Not => !a & mask(w),
        Op::Cnot => ((a & mask(w)) == 0) as u64,
        Op::Shl => {
            let s = rd(m, t, i, 2, Ty::U(32))? & 0xffff_ffff;
            if s >= w as u64 {
                0
            } else {
                (a << s) & mask(w)
            }
        }
        Op::Shr => {
            let s = (rd(m, t, i, 2, Ty::U(32))? & 0xffff_ffff).min(w as u64);
            if signed {
                ((sext(a, w) >> s.min(63)) as u64) & mask(w)
            } else if s >= w as u64 {
                0
            } else {
                ((a & mask(w)) >> s) & mask(w)
            }
        }
        Op::Popc => (a & mask(w)).count_ones() as u64,
        Op::Clz => ((a & mask(w)).leading_zeros() - (64 - w)) as u64,
        Op::Brev => (a & mask(w)).reverse_bits() >> (64 - w),
        Op::Bfe => {
            let pos = rd(m, t, i, 2, Ty::U(32))? & 0xff;
            let len = rd(m, t, i, 3, Ty::U(32))? & 0xff;
            let x = a & mask(w);
            let field = if pos >= w as u64 { 0 } else { (x >> pos) & mask(len.min(64) as u32) };
            let msb = if len == 0 { 0 } else { (pos + len - 1).min(w as u64 - 1) };
            let sbit = signed && len > 0 && (x >> msb) & 1 == 1;
            let v = if sbit && len < w as u64 { field | (mask(w) & !mask(len as u32)) } else { field };
            if len == 0 {
                if signed && (x >> (w - 1)) & 1 == 1 && pos >= w as u64 {
                    mask(w)
                } else {
                    0
                }
            } else {
                v & mask(w)
            }
        }
        Op::Bfi => {
            let bb = b()?;
            let pos = rd(m, t, i, 3, Ty::U(32))? & 0xff;
            let len = rd(m, t, i, 4, Ty::U(32))? & 0xff;
            if pos >= w as u64 || len == 0 {
                bb & mask(w)
            } else {
                let fm = mask(len.min(w as u64 - pos) as u32) << pos;
                ((bb & !fm) | ((a << pos) & fm)) & mask(w)
            }
        }
        Op::Prmt => {
            let bb = b()?;
            let c = rd(m, t, i, 3, Ty::B(32))?;
            let bytes = (((bb & 0xffff_ffff) << 32) | (a & 0xffff_ffff)).to_le_bytes();
            let mut out = 0u64;
            for k in 0..4 {
                let sel = (c >> (4 * k)) & 0xf;
                let byte = bytes[(sel & 7) as usize];
                let byte = if sel & 8 != 0 {
                    if byte & 0x80 != 0 {
                        0xff
                    } else {
                        0
                    }
                } else {
                    byte
                };
                out |= (byte as u64) << (8 * k);
            }
            out
        }
        Op::Shf => {
            let bb = b()? & 0xffff_ffff;
            let s = rd(m, t, i, 3, Ty::U(32))? & 0xffff_ffff;
            let s = if i.m.has("clamp") { s.min(32) } else { s & 31 };
            let pair = (bb << 32) | (a & 0xffff_ffff);
            if i.m.has("l") {
                ((pair << s) >> 32) & 0xffff_ffff
            } else {
                (pair >> s) & 0xffff_ffff
            }
        }
        op => return Err(m.err(t, format!("{op:?} is not supported on {ty:?} (`{}`)", m.inst_text(t)))),
    };
    m.set(t, d, v)
}

fn width_ty(t: Ty, bits: u32) -> Ty {
    match t {
        Ty::S(_) => Ty::S(bits as u8),
        Ty::U(_) => Ty::U(bits as u8),
        _ => Ty::B(bits as u8),
    }
}

fn atom(m: &mut Block, t: usize, i: &Inst, glob: &mut Global) -> Result<(), PtxError> {
    let ty = i.m.ty();
    let es = ty.bytes();
    let sp = i.m.space.unwrap_or(Space::Generic);
    let (has_d, base) = if i.op == Op::Atom { (true, 1) } else { (false, 0) };
    let addr = m.addr(t, src(m, t, i, base)?)?;
    let b = rd(m, t, i, base + 1, ty)?;
    let opw =
        i.m.words
            .iter()
            .copied()
            .find(|w| ["add", "min", "max", "inc", "dec", "exch", "cas", "and", "or", "xor"].contains(w));
    m.set_atomic(true);
    let old = m.load(t, glob, sp, addr, es);
    let old = match old {
        Ok(v) => v,
        Err(e) => {
            m.set_atomic(false);
            return Err(e);
        }
    };
    let new = match opw {
        Some("add") if ty.float() => {
            alu::float_result(alu::float_of(old, ty) + alu::float_of(b, ty), ty, None, false, false)
        }
        Some("add") => old.wrapping_add(b) & mask(ty.bits()),
        Some("min") if ty.float() => {
            alu::float_result(alu::float_of(old, ty).min(alu::float_of(b, ty)), ty, None, false, false)
        }
        Some("max") if ty.float() => {
            alu::float_result(alu::float_of(old, ty).max(alu::float_of(b, ty)), ty, None, false, false)
        }
        Some("min") => (int_of(old, ty).min(int_of(b, ty)) as u64) & mask(ty.bits()),
        Some("max") => (int_of(old, ty).max(int_of(b, ty)) as u64) & mask(ty.bits()),
        Some("inc") => {
            if old >= b {
                0
            } else {
                old + 1
            }
        }
        Some("dec") => {
            if old == 0 || old > b {
                b
            } else {
                old - 1
            }
        }
        Some("exch") => b,
        Some("cas") => {
            let c = rd(m, t, i, base + 2, ty)?;
            if old == b {
                c
            } else {
                old
            }
        }
        Some("and") => old & b,
        Some("or") => old | b,
        Some("xor") => old ^ b,
        _ => {
            m.set_atomic(false);
            return Err(m.err(t, "unsupported atomic operation".into()));
        }
    };
    let r = m.store(t, glob, (sp, addr), es, new);
    m.set_atomic(false);
    r?;
    if has_d {
        let d = src(m, t, i, 0)?;
        m.set(t, d, old)?;
    }
    Ok(())
}
