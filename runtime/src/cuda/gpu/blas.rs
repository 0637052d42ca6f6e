//! cuBLAS for [`GpuDevice`](super::GpuDevice): loading libcublas without cudarc's panic, one
//! handle on the device's stream, and `cublasGemmStridedBatchedEx` with its argument checks.
//!
//! Type combinations: `cublasGemmEx` / `cublasGemmStridedBatchedEx` take **one** type for A
//! and B (cuBLAS's table lists `Atype/Btype` as a single column). With `CUBLAS_COMPUTE_32F` and
//! an f32 scale type (`alpha`, `beta`), the two used here are
//! - A, B `CUDA_R_32F`, C `CUDA_R_32F` (plain f32 GEMM), and
//! - A, B `CUDA_R_16BF`, C `CUDA_R_32F` (bf16 inputs, f32 accumulation and output).
//!
//! A mixed pair (bf16 weights × f32 activations) is not in that table and is refused with
//! [`CudaError::Invalid`]: the matmul launcher never asks for one (bf16 weights above 8 rows
//! run its GEMV kernel over chunks of rows, `kernels/linear/mod.rs`). Rounding the f32 operand
//! to bf16 instead would lose precision and is never done here. f32 × f32 stays
//! true f32: the compute type is not `CUBLAS_COMPUTE_32F_FAST_TF32` and the handle's math mode
//! is left at `CUBLAS_DEFAULT_MATH` (no TF32 unless `NVIDIA_TF32_OVERRIDE` says so).

use std::ffi::c_void;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use cudarc::cublas::sys as cublas;
use cudarc::driver::CudaStream;

use super::super::device::{Gemm, GemmType, Transpose};
use super::super::CudaError;
use super::catch;

/// A cuBLAS handle bound to the device's stream; destroyed on drop.
pub(super) struct Blas(cublas::cublasHandle_t);

// SAFETY: a cuBLAS handle may be used from any thread with its context current, which the
// device makes it before every call; the device keeps it under a mutex, so one thread at a time.
unsafe impl Send for Blas {}

impl Blas {
    /// Loads libcublas (once per process) and creates a handle on `stream`; the stream's context
    /// must be current.
    pub(super) fn new(stream: &Arc<CudaStream>) -> Result<Blas, CudaError> {
        load_cublas().map_err(|message| CudaError::Driver { call: "loading cuBLAS".into(), message })?;
        let mut handle: cublas::cublasHandle_t = std::ptr::null_mut();
        blas_check("cublasCreate", unsafe { cublas::cublasCreate_v2(&mut handle) })?;
        let blas = Blas(handle);
        let raw_stream = stream.cu_stream() as cublas::cudaStream_t;
        blas_check("cublasSetStream", unsafe { cublas::cublasSetStream_v2(blas.0, raw_stream) })?;
        Ok(blas)
    }

    /// Queues `g` (already checked into `call`) on the handle's stream.
    pub(super) fn gemm(&self, g: &Gemm, call: &GemmCall) -> Result<(), CudaError> {
        let c = call;
        let (alpha, beta) = (g.alpha, g.beta);
        let status = unsafe {
            cublas::cublasGemmStridedBatchedEx(
                self.0,
                c.trans_a,
                c.trans_b,
                c.m,
                c.n,
                c.k,
                (&alpha as *const f32).cast(),
                g.a.0 .0 as *const c_void,
                c.ab_type,
                c.lda,
                c.stride_a,
                g.b.0 .0 as *const c_void,
                c.ab_type,
                c.ldb,
                c.stride_b,
                (&beta as *const f32).cast(),
                g.c.0 .0 as *mut c_void,
                cublas::cudaDataType::CUDA_R_32F,
                c.ldc,
                c.stride_c,
                c.batch,
                cublas::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublas::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        };
        blas_check("cublasGemmStridedBatchedEx", status).map_err(|e| match e {
            CudaError::Driver { call, message } => CudaError::Driver { call, message: format!("{message} for {c:?}") },
            other => other,
        })
    }
}

impl Drop for Blas {
    /// `cublasDestroy`; its status is ignored and a panic cannot escape.
    fn drop(&mut self) {
        let handle = self.0;
        let _ = catch(|| unsafe { cublas::cublasDestroy_v2(handle) });
    }
}

/// The arguments of one `cublasGemmStridedBatchedEx` call, checked and narrowed to its types.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct GemmCall {
    pub(super) trans_a: cublas::cublasOperation_t,
    pub(super) trans_b: cublas::cublasOperation_t,
    pub(super) m: i32,
    pub(super) n: i32,
    pub(super) k: i32,
    pub(super) ab_type: cublas::cudaDataType,
    pub(super) lda: i32,
    pub(super) ldb: i32,
    pub(super) ldc: i32,
    pub(super) stride_a: i64,
    pub(super) stride_b: i64,
    pub(super) stride_c: i64,
    pub(super) batch: i32,
}

/// Checks a [`Gemm`] and narrows it to cuBLAS's argument types (the type combinations of the
/// module doc); `None` when there is nothing to compute (`m`, `n` or `batch` zero).
pub(super) fn gemm_call(g: &Gemm) -> Result<Option<GemmCall>, CudaError> {
    let ab_type = match (g.a.1, g.b.1) {
        (GemmType::F32, GemmType::F32) => cublas::cudaDataType::CUDA_R_32F,
        (GemmType::Bf16, GemmType::Bf16) => cublas::cudaDataType::CUDA_R_16BF,
        (a, b) => {
            return Err(CudaError::Invalid(format!(
                "cublasGemmStridedBatchedEx: A is {} and B is {}; cuBLAS takes one type for A and B \
                 (f32 or bf16), so the launcher must convert the bf16 operand to f32 first",
                type_name(a),
                type_name(b)
            )))
        }
    };
    if g.m == 0 || g.n == 0 || g.batch == 0 {
        return Ok(None);
    }
    let rows_a = if g.trans_a == Transpose::N { g.m } else { g.k };
    let rows_b = if g.trans_b == Transpose::N { g.k } else { g.n };
    for (what, ld, rows) in [("lda", g.a.2, rows_a), ("ldb", g.b.2, rows_b), ("ldc", g.c.1, g.m)] {
        if ld < rows.max(1) {
            return Err(CudaError::Invalid(format!(
                "cublasGemmStridedBatchedEx: {what} = {ld} is below the {rows} rows it must span ({g:?})"
            )));
        }
    }
    let int = |what: &str, v: usize| {
        i32::try_from(v)
            .map_err(|_| CudaError::Invalid(format!("cublasGemmStridedBatchedEx: {what} = {v} exceeds i32")))
    };
    let long = |what: &str, v: usize| {
        i64::try_from(v)
            .map_err(|_| CudaError::Invalid(format!("cublasGemmStridedBatchedEx: {what} = {v} exceeds i64")))
    };
    let op = |t: Transpose| match t {
        Transpose::N => cublas::cublasOperation_t::CUBLAS_OP_N,
        Transpose::T => cublas::cublasOperation_t::CUBLAS_OP_T,
    };
    Ok(Some(GemmCall {
        trans_a: op(g.trans_a),
        trans_b: op(g.trans_b),
        m: int("m", g.m)?,
        n: int("n", g.n)?,
        k: int("k", g.k)?,
        ab_type,
        lda: int("lda", g.a.2)?,
        ldb: int("ldb", g.b.2)?,
        ldc: int("ldc", g.c.1)?,
        stride_a: long("stride_a", g.a.3)?,
        stride_b: long("stride_b", g.b.3)?,
        stride_c: long("stride_c", g.c.2)?,
        batch: int("batch", g.batch)?,
    }))
}

/// "f32" / "bf16".
fn type_name(t: GemmType) -> &'static str {
    match t {
        GemmType::F32 => "f32",
        GemmType::Bf16 => "bf16",
    }
}

/// Makes libcublas loadable for cudarc: found by the loader as is, or else loaded by absolute
/// path (with libcublasLt first) from a CUDA toolkit or the qgc tools folder, so cudarc's
/// by-name load finds it. Once per process.
fn load_cublas() -> Result<(), String> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            if catch(|| unsafe { cublas::is_culib_present() }).unwrap_or(false) {
                return Ok(());
            }
            let dirs = cublas_dirs();
            for dir in &dirs {
                let (lt, blas) = (dir.join("libcublasLt.so.13"), dir.join("libcublas.so.13"));
                if !blas.is_file() {
                    continue;
                }
                // SAFETY: loading NVIDIA's libraries runs only their initialisers; the handles are
                // leaked on purpose so the libraries stay loaded for cudarc's by-name lookup.
                unsafe {
                    if let Ok(lib) = libloading::Library::new(&lt) {
                        std::mem::forget(lib);
                    }
                    if let Ok(lib) = libloading::Library::new(&blas) {
                        std::mem::forget(lib);
                    }
                }
                if catch(|| unsafe { cublas::is_culib_present() }).unwrap_or(false) {
                    return Ok(());
                }
            }
            let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            Err(format!(
                "libcublas.so.13 not found by the loader nor in {} (install the CUDA toolkit's cuBLAS)",
                looked.join(", ")
            ))
        })
        .clone()
}

/// Folders that may hold libcublas.so.13 when the loader does not know them.
fn cublas_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for var in ["CUDA_PATH", "CUDA_HOME"] {
        if let Some(root) = std::env::var_os(var) {
            let root = PathBuf::from(root);
            dirs.extend([root.join("lib64"), root.join("lib")]);
        }
    }
    dirs.extend(["/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib"].map(PathBuf::from));
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    let tools = std::env::var_os("QGC_CUDA_TOOLS").map(PathBuf::from).or(cache.map(|c| c.join("qgc/cuda-tools-13.0")));
    dirs.extend(tools.map(|t| t.join("nvidia/cu13/lib")));
    dirs
}

/// `Ok` for `CUBLAS_STATUS_SUCCESS`, else [`CudaError::Driver`] naming `call`.
fn blas_check(call: &str, status: cublas::cublasStatus_t) -> Result<(), CudaError> {
    if status == cublas::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
        Ok(())
    } else {
        Err(CudaError::Driver { call: call.to_string(), message: format!("{status:?}") })
    }
}
