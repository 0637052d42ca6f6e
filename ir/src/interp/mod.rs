//! The reference interpreter: plain loops in f32 (f64 where cheap), obviously right, never tuned.
//! It is the definition of every op in [`crate::op::Op`]; every pass and backend is tested
//! against it.
//!
//! [`run`] evaluates a whole graph; [`eval_op`] evaluates one op on concrete tensors (what
//! per-op backend tests compare against). The op functions live in one module per family
//! ([`movement`], [`linear`], [`elementwise`], [`norm`], [`attention`], [`gdn`], [`moe`], and
//! [`fused`], which defines every fused op as a composition of the others); they
//! take and return [`Tensor`]s and report bad operands as a message, which [`run`] turns into
//! [`InterpError::Runtime`] naming the node. Storage is f32; dot products and reductions
//! accumulate in f64.

pub mod attention;
pub mod elementwise;
pub mod fused;
pub mod gdn;
pub mod linear;
pub mod moe;
pub mod movement;
pub mod norm;
mod random;

pub use random::{init_range, MapWeights, Rng};

use crate::graph::{Graph, Node, Value};
use crate::op::Op;
use crate::types::{Bindings, DType, TensorType};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Element storage.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// f32 values (also used for bf16/f16 weights after conversion).
    F32(Vec<f32>),
    /// i32 values (token ids, positions, expert indices).
    I32(Vec<i32>),
}

impl Data {
    /// Element count.
    pub fn len(&self) -> usize {
        match self {
            Data::F32(v) => v.len(),
            Data::I32(v) => v.len(),
        }
    }
    /// No elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// `f32` or `i32`.
    pub fn dtype_name(&self) -> &'static str {
        match self {
            Data::F32(_) => "f32",
            Data::I32(_) => "i32",
        }
    }
}

/// A dense row-major tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Concrete dims, outermost first.
    pub shape: Vec<usize>,
    /// Elements, `shape.iter().product()` of them.
    pub data: Data,
}

impl Tensor {
    /// An f32 tensor. Panics if `data.len()` does not match `shape` (an internal invariant).
    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Tensor {
        assert_eq!(shape.iter().product::<usize>(), data.len(), "tensor data does not match shape {shape:?}");
        Tensor { shape, data: Data::F32(data) }
    }
    /// An i32 tensor. Panics if `data.len()` does not match `shape` (an internal invariant).
    pub fn i32(shape: Vec<usize>, data: Vec<i32>) -> Tensor {
        assert_eq!(shape.iter().product::<usize>(), data.len(), "tensor data does not match shape {shape:?}");
        Tensor { shape, data: Data::I32(data) }
    }
    /// All-zero f32 tensor.
    pub fn zeros(shape: Vec<usize>) -> Tensor {
        let n = shape.iter().product();
        Tensor::f32(shape, vec![0.0; n])
    }
    /// Element count.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// The f32 elements, or `None` for an i32 tensor.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            Data::F32(v) => Some(v),
            Data::I32(_) => None,
        }
    }
    /// The i32 elements, or `None` for an f32 tensor.
    pub fn as_i32(&self) -> Option<&[i32]> {
        match &self.data {
            Data::I32(v) => Some(v),
            Data::F32(_) => None,
        }
    }
    /// `f32[2,3]`-style description, for messages.
    pub fn describe(&self) -> String {
        let dims: Vec<String> = self.shape.iter().map(|d| d.to_string()).collect();
        format!("{}[{}]", self.data.dtype_name(), dims.join(","))
    }
    /// Whether this tensor's storage and shape fit `ty` under `bind` (bf16/f16 are stored as f32).
    pub fn fits(&self, ty: &TensorType, bind: &Bindings) -> bool {
        let dtype_ok = matches!(
            (&self.data, ty.dtype),
            (Data::I32(_), DType::I32) | (Data::F32(_), DType::F32 | DType::BF16 | DType::F16)
        );
        dtype_ok && self.shape == ty.eval(bind) && self.data.len() == self.numel()
    }
}

/// Where the interpreter gets checkpoint tensors, by logical name (see `spec::TensorDecl`),
/// converted to f32 with the declared shape.
pub trait WeightSource {
    /// The tensor `name` with shape `shape`.
    fn weight(&self, name: &str, shape: &[usize]) -> Result<Arc<Tensor>, InterpError>;
}

/// Interpreter failures (bad inputs or weights; internal invariants panic instead).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InterpError {
    /// A graph input was not supplied.
    #[error("missing input {0:?}")]
    MissingInput(String),
    /// A supplied input has the wrong shape or dtype.
    #[error("input {name:?}: expected {expected}, got {got}")]
    BadInput {
        /// Input name.
        name: String,
        /// Expected type under the bindings.
        expected: String,
        /// What was supplied.
        got: String,
    },
    /// A weight could not be produced.
    #[error("weight {name:?}: {message}")]
    Weight {
        /// Logical tensor name.
        name: String,
        /// Why.
        message: String,
    },
    /// A value is out of range at run time (token id ≥ vocab, position < 0, ...).
    #[error("node {node}: {message}")]
    Runtime {
        /// Node name.
        node: String,
        /// What went wrong.
        message: String,
    },
}

/// Runs `g` under `bind` on `inputs` (by input name) and returns the graph's named outputs.
///
/// Every `Input` must be supplied with its type evaluated under `bind` (extra entries are
/// ignored). Intermediate values are dropped after their last use.
pub fn run(
    g: &Graph,
    bind: &Bindings,
    inputs: &BTreeMap<String, Tensor>,
    weights: &dyn WeightSource,
) -> Result<BTreeMap<String, Tensor>, InterpError> {
    for (name, ty) in g.inputs() {
        check_input(name, ty, bind, inputs)?;
    }
    let last = last_uses(g);
    let mut vals: Vec<Vec<Option<Arc<Tensor>>>> = g.nodes.iter().map(|n| vec![None; n.outputs.len()]).collect();
    for (i, node) in g.nodes.iter().enumerate() {
        let outs = eval_node(node, &vals, bind, inputs, weights)?;
        check_results(node, &outs, bind)?;
        for (j, t) in outs.into_iter().enumerate() {
            vals[i][j] = Some(t);
        }
        let own = (0..node.outputs.len()).map(|index| Value { node: i, index });
        for v in node.inputs.iter().copied().chain(own) {
            if last.get(&v) == Some(&i) {
                vals[v.node][v.index] = None;
            }
        }
    }
    let mut outs = Vec::with_capacity(g.outputs.len());
    for (name, v) in &g.outputs {
        let t = vals.get(v.node).and_then(|n| n.get(v.index)).and_then(|t| t.clone());
        let t = t.ok_or_else(|| runtime_msg(&format!("output {name}"), "refers to no computed value"))?;
        outs.push((name.clone(), t));
    }
    drop(vals);
    Ok(outs.into_iter().map(|(n, t)| (n, Arc::try_unwrap(t).unwrap_or_else(|t| (*t).clone()))).collect())
}

/// The most bytes [`run`] holds at once for `g` under `bind`: every value from the node that
/// makes it to its last use (4 bytes an element; weights are the source's, not counted), in
/// checked arithmetic — `None` when it overflows. What a caller admits before running.
pub fn peak_bytes(g: &Graph, bind: &Bindings) -> Option<u64> {
    let last = last_uses(g);
    let bytes = |ty: &TensorType| ty.eval(bind).iter().try_fold(4u64, |acc, &d| acc.checked_mul(d as u64));
    let (mut live, mut peak) = (0u64, 0u64);
    for (i, node) in g.nodes.iter().enumerate() {
        if !matches!(node.op, Op::Weight { .. }) {
            for ty in &node.outputs {
                live = live.checked_add(bytes(ty)?)?;
            }
        }
        peak = peak.max(live);
        let own = (0..node.outputs.len()).map(|index| Value { node: i, index });
        for v in node.inputs.iter().copied().chain(own) {
            if last.get(&v) == Some(&i) && !matches!(g.nodes[v.node].op, Op::Weight { .. }) {
                live = live.saturating_sub(bytes(&g.nodes[v.node].outputs[v.index])?);
            }
        }
    }
    Some(peak)
}

/// Evaluates one op on concrete operands (`Input`/`Weight` excepted) and returns its results.
/// `bind` resolves symbolic dims in op attributes (`Reshape`). Errors describe the bad operand.
pub fn eval_op(op: &Op, ins: &[&Tensor], bind: &Bindings) -> Result<Vec<Tensor>, String> {
    if let Some(n) = op.arity() {
        want(ins.len() == n, || format!("{} takes {n} operands, got {}", op.name(), ins.len()))?;
    }
    for (i, t) in ins.iter().enumerate() {
        want(t.data.len() == t.numel(), || {
            format!("operand {i} has {} elements for shape {:?}", t.data.len(), t.shape)
        })?;
    }
    let one = |r: Result<Tensor, String>| r.map(|t| vec![t]);
    let two = |r: Result<(Tensor, Tensor), String>| r.map(|(a, b)| vec![a, b]);
    let x = || ins[0];
    match op {
        Op::Input { .. } | Op::Weight { .. } => Err(format!("{} is a source, not evaluated by eval_op", op.name())),
        Op::Embed => one(movement::embed(ins[0], ins[1])),
        Op::Reshape { shape } => one(movement::reshape(x(), &shape.iter().map(|d| d.eval(bind)).collect::<Vec<_>>())),
        Op::Slice { axis, start, len } => one(movement::slice(x(), *axis, *start, *len)),
        Op::Concat { axis } => one(movement::concat(ins, *axis)),
        Op::MatMul => one(linear::matmul(ins[0], ins[1])),
        Op::Add => one(elementwise::add(ins[0], ins[1])),
        Op::Mul => one(elementwise::mul(ins[0], ins[1])),
        Op::Silu => one(elementwise::map(x(), elementwise::silu)),
        Op::Sigmoid => one(elementwise::map(x(), elementwise::sigmoid)),
        Op::Softplus => one(elementwise::map(x(), elementwise::softplus)),
        Op::Exp => one(elementwise::map(x(), f64::exp)),
        Op::Neg => one(elementwise::map(x(), |v| -v)),
        Op::Scale { by } => one(elementwise::map(x(), |v| v * f64::from(*by))),
        Op::MaskPadding => one(elementwise::mask_padding(ins[0], ins[1])),
        Op::RmsNorm { eps, zero_centred } => one(norm::rms_norm(ins[0], ins[1], *eps, *zero_centred)),
        Op::GatedRmsNorm { eps } => one(norm::gated_rms_norm(ins[0], ins[1], ins[2], *eps)),
        Op::L2Norm { eps } => one(norm::l2_norm(x(), *eps)),
        Op::Rope { theta, rotary_dim } => one(attention::rope(ins[0], ins[1], *theta, *rotary_dim)),
        Op::KvAppend => one(attention::kv_append(ins[0], ins[1])),
        Op::Attention { scale } => one(attention::attention(ins[0], ins[1], ins[2], ins[3], *scale)),
        Op::CausalConv1d { kernel } => two(gdn::causal_conv1d(ins[0], ins[1], ins[2], *kernel)),
        Op::GatedDeltaRule { chunk } => two(gdn::gated_delta_rule(ins, *chunk)),
        Op::MoeRoute { top_k, renormalize } => two(fused::moe_route(x(), *top_k, *renormalize)),
        Op::MoeExperts => one(moe::moe_experts(ins)),
        Op::Softmax => one(fused::softmax(x())),
        Op::TopK { k } => two(fused::top_k(x(), *k)),
        Op::Renormalize => one(fused::renormalize_rows(x())),
        Op::AddRmsNorm { eps, zero_centred } => two(fused::add_rms_norm(ins[0], ins[1], ins[2], *eps, *zero_centred)),
        Op::RmsNormRope { eps, zero_centred, theta, rotary_dim } => {
            one(fused::rms_norm_rope(ins[0], ins[1], ins[2], (*eps, *zero_centred), (*theta, *rotary_dim)))
        }
        Op::MatMulSwiGlu => one(fused::matmul_swiglu(ins[0], ins[1])),
        Op::MatMulSigmoidGate => one(fused::matmul_sigmoid_gate(ins[0], ins[1], ins[2])),
        Op::SigmoidGateMatMul => one(fused::sigmoid_gate_matmul(ins[0], ins[1], ins[2])),
        Op::GdnGates { eps, q_scale } => fused::gdn_gates(ins, *eps, *q_scale),
    }
}

/// The results of one node: sources come from `inputs`/`weights`, everything else from
/// [`eval_op`] on the live operand values.
fn eval_node(
    node: &Node,
    vals: &[Vec<Option<Arc<Tensor>>>],
    bind: &Bindings,
    inputs: &BTreeMap<String, Tensor>,
    weights: &dyn WeightSource,
) -> Result<Vec<Arc<Tensor>>, InterpError> {
    match &node.op {
        Op::Input { name, ty } => {
            check_input(name, ty, bind, inputs)?;
            Ok(vec![Arc::new(inputs[name].clone())])
        }
        Op::Weight { name, ty } => Ok(vec![fetch_weight(name, ty, bind, weights)?]),
        op => {
            let mut ins = Vec::with_capacity(node.inputs.len());
            for v in &node.inputs {
                let t = vals.get(v.node).and_then(|n| n.get(v.index)).and_then(|t| t.as_ref());
                let t = t.ok_or_else(|| {
                    runtime_msg(&node.name, &format!("operand %{}.{} is not available", v.node, v.index))
                })?;
                ins.push(t.as_ref());
            }
            let outs = eval_op(op, &ins, bind).map_err(|m| runtime_msg(&node.name, &m))?;
            Ok(outs.into_iter().map(Arc::new).collect())
        }
    }
}

fn check_input(
    name: &str,
    ty: &TensorType,
    bind: &Bindings,
    inputs: &BTreeMap<String, Tensor>,
) -> Result<(), InterpError> {
    let t = inputs.get(name).ok_or_else(|| InterpError::MissingInput(name.to_string()))?;
    if t.fits(ty, bind) {
        return Ok(());
    }
    let got = if t.data.len() == t.numel() {
        t.describe()
    } else {
        format!("{} holding {} elements", t.describe(), t.data.len())
    };
    Err(InterpError::BadInput { name: name.to_string(), expected: expected(ty, bind), got })
}

fn fetch_weight(
    name: &str,
    ty: &TensorType,
    bind: &Bindings,
    ws: &dyn WeightSource,
) -> Result<Arc<Tensor>, InterpError> {
    let shape = ty.eval(bind);
    let t = ws.weight(name, &shape)?;
    if !t.fits(ty, bind) {
        let message = format!("expected {}, the source returned {}", expected(ty, bind), t.describe());
        return Err(InterpError::Weight { name: name.to_string(), message });
    }
    Ok(t)
}

/// Every result must have the node's declared type under `bind`.
fn check_results(node: &Node, outs: &[Arc<Tensor>], bind: &Bindings) -> Result<(), InterpError> {
    want(outs.len() == node.outputs.len(), || {
        format!("produced {} results, declared {}", outs.len(), node.outputs.len())
    })
    .map_err(|m| runtime_msg(&node.name, &m))?;
    for (t, ty) in outs.iter().zip(&node.outputs) {
        if !t.fits(ty, bind) {
            let m = format!("result {} does not match the declared {}", t.describe(), expected(ty, bind));
            return Err(runtime_msg(&node.name, &m));
        }
    }
    Ok(())
}

/// For every value, the index of the last node that reads it; graph outputs live to the end,
/// unread values die where they are produced.
fn last_uses(g: &Graph) -> BTreeMap<Value, usize> {
    let mut last = BTreeMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        for index in 0..n.outputs.len() {
            last.insert(Value { node: i, index }, i);
        }
        for v in &n.inputs {
            last.insert(*v, i);
        }
    }
    for (_, v) in &g.outputs {
        last.insert(*v, usize::MAX);
    }
    last
}

fn expected(ty: &TensorType, bind: &Bindings) -> String {
    let dims: Vec<String> = ty.eval(bind).iter().map(|d| d.to_string()).collect();
    format!("{}[{}] ({ty})", ty.dtype.name(), dims.join(","))
}

fn runtime_msg(node: &str, message: &str) -> InterpError {
    InterpError::Runtime { node: node.to_string(), message: message.to_string() }
}

/// `Ok(())` when `cond`, else the message.
pub(crate) fn want(cond: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(msg())
    }
}

/// The f32 elements of `t`, or an error naming `what`.
pub(crate) fn f32s<'a>(t: &'a Tensor, what: &str) -> Result<&'a [f32], String> {
    t.as_f32().ok_or_else(|| format!("{what} must be f32, got {}", t.describe()))
}

/// The i32 elements of `t`, or an error naming `what`.
pub(crate) fn i32s<'a>(t: &'a Tensor, what: &str) -> Result<&'a [i32], String> {
    t.as_i32().ok_or_else(|| format!("{what} must be i32, got {}", t.describe()))
}

/// The dims of a rank-`N` tensor, or an error naming `what`.
pub(crate) fn dims<const N: usize>(t: &Tensor, what: &str) -> Result<[usize; N], String> {
    <[usize; N]>::try_from(t.shape.as_slice()).map_err(|_| format!("{what} must have rank {N}, got {}", t.describe()))
}

/// `Σ a_i b_i`, accumulated in f64.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| f64::from(x) * f64::from(y)).sum()
}
