//! qgc's code generation: the versioned, self-checking artifact ([`artifact`]) and the Cranelift
//! host code — per entry point a JIT-compiled schedule of kernel-shim calls and the fused
//! elementwise chains as SIMD loops ([`host`]). CUDA kernels come later.

pub mod artifact;
pub mod binding;
pub mod compile;
pub mod cuda;
pub mod hoist;
pub mod host;

pub use artifact::{Artifact, ArtifactError, FORMAT_VERSION, MAGIC};
