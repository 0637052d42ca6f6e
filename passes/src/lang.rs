//! The egg language mirroring the IR: one e-node per IR op, with the op's attributes as leading
//! children (each attribute value is its own e-class, as in tensat), so rules can bind them to
//! variables (`(rms_norm ?eps ?zc ?x ?w)`) and shape checks can read them.
//!
//! Values of multi-result ops are explicit projections: `(get 1 (add_rms_norm ...))`. Region
//! leaves (weights, inputs and values computed outside the region) are `Leaf(k)` nodes whose
//! types the analysis holds. [`split`] and [`join`] convert between [`Op`] and (name,
//! attributes); [`OP_NAMES`] lists every op the language knows.

use egg::{FromOp, Id, Language};
use qgc_ir::{Dim, Op};
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

/// Every op name the language knows (the IR's op table).
pub const OP_NAMES: &[&str] = &[
    "embed",
    "reshape",
    "slice",
    "concat",
    "matmul",
    "add",
    "mul",
    "silu",
    "sigmoid",
    "softplus",
    "exp",
    "neg",
    "scale",
    "mask_padding",
    "rms_norm",
    "gated_rms_norm",
    "l2_norm",
    "rope",
    "kv_append",
    "attention",
    "causal_conv1d",
    "gated_delta_rule",
    "moe_route",
    "moe_experts",
    "softmax",
    "top_k",
    "renormalize",
    "add_rms_norm",
    "rms_norm_rope",
    "matmul_swiglu",
    "matmul_sigmoid_gate",
    "sigmoid_gate_matmul",
    "gdn_gates",
];

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
        if let Some(name) = OP_NAMES.iter().find(|n| **n == op) {
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

fn f32a(v: f32) -> Attr {
    Attr::F32(v.to_bits())
}

fn int(v: usize) -> Attr {
    Attr::Int(v as i64)
}

/// An op's name and attributes, in the order they lead its e-node's children. Sources
/// (`Input`, `Weight`) are region leaves, never op nodes: `None`.
pub fn split(op: &Op) -> Option<(&'static str, Vec<Attr>)> {
    let attrs = match op {
        Op::Input { .. } | Op::Weight { .. } => return None,
        Op::Reshape { shape } => vec![Attr::Shape(shape.iter().map(|d| (d.constant, d.coeffs)).collect())],
        Op::Slice { axis, start, len } => vec![int(*axis), int(*start), int(*len)],
        Op::Concat { axis } => vec![int(*axis)],
        Op::Scale { by } => vec![f32a(*by)],
        Op::RmsNorm { eps, zero_centred } | Op::AddRmsNorm { eps, zero_centred } => {
            vec![f32a(*eps), Attr::Bool(*zero_centred)]
        }
        Op::GatedRmsNorm { eps } | Op::L2Norm { eps } => vec![f32a(*eps)],
        Op::Rope { theta, rotary_dim } => vec![Attr::F64(theta.to_bits()), int(*rotary_dim)],
        Op::Attention { scale } => vec![f32a(*scale)],
        Op::CausalConv1d { kernel } => vec![int(*kernel)],
        Op::GatedDeltaRule { chunk } => vec![Attr::Int(chunk.map_or(-1, |c| c as i64))],
        Op::MoeRoute { top_k, renormalize } => vec![int(*top_k), Attr::Bool(*renormalize)],
        Op::TopK { k } => vec![int(*k)],
        Op::RmsNormRope { eps, zero_centred, theta, rotary_dim } => {
            vec![f32a(*eps), Attr::Bool(*zero_centred), Attr::F64(theta.to_bits()), int(*rotary_dim)]
        }
        Op::GdnGates { eps, q_scale } => vec![f32a(*eps), f32a(*q_scale)],
        Op::Embed
        | Op::MatMul
        | Op::Add
        | Op::Mul
        | Op::Silu
        | Op::Sigmoid
        | Op::Softplus
        | Op::Exp
        | Op::Neg
        | Op::MaskPadding
        | Op::KvAppend
        | Op::MoeExperts
        | Op::Softmax
        | Op::Renormalize
        | Op::MatMulSwiGlu
        | Op::MatMulSigmoidGate
        | Op::SigmoidGateMatMul => vec![],
    };
    Some((op.name(), attrs))
}

/// The op named `name` with attributes `a` (the inverse of [`split`]); `None` when they do not
/// fit.
pub fn join(name: &str, a: &[Attr]) -> Option<Op> {
    use Attr::{Bool as B, Int as I, F32 as F, F64 as D};
    let u = |v: &i64| usize::try_from(*v).ok();
    let f = |b: &u32| f32::from_bits(*b);
    Some(match (name, a) {
        ("reshape", [Attr::Shape(s)]) => {
            Op::Reshape { shape: s.iter().map(|&(constant, coeffs)| Dim { constant, coeffs }).collect() }
        }
        ("slice", [I(x), I(s), I(l)]) => Op::Slice { axis: u(x)?, start: u(s)?, len: u(l)? },
        ("concat", [I(x)]) => Op::Concat { axis: u(x)? },
        ("scale", [F(b)]) => Op::Scale { by: f(b) },
        ("rms_norm", [F(e), B(z)]) => Op::RmsNorm { eps: f(e), zero_centred: *z },
        ("add_rms_norm", [F(e), B(z)]) => Op::AddRmsNorm { eps: f(e), zero_centred: *z },
        ("gated_rms_norm", [F(e)]) => Op::GatedRmsNorm { eps: f(e) },
        ("l2_norm", [F(e)]) => Op::L2Norm { eps: f(e) },
        ("rope", [D(t), I(r)]) => Op::Rope { theta: f64::from_bits(*t), rotary_dim: u(r)? },
        ("attention", [F(s)]) => Op::Attention { scale: f(s) },
        ("causal_conv1d", [I(k)]) => Op::CausalConv1d { kernel: u(k)? },
        ("gated_delta_rule", [I(c)]) => Op::GatedDeltaRule { chunk: u(c) },
        ("moe_route", [I(k), B(r)]) => Op::MoeRoute { top_k: u(k)?, renormalize: *r },
        ("top_k", [I(k)]) => Op::TopK { k: u(k)? },
        ("rms_norm_rope", [F(e), B(z), D(t), I(r)]) => {
            Op::RmsNormRope { eps: f(e), zero_centred: *z, theta: f64::from_bits(*t), rotary_dim: u(r)? }
        }
        ("gdn_gates", [F(e), F(s)]) => Op::GdnGates { eps: f(e), q_scale: f(s) },
        (_, [_, ..]) => return None,
        ("embed", []) => Op::Embed,
        ("matmul", []) => Op::MatMul,
        ("add", []) => Op::Add,
        ("mul", []) => Op::Mul,
        ("silu", []) => Op::Silu,
        ("sigmoid", []) => Op::Sigmoid,
        ("softplus", []) => Op::Softplus,
        ("exp", []) => Op::Exp,
        ("neg", []) => Op::Neg,
        ("mask_padding", []) => Op::MaskPadding,
        ("kv_append", []) => Op::KvAppend,
        ("moe_experts", []) => Op::MoeExperts,
        ("softmax", []) => Op::Softmax,
        ("renormalize", []) => Op::Renormalize,
        ("matmul_swiglu", []) => Op::MatMulSwiGlu,
        ("matmul_sigmoid_gate", []) => Op::MatMulSigmoidGate,
        ("sigmoid_gate_matmul", []) => Op::SigmoidGateMatMul,
        _ => return None,
    })
}
