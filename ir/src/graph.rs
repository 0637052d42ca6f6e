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

/// A decoder layer of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Layer {
    /// Layer `i` of the main stack (`l{i}`).
    Main(usize),
    /// Layer `j` of the multi-token-prediction block (`mtp{j}`).
    Mtp(usize),
}

impl Layer {
    /// The prefix of its node names: `l7`, `mtp0`.
    pub fn prefix(self) -> String {
        match self {
            Layer::Main(i) => format!("l{i}"),
            Layer::Mtp(j) => format!("mtp{j}"),
        }
    }

    /// Its index within its stack.
    pub fn index(self) -> usize {
        match self {
            Layer::Main(i) | Layer::Mtp(i) => i,
        }
    }

    /// The layer `delta` places after this one in the same stack (`None` below 0).
    pub fn offset(self, delta: isize) -> Option<Layer> {
        let i = self.index().checked_add_signed(delta)?;
        Some(match self {
            Layer::Main(_) => Layer::Main(i),
            Layer::Mtp(_) => Layer::Mtp(i),
        })
    }

    /// `other`'s position relative to this layer, when both are in the same stack.
    pub fn delta(self, other: Layer) -> Option<isize> {
        match (self, other) {
            (Layer::Main(a), Layer::Main(b)) | (Layer::Mtp(a), Layer::Mtp(b)) => Some(b as isize - a as isize),
            _ => None,
        }
    }
}

/// The sequence mixer of a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Mixer {
    /// Gated DeltaNet (linear attention).
    GatedDeltaNet,
    /// Gated full attention.
    GatedAttention,
}

/// The feed-forward block of a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Ffn {
    /// Sparse mixture of experts.
    Moe,
    /// Dense SwiGLU MLP.
    Dense,
}

/// What kind of layer a node belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LayerKind {
    /// Its mixer.
    pub mixer: Mixer,
    /// Its feed-forward block.
    pub ffn: Ffn,
}

/// What a node does in the model, coarsely (its name says it finely).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub enum Role {
    /// Nothing recorded.
    #[default]
    Other,
    /// A graph input (tokens, positions, a state tensor, the MTP's hidden input).
    Input,
    /// A checkpoint tensor, or a value computed from weights alone.
    Weight,
    /// The token embedding, and the MTP block's input projection.
    Embed,
    /// A layer's normalisation of the residual stream (input and post-mixer norms).
    Norm,
    /// Inside the sequence mixer.
    Mixer,
    /// The residual add after the mixer.
    MixerResidual,
    /// Inside the feed-forward block.
    Ffn,
    /// The residual add that ends a layer: the layer's output.
    LayerOutput,
    /// The final norm and the vocabulary projection.
    Head,
}

/// Where a node sits in the model, recorded by lowering and kept by every pass on what it makes:
/// passes read structure from here, never from names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct Origin {
    /// The decoder layer, if any.
    pub layer: Option<Layer>,
    /// That layer's kind.
    pub kind: Option<LayerKind>,
    /// The node's role.
    pub role: Role,
}

impl Origin {
    /// A node of `layer` (of `kind`) with `role`.
    pub fn layer(layer: Layer, kind: LayerKind, role: Role) -> Origin {
        Origin { layer: Some(layer), kind: Some(kind), role }
    }

    /// A node outside any layer with `role`.
    pub fn role(role: Role) -> Origin {
        Origin { layer: None, kind: None, role }
    }
}

/// One operation instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// `l{layer}.{role}` (or `embed`, `final_norm`, `logits`, ...). Unique within a graph; for
    /// people (printing, diffing against HF layer by layer), never read by passes.
    pub name: String,
    /// Layer, layer kind and role.
    #[serde(default)]
    pub origin: Origin,
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
        self.add_at(Origin::default(), name, op, inputs)
    }

    /// [`Graph::add`] with the node's [`Origin`].
    pub fn add_at(
        &mut self,
        origin: Origin,
        name: impl Into<String>,
        op: Op,
        inputs: &[Value],
    ) -> Result<Vec<Value>, crate::IrError> {
        let name = name.into();
        let tys: Vec<&TensorType> = inputs.iter().map(|v| self.ty(*v)).collect();
        let outputs = op.infer(&tys).map_err(|message| crate::IrError::Node { node: name.clone(), message })?;
        let node = self.nodes.len();
        let n = outputs.len();
        self.nodes.push(Node { name, origin, op, inputs: inputs.to_vec(), outputs });
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
