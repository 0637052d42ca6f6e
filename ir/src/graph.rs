//! The graph: nodes in topological order, each with a name, an op, operands and result types.

use crate::op::{Op, View};
use crate::poly::Poly;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// A node's result: `(node index, result index)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Value {
    /// Index into [`Graph::nodes`].
    pub node: usize,
    /// Which result of that node.
    pub index: usize,
}

/// One operation instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// `l{layer}.{role}` (or `embed`, `final_norm`, `logits`, ...). Unique within a graph.
    pub name: String,
    /// What it computes.
    pub op: Op,
    /// Operands; each refers to an earlier node.
    pub inputs: Vec<Value>,
    /// Result types.
    pub outputs: Vec<TensorType>,
}

/// One entry point (e.g. `prefill`, `decode`): a straight-line program.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Graph {
    /// Entry point name.
    pub name: String,
    /// Nodes in execution order.
    pub nodes: Vec<Node>,
    /// Named results: `logits` and the updated state (`state.*` names match the state inputs).
    pub outputs: Vec<(String, Value)>,
    /// Tokens per call when fixed (decode: `Some(1)`); `None` means the symbol `S`.
    pub fixed_seq: Option<usize>,
}

impl Graph {
    /// An empty graph.
    pub fn new(name: impl Into<String>) -> Self {
        Graph { name: name.into(), nodes: Vec::new(), outputs: Vec::new(), fixed_seq: None }
    }

    /// The dimension of "tokens in this call": `S`, or the fixed count.
    pub fn seq_dim(&self) -> crate::types::Dim {
        match self.fixed_seq {
            Some(n) => crate::types::Dim::c(n),
            None => crate::types::Dim::sym(crate::types::Sym::S),
        }
    }

    /// Appends a node after inferring its result types; errors name the node.
    pub fn add(&mut self, name: impl Into<String>, op: Op, inputs: &[Value]) -> Result<Vec<Value>, crate::IrError> {
        let name = name.into();
        let tys: Vec<&TensorType> = inputs.iter().map(|v| self.ty(*v)).collect();
        let outputs = op.infer(&tys).map_err(|message| crate::IrError::Node { node: name.clone(), message })?;
        let node = self.nodes.len();
        let n = outputs.len();
        self.nodes.push(Node { name, op, inputs: inputs.to_vec(), outputs });
        Ok((0..n).map(|index| Value { node, index }).collect())
    }

    /// Like [`Graph::add`] for single-result ops.
    pub fn add1(&mut self, name: impl Into<String>, op: Op, inputs: &[Value]) -> Result<Value, crate::IrError> {
        Ok(self.add(name, op, inputs)?[0])
    }

    /// Type of a value. Panics on a dangling value (an internal invariant).
    pub fn ty(&self, v: Value) -> &TensorType {
        &self.nodes[v.node].outputs[v.index]
    }

    /// The `Input` nodes: `(name, type)` in order.
    pub fn inputs(&self) -> Vec<(&str, &TensorType)> {
        self.nodes
            .iter()
            .filter_map(|n| match &n.op {
                Op::Input { name, ty } => Some((name.as_str(), ty)),
                _ => None,
            })
            .collect()
    }

    /// The named output, if any.
    pub fn output(&self, name: &str) -> Option<Value> {
        self.outputs.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    /// The weight-only subgraph, per node: `Weight` sources and every node whose operands are all
    /// weight-only (a concatenation of projection weights made by fusion, the reshape of a conv
    /// weight, `-exp(A_log)`). Such a node reads no input or state, so a runtime evaluates it once
    /// when it loads the weights and never per call; the printer marks it `[load]`.
    pub fn weight_only(&self) -> Vec<bool> {
        let mut w = Vec::with_capacity(self.nodes.len());
        for n in &self.nodes {
            let here = match n.op {
                Op::Weight { .. } => true,
                Op::Input { .. } => false,
                _ => n.inputs.iter().all(|v| w[v.node]),
            };
            w.push(here);
        }
        w
    }

    /// Where node `node`'s result sits in its operand's bytes when it is a view (the op table's
    /// [`View`]): `Some(byte offset)` for a reshape, and for a slice that is contiguous — every
    /// dim before its axis is the constant 1, so the slice is one run of `len · Π dims after axis`
    /// elements starting `start · Π dims after axis` in (slicing the last axis of `[B,1,200]` is
    /// not contiguous for `B > 1`); `None` for any other node, which writes bytes of its own.
    pub fn view_offset(&self, node: usize) -> Option<Poly> {
        let n = &self.nodes[node];
        match (n.op.info().view, &n.op) {
            (View::No, _) => None,
            (View::Always, _) => Some(Poly::zero()),
            (View::Contiguous, Op::Slice { axis, start, .. }) => {
                let x = self.ty(n.inputs[0]);
                let leading_ones = x.shape[..*axis].iter().all(|d| d.as_const() == Some(1));
                let (inner, exact) = Poly::numel(&x.shape[axis + 1..]);
                (leading_ones && exact).then(|| inner.scale((*start * x.dtype.size()) as u64))
            }
            (View::Contiguous, op) => unreachable!("{}: a contiguous view other than slice", op.name()),
        }
    }

    /// Node count by op name, sorted by name (for summaries and fusion counters).
    pub fn op_counts(&self) -> Vec<(&'static str, usize)> {
        let mut m = std::collections::BTreeMap::new();
        for n in &self.nodes {
            *m.entry(n.op.name()).or_insert(0) += 1;
        }
        m.into_iter().collect()
    }
}
