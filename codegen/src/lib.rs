//! qgc's code generation. For now it packs a lowered, verified program into a versioned,
//! self-checking artifact; later issues add Cranelift host code and CUDA kernels to it.

pub mod artifact;

pub use artifact::{Artifact, ArtifactError, FORMAT_VERSION, MAGIC};
