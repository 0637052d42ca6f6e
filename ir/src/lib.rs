//! qgc's intermediate representation: the model spec, the op table, graphs with symbolic shapes,
//! the verifier, the text printer, lowering from spec to graph, and the reference interpreter
//! (`interp`), which defines what every op means.

pub mod attr;
pub mod cases;
pub mod dot;
pub mod graph;
mod infer;
pub mod interp;
pub mod lower;
pub mod op;
pub mod poly;
pub mod print;
pub mod spec;
pub mod types;
pub mod verify;

pub use graph::{Ffn, Graph, Layer, LayerKind, Mixer, Node, Origin, Role, Value};
pub use lower::{lower, LowerOptions, Program, StateDecl};
pub use op::{Arity, InPlace, Op, OpClass, OpInfo, Pointwise, Sharing, View, OP_INFOS};
pub use poly::Poly;
pub use print::print;
pub use spec::{ModelSpec, SpecError, SpecErrors, SpecFile};
pub use types::{Bindings, DType, Dim, Shape, Sym, TensorType};
pub use verify::{verify, VerifyError};

/// Errors from building or checking IR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IrError {
    /// An op does not accept its operands.
    #[error("node {node}: {message}")]
    Node {
        /// Node name (`l3.attn.q_proj`).
        node: String,
        /// What does not fit.
        message: String,
    },
    /// The verifier rejected a graph.
    #[error(transparent)]
    Verify(#[from] VerifyError),
}
