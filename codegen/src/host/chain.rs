//! Elementwise chains: the small DAG of pointwise ops that one compiled loop evaluates per
//! element ([`EwChain`]), and how each chain input is indexed ([`Bcast`]).
//!
//! Every value of a chain has the shape of the chain's output (`n` elements, row-major); an
//! input is either such a full stream or a broadcast one, indexed through the chain's *inner
//! length* `L`: a trailing-suffix operand (`Add`/`Mul`'s `b` of shape `[Hv]` over `[B,S,Hv]`,
//! `L = Hv`) is read at `i mod L`, a per-row operand (`Mul`'s `b` of shape `[..., 1]` over
//! `[..., L]`) at `i div L`. One chain has at most one inner length.

use qgc_ir::Op;
use serde::{Deserialize, Serialize};
use std::fmt;

/// How input element `i` of a chain of `n` elements is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Bcast {
    /// `x[i]`: the input has the output's shape.
    Full,
    /// `x[i mod L]`: a trailing suffix of the output's shape, `L` elements.
    Suffix,
    /// `x[i div L]`: one value per row of `L` elements.
    Row,
    /// `x[0]`: one value for all elements.
    Scalar,
}

/// A pointwise map of one operand.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Unary {
    /// `x·σ(x)`.
    Silu,
    /// `1 / (1 + e^{-x})`.
    Sigmoid,
    /// `ln(1 + e^x)` (x itself above 20, as PyTorch).
    Softplus,
    /// `e^x`.
    Exp,
    /// `-x`.
    Neg,
    /// `x · by`.
    Scale(f32),
}

/// A pointwise map of two operands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Binary {
    /// `a + b`.
    Add,
    /// `a · b`.
    Mul,
}

/// One value of a chain; operands are indices of earlier nodes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum EwNode {
    /// Chain input `k` (its indexing is `EwChain::inputs[k]`).
    Input(usize),
    /// A unary map of an earlier node.
    Unary(Unary, usize),
    /// A binary map of two earlier nodes.
    Binary(Binary, usize, usize),
}

/// A DAG of pointwise ops evaluated per element; its output is the last node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EwChain {
    /// The indexing of each input (the loop's `in_ptrs[k]`).
    pub inputs: Vec<Bcast>,
    /// The values, in evaluation order; the last is the output.
    pub nodes: Vec<EwNode>,
    /// The inner length `L` that `Suffix` and `Row` inputs are indexed by; required (and ≥ 1)
    /// when any input is one of those, ignored otherwise.
    pub inner: Option<usize>,
}

impl Unary {
    /// The unary of an IR op, if it is one the loop compiler handles.
    pub fn of(op: &Op) -> Option<Unary> {
        Some(match op {
            Op::Silu => Unary::Silu,
            Op::Sigmoid => Unary::Sigmoid,
            Op::Softplus => Unary::Softplus,
            Op::Exp => Unary::Exp,
            Op::Neg => Unary::Neg,
            Op::Scale { by } => Unary::Scale(*by),
            _ => return None,
        })
    }

    /// The IR op this unary computes.
    pub fn op(self) -> Op {
        match self {
            Unary::Silu => Op::Silu,
            Unary::Sigmoid => Op::Sigmoid,
            Unary::Softplus => Op::Softplus,
            Unary::Exp => Op::Exp,
            Unary::Neg => Op::Neg,
            Unary::Scale(by) => Op::Scale { by },
        }
    }
}

impl Binary {
    /// The binary of an IR op, if it is `Add` or `Mul`.
    pub fn of(op: &Op) -> Option<Binary> {
        match op {
            Op::Add => Some(Binary::Add),
            Op::Mul => Some(Binary::Mul),
            _ => None,
        }
    }

    /// The IR op this binary computes.
    pub fn op(self) -> Op {
        match self {
            Binary::Add => Op::Add,
            Binary::Mul => Op::Mul,
        }
    }
}

impl EwChain {
    /// Checks the invariants the loop compiler relies on: operands refer to earlier nodes,
    /// inputs exist, there is an output, and broadcast inputs have an inner length.
    pub fn validate(&self) -> Result<(), String> {
        if self.nodes.is_empty() {
            return Err("elementwise chain has no nodes".into());
        }
        for (i, n) in self.nodes.iter().enumerate() {
            let ok = match *n {
                EwNode::Input(k) => k < self.inputs.len(),
                EwNode::Unary(_, a) => a < i,
                EwNode::Binary(_, a, b) => a < i && b < i,
            };
            if !ok {
                return Err(format!("chain node {i} ({n:?}) refers to a later node or a missing input"));
            }
        }
        let broadcast = self.inputs.iter().any(|b| matches!(b, Bcast::Suffix | Bcast::Row));
        if broadcast && !matches!(self.inner, Some(l) if l >= 1) {
            return Err("chain has suffix/row inputs but no inner length".into());
        }
        Ok(())
    }

    /// Whether the loop walks rows of `inner` elements (some input is `Suffix` or `Row`).
    pub fn has_rows(&self) -> bool {
        self.inputs.iter().any(|b| matches!(b, Bcast::Suffix | Bcast::Row))
    }
}

impl fmt::Display for EwChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |i: usize| format!("v{i}");
        for (i, n) in self.nodes.iter().enumerate() {
            match *n {
                EwNode::Input(k) => write!(f, "{} = in{k}:{:?}; ", name(i), self.inputs[k])?,
                EwNode::Unary(u, a) => write!(f, "{} = {}({}); ", name(i), u.op().name(), name(a))?,
                EwNode::Binary(b, x, y) => write!(f, "{} = {}({}, {}); ", name(i), b.op().name(), name(x), name(y))?,
            }
        }
        match self.inner {
            Some(l) => write!(f, "inner {l}"),
            None => write!(f, "flat"),
        }
    }
}
