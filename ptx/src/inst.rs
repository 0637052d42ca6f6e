//! Decoded instructions: an opcode, its modifiers and resolved operands. Decoding happens once
//! at module load; execution ([`crate::exec`]) matches on [`Op`].

use crate::parse::{int_lit, operands, type_size, Symbols, Tok};

/// An element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    /// Untyped bits (`.b8` … `.b64`).
    B(u8),
    /// Unsigned.
    U(u8),
    /// Signed.
    S(u8),
    /// IEEE float (`.f16`, `.f32`, `.f64`).
    F(u8),
    /// `.bf16`.
    Bf16,
    /// `.bf16x2`.
    Bf16x2,
    /// `.f16x2`.
    F16x2,
    /// `.pred`.
    Pred,
}

impl Ty {
    fn parse(m: &str) -> Option<Ty> {
        let bits = |s: &str| s.parse::<u8>().ok();
        Some(match m {
            "pred" => Ty::Pred,
            "bf16" => Ty::Bf16,
            "bf16x2" => Ty::Bf16x2,
            "f16x2" => Ty::F16x2,
            _ if m.len() >= 2 => {
                let n = bits(&m[1..])?;
                if ![8, 16, 32, 64, 128].contains(&n) {
                    return None;
                }
                match &m[..1] {
                    "b" => Ty::B(n),
                    "u" => Ty::U(n),
                    "s" => Ty::S(n),
                    "f" if (16..=64).contains(&n) => Ty::F(n),
                    _ => return None,
                }
            }
            _ => return None,
        })
    }

    /// Width in bits.
    pub fn bits(self) -> u32 {
        match self {
            Ty::B(n) | Ty::U(n) | Ty::S(n) | Ty::F(n) => n as u32,
            Ty::Bf16 => 16,
            Ty::Bf16x2 | Ty::F16x2 | Ty::Pred => 32,
        }
    }

    /// Width in bytes.
    pub fn bytes(self) -> usize {
        (self.bits() as usize).div_ceil(8)
    }

    /// Whether signed integer.
    pub fn signed(self) -> bool {
        matches!(self, Ty::S(_))
    }

    /// Whether a float type.
    pub fn float(self) -> bool {
        matches!(self, Ty::F(_) | Ty::Bf16 | Ty::Bf16x2 | Ty::F16x2)
    }
}

/// A state space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    /// Generic addressing.
    Generic,
    /// `.global`.
    Global,
    /// `.shared`.
    Shared,
    /// `.local`.
    Local,
    /// `.param`.
    Param,
    /// `.const`.
    Const,
}

/// Rounding modifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rnd {
    /// To nearest even (float result).
    Rn,
    /// Toward zero.
    Rz,
    /// Toward −∞.
    Rm,
    /// Toward +∞.
    Rp,
    /// To nearest even integer (`cvt.rni`).
    Rni,
    /// Toward zero, integer.
    Rzi,
    /// Toward −∞, integer.
    Rmi,
    /// Toward +∞, integer.
    Rpi,
}

/// An opcode (the first word of the instruction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Op {
    Mov,
    Ld,
    St,
    Cvta,
    Cvt,
    Add,
    Sub,
    Mul,
    Mad,
    Fma,
    Div,
    Rem,
    Min,
    Max,
    Abs,
    Neg,
    Shl,
    Shr,
    And,
    Or,
    Xor,
    Not,
    Cnot,
    Bfe,
    Bfi,
    Prmt,
    Popc,
    Clz,
    Brev,
    Shf,
    Setp,
    Selp,
    Bra,
    Ret,
    Exit,
    BarSync,
    BarWarpSync,
    Membar,
    Shfl,
    Vote,
    Atom,
    Red,
    Rcp,
    Sqrt,
    Rsqrt,
    Ex2,
    Lg2,
    Sin,
    Cos,
    Tanh,
    Copysign,
    Activemask,
    Testp,
}

/// Modifiers of an instruction.
#[derive(Debug, Clone, Default)]
pub struct Mods {
    /// Types in the order written (`cvt.f32.s32` → [f32, s32]).
    pub types: Vec<Ty>,
    /// State space of a memory access / cvta.
    pub space: Option<Space>,
    /// `cvta.to.*`.
    pub to: bool,
    /// Vector width of a load/store (1, 2, 4).
    pub vec: u8,
    /// Rounding.
    pub rnd: Option<Rnd>,
    /// `.ftz`.
    pub ftz: bool,
    /// `.sat`.
    pub sat: bool,
    /// `.approx` (or `.full`).
    pub approx: bool,
    /// Other keywords: comparison (`lt`, `geu`), bool op (`and`), `lo/hi/wide`, shfl mode,
    /// vote mode, atomic op, `l/r`, `wrap/clamp`.
    pub words: Vec<&'static str>,
}

impl Mods {
    /// The first type.
    pub fn ty(&self) -> Ty {
        self.types.first().copied().unwrap_or(Ty::B(32))
    }
    /// Whether keyword `w` is present.
    pub fn has(&self, w: &str) -> bool {
        self.words.contains(&w)
    }
}

/// Special registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Sreg {
    Tid(u8),
    Ntid(u8),
    Ctaid(u8),
    Nctaid(u8),
    Laneid,
    Warpid,
    Nwarpid,
    Clock,
    Clock64,
    DynSmem,
    TotalSmem,
    LanemaskLt,
    LanemaskLe,
    LanemaskEq,
    LanemaskGe,
    LanemaskGt,
}

/// An operand.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// A register (index into the thread's register file).
    Reg(u32),
    /// An immediate's bits (floats as their IEEE bits of the instruction's type).
    Imm(u64),
    /// A float immediate written as a decimal or `0f`/`0d` literal: f64 value.
    FImm(f64),
    /// `{a, b, …}`.
    Vec(Vec<Operand>),
    /// `[base + off]`.
    Mem(Box<Operand>, i64),
    /// A variable or parameter name (resolved to an address at load).
    Sym(String),
    /// A branch target.
    Label(usize),
    /// A special register.
    Special(Sreg),
    /// `d|p`: a value and a predicate destination.
    Pair(u32, u32),
    /// `_`: a discarded destination.
    Sink,
}

/// One instruction.
#[derive(Debug, Clone)]
pub struct Inst {
    /// `@p` / `@!p` guard: register and negation.
    pub guard: Option<(u32, bool)>,
    /// The opcode.
    pub op: Op,
    /// Modifiers.
    pub m: Mods,
    /// Operands (destination first).
    pub ops: Vec<Operand>,
}

/// Parses a literal (`12`, `-3`, `0x1F`, `0f3F800000`, `0d3FF0…`, `1.5`) to its bits (floats as
/// f64 bits are not produced here: `0f` literals give their f32 bits).
pub(crate) fn literal(w: &str) -> Option<u64> {
    if let Some(h) = w.strip_prefix("0f").or_else(|| w.strip_prefix("0F")) {
        return u32::from_str_radix(h, 16).ok().map(u64::from);
    }
    if let Some(h) = w.strip_prefix("0d").or_else(|| w.strip_prefix("0D")) {
        return u64::from_str_radix(h, 16).ok();
    }
    int_lit(w)
}

const IGNORED: &[&str] = &[
    "sync", "aligned", "uni", "nc", "volatile", "relaxed", "acquire", "release", "acq_rel", "sc", "gpu", "sys", "cta",
    "ca", "cg", "cs", "lu", "cv", "wb", "wt", "L1", "L2", "noftz", "b", "c",
];
const WORDS: &[&str] = &[
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "lo",
    "ls",
    "hi",
    "hs",
    "equ",
    "neu",
    "ltu",
    "leu",
    "gtu",
    "geu",
    "num",
    "nan",
    "and",
    "or",
    "xor",
    "wide",
    "bfly",
    "down",
    "up",
    "idx",
    "all",
    "any",
    "ballot",
    "add",
    "min",
    "max",
    "inc",
    "dec",
    "exch",
    "cas",
    "l",
    "r",
    "wrap",
    "clamp",
    "finite",
    "infinite",
    "number",
    "notanumber",
    "normal",
    "subnormal",
];

fn opcode(w: &str) -> Option<Op> {
    Some(match w {
        "mov" => Op::Mov,
        "ld" | "ldu" => Op::Ld,
        "st" => Op::St,
        "cvta" => Op::Cvta,
        "cvt" => Op::Cvt,
        "add" => Op::Add,
        "sub" => Op::Sub,
        "mul" => Op::Mul,
        "mad" => Op::Mad,
        "fma" => Op::Fma,
        "div" => Op::Div,
        "rem" => Op::Rem,
        "min" => Op::Min,
        "max" => Op::Max,
        "abs" => Op::Abs,
        "neg" => Op::Neg,
        "shl" => Op::Shl,
        "shr" => Op::Shr,
        "and" => Op::And,
        "or" => Op::Or,
        "xor" => Op::Xor,
        "not" => Op::Not,
        "cnot" => Op::Cnot,
        "bfe" => Op::Bfe,
        "bfi" => Op::Bfi,
        "prmt" => Op::Prmt,
        "popc" => Op::Popc,
        "clz" => Op::Clz,
        "brev" => Op::Brev,
        "shf" => Op::Shf,
        "setp" => Op::Setp,
        "selp" => Op::Selp,
        "bra" => Op::Bra,
        "ret" => Op::Ret,
        "exit" => Op::Exit,
        "bar" | "barrier" => Op::BarSync,
        "membar" | "fence" => Op::Membar,
        "shfl" => Op::Shfl,
        "vote" => Op::Vote,
        "atom" => Op::Atom,
        "red" => Op::Red,
        "rcp" => Op::Rcp,
        "sqrt" => Op::Sqrt,
        "rsqrt" => Op::Rsqrt,
        "ex2" => Op::Ex2,
        "lg2" => Op::Lg2,
        "sin" => Op::Sin,
        "cos" => Op::Cos,
        "tanh" => Op::Tanh,
        "copysign" => Op::Copysign,
        "activemask" => Op::Activemask,
        "testp" => Op::Testp,
        _ => return None,
    })
}

/// Decodes one statement (registers already renamed to `%#N`).
pub(crate) fn decode(st: &[Tok], syms: &Symbols) -> Result<Inst, String> {
    let mut i = 0;
    let mut guard = None;
    if st.first() == Some(&Tok::P('@')) {
        let neg = st.get(1) == Some(&Tok::P('!'));
        let r = st.get(1 + usize::from(neg));
        guard = Some((reg_of(r).ok_or("bad guard predicate")?, neg));
        i = 2 + usize::from(neg);
    }
    let Some(Tok::Word(w)) = st.get(i) else { return Err("expected an opcode".into()) };
    let mut parts = w.split('.');
    let name = parts.next().unwrap_or("");
    let op = opcode(name).ok_or_else(|| format!("unsupported instruction {name}"))?;
    let mut m = Mods { vec: 1, ..Mods::default() };
    let mut rest: Vec<&str> = parts.collect();
    if op == Op::BarSync && rest.first() == Some(&"warp") {
        return decode_rest(guard, Op::BarWarpSync, m, &st[i + 1..], syms);
    }
    if op == Op::Cvta && rest.first() == Some(&"to") {
        m.to = true;
        rest.remove(0);
    }
    for p in rest {
        match p {
            "global" => m.space = Some(Space::Global),
            "shared" => m.space = Some(Space::Shared),
            "local" => m.space = Some(Space::Local),
            "param" => m.space = Some(Space::Param),
            "const" => m.space = Some(Space::Const),
            "v2" => m.vec = 2,
            "v4" => m.vec = 4,
            "rn" => m.rnd = Some(Rnd::Rn),
            "rz" => m.rnd = Some(Rnd::Rz),
            "rm" => m.rnd = Some(Rnd::Rm),
            "rp" => m.rnd = Some(Rnd::Rp),
            "rni" => m.rnd = Some(Rnd::Rni),
            "rzi" => m.rnd = Some(Rnd::Rzi),
            "rmi" => m.rnd = Some(Rnd::Rmi),
            "rpi" => m.rnd = Some(Rnd::Rpi),
            "ftz" => m.ftz = true,
            "sat" => m.sat = true,
            "approx" | "full" => m.approx = true,
            _ => {
                if let Some(t) = Ty::parse(p) {
                    m.types.push(t);
                } else if let Some(w) = WORDS.iter().find(|w| **w == p) {
                    m.words.push(w);
                } else if !IGNORED.contains(&p) && !p.chars().all(|c| c.is_ascii_digit()) {
                    return Err(format!("unsupported modifier .{p} on {name}"));
                }
            }
        }
    }
    if matches!(op, Op::Ld | Op::St) && m.space.is_none() {
        m.space = Some(Space::Generic);
    }
    decode_rest(guard, op, m, &st[i + 1..], syms)
}

fn decode_rest(guard: Option<(u32, bool)>, op: Op, m: Mods, toks: &[Tok], syms: &Symbols) -> Result<Inst, String> {
    let ops = operands(toks).into_iter().map(|o| operand(o, syms)).collect::<Result<Vec<_>, _>>()?;
    Ok(Inst { guard, op, m, ops })
}

fn reg_of(t: Option<&Tok>) -> Option<u32> {
    match t {
        Some(Tok::Word(w)) => w.strip_prefix("%#").and_then(|n| n.parse().ok()),
        _ => None,
    }
}

fn special(w: &str) -> Option<Sreg> {
    let dim = |s: &str| match s {
        "x" => Some(0),
        "y" => Some(1),
        "z" => Some(2),
        _ => None,
    };
    let (base, d) = match w.split_once('.') {
        Some((b, d)) => (b, dim(d)),
        None => (w, None),
    };
    Some(match (base, d) {
        ("%tid", Some(d)) => Sreg::Tid(d),
        ("%ntid", Some(d)) => Sreg::Ntid(d),
        ("%ctaid", Some(d)) => Sreg::Ctaid(d),
        ("%nctaid", Some(d)) => Sreg::Nctaid(d),
        ("%laneid", None) => Sreg::Laneid,
        ("%warpid", None) => Sreg::Warpid,
        ("%nwarpid", None) => Sreg::Nwarpid,
        ("%clock", None) => Sreg::Clock,
        ("%clock64", None) => Sreg::Clock64,
        ("%dynamic_smem_size", None) => Sreg::DynSmem,
        ("%total_smem_size", None) => Sreg::TotalSmem,
        ("%lanemask_lt", None) => Sreg::LanemaskLt,
        ("%lanemask_le", None) => Sreg::LanemaskLe,
        ("%lanemask_eq", None) => Sreg::LanemaskEq,
        ("%lanemask_ge", None) => Sreg::LanemaskGe,
        ("%lanemask_gt", None) => Sreg::LanemaskGt,
        _ => return None,
    })
}

fn scalar(w: &str, neg: bool, syms: &Symbols) -> Result<Operand, String> {
    if let Some(r) = w.strip_prefix("%#").and_then(|n| n.parse().ok()) {
        return Ok(Operand::Reg(r));
    }
    if w.starts_with('%') {
        return special(w).map(Operand::Special).ok_or_else(|| format!("unknown register {w}"));
    }
    if w == "_" {
        return Ok(Operand::Sink);
    }
    if w.starts_with(|c: char| c.is_ascii_digit()) {
        if let Some(h) = w.strip_prefix("0f").or_else(|| w.strip_prefix("0F")) {
            let v = f32::from_bits(u32::from_str_radix(h, 16).map_err(|_| format!("bad literal {w}"))?) as f64;
            return Ok(Operand::FImm(if neg { -v } else { v }));
        }
        if let Some(h) = w.strip_prefix("0d").or_else(|| w.strip_prefix("0D")) {
            let v = f64::from_bits(u64::from_str_radix(h, 16).map_err(|_| format!("bad literal {w}"))?);
            return Ok(Operand::FImm(if neg { -v } else { v }));
        }
        if let Some(v) = int_lit(w) {
            return Ok(Operand::Imm(if neg { v.wrapping_neg() } else { v }));
        }
        if let Ok(v) = w.parse::<f64>() {
            return Ok(Operand::FImm(if neg { -v } else { v }));
        }
        return Err(format!("bad literal {w}"));
    }
    if let Some(l) = syms.label(w) {
        return Ok(Operand::Label(l));
    }
    Ok(Operand::Sym(w.to_string()))
}

fn operand(t: &[Tok], syms: &Symbols) -> Result<Operand, String> {
    match t {
        [Tok::Word(w)] => scalar(w, false, syms),
        [Tok::P('-'), Tok::Word(w)] => scalar(w, true, syms),
        [Tok::Word(a), Tok::P('|'), Tok::Word(b)] => match (reg_of(Some(&t[0])), reg_of(Some(&t[2]))) {
            (Some(d), Some(p)) => Ok(Operand::Pair(d, p)),
            _ => Err(format!("bad d|p operand {a}|{b}")),
        },
        [Tok::P('{'), inner @ .., Tok::P('}')] => {
            Ok(Operand::Vec(operands(inner).into_iter().map(|o| operand(o, syms)).collect::<Result<_, _>>()?))
        }
        [Tok::P('['), inner @ .., Tok::P(']')] => {
            let (base, off) = match inner {
                [b] => (b, 0i64),
                [b, Tok::P('+'), Tok::Word(o)] => (b, int_lit(o).ok_or("bad offset")? as i64),
                [b, Tok::P('+'), Tok::P('-'), Tok::Word(o)] | [b, Tok::P('-'), Tok::Word(o)] => {
                    (b, (int_lit(o).ok_or("bad offset")? as i64).wrapping_neg())
                }
                _ => return Err(format!("bad address {t:?}")),
            };
            let Tok::Word(bw) = base else { return Err("bad address base".into()) };
            Ok(Operand::Mem(Box::new(scalar(bw, false, syms)?), off))
        }
        [Tok::P('!'), Tok::Word(w)] => match w.strip_prefix("%#").and_then(|n| n.parse::<u32>().ok()) {
            // `!p` as a source predicate: encoded as a register with the top bit set.
            Some(r) => Ok(Operand::Reg(r | 0x8000_0000)),
            None => Err(format!("bad negated predicate {w}")),
        },
        _ => Err(format!("unsupported operand {t:?}")),
    }
}

/// Size of a type name, for declarations (re-exported for the executor).
pub fn size_of_type(t: &str) -> Option<usize> {
    type_size(t)
}
