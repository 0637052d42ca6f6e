//! The real GPU behind [`Device`]: cudarc 0.19 (driver API and cuBLAS, both loaded at run time)
//! on one primary context and one non-blocking stream.
//!
//! Nothing here panics on a machine without CUDA: [`GpuDevice::open`] probes for `libcuda.so.1`
//! before cudarc touches it (cudarc panics when a library is missing), cuBLAS is loaded only by
//! the first [`Device::gemm`] and probed the same way, and every call into cudarc runs under
//! `catch_unwind`, so a missing symbol in an old driver becomes a [`CudaError`] naming the call.
//!
//! Memory is raw `cuMemAlloc` allocations kept in a map by address: copies and memsets are
//! checked against it (a copy that leaves its allocation is an error, not a corruption), and
//! [`Device::free`] releases exactly what [`Device::alloc`] made. Modules are JIT-loaded from
//! PTX with the driver's error log; kernels are looked up lazily, cached per module, and their
//! parameter lists checked against the launch's arguments where the driver can say
//! (`cuFuncGetParamInfo`, CUDA 12.4+).

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::ffi::{c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use cudarc::driver::result::DriverError;
use cudarc::driver::sys::{self, CUresult};
use cudarc::driver::{CudaContext, CudaStream};
use qgc_ir::poly::human_bytes;

use super::device::{Arg, DevPtr, Device, Gemm, LaunchConfig, ModuleId};
use super::CudaError;
use blas::{gemm_call, Blas};

mod blas;

/// Dynamic shared memory a kernel may use without opting in (`cuFuncSetAttribute`).
const DEFAULT_DYNAMIC_SHARED: u32 = 48 * 1024;
/// Bytes of JIT error log kept from a failed module load.
const JIT_LOG_BYTES: usize = 16 * 1024;

/// One GPU: a context, a stream, the allocations, modules and cuBLAS handle made on it.
/// `Send + Sync`; every call binds the context to the calling thread first.
pub struct GpuDevice {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    ordinal: usize,
    name: String,
    arch: u32,
    driver: i32,
    check_launches: bool,
    /// Base address → size in bytes of every live allocation.
    allocs: Mutex<BTreeMap<u64, usize>>,
    /// Indexed by [`ModuleId`]; never shrinks while the device lives.
    modules: Mutex<Vec<Module>>,
    /// Created by the first GEMM.
    blas: Mutex<Option<Blas>>,
}

/// A loaded module and the kernels looked up in it so far.
struct Module {
    name: String,
    raw: sys::CUmodule,
    functions: HashMap<String, Kernel>,
}

/// A kernel handle and, where the driver reports it, the size of each parameter.
#[derive(Clone)]
struct Kernel {
    raw: sys::CUfunction,
    params: Option<Vec<usize>>,
}

// SAFETY: module and function handles are plain driver handles, valid on any thread while their
// context is current (every call here binds it first); the driver API is thread-safe, and the
// module table itself is only touched under the device's mutex.
unsafe impl Send for Module {}
// SAFETY: as for `Module`.
unsafe impl Send for Kernel {}

impl GpuDevice {
    /// Opens GPU `ordinal` (0 = the first visible one). [`CudaError::NoDriver`] when
    /// `libcuda.so.1` cannot be loaded, [`CudaError::NoDevice`] when the driver initialises no
    /// GPU or not that many; never panics.
    pub fn open(ordinal: usize) -> Result<GpuDevice, CudaError> {
        if !driver_present() {
            return Err(CudaError::NoDriver);
        }
        guarded("opening the CUDA device", || open_present(ordinal))
    }

    /// Makes every launch and GEMM wait for its own completion, so an execution failure
    /// (illegal address, trap) is reported by the kernel that caused it rather than by the next
    /// synchronising call. Slow; for checks and debugging.
    pub fn set_check_launches(&mut self, on: bool) {
        self.check_launches = on;
    }

    /// The device ordinal this was opened on.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// The driver's CUDA version ("13.0").
    pub fn driver_version(&self) -> String {
        cuda_version(self.driver)
    }

    /// Makes the context current on the calling thread.
    fn bind(&self) -> Result<(), CudaError> {
        self.ctx.bind_to_thread().map_err(|e| driver_error("cuCtxSetCurrent", e.0))
    }

    /// `cuStreamSynchronize` on the device's stream.
    fn sync_stream(&self, call: &str) -> Result<(), CudaError> {
        check(call, unsafe { sys::cuStreamSynchronize(self.stream.cu_stream()) })
    }

    /// Free and total bytes (`cuMemGetInfo`), the context already bound.
    fn mem_info(&self) -> Result<(usize, usize), CudaError> {
        let (mut free, mut total) = (0usize, 0usize);
        check("cuMemGetInfo", unsafe { sys::cuMemGetInfo_v2(&mut free, &mut total) })?;
        Ok((free, total))
    }

    /// The error for an allocation of `needed` bytes with `free` available.
    fn out_of_memory(&self, needed: usize, free: usize) -> CudaError {
        CudaError::OutOfMemory {
            what: format!("device allocation on GPU {} ({})", self.ordinal, self.name),
            needed: human_bytes(needed as u64, 2),
            free: human_bytes(free as u64, 2),
        }
    }

    /// Checks that `bytes` at `ptr` lie inside one live allocation.
    fn check_range(&self, call: &str, ptr: DevPtr, bytes: usize) -> Result<(), CudaError> {
        if within(&lock(&self.allocs), ptr.0, bytes) {
            Ok(())
        } else {
            Err(CudaError::Invalid(format!(
                "{call}: {bytes} bytes at {:#x} are not inside one allocation of GPU {}",
                ptr.0, self.ordinal
            )))
        }
    }

    /// The kernel `kernel` of `module`, looked up (and its parameters read) on first use.
    fn kernel(&self, module: ModuleId, kernel: &str) -> Result<(Kernel, String), String> {
        let mut modules = lock(&self.modules);
        let m = modules.get_mut(module.0).ok_or_else(|| format!("module #{} was never loaded", module.0))?;
        if let Some(k) = m.functions.get(kernel) {
            return Ok((k.clone(), m.name.clone()));
        }
        let c_name = CString::new(kernel).map_err(|_| "the kernel name contains a NUL byte".to_string())?;
        let mut raw: sys::CUfunction = std::ptr::null_mut();
        let r = unsafe { sys::cuModuleGetFunction(&mut raw, m.raw, c_name.as_ptr()) };
        if r == CUresult::CUDA_ERROR_NOT_FOUND {
            return Err(format!("module {} has no kernel named {kernel}", m.name));
        }
        check("cuModuleGetFunction", r).map_err(|e| format!("in module {}: {e}", m.name))?;
        let k = Kernel { raw, params: param_sizes(raw) };
        m.functions.insert(kernel.to_string(), k.clone());
        Ok((k, m.name.clone()))
    }

    /// The cuBLAS handle, created (and libcublas loaded) on first use.
    fn blas(&self) -> Result<MutexGuard<'_, Option<Blas>>, CudaError> {
        let mut blas = lock(&self.blas);
        if blas.is_none() {
            *blas = Some(Blas::new(&self.stream)?);
        }
        Ok(blas)
    }

    /// Launches `f` after checking the arguments against its parameter list.
    fn launch_kernel(&self, f: &Kernel, cfg: &LaunchConfig, args: &[Arg]) -> Result<(), String> {
        check_params(f.params.as_deref(), args)?;
        if cfg.shared_bytes > DEFAULT_DYNAMIC_SHARED {
            let attr = sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES;
            let r = unsafe { sys::cuFuncSetAttribute(f.raw, attr, cfg.shared_bytes as i32) };
            check("cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)", r).map_err(|e| e.to_string())?;
        }
        let mut slots = pack_args(args);
        let mut params: Vec<*mut c_void> = slots.iter_mut().map(|s| (s as *mut u64).cast()).collect();
        let params_ptr = if params.is_empty() { std::ptr::null_mut() } else { params.as_mut_ptr() };
        let (g, b) = (cfg.grid, cfg.block);
        let r = unsafe {
            sys::cuLaunchKernel(
                f.raw,
                g.0,
                g.1,
                g.2,
                b.0,
                b.1,
                b.2,
                cfg.shared_bytes,
                self.stream.cu_stream(),
                params_ptr,
                std::ptr::null_mut(),
            )
        };
        check("cuLaunchKernel", r)
            .map_err(|e| format!("{e} (grid {g:?}, block {b:?}, {} B dynamic shared memory)", cfg.shared_bytes))?;
        if self.check_launches {
            self.sync_stream("execution (cuStreamSynchronize)").map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// `cuModuleLoadDataEx` with an error log; the context already bound.
    fn jit_load(&self, text: &CStr) -> Result<sys::CUmodule, (CUresult, String)> {
        let mut log = vec![0u8; JIT_LOG_BYTES];
        let mut options =
            [sys::CUjit_option::CU_JIT_ERROR_LOG_BUFFER, sys::CUjit_option::CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES];
        let mut values: [*mut c_void; 2] = [log.as_mut_ptr().cast(), std::ptr::without_provenance_mut(log.len())];
        let mut module: sys::CUmodule = std::ptr::null_mut();
        let r = unsafe {
            sys::cuModuleLoadDataEx(&mut module, text.as_ptr().cast(), 2, options.as_mut_ptr(), values.as_mut_ptr())
        };
        if r == CUresult::CUDA_SUCCESS {
            return Ok(module);
        }
        let used = (values[1] as usize).min(log.len());
        let text = String::from_utf8_lossy(&log[..used]);
        Err((r, text.trim_end_matches('\0').trim().to_string()))
    }
}

/// Opens the device once the driver library is known to load.
fn open_present(ordinal: usize) -> Result<GpuDevice, CudaError> {
    let no_device = |call: &str, r: CUresult| CudaError::NoDevice(format!("{call}: {}", error_text(r)));
    let r = unsafe { sys::cuInit(0) };
    if r != CUresult::CUDA_SUCCESS {
        return Err(no_device("cuInit", r));
    }
    let mut count = 0;
    let r = unsafe { sys::cuDeviceGetCount(&mut count) };
    if r != CUresult::CUDA_SUCCESS {
        return Err(no_device("cuDeviceGetCount", r));
    }
    if count <= 0 {
        return Err(CudaError::NoDevice("the driver sees no GPU (check nvidia-smi and CUDA_VISIBLE_DEVICES)".into()));
    }
    if ordinal >= count as usize {
        return Err(CudaError::NoDevice(format!("GPU {ordinal} requested, {count} visible")));
    }
    let ctx = CudaContext::new(ordinal).map_err(|e| no_device(&format!("creating a context on GPU {ordinal}"), e.0))?;
    let stream = ctx.new_stream().map_err(|e| driver_error("cuStreamCreate", e.0))?;
    let name = ctx.name().map_err(|e| driver_error("cuDeviceGetName", e.0))?;
    let (major, minor) = ctx.compute_capability().map_err(|e| driver_error("cuDeviceGetAttribute", e.0))?;
    let mut driver = 0;
    check("cuDriverGetVersion", unsafe { sys::cuDriverGetVersion(&mut driver) })?;
    Ok(GpuDevice {
        ctx,
        stream,
        ordinal,
        name,
        arch: (major.max(0) * 10 + minor.max(0)) as u32,
        driver,
        check_launches: false,
        allocs: Mutex::new(BTreeMap::new()),
        modules: Mutex::new(Vec::new()),
        blas: Mutex::new(None),
    })
}

/// Whether there is a driver and a GPU here, without panicking: "NVIDIA H100 80GB HBM3 (sm_90),
/// 79.1 GiB free, CUDA 13.0 driver", or the [`CudaError`] that [`GpuDevice::open`] would give.
pub fn probe() -> Result<String, CudaError> {
    let dev = GpuDevice::open(0)?;
    let (free, _) = dev.memory()?;
    Ok(format!("{}, {} free, CUDA {} driver", dev.describe(), human_bytes(free as u64, 1), dev.driver_version()))
}

impl Device for GpuDevice {
    fn describe(&self) -> String {
        format!("{} (sm_{})", self.name, self.arch)
    }

    fn arch(&self) -> u32 {
        self.arch
    }

    fn memory(&self) -> Result<(usize, usize), CudaError> {
        guarded("cuMemGetInfo", || {
            self.bind()?;
            self.mem_info()
        })
    }

    /// Checks free memory first ([`CudaError::OutOfMemory`] with bytes needed and free); a
    /// zero-byte request gets one byte, so every allocation has its own address.
    fn alloc(&self, bytes: usize) -> Result<DevPtr, CudaError> {
        guarded("cuMemAlloc", || {
            self.bind()?;
            let size = bytes.max(1);
            let (free, _) = self.mem_info()?;
            if size > free {
                return Err(self.out_of_memory(size, free));
            }
            let mut ptr: sys::CUdeviceptr = 0;
            let r = unsafe { sys::cuMemAlloc_v2(&mut ptr, size) };
            if r == CUresult::CUDA_ERROR_OUT_OF_MEMORY {
                return Err(self.out_of_memory(size, free));
            }
            check("cuMemAlloc", r)?;
            lock(&self.allocs).insert(ptr, size);
            Ok(DevPtr(ptr))
        })
    }

    fn free(&self, ptr: DevPtr) -> Result<(), CudaError> {
        guarded("cuMemFree", || {
            self.bind()?;
            if lock(&self.allocs).remove(&ptr.0).is_none() {
                return Err(CudaError::Invalid(format!(
                    "cuMemFree: {:#x} is not a live allocation of GPU {}",
                    ptr.0, self.ordinal
                )));
            }
            check("cuMemFree", unsafe { sys::cuMemFree_v2(ptr.0) })
        })
    }

    fn htod(&self, src: &[u8], dst: DevPtr) -> Result<(), CudaError> {
        if src.is_empty() {
            return Ok(());
        }
        self.check_range("cuMemcpyHtoDAsync", dst, src.len())?;
        guarded("cuMemcpyHtoDAsync", || {
            self.bind()?;
            let stream = self.stream.cu_stream();
            // Pageable source: the call returns once `src` is staged, so it may be dropped after.
            check("cuMemcpyHtoDAsync", unsafe {
                sys::cuMemcpyHtoDAsync_v2(dst.0, src.as_ptr().cast(), src.len(), stream)
            })
        })
    }

    fn dtoh(&self, src: DevPtr, dst: &mut [u8]) -> Result<(), CudaError> {
        if !dst.is_empty() {
            self.check_range("cuMemcpyDtoHAsync", src, dst.len())?;
        }
        guarded("cuMemcpyDtoHAsync", || {
            self.bind()?;
            if !dst.is_empty() {
                let stream = self.stream.cu_stream();
                let r = unsafe { sys::cuMemcpyDtoHAsync_v2(dst.as_mut_ptr().cast(), src.0, dst.len(), stream) };
                check("cuMemcpyDtoHAsync", r)?;
            }
            self.sync_stream("cuStreamSynchronize (dtoh)")
        })
    }

    fn dtod(&self, src: DevPtr, dst: DevPtr, bytes: usize) -> Result<(), CudaError> {
        if bytes == 0 {
            return Ok(());
        }
        self.check_range("cuMemcpyDtoDAsync (source)", src, bytes)?;
        self.check_range("cuMemcpyDtoDAsync (destination)", dst, bytes)?;
        if src != dst && src.0 < dst.0.saturating_add(bytes as u64) && dst.0 < src.0.saturating_add(bytes as u64) {
            return Err(CudaError::Invalid(format!(
                "cuMemcpyDtoDAsync: {bytes} bytes from {:#x} to {:#x} overlap",
                src.0, dst.0
            )));
        }
        guarded("cuMemcpyDtoDAsync", || {
            self.bind()?;
            check("cuMemcpyDtoDAsync", unsafe {
                sys::cuMemcpyDtoDAsync_v2(dst.0, src.0, bytes, self.stream.cu_stream())
            })
        })
    }

    fn zero(&self, dst: DevPtr, bytes: usize) -> Result<(), CudaError> {
        if bytes == 0 {
            return Ok(());
        }
        self.check_range("cuMemsetD8Async", dst, bytes)?;
        guarded("cuMemsetD8Async", || {
            self.bind()?;
            check("cuMemsetD8Async", unsafe { sys::cuMemsetD8Async(dst.0, 0, bytes, self.stream.cu_stream()) })
        })
    }

    /// JIT-loads PTX. Refuses up front PTX whose `.target` this GPU cannot run; names the PTX
    /// version and the driver's CUDA version when the PTX is newer than the driver.
    fn load_module(&self, name: &str, ptx: &str) -> Result<ModuleId, CudaError> {
        let load_error = |message: String| CudaError::Load { module: name.to_string(), message };
        check_target(ptx, self.arch).map_err(load_error)?;
        let text = CString::new(ptx).map_err(|_| load_error("the PTX text contains a NUL byte".into()))?;
        let loaded = catch(|| {
            self.bind().map_err(|e| e.to_string())?;
            self.jit_load(&text).map_err(|(r, log)| explain_load(r, &log, ptx, self.driver, self.arch))
        });
        let raw = loaded.unwrap_or_else(|p| Err(format!("cudarc panicked: {p}"))).map_err(load_error)?;
        let mut modules = lock(&self.modules);
        modules.push(Module { name: name.to_string(), raw, functions: HashMap::new() });
        Ok(ModuleId(modules.len() - 1))
    }

    fn launch(&self, module: ModuleId, kernel: &str, cfg: LaunchConfig, args: &[Arg]) -> Result<(), CudaError> {
        let fail = |message: String| CudaError::Launch { kernel: kernel.to_string(), message };
        check_config(&cfg).map_err(fail)?;
        let launched = catch(|| {
            self.bind().map_err(|e| e.to_string())?;
            let (f, module_name) = self.kernel(module, kernel)?;
            self.launch_kernel(&f, &cfg, args).map_err(|e| format!("in module {module_name}: {e}"))
        });
        launched.unwrap_or_else(|p| Err(format!("cudarc panicked: {p}"))).map_err(fail)
    }

    /// `cublasGemmStridedBatchedEx` with f32 compute on the device's stream; see `gpu/blas.rs` for
    /// the type combinations taken (f32 × f32 or bf16 × bf16, C f32; mixed pairs refused).
    fn gemm(&self, g: &Gemm) -> Result<(), CudaError> {
        let Some(call) = gemm_call(g)? else {
            return Ok(());
        };
        guarded("cublasGemmStridedBatchedEx", || {
            self.bind()?;
            let blas = self.blas()?;
            match blas.as_ref() {
                Some(b) => b.gemm(g, &call)?,
                None => return Err(CudaError::Invalid("cuBLAS handle missing after creation".into())),
            }
            drop(blas);
            if self.check_launches {
                self.sync_stream("cublasGemmStridedBatchedEx execution (cuStreamSynchronize)")?;
            }
            Ok(())
        })
    }

    fn synchronize(&self) -> Result<(), CudaError> {
        guarded("cuStreamSynchronize", || {
            self.bind()?;
            self.sync_stream("cuStreamSynchronize")
        })
    }
}

impl Drop for GpuDevice {
    /// Waits for queued work, then releases the cuBLAS handle, modules and allocations; errors
    /// are ignored (the context is going away), panics cannot escape.
    fn drop(&mut self) {
        let blas = self.blas.get_mut().unwrap_or_else(|p| p.into_inner()).take();
        let modules = std::mem::take(self.modules.get_mut().unwrap_or_else(|p| p.into_inner()));
        let allocs = std::mem::take(self.allocs.get_mut().unwrap_or_else(|p| p.into_inner()));
        let (ctx, stream) = (&self.ctx, &self.stream);
        let _ = catch(move || {
            if ctx.bind_to_thread().is_err() {
                return;
            }
            let _ = unsafe { sys::cuStreamSynchronize(stream.cu_stream()) };
            drop(blas);
            for m in modules {
                let _ = unsafe { sys::cuModuleUnload(m.raw) };
            }
            for ptr in allocs.into_keys() {
                let _ = unsafe { sys::cuMemFree_v2(ptr) };
            }
        });
    }
}

/// Refuses a launch the driver would reject with an unhelpful message.
fn check_config(cfg: &LaunchConfig) -> Result<(), String> {
    let (g, b) = (cfg.grid, cfg.block);
    if [g.0, g.1, g.2, b.0, b.1, b.2].contains(&0) {
        return Err(format!("empty launch (grid {g:?}, block {b:?})"));
    }
    let threads = b.0 as u64 * b.1 as u64 * b.2 as u64;
    if threads > 1024 {
        return Err(format!("block {b:?} has {threads} threads; a block holds at most 1024"));
    }
    Ok(())
}

/// Each argument's bytes in an 8-byte slot (little-endian, so the low bytes are the value):
/// `cuLaunchKernel` takes a pointer to each parameter's value and copies its declared size.
fn pack_args(args: &[Arg]) -> Vec<u64> {
    args.iter()
        .map(|a| {
            let mut slot = [0u8; 8];
            let bytes = a.bytes();
            let n = bytes.len().min(8);
            slot[..n].copy_from_slice(&bytes[..n]);
            u64::from_le_bytes(slot)
        })
        .collect()
}

/// Checks the launch's arguments against the kernel's parameter sizes (when known): a wrong
/// count or size would make the driver read past the argument array.
fn check_params(params: Option<&[usize]>, args: &[Arg]) -> Result<(), String> {
    let Some(params) = params else {
        return Ok(());
    };
    if params.len() != args.len() {
        return Err(format!("the kernel takes {} parameters, the launch passes {}", params.len(), args.len()));
    }
    for (i, (&size, arg)) in params.iter().zip(args).enumerate() {
        if arg.bytes().len() != size {
            return Err(format!("parameter {i} is {size} bytes, the launch passes {arg:?}"));
        }
    }
    Ok(())
}

/// The size of each parameter of `f`, from `cuFuncGetParamInfo` (CUDA 12.4+); `None` when this
/// driver lacks the call (probed without cudarc's panic) or it fails.
fn param_sizes(f: sys::CUfunction) -> Option<Vec<usize>> {
    if !param_info_available() {
        return None;
    }
    let mut sizes = Vec::new();
    for index in 0..4096 {
        let (mut offset, mut size) = (0usize, 0usize);
        match unsafe { sys::cuFuncGetParamInfo(f, index, &mut offset, &mut size) } {
            CUresult::CUDA_SUCCESS => sizes.push(size),
            CUresult::CUDA_ERROR_INVALID_VALUE => return Some(sizes),
            _ => return None,
        }
    }
    None
}

/// Whether the driver has `cuFuncGetParamInfo` (looked up without cudarc, which would panic).
fn param_info_available() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    *PRESENT.get_or_init(|| {
        catch(|| unsafe { sys::culib().get::<unsafe extern "C" fn()>("cuFuncGetParamInfo").is_ok() }).unwrap_or(false)
    })
}

/// Refuses PTX whose `.target` this GPU (compute capability `arch`, 90 = sm_90) cannot run: a
/// newer arch, or an arch-specific target (`sm_90a`) of another arch.
pub(crate) fn check_target(ptx: &str, arch: u32) -> Result<(), String> {
    let Some(target) = directive(ptx, ".target") else {
        return Ok(());
    };
    let digits: String = target.trim_start_matches("sm_").chars().take_while(|c| c.is_ascii_digit()).collect();
    let Ok(want) = digits.parse::<u32>() else {
        return Ok(());
    };
    let specific = target.ends_with('a') || target.ends_with('f');
    if want > arch || (target.ends_with('a') && want != arch) || (specific && want / 10 != arch / 10) {
        return Err(format!(
            "the PTX targets {target} and this GPU is sm_{arch}; compile the kernels for sm_{arch} (--target cuda:sm_{arch})"
        ));
    }
    Ok(())
}

/// The message for a failed `cuModuleLoadDataEx`: PTX newer than the driver and arch mismatch
/// said plainly, anything else with the driver's error and JIT log.
pub(crate) fn explain_load(r: CUresult, log: &str, ptx: &str, driver: i32, arch: u32) -> String {
    let version = directive(ptx, ".version").unwrap_or("?");
    let log = if log.is_empty() { String::new() } else { format!("\nJIT log: {log}") };
    match r {
        CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION => format!(
            "PTX .version {version} is newer than this driver (CUDA {}) supports; compile with an NVRTC \
             no newer than the driver (qgc pins 13.0, scripts/cuda-tools) or update the driver{log}",
            cuda_version(driver)
        ),
        CUresult::CUDA_ERROR_NO_BINARY_FOR_GPU => format!(
            "no code for this GPU (sm_{arch}); the PTX targets {} ({}){log}",
            directive(ptx, ".target").unwrap_or("?"),
            error_text(r)
        ),
        _ => format!("cuModuleLoadDataEx: {}{log}", error_text(r)),
    }
}

/// The first operand of the first line starting with `name` (".version 9.0" → "9.0").
fn directive<'a>(ptx: &'a str, name: &str) -> Option<&'a str> {
    ptx.lines().find_map(|line| {
        let rest = line.trim_start().strip_prefix(name)?;
        if !rest.starts_with([' ', '\t']) {
            return None;
        }
        rest.split(|c: char| c.is_whitespace() || c == ',').find(|s| !s.is_empty())
    })
}

/// 13000 → "13.0", 12080 → "12.8".
fn cuda_version(v: i32) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

/// Whether `bytes` at `addr` lie inside one allocation of `allocs` (base → size).
fn within(allocs: &BTreeMap<u64, usize>, addr: u64, bytes: usize) -> bool {
    let Some((&base, &size)) = allocs.range(..=addr).next_back() else {
        return false;
    };
    match (base.checked_add(size as u64), addr.checked_add(bytes as u64)) {
        (Some(end), Some(want)) => want <= end,
        _ => false,
    }
}

/// Whether `libcuda.so.1` loads (cudarc's own probe, which does not panic).
fn driver_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    *PRESENT.get_or_init(|| catch(|| unsafe { sys::is_culib_present() }).unwrap_or(false))
}

/// Runs `f`, turning a panic into its message.
fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| panic_text(p.as_ref()))
}

/// Runs `f`, turning a panic into [`CudaError::Driver`] naming `call`.
fn guarded<T>(call: &str, f: impl FnOnce() -> Result<T, CudaError>) -> Result<T, CudaError> {
    catch(f)
        .unwrap_or_else(|p| Err(CudaError::Driver { call: call.to_string(), message: format!("cudarc panicked: {p}") }))
}

/// A panic payload's message.
fn panic_text(p: &(dyn Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// A mutex's contents, also after a panic elsewhere poisoned it (the maps stay consistent: every
/// update is a single insert or remove).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `Ok` for `CUDA_SUCCESS`, else [`CudaError::Driver`] naming `call`.
fn check(call: &str, r: CUresult) -> Result<(), CudaError> {
    if r == CUresult::CUDA_SUCCESS {
        Ok(())
    } else {
        Err(driver_error(call, r))
    }
}

/// [`CudaError::Driver`] for a failed driver call.
fn driver_error(call: &str, r: CUresult) -> CudaError {
    CudaError::Driver { call: call.to_string(), message: error_text(r) }
}

/// "CUDA_ERROR_X: description" from the driver, or the code when the driver cannot say.
fn error_text(r: CUresult) -> String {
    if !driver_present() {
        return format!("{r:?}");
    }
    let e = DriverError(r);
    let name = catch(|| e.error_name().ok().map(|s| s.to_string_lossy().into_owned())).ok().flatten();
    let desc = catch(|| e.error_string().ok().map(|s| s.to_string_lossy().into_owned())).ok().flatten();
    match (name, desc) {
        (Some(n), Some(d)) => format!("{n}: {d}"),
        (Some(n), None) => n,
        _ => format!("{r:?}"),
    }
}

#[cfg(test)]
mod tests;
