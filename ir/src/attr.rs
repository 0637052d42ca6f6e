//! Op attributes, generically: every attribute of every op is one of a few kinds
//! ([`AttrKind`]), so the text form, the e-graph language and the artifact handle all ops the
//! same way, from the op table.
//!
//! **Text form** (after the op name, separated by spaces, in declaration order):
//! - a string is written quoted and alone (`input "tokens"`), a shape alone (`reshape [B,S,4,16]`)
//!   — an op has at most one of each;
//! - a type is not written: it is the node's result type (`input`, `weight`);
//! - a flag is its name when set (`zero_centred`) and absent when not;
//! - everything else is `name=value`: integers, `none` for an absent optional integer, floats in
//!   Rust's shortest round-trip exponent form (`eps=1e-6`), so reading the text back gives the
//!   same bits.

use crate::types::{Dim, Shape, TensorType};

/// The kind of an attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttrKind {
    /// A count, axis or offset.
    Int,
    /// An optional count (`None` printed `none`).
    OptInt,
    /// An f32 (eps, scale).
    F32,
    /// An f64 (rope theta).
    F64,
    /// A flag.
    Flag,
    /// A symbolic shape.
    Shape,
    /// A name.
    Str,
    /// A value type (the result type of a source).
    Type,
}

/// One attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// [`AttrKind::Int`].
    Int(usize),
    /// [`AttrKind::OptInt`].
    OptInt(Option<usize>),
    /// [`AttrKind::F32`].
    F32(f32),
    /// [`AttrKind::F64`].
    F64(f64),
    /// [`AttrKind::Flag`].
    Flag(bool),
    /// [`AttrKind::Shape`].
    Shape(Shape),
    /// [`AttrKind::Str`].
    Str(String),
    /// [`AttrKind::Type`].
    Type(TensorType),
}

/// A Rust type usable as an op attribute.
pub trait AttrType: Sized {
    /// Its kind.
    const KIND: AttrKind;
    /// As a generic value.
    fn to_attr(&self) -> AttrValue;
    /// From a generic value of its kind.
    fn from_attr(v: &AttrValue) -> Option<Self>;
}

macro_rules! attr_type {
    ($t:ty, $kind:ident) => {
        impl AttrType for $t {
            const KIND: AttrKind = AttrKind::$kind;
            fn to_attr(&self) -> AttrValue {
                AttrValue::$kind(self.clone())
            }
            fn from_attr(v: &AttrValue) -> Option<Self> {
                match v {
                    AttrValue::$kind(x) => Some(x.clone()),
                    _ => None,
                }
            }
        }
    };
}

attr_type!(usize, Int);
attr_type!(Option<usize>, OptInt);
attr_type!(f32, F32);
attr_type!(f64, F64);
attr_type!(bool, Flag);
attr_type!(Shape, Shape);
attr_type!(String, Str);
attr_type!(TensorType, Type);

fn shape_text(s: &[Dim]) -> String {
    let dims: Vec<String> = s.iter().map(|d| d.to_string()).collect();
    format!("[{}]", dims.join(","))
}

/// The text form of named attribute values (module doc).
pub fn to_text(attrs: &[(&str, AttrValue)]) -> String {
    let mut parts = Vec::with_capacity(attrs.len());
    for (name, v) in attrs {
        match v {
            AttrValue::Str(s) => parts.push(format!("{s:?}")),
            AttrValue::Shape(s) => parts.push(shape_text(s)),
            AttrValue::Type(_) | AttrValue::Flag(false) => {}
            AttrValue::Flag(true) => parts.push(name.to_string()),
            AttrValue::Int(i) => parts.push(format!("{name}={i}")),
            AttrValue::OptInt(Some(i)) => parts.push(format!("{name}={i}")),
            AttrValue::OptInt(None) => parts.push(format!("{name}=none")),
            AttrValue::F32(x) => parts.push(format!("{name}={x:e}")),
            AttrValue::F64(x) => parts.push(format!("{name}={x:e}")),
        }
    }
    parts.join(" ")
}

/// Splits attribute text into tokens: quoted strings (escapes kept, quotes included), bracketed
/// shapes, and space-separated words.
fn tokens(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut tok = String::new();
        let close = match c {
            '"' => Some('"'),
            '[' => Some(']'),
            _ => None,
        };
        if let Some(close) = close {
            tok.push(c);
            chars.next();
            let mut escaped = false;
            loop {
                let ch = chars.next().ok_or_else(|| format!("unterminated {tok}"))?;
                tok.push(ch);
                if close == '"' && ch == '\\' && !escaped {
                    escaped = true;
                    continue;
                }
                if ch == close && !escaped {
                    break;
                }
                escaped = false;
            }
        } else {
            while let Some(&ch) = chars.peek() {
                if ch.is_whitespace() {
                    break;
                }
                tok.push(ch);
                chars.next();
            }
        }
        out.push(tok);
    }
    Ok(out)
}

/// Reverses Rust's `{:?}` escaping of a string literal (with its quotes).
fn unquote(tok: &str) -> Result<String, String> {
    let inner = tok.strip_prefix('"').and_then(|t| t.strip_suffix('"')).ok_or_else(|| format!("bad string {tok}"))?;
    let mut out = String::new();
    let mut it = inner.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('0') => out.push('\0'),
            Some(c @ ('\\' | '"' | '\'')) => out.push(c),
            Some('u') => {
                let hex: String = it.by_ref().skip(1).take_while(|&c| c != '}').collect();
                let ch = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32);
                out.push(ch.ok_or_else(|| format!("bad escape \\u{{{hex}}} in {tok}"))?);
            }
            other => return Err(format!("bad escape \\{} in {tok}", other.unwrap_or(' '))),
        }
    }
    Ok(out)
}

/// Parses one dimension as [`Dim`]'s `Display` writes it: `64`, `B`, `P+S`, `2B+S-1`.
pub fn parse_dim(text: &str) -> Result<Dim, String> {
    let bad = || format!("bad dimension {text:?}");
    let mut d = Dim::c(0);
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let (neg, body) = match rest.as_bytes()[0] {
            b'+' => (false, &rest[1..]),
            b'-' => (true, &rest[1..]),
            _ => (false, rest),
        };
        let (neg, body) = match body.strip_prefix('-') {
            Some(b) => (!neg, b),
            None => (neg, body),
        };
        let end = body.find(['+', '-']).unwrap_or(body.len());
        let (term, tail) = body.split_at(end);
        let digits = term.find(|c: char| !c.is_ascii_digit()).unwrap_or(term.len());
        let (num, sym) = term.split_at(digits);
        let k: i64 = if num.is_empty() { 1 } else { num.parse().map_err(|_| bad())? };
        let k = if neg { -k } else { k };
        match sym {
            "" if !num.is_empty() => d.constant += k,
            "B" => d.coeffs[0] += k,
            "S" => d.coeffs[1] += k,
            "P" => d.coeffs[2] += k,
            _ => return Err(bad()),
        }
        rest = tail;
    }
    Ok(d)
}

fn parse_shape(tok: &str) -> Result<Shape, String> {
    let inner = tok.strip_prefix('[').and_then(|t| t.strip_suffix(']')).ok_or_else(|| format!("bad shape {tok}"))?;
    if inner.trim().is_empty() {
        return Ok(Vec::new());
    }
    inner.split(',').map(parse_dim).collect()
}

/// Reads the text form (module doc) of op `op`'s attributes, whose names and kinds are
/// `kinds`; `results` are the node's result types (for [`AttrKind::Type`]).
pub fn from_text(
    op: &str,
    kinds: &[(&str, AttrKind)],
    text: &str,
    results: &[TensorType],
) -> Result<Vec<AttrValue>, String> {
    let mut toks = tokens(text)?;
    let mut take = |pred: &dyn Fn(&str) -> bool| toks.iter().position(|t| pred(t)).map(|i| toks.remove(i));
    let mut out = Vec::with_capacity(kinds.len());
    for &(name, kind) in kinds {
        let keyed = |t: &str| t.strip_prefix(name).and_then(|r| r.strip_prefix('=')).is_some();
        let value = |t: String| t[name.len() + 1..].to_string();
        let missing = || format!("{op}: attribute {name} missing");
        let bad = |v: &str| format!("{op}: attribute {name}: bad value {v:?}");
        out.push(match kind {
            AttrKind::Str => AttrValue::Str(unquote(&take(&|t| t.starts_with('"')).ok_or_else(missing)?)?),
            AttrKind::Shape => AttrValue::Shape(parse_shape(&take(&|t| t.starts_with('[')).ok_or_else(missing)?)?),
            AttrKind::Type => AttrValue::Type(results.first().cloned().ok_or_else(missing)?),
            AttrKind::Flag => AttrValue::Flag(take(&|t| t == name).is_some()),
            AttrKind::Int => {
                let v = value(take(&keyed).ok_or_else(missing)?);
                AttrValue::Int(v.parse().map_err(|_| bad(&v))?)
            }
            AttrKind::OptInt => {
                let v = value(take(&keyed).ok_or_else(missing)?);
                AttrValue::OptInt(if v == "none" { None } else { Some(v.parse().map_err(|_| bad(&v))?) })
            }
            AttrKind::F32 => {
                let v = value(take(&keyed).ok_or_else(missing)?);
                AttrValue::F32(v.parse().map_err(|_| bad(&v))?)
            }
            AttrKind::F64 => {
                let v = value(take(&keyed).ok_or_else(missing)?);
                AttrValue::F64(v.parse().map_err(|_| bad(&v))?)
            }
        });
    }
    match toks.first() {
        Some(t) => Err(format!("{op}: unexpected {t:?}")),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Sym;

    #[test]
    fn dims_round_trip_through_text() {
        let p = Dim::sym(Sym::P);
        let cases = [
            Dim::c(0),
            Dim::c(64),
            Dim::sym(Sym::B),
            p.plus(Dim::sym(Sym::S)),
            Dim { constant: -1, coeffs: [2, 1, 0] },
            Dim { constant: 3, coeffs: [0, -1, 0] },
            Dim { constant: 0, coeffs: [-2, 0, 5] },
        ];
        for d in cases {
            assert_eq!(parse_dim(&d.to_string()), Ok(d), "{d}");
        }
        assert!(parse_dim("Q").is_err() && parse_dim("").is_err() && parse_dim("2x").is_err());
    }

    #[test]
    fn strings_with_escapes_round_trip() {
        for s in ["tokens", "a \"q\" b", "tab\there", "back\\slash", "ünï ☃", "\u{1}"] {
            let text = format!("{s:?}");
            assert_eq!(tokens(&text).unwrap(), vec![text.clone()]);
            assert_eq!(unquote(&text).unwrap(), s);
        }
    }
}
