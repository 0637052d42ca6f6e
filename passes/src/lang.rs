//! The egg language mirroring the IR: one e-node per IR op, with the op's attributes as leading
//! children (each attribute value is its own e-class, as in tensat), so rules can bind them to
//! variables (`(rms_norm ?eps ?zc ?x ?w)`) and shape checks can read them.
//!
//! Values of multi-result ops are explicit projections: `(get 1 (add_rms_norm ...))`. Region
//! leaves (weights, inputs and values computed outside the region) are `Leaf(k)` nodes whose
//! types the analysis holds. [`split`] and [`join`] convert between [`Op`] and (name,
//! attributes), both derived from the IR's op table; [`op_name`] says which ops the language knows.

use egg::{FromOp, Id, Language};
use qgc_ir::attr::{AttrKind, AttrValue};
use qgc_ir::{Dim, Op, OpClass};
use std::fmt;

/// An attribute value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Attr {
    /// Axis, offset, length, count; `-1` encodes `None` for optional counts.
    Int(i64),
    /// An f32 attribute, by bits (eps, scale).
    F32(u32),
    /// An f64 attribute, by bits (rope theta).
    F64(u64),
    /// A flag.
    Bool(bool),
    /// A (symbolic) shape: per dim the constant and the B, S, P coefficients.
    Shape(Vec<(i64, [i64; 3])>),
}

impl Attr {
    /// The integer value, if this is one.
    pub fn int(&self) -> Option<i64> {
        match self {
            Attr::Int(v) => Some(*v),
            _ => None,
        }
    }
}

impl fmt::Display for Attr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attr::Int(v) => write!(f, "{v}"),
            Attr::F32(b) => write!(f, "{:e}f", f32::from_bits(*b)),
            Attr::F64(b) => write!(f, "{:e}d", f64::from_bits(*b)),
            Attr::Bool(b) => write!(f, "{b}"),
            Attr::Shape(s) => {
                let dims: Vec<String> = s.iter().map(|&(c, k)| Dim { constant: c, coeffs: k }.to_string()).collect();
                write!(f, "[{}]", dims.join(","))
            }
        }
    }
}

/// An e-node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Node {
    /// An attribute value.
    Attr(Attr),
    /// Region leaf `k`: a weight, an input, or a value computed outside the region.
    Leaf(u32),
    /// `(get i n)`: result `i` (an `Attr::Int` class) of the multi-result node `n`.
    Get([Id; 2]),
    /// An IR op by name ([`Op::name`]): attribute children first, then operands.
    Op(&'static str, Vec<Id>),
}

impl Node {
    /// An op node.
    pub fn op(name: &'static str, children: Vec<Id>) -> Node {
        Node::Op(name, children)
    }
}

/// The `&'static` name of the op called `name`, if the language has it (every op of the IR's
/// op table but the sources, which are region leaves).
pub fn op_name(name: &str) -> Option<&'static str> {
    let info = Op::info_by_name(name)?;
    (info.class != OpClass::Source).then_some(info.name)
}

/// `(u8 variant, op name)`: coarse enough that nodes of one discriminant sort contiguously.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Disc(u8, &'static str);

impl Language for Node {
    type Discriminant = Disc;

    fn discriminant(&self) -> Disc {
        match self {
            Node::Attr(_) => Disc(0, ""),
            Node::Leaf(_) => Disc(1, ""),
            Node::Get(_) => Disc(2, ""),
            Node::Op(n, _) => Disc(3, n),
        }
    }

    fn matches(&self, other: &Self) -> bool {
        match (self, other) {
            (Node::Attr(a), Node::Attr(b)) => a == b,
            (Node::Leaf(a), Node::Leaf(b)) => a == b,
            (Node::Get(_), Node::Get(_)) => true,
            (Node::Op(a, x), Node::Op(b, y)) => a == b && x.len() == y.len(),
            _ => false,
        }
    }

    fn children(&self) -> &[Id] {
        match self {
            Node::Attr(_) | Node::Leaf(_) => &[],
            Node::Get(c) => c,
            Node::Op(_, c) => c,
        }
    }

    fn children_mut(&mut self) -> &mut [Id] {
        match self {
            Node::Attr(_) | Node::Leaf(_) => &mut [],
            Node::Get(c) => c,
            Node::Op(_, c) => c,
        }
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Attr(a) => write!(f, "{a}"),
            Node::Leaf(k) => write!(f, "leaf{k}"),
            Node::Get(_) => write!(f, "get"),
            Node::Op(n, _) => write!(f, "{n}"),
        }
    }
}

/// Failure to parse a pattern operator.
#[derive(Debug, thiserror::Error)]
#[error("unknown operator {0:?} in a rule pattern")]
pub struct ParseError(String);

impl FromOp for Node {
    type Error = ParseError;

    /// Op names, `get`, `leafK`, integers, `true`/`false`.
    fn from_op(op: &str, children: Vec<Id>) -> Result<Self, ParseError> {
        if op == "get" && children.len() == 2 {
            return Ok(Node::Get([children[0], children[1]]));
        }
        if let Some(name) = op_name(op) {
            return Ok(Node::Op(name, children));
        }
        if !children.is_empty() {
            return Err(ParseError(op.into()));
        }
        if let Ok(v) = op.parse::<i64>() {
            return Ok(Node::Attr(Attr::Int(v)));
        }
        match op {
            "true" => Ok(Node::Attr(Attr::Bool(true))),
            "false" => Ok(Node::Attr(Attr::Bool(false))),
            _ => op.strip_prefix("leaf").and_then(|k| k.parse().ok()).map(Node::Leaf).ok_or(ParseError(op.into())),
        }
    }
}

impl Attr {
    /// The e-graph form of an IR attribute value; `None` for names and types (only sources
    /// have those, and sources are leaves).
    pub fn of_value(v: &AttrValue) -> Option<Attr> {
        Some(match v {
            AttrValue::Int(i) => Attr::Int(i64::try_from(*i).ok()?),
            AttrValue::OptInt(o) => Attr::Int(match o {
                Some(i) => i64::try_from(*i).ok()?,
                None => -1,
            }),
            AttrValue::F32(x) => Attr::F32(x.to_bits()),
            AttrValue::F64(x) => Attr::F64(x.to_bits()),
            AttrValue::Flag(b) => Attr::Bool(*b),
            AttrValue::Shape(s) => Attr::Shape(s.iter().map(|d| (d.constant, d.coeffs)).collect()),
            AttrValue::Str(_) | AttrValue::Type(_) => return None,
        })
    }

    /// The IR attribute value of kind `kind` this encodes, if it is one.
    pub fn to_value(&self, kind: AttrKind) -> Option<AttrValue> {
        Some(match (kind, self) {
            (AttrKind::Int, Attr::Int(i)) => AttrValue::Int(usize::try_from(*i).ok()?),
            (AttrKind::OptInt, Attr::Int(-1)) => AttrValue::OptInt(None),
            (AttrKind::OptInt, Attr::Int(i)) => AttrValue::OptInt(Some(usize::try_from(*i).ok()?)),
            (AttrKind::F32, Attr::F32(b)) => AttrValue::F32(f32::from_bits(*b)),
            (AttrKind::F64, Attr::F64(b)) => AttrValue::F64(f64::from_bits(*b)),
            (AttrKind::Flag, Attr::Bool(b)) => AttrValue::Flag(*b),
            (AttrKind::Shape, Attr::Shape(s)) => {
                AttrValue::Shape(s.iter().map(|&(constant, coeffs)| Dim { constant, coeffs }).collect())
            }
            _ => return None,
        })
    }
}

/// An op's name and attributes, in the order they lead its e-node's children (the op table's
/// declaration order). Sources (`Input`, `Weight`) are region leaves, never op nodes: `None`.
pub fn split(op: &Op) -> Option<(&'static str, Vec<Attr>)> {
    if op.class() == OpClass::Source {
        return None;
    }
    let attrs = op.attrs().iter().map(|(_, v)| Attr::of_value(v)).collect::<Option<Vec<_>>>()?;
    Some((op.name(), attrs))
}

/// The op named `name` with attributes `a` (the inverse of [`split`]); `None` when they do not
/// fit.
pub fn join(name: &str, a: &[Attr]) -> Option<Op> {
    let kinds = Op::attr_names(name)?;
    if kinds.len() != a.len() {
        return None;
    }
    let vals = kinds.iter().zip(a).map(|((_, k), a)| a.to_value(*k)).collect::<Option<Vec<_>>>()?;
    Op::from_attrs(name, &vals).filter(|op| op.class() != OpClass::Source)
}
