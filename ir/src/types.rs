//! Dtypes and symbolic shapes.
//!
//! A dimension is a small linear expression over three symbols — `B` (batch), `S` (new tokens in
//! this call) and `P` (tokens already in the state) — plus a constant, e.g. `P+S` for a KV cache
//! after appending. That is all the hybrid models need, and equality is structural.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Element types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DType {
    /// 32-bit float.
    F32,
    /// bfloat16.
    BF16,
    /// IEEE half.
    F16,
    /// 32-bit signed integer (token ids, positions, expert indices).
    I32,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::BF16 | DType::F16 => 2,
        }
    }
    /// Lower-case name used by the printer: `f32`, `bf16`, `f16`, `i32`.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::BF16 => "bf16",
            DType::F16 => "f16",
            DType::I32 => "i32",
        }
    }
}

/// The shape symbols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Sym {
    /// Batch size.
    B,
    /// Tokens processed by this call.
    S,
    /// Tokens already held in the state before this call.
    P,
}

const SYMS: [(Sym, &str); 3] = [(Sym::B, "B"), (Sym::P, "P"), (Sym::S, "S")];

/// `constant + Σ coeff·sym`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Dim {
    /// Constant part.
    pub constant: i64,
    /// Coefficients of B, S, P (indexed by [`Dim::slot`]).
    pub coeffs: [i64; 3],
}

impl Dim {
    /// A constant dimension.
    pub const fn c(n: usize) -> Dim {
        Dim { constant: n as i64, coeffs: [0; 3] }
    }
    /// A symbol.
    pub fn sym(s: Sym) -> Dim {
        let mut d = Dim::c(0);
        d.coeffs[Self::slot(s)] = 1;
        d
    }
    fn slot(s: Sym) -> usize {
        match s {
            Sym::B => 0,
            Sym::S => 1,
            Sym::P => 2,
        }
    }
    /// `Some(n)` when the dimension has no symbols.
    pub fn as_const(&self) -> Option<usize> {
        (self.coeffs == [0; 3] && self.constant >= 0).then_some(self.constant as usize)
    }
    /// Sum of two dimensions.
    pub fn plus(self, o: Dim) -> Dim {
        let mut d = self;
        d.constant += o.constant;
        for i in 0..3 {
            d.coeffs[i] += o.coeffs[i];
        }
        d
    }
    /// Product with a constant dimension (`None` when both are symbolic).
    pub fn times(self, o: Dim) -> Option<Dim> {
        let (k, d) = match (self.as_const(), o.as_const()) {
            (Some(k), _) => (k as i64, o),
            (_, Some(k)) => (k as i64, self),
            _ => return None,
        };
        Some(Dim { constant: d.constant * k, coeffs: d.coeffs.map(|c| c * k) })
    }
    /// Value under concrete bindings.
    pub fn eval(&self, b: &Bindings) -> usize {
        let v = self.constant + self.coeffs[0] * b.b as i64 + self.coeffs[1] * b.s as i64 + self.coeffs[2] * b.p as i64;
        v.max(0) as usize
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (s, name) in SYMS {
            let c = self.coeffs[Self::slot(s)];
            if c == 0 {
                continue;
            }
            if !first {
                write!(f, "+")?;
            }
            first = false;
            if c == 1 {
                write!(f, "{name}")?;
            } else {
                write!(f, "{c}{name}")?;
            }
        }
        if first {
            write!(f, "{}", self.constant)
        } else if self.constant != 0 {
            write!(f, "{:+}", self.constant)
        } else {
            Ok(())
        }
    }
}

/// Concrete values of the shape symbols for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bindings {
    /// Batch.
    pub b: usize,
    /// New tokens.
    pub s: usize,
    /// Tokens already in the state.
    pub p: usize,
}

/// A symbolic shape.
pub type Shape = Vec<Dim>;

/// Builds a constant shape.
pub fn const_shape(dims: &[usize]) -> Shape {
    dims.iter().map(|&d| Dim::c(d)).collect()
}

/// Shape + dtype of one value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TensorType {
    /// Dimensions, outermost first.
    pub shape: Shape,
    /// Element type.
    pub dtype: DType,
}

impl TensorType {
    /// A new type.
    pub fn new(shape: Shape, dtype: DType) -> Self {
        TensorType { shape, dtype }
    }
    /// An f32 type.
    pub fn f32(shape: Shape) -> Self {
        TensorType { shape, dtype: DType::F32 }
    }
    /// Rank.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    /// Concrete dims under `b`.
    pub fn eval(&self, b: &Bindings) -> Vec<usize> {
        self.shape.iter().map(|d| d.eval(b)).collect()
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.dtype.name())?;
        for (i, d) in self.shape.iter().enumerate() {
            if i > 0 {
                write!(f, ",")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}
