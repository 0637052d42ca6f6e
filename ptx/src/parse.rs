//! PTX text → [`Module`]: a tokenizer and a statement parser for the subset of the language
//! NVRTC writes (`../shared/cuda.md` §4): module directives, module-scope `.global`/`.const`
//! variables with initialisers and `.extern .shared` arrays, `.entry` kernels with `.param`
//! lists and performance directives, `.reg`/`.shared`/`.local` declarations, labels, predicated
//! instructions, vector operands, `[base+offset]` addresses and inline-asm `{ }` scopes with
//! their own registers (renamed per scope).

use crate::inst::{decode, Inst, Operand};
use crate::PtxError;
use std::collections::HashMap;

/// A variable in a state space (module-scope `.global`/`.const`, a kernel's `.shared`/`.local`).
#[derive(Debug, Clone)]
pub struct Var {
    /// Its name.
    pub name: String,
    /// Size in bytes (0 for an `.extern` array: dynamic shared memory).
    pub size: usize,
    /// Alignment in bytes.
    pub align: usize,
    /// Initial bytes (zero when absent).
    pub init: Vec<u8>,
}

/// One `.entry` kernel.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// Its name.
    pub name: String,
    /// Parameters: name, byte offset in the parameter buffer, size.
    pub params: Vec<(String, usize, usize)>,
    /// Bytes of the parameter buffer.
    pub param_bytes: usize,
    /// Registers (predicates included), each an index into a thread's register file.
    pub regs: usize,
    /// Static shared variables (laid out in order at their alignment).
    pub shared: Vec<Var>,
    /// Local variables (per thread).
    pub local: Vec<Var>,
    /// The instructions; branch targets are indices into it.
    pub insts: Vec<Inst>,
    /// Source text of each instruction (for reports).
    pub text: Vec<String>,
}

/// A parsed module.
#[derive(Debug, Clone)]
pub struct Module {
    /// Module-scope `.global` and `.const` variables.
    pub globals: Vec<Var>,
    /// Whether a module-scope `.extern .shared` array exists (its name, alignment).
    pub extern_shared: Vec<(String, usize)>,
    /// The kernels.
    pub kernels: Vec<Kernel>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Word(String),
    Str(String),
    P(char),
}

fn tokenize(src: &str) -> Result<Vec<(Tok, usize)>, PtxError> {
    let b = src.as_bytes();
    let (mut i, mut line, mut out) = (0, 1, Vec::new());
    while i < b.len() {
        let c = b[i];
        match c {
            b'\n' => {
                line += 1;
                i += 1;
            }
            c if c.is_ascii_whitespace() => i += 1,
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    line += usize::from(b[i] == b'\n');
                    i += 1;
                }
                i += 2;
            }
            b'"' => {
                let s = i + 1;
                i = s;
                while i < b.len() && b[i] != b'"' {
                    i += 1;
                }
                out.push((Tok::Str(src[s..i.min(b.len())].to_string()), line));
                i += 1;
            }
            b'{' | b'}' | b'[' | b']' | b'(' | b')' | b',' | b';' | b':' | b'@' | b'!' | b'|' | b'+' | b'-' | b'='
            | b'<' | b'>' => {
                out.push((Tok::P(c as char), line));
                i += 1;
            }
            c if c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'%' | b'$') => {
                let s = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'_' | b'.' | b'%' | b'$')) {
                    i += 1;
                }
                out.push((Tok::Word(src[s..i].to_string()), line));
            }
            _ => return Err(PtxError::Parse { line, message: format!("unexpected character {:?}", c as char) }),
        }
    }
    Ok(out)
}

/// A cursor over tokens.
struct Cur {
    toks: Vec<(Tok, usize)>,
    i: usize,
}

impl Cur {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i).map(|t| &t.0)
    }
    fn peek_at(&self, k: usize) -> Option<&Tok> {
        self.toks.get(self.i + k).map(|t| &t.0)
    }
    fn line(&self) -> usize {
        self.toks.get(self.i).or(self.toks.last()).map_or(0, |t| t.1)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.i).map(|t| t.0.clone());
        self.i += 1;
        t
    }
    fn err(&self, message: impl Into<String>) -> PtxError {
        PtxError::Parse { line: self.line(), message: message.into() }
    }
    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(&Tok::P(c)) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, c: char) -> Result<(), PtxError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.err(format!("expected '{c}', found {:?}", self.peek())))
        }
    }
    fn word(&mut self) -> Result<String, PtxError> {
        match self.next() {
            Some(Tok::Word(w)) => Ok(w),
            t => Err(self.err(format!("expected a name, found {t:?}"))),
        }
    }
    /// Tokens up to (not including) the next `;` at bracket depth 0; consumes the `;`.
    fn statement(&mut self) -> Result<Vec<Tok>, PtxError> {
        let mut out = Vec::new();
        let mut depth = 0i32;
        loop {
            match self.next() {
                None => return Err(self.err("unterminated statement")),
                Some(Tok::P(';')) if depth == 0 => return Ok(out),
                Some(t) => {
                    match t {
                        Tok::P('{') | Tok::P('[') | Tok::P('(') => depth += 1,
                        Tok::P('}') | Tok::P(']') | Tok::P(')') => depth -= 1,
                        _ => {}
                    }
                    out.push(t);
                }
            }
        }
    }
}

/// Parses an integer literal (decimal, `0x` hex, octal `0…`, with an optional `U` suffix).
pub(crate) fn int_lit(w: &str) -> Option<u64> {
    let w = w.trim_end_matches('U');
    if let Some(h) = w.strip_prefix("0x").or_else(|| w.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else if w.len() > 1 && w.starts_with('0') && w.bytes().all(|c| c.is_ascii_digit()) {
        u64::from_str_radix(&w[1..], 8).ok()
    } else {
        w.parse().ok()
    }
}

/// Size in bytes of a PTX type name (`.b32`, `.f64`, `.pred`, ...).
pub(crate) fn type_size(t: &str) -> Option<usize> {
    Some(match t.trim_start_matches('.') {
        "b8" | "u8" | "s8" => 1,
        "b16" | "u16" | "s16" | "f16" | "bf16" => 2,
        "b32" | "u32" | "s32" | "f32" | "f16x2" | "bf16x2" | "pred" => 4,
        "b64" | "u64" | "s64" | "f64" => 8,
        "b128" => 16,
        _ => return None,
    })
}

/// Parses `[.align N] .type name[N][= {…}]` (the tokens after the state space).
fn var_decl(toks: &[Tok], line: usize) -> Result<Var, PtxError> {
    let err = |m: &str| PtxError::Parse { line, message: m.to_string() };
    let (mut align, mut elem, mut i) = (0usize, 0usize, 0usize);
    let mut name = None;
    let mut count = 1usize;
    let mut init = Vec::new();
    let mut explicit_dims = false;
    while i < toks.len() {
        match &toks[i] {
            Tok::Word(w) if w == ".align" => {
                align = match toks.get(i + 1) {
                    Some(Tok::Word(n)) => int_lit(n).ok_or_else(|| err("bad .align"))? as usize,
                    _ => return Err(err("bad .align")),
                };
                i += 1;
            }
            Tok::Word(w) if w.starts_with('.') && type_size(w).is_some() && name.is_none() => {
                elem = type_size(w).unwrap_or(1)
            }
            Tok::Word(w) if w.starts_with('.') => {}
            Tok::Word(w) if name.is_none() => name = Some(w.clone()),
            Tok::P('[') => {
                explicit_dims = true;
                match toks.get(i + 1) {
                    Some(Tok::Word(n)) => {
                        count *= int_lit(n).ok_or_else(|| err("bad array length"))? as usize;
                        i += 1;
                    }
                    _ => count = 0,
                }
            }
            Tok::P('=') => {
                for t in &toks[i + 1..] {
                    if let Tok::Word(n) = t {
                        let v = crate::inst::literal(n).ok_or_else(|| err("bad initialiser"))?;
                        init.extend_from_slice(&v.to_le_bytes()[..elem.max(1)]);
                    }
                }
                break;
            }
            _ => {}
        }
        i += 1;
    }
    let _ = explicit_dims;
    let name = name.ok_or_else(|| err("declaration without a name"))?;
    let size = elem.max(1) * count;
    init.resize(size.max(init.len()), 0);
    Ok(Var { name, size, align: align.max(elem.max(1)), init })
}

/// Parses a whole module.
pub fn parse(src: &str) -> Result<Module, PtxError> {
    let mut c = Cur { toks: tokenize(src)?, i: 0 };
    let mut m = Module { globals: Vec::new(), extern_shared: Vec::new(), kernels: Vec::new() };
    while let Some(t) = c.peek().cloned() {
        let Tok::Word(w) = t else { return Err(c.err(format!("unexpected {t:?} at module scope"))) };
        match w.as_str() {
            ".version" | ".target" | ".address_size" => {
                c.next();
                // Directives without semicolons: take words/commas on the same line.
                let line = c.toks[c.i - 1].1;
                while c.i < c.toks.len() && c.toks[c.i].1 == line {
                    c.i += 1;
                }
            }
            ".visible" | ".weak" | ".entry" => {
                while c.peek() != Some(&Tok::Word(".entry".into())) {
                    if c.next().is_none() {
                        return Err(c.err("expected .entry"));
                    }
                    if let Some(Tok::Word(x)) = c.peek() {
                        if x == ".func" {
                            return Err(c.err("device functions (.func) are not supported"));
                        }
                    }
                }
                c.next();
                m.kernels.push(kernel(&mut c)?);
            }
            ".func" => return Err(c.err("device functions (.func) are not supported")),
            ".extern" | ".global" | ".const" | ".shared" => {
                let line = c.line();
                let st = c.statement()?;
                let is_extern = w == ".extern";
                let space = st.iter().find_map(|t| match t {
                    Tok::Word(s) if [".global", ".const", ".shared"].contains(&s.as_str()) => Some(s.clone()),
                    _ => None,
                });
                if st.iter().any(|t| t == &Tok::Word(".func".into())) {
                    continue; // an extern function declaration nothing calls
                }
                let v = var_decl(&st[1..], line)?;
                match (space.as_deref(), is_extern) {
                    (Some(".shared"), true) => m.extern_shared.push((v.name, v.align)),
                    (Some(".shared"), false) => {
                        return Err(PtxError::Parse {
                            line,
                            message: "module-scope .shared variables are not supported".into(),
                        })
                    }
                    _ => m.globals.push(v),
                }
            }
            _ => return Err(c.err(format!("unexpected {w} at module scope"))),
        }
    }
    Ok(m)
}

/// Register scopes: name → index, innermost last.
struct Regs {
    scopes: Vec<HashMap<String, u32>>,
    count: u32,
}

impl Regs {
    fn declare(&mut self, name: &str) {
        let n = self.count;
        self.count += 1;
        if let Some(s) = self.scopes.last_mut() {
            s.insert(name.to_string(), n);
        }
    }
    fn get(&self, name: &str) -> Option<u32> {
        self.scopes.iter().rev().find_map(|s| s.get(name).copied())
    }
}

fn kernel(c: &mut Cur) -> Result<Kernel, PtxError> {
    let name = c.word()?;
    let mut params = Vec::new();
    let mut off = 0usize;
    c.expect('(')?;
    while !c.eat(')') {
        // .param [.align N] .type name[[N]]
        let mut toks = Vec::new();
        while !matches!(c.peek(), Some(Tok::P(',')) | Some(Tok::P(')')) | None) {
            toks.push(c.next().unwrap_or(Tok::P(' ')));
        }
        c.eat(',');
        let v = var_decl(&toks, c.line())?;
        off = off.div_ceil(v.align) * v.align;
        params.push((v.name, off, v.size));
        off += v.size;
    }
    // Performance directives up to the body.
    while c.peek() != Some(&Tok::P('{')) {
        if c.next().is_none() {
            return Err(c.err("kernel without a body"));
        }
    }
    c.expect('{')?;
    let mut k = Kernel {
        name,
        params,
        param_bytes: off,
        regs: 0,
        shared: Vec::new(),
        local: Vec::new(),
        insts: Vec::new(),
        text: Vec::new(),
    };
    let mut regs = Regs { scopes: vec![HashMap::new()], count: 0 };
    let mut labels: HashMap<String, usize> = HashMap::new();
    let mut raw: Vec<(Vec<Tok>, usize, String)> = Vec::new(); // statement, line, text
    let mut scope_regs: Vec<HashMap<String, u32>> = Vec::new();
    let mut stack = vec![0usize];
    scope_regs.push(HashMap::new());
    let mut depth = 1;
    while depth > 0 {
        match c.peek().cloned() {
            None => return Err(c.err("unterminated kernel body")),
            Some(Tok::P('{')) => {
                c.next();
                depth += 1;
                regs.scopes.push(HashMap::new());
                scope_regs.push(HashMap::new());
                stack.push(scope_regs.len() - 1);
            }
            Some(Tok::P('}')) => {
                c.next();
                depth -= 1;
                if depth > 0 {
                    let inner = regs.scopes.pop().unwrap_or_default();
                    let id = stack.pop().unwrap_or(0);
                    scope_regs[id] = inner;
                }
            }
            Some(Tok::Word(w)) if c.peek_at(1) == Some(&Tok::P(':')) => {
                c.next();
                c.next();
                labels.insert(w, raw.len());
            }
            Some(_) => {
                let line = c.line();
                let st = c.statement()?;
                match st.first() {
                    Some(Tok::Word(d)) if d == ".reg" => reg_decl(&st, &mut regs, line)?,
                    Some(Tok::Word(d)) if d == ".shared" => k.shared.push(var_decl(&st[1..], line)?),
                    Some(Tok::Word(d)) if d == ".local" => k.local.push(var_decl(&st[1..], line)?),
                    Some(Tok::Word(d)) if d == ".pragma" || d == ".loc" || d == ".file" => {}
                    Some(_) => {
                        // Resolve registers now, while the scope is known.
                        let text = render(&st);
                        let st = st
                            .into_iter()
                            .map(|t| match t {
                                Tok::Word(w) if w.starts_with('%') => match regs.get(&w) {
                                    Some(r) => Tok::Word(format!("%#{r}")),
                                    None => Tok::Word(w),
                                },
                                t => t,
                            })
                            .collect();
                        raw.push((st, line, text));
                    }
                    None => {}
                }
            }
        }
    }
    k.regs = regs.count as usize;
    let syms = Symbols { labels: &labels };
    for (st, line, text) in raw {
        let inst = decode(&st, &syms)
            .map_err(|message| PtxError::Parse { line, message: format!("{message} in `{text}`") })?;
        k.insts.push(inst);
        k.text.push(text);
    }
    Ok(k)
}

/// Names an instruction decoder resolves: branch labels.
pub(crate) struct Symbols<'a> {
    labels: &'a HashMap<String, usize>,
}

impl Symbols<'_> {
    /// The instruction index of label `l`.
    pub(crate) fn label(&self, l: &str) -> Option<usize> {
        self.labels.get(l).copied()
    }
}

fn reg_decl(st: &[Tok], regs: &mut Regs, line: usize) -> Result<(), PtxError> {
    // .reg .type name<N> | .reg .type a, b, c
    let mut i = 2;
    while i < st.len() {
        match &st[i] {
            Tok::Word(n) => {
                if st.get(i + 1) == Some(&Tok::P('<')) {
                    let count = match st.get(i + 2) {
                        Some(Tok::Word(x)) => int_lit(x),
                        _ => None,
                    }
                    .ok_or(PtxError::Parse { line, message: "bad register count".into() })?;
                    for j in 0..count {
                        regs.declare(&format!("{n}{j}"));
                    }
                    i += 3;
                } else {
                    regs.declare(n);
                }
            }
            Tok::P(',') | Tok::P('>') => {}
            t => return Err(PtxError::Parse { line, message: format!("bad .reg declaration at {t:?}") }),
        }
        i += 1;
    }
    Ok(())
}

/// Renders a statement back to text (for reports).
fn render(st: &[Tok]) -> String {
    let mut s = String::new();
    for (i, t) in st.iter().enumerate() {
        match t {
            Tok::Word(w) => {
                if i > 0 && !s.ends_with(['[', '{', '+', '-', '!', '@', '|', ' ']) {
                    s.push(' ');
                }
                s.push_str(w);
            }
            Tok::Str(w) => s.push_str(&format!(" \"{w}\"")),
            Tok::P(',') => s.push_str(", "),
            Tok::P('[') if i > 0 && !s.ends_with(' ') => s.push_str(" ["),
            Tok::P(c) => s.push(*c),
        }
    }
    s
}

/// Operands of an instruction (split at top-level commas), for the decoder.
pub(crate) fn operands(toks: &[Tok]) -> Vec<&[Tok]> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, t) in toks.iter().enumerate() {
        match t {
            Tok::P('{') | Tok::P('[') => depth += 1,
            Tok::P('}') | Tok::P(']') => depth -= 1,
            Tok::P(',') if depth == 0 => {
                out.push(&toks[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < toks.len() {
        out.push(&toks[start..]);
    }
    out
}

/// An operand placeholder used by decoders that need no symbols.
pub(crate) fn _unused(_: Operand) {}
