//! NVRTC: finding the library and headers, compiling kernel sources to PTX, and the PTX disk
//! cache.
//!
//! **Where qgc looks** (first hit wins; no environment variable is needed): the folder
//! `scripts/cuda-tools` installs into (`$QGC_CUDA_TOOLS`, else
//! `${XDG_CACHE_HOME:-~/.cache}/qgc/cuda-tools-13.0`, holding `nvidia/cu13/{lib,include,bin}`),
//! then a system toolkit (`$CUDA_PATH`, `/usr/local/cuda`). `QGC_NO_NVRTC=1` makes qgc find
//! none (the usual "not found" error, nothing compiled and no PTX read from the cache): tests use
//! it to prove that an artifact with embedded PTX runs without NVRTC. The library is `dlopen`ed by
//! absolute path (its builtins first, with global symbols), after which cudarc's loader finds it
//! by soname; cudarc panics on a missing library, so nothing reaches it before that.
//!
//! **Cache**: `${XDG_CACHE_HOME:-~/.cache}/qgc/ptx/<key>.ptx`, key = SHA-256 of the source
//! text, the options, the arch and NVRTC's version; written to a temporary file and renamed,
//! so a reader never sees half a file.

use super::kernels::{Source, SOURCES};
use super::CudaError;
use qgc_codegen::cuda::CudaKernels;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The pinned toolchain folder's name (`scripts/cuda-tools` writes it).
const TOOLS: &str = "cuda-tools-13.0";

/// The command that installs NVRTC, for messages.
pub const INSTALL: &str = "scripts/cuda-tools";

fn cache_root() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|p| p.join("qgc"))
}

/// Candidate toolkit roots, each with `lib/` (or `lib64/`), `include/` and `bin/`.
pub fn tool_roots() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(p) = std::env::var_os("QGC_CUDA_TOOLS") {
        v.push(PathBuf::from(p).join("nvidia/cu13"));
    }
    if let Some(c) = cache_root() {
        v.push(c.join(TOOLS).join("nvidia/cu13"));
    }
    if let Some(p) = std::env::var_os("CUDA_PATH") {
        v.push(PathBuf::from(p));
    }
    v.push(PathBuf::from("/usr/local/cuda"));
    v
}

/// The toolkit pieces found on this machine.
#[derive(Debug, Clone)]
pub struct Tools {
    /// `libnvrtc.so.13`.
    pub nvrtc: PathBuf,
    /// The folder holding `cuda_bf16.h` & co.
    pub include: PathBuf,
    /// `ptxas`, when present.
    pub ptxas: Option<PathBuf>,
}

fn find_in(root: &Path) -> Option<Tools> {
    let lib = ["lib", "lib64"].iter().map(|l| root.join(l).join("libnvrtc.so.13")).find(|p| p.is_file())?;
    let include = root.join("include");
    if !include.join("cuda_bf16.h").is_file() {
        return None;
    }
    let ptxas = Some(root.join("bin/ptxas")).filter(|p| p.is_file());
    Some(Tools { nvrtc: lib, include, ptxas })
}

/// Finds NVRTC and the headers, or names where it looked and the command to run (none at all
/// under `QGC_NO_NVRTC=1`).
pub fn tools() -> Result<Tools, CudaError> {
    if std::env::var_os("QGC_NO_NVRTC").is_some_and(|v| !v.is_empty() && v != "0") {
        return Err(CudaError::NoNvrtc { looked: "no folder: QGC_NO_NVRTC is set".into() });
    }
    let roots = tool_roots();
    roots.iter().find_map(|r| find_in(r)).ok_or_else(|| CudaError::NoNvrtc {
        looked: roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", "),
    })
}

/// What loading NVRTC gave: the tools and NVRTC's (major, minor) version, or why not.
type LoadResult = Result<(Tools, (i32, i32)), String>;

/// Loads NVRTC once per process (by absolute path, builtins first); returns its version.
fn load() -> Result<(Tools, (i32, i32)), CudaError> {
    static LOADED: OnceLock<LoadResult> = OnceLock::new();
    let r = LOADED.get_or_init(|| {
        let t = tools().map_err(|e| e.to_string())?;
        let dir = t.nvrtc.parent().unwrap_or(Path::new("/"));
        let open = |p: &Path| -> Result<(), String> {
            // SAFETY: loading a shared library runs its initialisers; NVRTC's are benign.
            let lib = unsafe {
                libloading::os::unix::Library::open(
                    Some(p),
                    libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL,
                )
            }
            .map_err(|e| format!("loading {}: {e}", p.display()))?;
            std::mem::forget(lib); // kept for the process: cudarc resolves symbols from it
            Ok(())
        };
        if let Ok(rd) = std::fs::read_dir(dir) {
            let mut builtins: Vec<PathBuf> = rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libnvrtc-builtins.so"))
                })
                .collect();
            builtins.sort();
            if let Some(b) = builtins.first() {
                open(b)?;
            }
        }
        open(&t.nvrtc)?;
        // SAFETY: the library is loaded; the probe only opens it by name.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            return Err(format!("{} loaded, but cudarc cannot find it by name", t.nvrtc.display()));
        }
        let (mut major, mut minor) = (0, 0);
        // SAFETY: plain out-parameters.
        unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
        Ok((t, (major, minor)))
    });
    r.clone().map_err(|e| match tools() {
        Err(no) => no,
        Ok(_) => CudaError::Load { module: "NVRTC".into(), message: e },
    })
}

/// NVRTC's version, loading it if needed.
pub fn version() -> Result<(i32, i32), CudaError> {
    load().map(|(_, v)| v)
}

/// The options a source is compiled with for `sm_<arch>` (PTX for `compute_<arch>`).
pub fn options(arch: u32, include: &Path) -> Vec<String> {
    vec![
        format!("--gpu-architecture=compute_{arch}"),
        format!("--include-path={}", include.display()),
        "--std=c++17".into(),
        "-default-device".into(),
    ]
}

/// Compiles `src` for `sm_<arch>` to PTX text, from the disk cache when it is there.
pub fn compile(src: &Source, arch: u32) -> Result<String, CudaError> {
    compile_text(src.name, &src.full_text(), arch)
}

/// Compiles CUDA C text (named `name` in errors) for `sm_<arch>`, through the disk cache.
pub fn compile_text(name: &str, text: &str, arch: u32) -> Result<String, CudaError> {
    let (tools, ver) = load()?;
    // The key does not include the include path: headers are pinned by NVRTC's version.
    let opts = options(arch, Path::new("<include>"));
    let mut h = Sha256::new();
    h.update(text.as_bytes());
    h.update(opts.join("\0").as_bytes());
    h.update(format!("sm_{arch} nvrtc {}.{}", ver.0, ver.1).as_bytes());
    let key: String = h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect();
    let file = cache_root().map(|c| c.join("ptx").join(format!("{name}-sm{arch}-{key}.ptx")));
    if let Some(f) = &file {
        if let Ok(ptx) = std::fs::read_to_string(f) {
            if ptx.contains(".entry") || !text.contains("__global__") {
                return Ok(ptx);
            }
        }
    }
    let copts = cudarc::nvrtc::CompileOptions {
        options: options(arch, &tools.include),
        name: Some(format!("{name}.cu")),
        ..Default::default()
    };
    let text_owned = text.replace('\0', " ");
    let ptx = std::panic::catch_unwind(|| cudarc::nvrtc::compile_ptx_with_opts(&text_owned, copts))
        .map_err(|_| CudaError::Compile {
            kernel: name.into(),
            arch: format!("sm_{arch}"),
            log: "NVRTC panicked".into(),
        })?
        .map_err(|e| {
            let log = match e {
                cudarc::nvrtc::CompileError::CompileError { log, .. } => log.to_string_lossy().into_owned(),
                e => format!("{e:?}"),
            };
            CudaError::Compile { kernel: name.into(), arch: format!("sm_{arch}"), log }
        })?
        .to_src();
    if let Some(f) = file {
        // Best effort: a cache that cannot be written only costs a recompile.
        if let Some(dir) = f.parent() {
            let _ = std::fs::create_dir_all(dir);
            let tmp = dir.join(format!(
                ".{}.{}",
                f.file_name().and_then(|n| n.to_str()).unwrap_or("ptx"),
                std::process::id()
            ));
            if std::fs::write(&tmp, &ptx).is_ok() {
                let _ = std::fs::rename(&tmp, &f);
            }
        }
    }
    Ok(ptx)
}

/// The PTX of every kernel `p` launches, compiled for `sm_<arch>` (through the disk cache):
/// every kernel family of [`SOURCES`] and every elementwise chain of every entry point — what
/// `qgc compile --target cuda` embeds in an artifact. All or nothing: the first NVRTC failure
/// (or a missing NVRTC) is the error.
pub fn kernels_for(p: &qgc_codegen::compile::CompiledProgram, arch: u32) -> Result<CudaKernels, CudaError> {
    let (major, minor) = version()?;
    let mut modules = std::collections::BTreeMap::new();
    for s in SOURCES {
        modules.insert(s.name.to_string(), compile(s, arch)?);
    }
    for (name, chain) in qgc_codegen::cuda::launched_chains(p) {
        let ptx = compile_text(&name, &qgc_codegen::cuda::render_chain(&name, chain), arch)?;
        modules.insert(name, ptx);
    }
    Ok(CudaKernels { arch, nvrtc: format!("{major}.{minor}"), modules })
}

/// Checks that `k` (an artifact's PTX) holds a module for every kernel family of [`SOURCES`]:
/// the family missing, named, else `Ok`.
pub fn check_families(k: &CudaKernels) -> Result<(), String> {
    match SOURCES.iter().find(|s| !k.modules.contains_key(s.name)) {
        Some(s) => Err(format!(
            "its CUDA kernels lack the kernel family {} (written by another qgc?); recompile with --target cuda:sm_{}",
            s.name, k.arch
        )),
        None => Ok(()),
    }
}
