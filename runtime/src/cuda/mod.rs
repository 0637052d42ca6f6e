//! The CUDA backend: a device layer with two implementations behind one trait
//! ([`device::Device`]): a real GPU through cudarc ([`gpu`]) and the PTX interpreter of
//! `qgc-ptx` ([`ptx`]); NVRTC compilation with a disk cache ([`nvrtc`]); and the kernels, each a
//! CUDA C file beside the Rust launcher that owns it ([`kernels`]); the `ptxas -v` report of
//! every shipped kernel ([`ptxas`], kept in `kernels/PTXAS.md`).

pub mod device;
mod dispatch;
pub mod gpu;
pub mod kernels;
pub mod model;
pub mod nvrtc;
pub mod ptx;
pub mod ptxas;
mod shims;
pub mod state;

pub use device::{Arg, DevPtr, Device, Gemm, GemmType, LaunchConfig, ModuleId, Transpose};

/// Everything that can go wrong on the CUDA path, each naming what and where.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// No CUDA driver library on this machine.
    #[error("no CUDA driver: libcuda.so.1 not found (run with --device ptx to use the PTX interpreter)")]
    NoDriver,
    /// A driver but no usable GPU.
    #[error("no CUDA device: {0}")]
    NoDevice(String),
    /// NVRTC is not installed where qgc looks.
    #[error("NVRTC not found (looked in {looked}); run scripts/cuda-tools to install it")]
    NoNvrtc {
        /// The folders searched.
        looked: String,
    },
    /// NVRTC rejected a kernel source.
    #[error("NVRTC failed to compile {kernel} for {arch}:\n{log}")]
    Compile {
        /// The source's name (family file).
        kernel: String,
        /// Target arch (`sm_90`).
        arch: String,
        /// NVRTC's log.
        log: String,
    },
    /// Not enough device memory for an allocation, checked before it is made.
    #[error("{what}: {needed} needed, {free} of device memory free")]
    OutOfMemory {
        /// What was being allocated.
        what: String,
        /// Bytes needed (formatted).
        needed: String,
        /// Bytes free (formatted).
        free: String,
    },
    /// A module failed to load (PTX newer than the driver, bad PTX, another arch).
    #[error("loading module {module}: {message}")]
    Load {
        /// Module name.
        module: String,
        /// Why.
        message: String,
    },
    /// A kernel launch or its execution failed (on the interpreter: memcheck, racecheck,
    /// deadlock, with kernel, block, thread and PC).
    #[error("kernel {kernel}: {message}")]
    Launch {
        /// Kernel name.
        kernel: String,
        /// Why.
        message: String,
    },
    /// A driver, cuBLAS or copy call failed.
    #[error("{call}: {message}")]
    Driver {
        /// The call.
        call: String,
        /// The driver's message.
        message: String,
    },
    /// Generating the device host code of an entry point failed.
    #[error("generating device host code for {entry}: {message}")]
    Host {
        /// Entry point.
        entry: &'static str,
        /// Why.
        message: String,
    },
    /// A bad argument to a device-layer call (an internal invariant or a hostile size).
    #[error("{0}")]
    Invalid(String),
}
