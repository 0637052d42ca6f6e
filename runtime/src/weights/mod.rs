//! Weights from safetensors checkpoints, memory-mapped and converted to f32 on demand.
//!
//! - [`Checkpoint::open`] finds the files of an HF model directory (one `model.safetensors`, or a
//!   `model.safetensors.index.json` and its shards, or every `*.safetensors`), maps them and parses
//!   their headers. No tensor data is read, so a 160 GB checkpoint opens on a small machine.
//! - [`check`] compares a checkpoint with the tensors a [`ModelSpec`] declares and reports every
//!   problem at once, from the headers alone.
//! - [`Weights`] is the interpreter's [`qgc_ir::interp::WeightSource`]: it converts a logical
//!   tensor (see [`qgc_ir::spec::TensorDecl`]) to f32 on first use and caches it. Routed experts
//!   are stacked from per-expert tensors (`{prefix}.{e}.gate_proj.weight`) or sliced from the fused
//!   layout (`{prefix}.gate_up_proj [E, 2I, H]`, gate rows first; `{prefix}.down_proj [E, H, I]`).
//!
//! [`ModelSpec`]: qgc_ir::ModelSpec

mod check;
mod checkpoint;
mod layout;
mod raw;
mod source;

pub use check::{check, check_report, CheckReport, Problem, ProblemKind};
use std::sync::Arc;

pub use checkpoint::{Checkpoint, StoredTensor, INDEX_FILE, SINGLE_FILE};
pub use raw::{Bf16Weights, HostTensor, RawWeights};
pub use source::Weights;

/// The stored element types [`Weights`] converts to f32.
pub const SUPPORTED_DTYPES: [safetensors::Dtype; 3] =
    [safetensors::Dtype::F32, safetensors::Dtype::BF16, safetensors::Dtype::F16];

/// Why a checkpoint could not be opened, checked or read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WeightsError {
    /// The path given to [`Checkpoint::open`] does not exist.
    #[error("checkpoint {path} does not exist")]
    NotFound {
        /// The path as given.
        path: String,
    },
    /// A directory with no safetensors file in it.
    #[error("checkpoint directory {dir} has no model.safetensors, no model.safetensors.index.json and no *.safetensors files")]
    NoSafetensors {
        /// The directory.
        dir: String,
    },
    /// A file or directory could not be read or mapped.
    #[error("{path}")]
    Io {
        /// The file or directory.
        path: String,
        /// The OS error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// A file is not a valid safetensors file (bad header, truncated data, ...).
    #[error("{path}: not a valid safetensors file")]
    Header {
        /// The file.
        path: String,
        /// What the safetensors parser said.
        #[source]
        source: SafetensorsError,
    },
    /// `model.safetensors.index.json` is not JSON.
    #[error("{path}: invalid index: not JSON")]
    IndexJson {
        /// The index file.
        path: String,
        /// The parser's message.
        #[source]
        source: Arc<serde_json::Error>,
    },
    /// `model.safetensors.index.json` is not a valid index.
    #[error("{path}: invalid index: {message}")]
    Index {
        /// The index file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The index names shard files that do not exist.
    #[error("{index}: weight_map names {} shard(s) that do not exist: {}", .shards.len(), .shards.join(", "))]
    MissingShards {
        /// The index file.
        index: String,
        /// The missing file names, sorted, as the index writes them.
        shards: Vec<String>,
    },
    /// The index maps a tensor to a shard whose header does not have it.
    #[error("{index}: tensor {tensor} is mapped to {shard}, which does not contain it{}", more_suffix(*.more))]
    NotInShard {
        /// The index file.
        index: String,
        /// The first such tensor by name.
        tensor: String,
        /// The shard file name the index gives for it.
        shard: String,
        /// How many more tensors have the same problem.
        more: usize,
    },
    /// One tensor name is stored in two files.
    #[error("tensor {tensor} is stored in both {first} and {second}")]
    Duplicate {
        /// Tensor name.
        tensor: String,
        /// The first file (in name order) that has it.
        first: String,
        /// The second.
        second: String,
    },
    /// The checkpoint does not match the spec ([`check`]); one line per problem.
    #[error("{0}")]
    Mismatch(CheckReport),
    /// One logical tensor could not be produced by [`Weights`].
    #[error("tensor {name}: {message}")]
    Tensor {
        /// Logical tensor name.
        name: String,
        /// Why.
        message: String,
    },
}

/// A safetensors parser error as a cause. Its own message already ends with its cause's, so as a
/// cause it reports no further source (an error chain would print that part twice).
#[derive(Debug, Clone)]
pub struct SafetensorsError(pub Arc<safetensors::SafeTensorError>);

impl std::fmt::Display for SafetensorsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SafetensorsError {}

fn more_suffix(more: usize) -> String {
    if more == 0 {
        String::new()
    } else {
        format!(" (and {more} more such tensors)")
    }
}
