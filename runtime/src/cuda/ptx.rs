//! [`Device`] on the PTX interpreter (`qgc-ptx`): the same PTX, the same launches and GEMM
//! arguments as on a GPU, executed on the CPU with memcheck and racecheck on, threads in the
//! order the options say. `--device ptx` selects it.

use super::device::{Arg, DevPtr, Device, Gemm, GemmType, LaunchConfig, ModuleId, Transpose};
use super::CudaError;
use qgc_ir::poly::human_bytes;
use qgc_ptx::gemm::{self, Elem};
use qgc_ptx::{Interp, ModuleHandle, Options, PtxError};
use std::sync::Mutex;

/// The interpreter as a device.
pub struct PtxDevice {
    inner: Mutex<State>,
    arch: u32,
    capacity: usize,
}

struct State {
    interp: Interp,
    modules: Vec<(String, ModuleHandle)>,
    used: usize,
}

impl PtxDevice {
    /// An interpreter device for `sm_<arch>` with `capacity` bytes of "device memory" (what
    /// allocations are admitted against) and the given options.
    pub fn new(arch: u32, capacity: usize, options: Options) -> PtxDevice {
        PtxDevice {
            inner: Mutex::new(State { interp: Interp::new(options), modules: Vec::new(), used: 0 }),
            arch,
            capacity,
        }
    }

    /// Changes the interpreter's options (thread order, checks) for later launches.
    pub fn set_options(&self, options: Options) {
        self.state().interp.options = options;
    }

    /// Instructions executed so far.
    pub fn steps(&self) -> u64 {
        self.state().interp.steps
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves memory as it was at that point: usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn launch_err(kernel: &str, e: PtxError) -> CudaError {
    CudaError::Launch { kernel: kernel.to_string(), message: e.to_string() }
}

fn invalid(e: PtxError) -> CudaError {
    CudaError::Invalid(e.to_string())
}

impl Device for PtxDevice {
    fn describe(&self) -> String {
        format!("PTX interpreter (sm_{})", self.arch)
    }

    fn arch(&self) -> u32 {
        self.arch
    }

    fn memory(&self) -> Result<(usize, usize), CudaError> {
        let s = self.state();
        Ok((self.capacity.saturating_sub(s.used), self.capacity))
    }

    fn alloc(&self, bytes: usize) -> Result<DevPtr, CudaError> {
        let mut s = self.state();
        let free = self.capacity.saturating_sub(s.used);
        if bytes > free {
            return Err(CudaError::OutOfMemory {
                what: "device allocation".into(),
                needed: human_bytes(bytes as u64, 1),
                free: human_bytes(free as u64, 1),
            });
        }
        let a = s.interp.alloc(bytes);
        s.used += bytes;
        Ok(DevPtr(a))
    }

    fn free(&self, ptr: DevPtr) -> Result<(), CudaError> {
        let mut s = self.state();
        let n = s.interp.global.size(ptr.0).unwrap_or(0);
        s.interp.free(ptr.0).map_err(invalid)?;
        s.used -= n;
        Ok(())
    }

    fn htod(&self, src: &[u8], dst: DevPtr) -> Result<(), CudaError> {
        self.state().interp.write(dst.0, src).map_err(invalid)
    }

    fn dtoh(&self, src: DevPtr, dst: &mut [u8]) -> Result<(), CudaError> {
        self.state().interp.read(src.0, dst).map_err(invalid)
    }

    fn dtod(&self, src: DevPtr, dst: DevPtr, bytes: usize) -> Result<(), CudaError> {
        self.state().interp.copy(src.0, dst.0, bytes).map_err(invalid)
    }

    fn zero(&self, dst: DevPtr, bytes: usize) -> Result<(), CudaError> {
        self.state().interp.fill(dst.0, bytes, 0).map_err(invalid)
    }

    fn load_module(&self, name: &str, ptx: &str) -> Result<ModuleId, CudaError> {
        let mut s = self.state();
        let h =
            s.interp.load(name, ptx).map_err(|e| CudaError::Load { module: name.into(), message: e.to_string() })?;
        s.modules.push((name.to_string(), h));
        Ok(ModuleId(s.modules.len() - 1))
    }

    fn launch(&self, module: ModuleId, kernel: &str, cfg: LaunchConfig, args: &[Arg]) -> Result<(), CudaError> {
        let mut s = self.state();
        let h = s
            .modules
            .get(module.0)
            .map(|m| m.1)
            .ok_or_else(|| CudaError::Invalid(format!("no module #{}", module.0)))?;
        let params: Vec<Vec<u8>> = args.iter().map(Arg::bytes).collect();
        s.interp.launch(h, kernel, cfg.grid, cfg.block, cfg.shared_bytes, &params).map_err(|e| launch_err(kernel, e))
    }

    fn gemm(&self, g: &Gemm) -> Result<(), CudaError> {
        let elem = |t: GemmType| match t {
            GemmType::F32 => Elem::F32,
            GemmType::Bf16 => Elem::Bf16,
        };
        let op = |(p, t, ld, stride): (DevPtr, GemmType, usize, usize), tr: Transpose| gemm::Operand {
            addr: p.0,
            elem: elem(t),
            ld,
            stride,
            trans: tr == Transpose::T,
        };
        let call = gemm::Call {
            m: g.m,
            n: g.n,
            k: g.k,
            alpha: g.alpha,
            a: op(g.a, g.trans_a),
            b: op(g.b, g.trans_b),
            beta: g.beta,
            c: gemm::Operand { addr: g.c.0 .0, elem: Elem::F32, ld: g.c.1, stride: g.c.2, trans: false },
            batch: g.batch,
        };
        let mut s = self.state();
        gemm::gemm(&mut s.interp.global, &call).map_err(|e| launch_err("gemm", e))
    }

    fn synchronize(&self) -> Result<(), CudaError> {
        Ok(())
    }
}
