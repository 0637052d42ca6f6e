//! qgc's runtime: opening models ([`model`]), weights from safetensors checkpoints
//! ([`weights`]), and sessions that hold per-sequence state and run the entry points
//! ([`session`]).

pub mod budget;
pub mod chat;
pub mod compiled;
pub mod cpu;
pub mod cuda;
pub mod fuzz;
pub mod generate;
pub mod model;
pub mod reasoning;
pub mod rows;
pub mod sampling;
pub mod session;
pub mod template;
pub mod tensor;
pub mod tokenizer;
pub mod weights;

/// An error and its causes, `a: b: c` (for messages and test failures).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(&format!(": {c}"));
        src = c.source();
    }
    s
}

pub use model::{open_model, Model, ModelError, ModelKind};
pub use session::{Backend, Session, SessionError};
pub use tensor::{StateTensor, Tensor};
