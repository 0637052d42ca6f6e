//! The CUDA kernels, one folder per op family: `kernel.cu` (CUDA C, compiled by NVRTC for the
//! device's arch) beside the `mod.rs` launcher that owns it. Each family exports one
//! [`Source`]; [`SOURCES`] lists them all (the ptxas report, the compile tests and artifacts
//! walk it). Every source is compiled with [`COMMON`] in front of it.
//!
//! Conventions for every kernel: `extern "C" __global__`, named `qgc_<what>_<dtype>` where a
//! weight dtype matters (`_f32` / `_bf16`: weights stay as stored); activations and state are
//! f32; sizes are `int`, offsets computed in 64 bits; results match `qgc_ir::interp` (the
//! oracle) with f32 accumulation.

pub mod argmax;
pub mod attention;
pub mod conv;
pub mod embed;
pub mod gdn;
pub mod linear;
pub mod moe;
pub mod movement;
pub mod norm;
pub mod rope;

use super::{CudaError, Device, ModuleId};
use std::collections::BTreeMap;

/// Helpers every kernel source sees (bf16 loads, warp and block reductions).
pub const COMMON: &str = include_str!("common.cuh");

/// One CUDA C source and the kernels it defines.
#[derive(Debug)]
pub struct Source {
    /// Family name (`norm`, `attention`, ...): the module's name.
    pub name: &'static str,
    /// The CUDA C text (without [`COMMON`]).
    pub text: &'static str,
    /// The `extern "C"` kernels it defines.
    pub kernels: &'static [&'static str],
}

impl Source {
    /// The full text NVRTC compiles: [`COMMON`], then the family's source.
    pub fn full_text(&self) -> String {
        format!("{COMMON}\n{}", self.text)
    }
}

/// Every kernel source, in a fixed order.
pub const SOURCES: &[&Source] = &[
    &embed::SOURCE,
    &norm::SOURCE,
    &rope::SOURCE,
    &movement::SOURCE,
    &argmax::SOURCE,
    &attention::SOURCE,
    &conv::SOURCE,
    &gdn::SOURCE,
    &moe::SOURCE,
    &linear::SOURCE,
];

/// The modules of [`SOURCES`] loaded on one device.
#[derive(Debug, Default)]
pub struct Loaded {
    modules: BTreeMap<&'static str, ModuleId>,
}

impl Loaded {
    /// Records that source `name` is loaded as `id`.
    pub fn insert(&mut self, name: &'static str, id: ModuleId) {
        self.modules.insert(name, id);
    }

    /// The module of source `name`.
    pub fn module(&self, name: &str) -> Result<ModuleId, CudaError> {
        self.modules
            .get(name)
            .copied()
            .ok_or_else(|| CudaError::Invalid(format!("internal: kernel module {name} is not loaded")))
    }

    /// Launches `kernel` of source `source` on `dev`.
    pub fn launch(
        &self,
        dev: &dyn Device,
        source: &str,
        kernel: &str,
        cfg: super::LaunchConfig,
        args: &[super::Arg],
    ) -> Result<(), CudaError> {
        dev.launch(self.module(source)?, kernel, cfg, args)
    }
}
