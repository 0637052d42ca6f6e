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
pub mod sampling;
pub mod session;
pub mod tensor;
pub mod tokenizer;
pub mod weights;

pub use model::{open_model, Model, ModelError, ModelKind};
pub use session::{Backend, Session, SessionError};
pub use tensor::{StateTensor, Tensor};
