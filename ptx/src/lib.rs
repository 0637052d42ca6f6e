//! A PTX interpreter: it loads the PTX that NVRTC writes for qgc's kernels and executes it on a
//! CPU, so every CUDA kernel is run for real on machines without a GPU. Semantics follow
//! `../shared/cuda.md` §2: threads run on their own until a barrier or warp collective, which
//! completes once every non-exited participant has arrived; deadlocks, divergent collectives,
//! out-of-bounds and misaligned accesses (*memcheck*) and shared-memory hazards between
//! barriers (*racecheck*) are errors naming kernel, block, thread, PC and address; threads run
//! in forward, reverse or random order ([`Order`]).
//!
//! ```text
//! let mut gpu = Interp::new(Options::default());
//! let m = gpu.load("k", ptx_text)?;          // parse + lay out module variables
//! let x = gpu.alloc(4 * 32);                 // device memory
//! gpu.launch(m, "scale", (1,1,1), (32,1,1), 0, &[x.to_le_bytes().to_vec()])?;
//! ```

pub mod alu;
mod exec;
pub mod gemm;
pub mod inst;
pub mod mem;
mod ops;
pub mod parse;

use mem::Global;
use parse::{Kernel, Module};
use std::collections::HashMap;
use std::fmt;

/// Grid or block dimensions.
pub type Dim3 = (u32, u32, u32);

/// Every way loading or running PTX fails.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PtxError {
    /// The text is not PTX this interpreter reads.
    #[error("PTX line {line}: {message}")]
    Parse {
        /// 1-based line.
        line: usize,
        /// What.
        message: String,
    },
    /// Execution stopped: memcheck, racecheck, deadlock, an unsupported instruction.
    #[error("{}", exec_message(kernel, block, thread, pc, message))]
    Exec {
        /// Kernel name.
        kernel: String,
        /// Block index.
        block: Dim3,
        /// Thread index `(x,y,z)`, when one thread is at fault.
        thread: Option<String>,
        /// Instruction index and text.
        pc: Option<(usize, String)>,
        /// What happened.
        message: String,
    },
    /// A bad launch or call (unknown kernel, bad sizes, parameter mismatch).
    #[error("{0}")]
    Invalid(String),
}

fn exec_message(
    kernel: &str,
    block: &Dim3,
    thread: &Option<String>,
    pc: &Option<(usize, String)>,
    message: &str,
) -> String {
    let mut s = format!("kernel {kernel}: block ({},{},{})", block.0, block.1, block.2);
    if let Some(t) = thread {
        s += &format!(" thread {t}");
    }
    if let Some((pc, text)) = pc {
        s += &format!(" pc {pc} `{text}`");
    }
    s + ": " + message
}

/// The order threads of a block run in (order-dependent results are bugs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Thread 0 first.
    Forward,
    /// The last thread first.
    Reverse,
    /// A fresh permutation each scheduling round, from this seed.
    Random(u64),
}

impl fmt::Display for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Order::Forward => write!(f, "forward"),
            Order::Reverse => write!(f, "reverse"),
            Order::Random(s) => write!(f, "random({s})"),
        }
    }
}

/// Interpreter knobs.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Thread order.
    pub order: Order,
    /// Bounds and alignment checks on every access.
    pub memcheck: bool,
    /// Shared-memory hazard detection.
    pub racecheck: bool,
    /// Instruction limit per block (an endless loop becomes an error).
    pub max_steps: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options { order: Order::Forward, memcheck: true, racecheck: true, max_steps: 1 << 32 }
    }
}

/// A kernel ready to run: symbols resolved to addresses, shared and local memory laid out.
#[derive(Debug)]
pub struct LoadedKernel {
    /// The kernel (operands resolved).
    pub kernel: Kernel,
    /// Static shared bytes (dynamic shared memory follows).
    pub shared_bytes: usize,
    /// Local bytes per thread.
    pub local_bytes: usize,
}

/// A loaded module's handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ModuleHandle(pub usize);

struct LoadedModule {
    name: String,
    kernels: HashMap<String, LoadedKernel>,
}

/// The interpreter: device memory and loaded modules.
pub struct Interp {
    /// Knobs (may be changed between launches).
    pub options: Options,
    /// Global memory.
    pub global: Global,
    modules: Vec<LoadedModule>,
    launches: u64,
    /// Instructions executed so far.
    pub steps: u64,
}

impl Interp {
    /// An empty device.
    pub fn new(options: Options) -> Interp {
        Interp { options, global: Global::new(), modules: Vec::new(), launches: 0, steps: 0 }
    }

    /// Allocates `bytes` zeroed bytes; returns the device address.
    pub fn alloc(&mut self, bytes: usize) -> u64 {
        self.global.alloc(bytes, None, false)
    }

    /// Frees an allocation; an error when `addr` is not a live allocation's start.
    pub fn free(&mut self, addr: u64) -> Result<(), PtxError> {
        if self.global.free(addr) {
            Ok(())
        } else {
            Err(PtxError::Invalid(format!("free of {addr:#x}, which is not a live allocation")))
        }
    }

    /// Copies host bytes to device address `addr`.
    pub fn write(&mut self, addr: u64, src: &[u8]) -> Result<(), PtxError> {
        self.global.slice_mut(addr, src.len()).map(|d| d.copy_from_slice(src)).map_err(|f| {
            PtxError::Invalid(format!("host copy of {} bytes to {addr:#x}: {}", src.len(), f.describe(addr, src.len())))
        })
    }

    /// Sets `len` bytes at `addr` to `byte`.
    pub fn fill(&mut self, addr: u64, len: usize, byte: u8) -> Result<(), PtxError> {
        self.global.slice_mut(addr, len).map(|d| d.fill(byte)).map_err(|f| {
            PtxError::Invalid(format!("device fill of {len} bytes at {addr:#x}: {}", f.describe(addr, len)))
        })
    }

    /// Copies `len` device bytes from `src` to `dst` (may be different allocations).
    pub fn copy(&mut self, src: u64, dst: u64, len: usize) -> Result<(), PtxError> {
        let tmp = self.global.slice(src, len).map(<[u8]>::to_vec).map_err(|f| {
            PtxError::Invalid(format!("device copy of {len} bytes from {src:#x}: {}", f.describe(src, len)))
        })?;
        self.write(dst, &tmp)
    }

    /// Copies device bytes at `addr` to the host.
    pub fn read(&self, addr: u64, out: &mut [u8]) -> Result<(), PtxError> {
        self.global.slice(addr, out.len()).map(|s| out.copy_from_slice(s)).map_err(|f| {
            PtxError::Invalid(format!(
                "host copy of {} bytes from {addr:#x}: {}",
                out.len(),
                f.describe(addr, out.len())
            ))
        })
    }

    /// Parses a module and lays out its variables.
    pub fn load(&mut self, name: &str, ptx: &str) -> Result<ModuleHandle, PtxError> {
        let m: Module = parse::parse(ptx)?;
        let mut syms: HashMap<String, u64> = HashMap::new();
        for v in &m.globals {
            let a = self.global.alloc(v.size, Some(format!("module {name}: {}", v.name)), false);
            self.write(a, &v.init[..v.size.min(v.init.len())])?;
            syms.insert(v.name.clone(), a);
        }
        let mut kernels = HashMap::new();
        for k in m.kernels {
            let lk = resolve(k, &syms, &m.extern_shared)?;
            kernels.insert(lk.kernel.name.clone(), lk);
        }
        self.modules.push(LoadedModule { name: name.to_string(), kernels });
        Ok(ModuleHandle(self.modules.len() - 1))
    }

    /// The kernels of a module.
    pub fn kernels(&self, m: ModuleHandle) -> Vec<String> {
        let mut v: Vec<String> = self.modules.get(m.0).map(|m| m.kernels.keys().cloned().collect()).unwrap_or_default();
        v.sort();
        v
    }

    /// Launches `kernel` over `grid` blocks of `block` threads with `dyn_smem` bytes of dynamic
    /// shared memory; `params` are the parameters' bytes in order (each at its natural
    /// alignment in the parameter buffer).
    pub fn launch(
        &mut self,
        m: ModuleHandle,
        kernel: &str,
        grid: Dim3,
        block: Dim3,
        dyn_smem: u32,
        params: &[Vec<u8>],
    ) -> Result<(), PtxError> {
        let module = self.modules.get(m.0).ok_or_else(|| PtxError::Invalid(format!("no module #{}", m.0)))?;
        let k = module
            .kernels
            .get(kernel)
            .ok_or_else(|| PtxError::Invalid(format!("module {} has no kernel {kernel}", module.name)))?;
        let threads = block.0 as u64 * block.1 as u64 * block.2 as u64;
        if threads == 0
            || threads > 1024
            || grid.0 == 0
            || grid.1 == 0
            || grid.2 == 0
            || grid.1 > 65535
            || grid.2 > 65535
        {
            return Err(PtxError::Invalid(format!(
                "kernel {kernel}: invalid launch: grid ({},{},{}), block ({},{},{})",
                grid.0, grid.1, grid.2, block.0, block.1, block.2
            )));
        }
        if params.len() != k.kernel.params.len() {
            return Err(PtxError::Invalid(format!(
                "kernel {kernel} takes {} parameters, {} given",
                k.kernel.params.len(),
                params.len()
            )));
        }
        let mut buf = vec![0u8; k.kernel.param_bytes];
        for ((pname, off, size), p) in k.kernel.params.iter().zip(params) {
            if p.len() != *size {
                return Err(PtxError::Invalid(format!(
                    "kernel {kernel}: parameter {pname} is {size} bytes, {} given",
                    p.len()
                )));
            }
            buf[*off..off + size].copy_from_slice(p);
        }
        self.launches += 1;
        let mut blocks: Vec<Dim3> = Vec::new();
        for z in 0..grid.2 {
            for y in 0..grid.1 {
                for x in 0..grid.0 {
                    blocks.push((x, y, z));
                }
            }
        }
        let seed = match self.options.order {
            Order::Random(s) => s ^ self.launches.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            _ => 0,
        };
        match self.options.order {
            Order::Reverse => blocks.reverse(),
            Order::Random(_) => {
                let mut s = seed;
                for i in (1..blocks.len()).rev() {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    blocks.swap(i, ((s >> 33) % (i as u64 + 1)) as usize);
                }
            }
            Order::Forward => {}
        }
        let mut scratch = exec::Scratch::default();
        let opts = self.options;
        for (bi, b) in blocks.into_iter().enumerate() {
            let dims = (b, grid, block);
            self.steps +=
                exec::run_block(k, &opts, &mut self.global, dims, &buf, dyn_smem, seed ^ bi as u64, &mut scratch)?;
        }
        Ok(())
    }
}

/// Resolves symbols: parameters to parameter-buffer offsets, shared/local variables to their
/// window addresses, module variables to their global addresses.
fn resolve(
    mut k: Kernel,
    globals: &HashMap<String, u64>,
    extern_shared: &[(String, usize)],
) -> Result<LoadedKernel, PtxError> {
    let mut syms: HashMap<String, u64> = globals.clone();
    for (name, off, _) in &k.params {
        syms.insert(name.clone(), *off as u64);
    }
    let mut off = 0usize;
    for v in &k.shared {
        off = off.div_ceil(v.align) * v.align;
        syms.insert(v.name.clone(), mem::SHARED_BASE + off as u64);
        off += v.size;
    }
    let align = extern_shared.iter().map(|e| e.1).max().unwrap_or(16).max(16);
    let shared_bytes = off.div_ceil(align) * align;
    for (name, _) in extern_shared {
        syms.insert(name.clone(), mem::SHARED_BASE + shared_bytes as u64);
    }
    let mut loff = 0usize;
    for v in &k.local {
        loff = loff.div_ceil(v.align) * v.align;
        syms.insert(v.name.clone(), mem::LOCAL_BASE + loff as u64);
        loff += v.size;
    }
    fn fix(o: &mut inst::Operand, syms: &HashMap<String, u64>) -> Result<(), String> {
        match o {
            inst::Operand::Sym(s) => match syms.get(s.as_str()) {
                Some(a) => *o = inst::Operand::Imm(*a),
                None => return Err(format!("unknown symbol {s}")),
            },
            inst::Operand::Mem(b, _) => fix(b, syms)?,
            inst::Operand::Vec(v) => {
                for x in v {
                    fix(x, syms)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
    for (pc, i) in k.insts.iter_mut().enumerate() {
        for o in &mut i.ops {
            fix(o, &syms)
                .map_err(|m| PtxError::Parse { line: 0, message: format!("kernel {}: pc {pc}: {m}", k.name) })?;
        }
    }
    Ok(LoadedKernel { kernel: k, shared_bytes, local_bytes: loff })
}
