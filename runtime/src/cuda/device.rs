//! The device layer: one small trait ([`Device`]) in front of the two ways qgc runs CUDA —
//! the real GPU through cudarc ([`super::gpu`]) and the PTX interpreter ([`super::ptx`]), which
//! executes the very PTX NVRTC produced on a CPU with memcheck and racecheck. Launchers and the
//! host schedule only ever see this trait, so every kernel runs the same way on both.
//!
//! Addresses are plain `u64` device addresses ([`DevPtr`]): host code does pointer arithmetic
//! on them as on host pointers (an arena base plus planned offsets).

use super::CudaError;

/// A device address (`CUdeviceptr` on a GPU, a synthetic address on the interpreter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DevPtr(pub u64);

impl DevPtr {
    /// `self + bytes`.
    pub fn offset(self, bytes: usize) -> DevPtr {
        DevPtr(self.0 + bytes as u64)
    }
}

/// A loaded module (one per PTX text), as returned by [`Device::load_module`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ModuleId(pub usize);

/// One kernel argument, in the order of the kernel's parameter list.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arg {
    /// A pointer parameter (`float*`, `const __nv_bfloat16*`, ...).
    Ptr(DevPtr),
    /// `int`.
    I32(i32),
    /// `unsigned`.
    U32(u32),
    /// `long long` / `size_t`.
    I64(i64),
    /// `float`.
    F32(f32),
}

impl Arg {
    /// The parameter's bytes as the kernel reads them (little-endian, natural size).
    pub fn bytes(&self) -> Vec<u8> {
        match *self {
            Arg::Ptr(p) => p.0.to_le_bytes().to_vec(),
            Arg::I32(v) => v.to_le_bytes().to_vec(),
            Arg::U32(v) => v.to_le_bytes().to_vec(),
            Arg::I64(v) => v.to_le_bytes().to_vec(),
            Arg::F32(v) => v.to_le_bytes().to_vec(),
        }
    }
}

/// Grid, block and dynamic shared memory of one launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchConfig {
    /// Blocks in x, y, z.
    pub grid: (u32, u32, u32),
    /// Threads per block in x, y, z.
    pub block: (u32, u32, u32),
    /// Dynamic shared memory bytes.
    pub shared_bytes: u32,
}

impl LaunchConfig {
    /// A 1-D launch: `blocks` blocks of `threads` threads.
    pub fn linear(blocks: u32, threads: u32) -> LaunchConfig {
        LaunchConfig { grid: (blocks, 1, 1), block: (threads, 1, 1), shared_bytes: 0 }
    }
}

/// Element type of a GEMM operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmType {
    /// f32.
    F32,
    /// bf16 (accumulated in f32).
    Bf16,
}

/// Whether a GEMM operand is used as stored or transposed (`CUBLAS_OP_N` / `CUBLAS_OP_T`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transpose {
    /// As stored.
    N,
    /// Transposed.
    T,
}

/// A strided batched GEMM with exactly `cublasGemmStridedBatchedEx`'s semantics (column-major):
/// for each batch `i`, `C_i = alpha · op(A_i) · op(B_i) + beta · C_i`, `op(A)` is `m × k`,
/// `op(B)` is `k × n`, `C` is `m × n` with leading dimension `ldc`; `A_i = a + i·stride_a`
/// elements, likewise B and C. C is always f32; compute is f32.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gemm {
    /// op(A).
    pub trans_a: Transpose,
    /// op(B).
    pub trans_b: Transpose,
    /// Rows of op(A) and C.
    pub m: usize,
    /// Columns of op(B) and C.
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
    /// `alpha`.
    pub alpha: f32,
    /// A's address, type, leading dimension and batch stride (elements).
    pub a: (DevPtr, GemmType, usize, usize),
    /// B's address, type, leading dimension and batch stride (elements).
    pub b: (DevPtr, GemmType, usize, usize),
    /// `beta`.
    pub beta: f32,
    /// C's address (f32), leading dimension and batch stride (elements).
    pub c: (DevPtr, usize, usize),
    /// Batches.
    pub batch: usize,
}

/// A CUDA device: memory, modules, launches and GEMMs on one stream. Every call is ordered
/// after the previous ones; [`Device::dtoh`] waits for them.
pub trait Device: Send + Sync {
    /// What it is, for messages ("NVIDIA H100 80GB HBM3 (sm_90)", "PTX interpreter (sm_90)").
    fn describe(&self) -> String;
    /// Compute capability as `major·10 + minor` (90 for sm_90).
    fn arch(&self) -> u32;
    /// Free and total device memory in bytes.
    fn memory(&self) -> Result<(usize, usize), CudaError>;
    /// `bytes` of uninitialised device memory (zeroed on the interpreter, which tracks it).
    fn alloc(&self, bytes: usize) -> Result<DevPtr, CudaError>;
    /// Releases an allocation made by [`Device::alloc`].
    fn free(&self, ptr: DevPtr) -> Result<(), CudaError>;
    /// Copies host bytes to the device.
    fn htod(&self, src: &[u8], dst: DevPtr) -> Result<(), CudaError>;
    /// Copies device bytes to the host (after all queued work).
    fn dtoh(&self, src: DevPtr, dst: &mut [u8]) -> Result<(), CudaError>;
    /// Device-to-device copy of `bytes`.
    fn dtod(&self, src: DevPtr, dst: DevPtr, bytes: usize) -> Result<(), CudaError>;
    /// Sets `bytes` at `dst` to zero.
    fn zero(&self, dst: DevPtr, bytes: usize) -> Result<(), CudaError>;
    /// Loads a module from PTX text; `name` names it in errors.
    fn load_module(&self, name: &str, ptx: &str) -> Result<ModuleId, CudaError>;
    /// Launches kernel `kernel` of module `module`.
    fn launch(&self, module: ModuleId, kernel: &str, cfg: LaunchConfig, args: &[Arg]) -> Result<(), CudaError>;
    /// A GEMM with cuBLAS semantics ([`Gemm`]).
    fn gemm(&self, g: &Gemm) -> Result<(), CudaError>;
    /// Waits for all queued work.
    fn synchronize(&self) -> Result<(), CudaError>;
}
