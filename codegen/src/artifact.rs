//! The artifact file: `MAGIC` (8 bytes), format version (u32 LE), payload length (u64 LE), the
//! payload (JSON: qgc version, spec hash, spec, lowering options, the lowered program, and the
//! compiled program — optimised graphs, load graphs, schedules with kernel bindings and memory
//! plans, [`CompiledProgram`], and with `qgc compile --target cuda[:sm_XX]` the PTX of every CUDA
//! kernel it launches, [`CudaKernels`]), and the SHA-256 of the payload (32 bytes). Writing is
//! deterministic (same spec, same bytes) and atomic (a temporary file renamed into place), so a
//! failed compile leaves nothing half-written. Reading checks everything a runtime relies on —
//! magic, version, length, checksum, spec hash, every graph verifies, every schedule is this
//! compiler's schedule of its graph, embedded PTX targets a sane arch and covers every chain —
//! and runs no pass. (Whether the PTX covers every kernel family is the runtime's check: it
//! owns the kernel list.)

use crate::compile::{CompileError, CompiledProgram};
use crate::cuda::CudaKernels;
use qgc_ir::{LowerOptions, ModelSpec, Program};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

/// First bytes of every artifact.
pub const MAGIC: &[u8; 8] = b"QGCART\0\n";
/// Bumped whenever the layout or payload schema changes (2: the compiled program; 3: the CUDA
/// kernels' PTX).
pub const FORMAT_VERSION: u32 = 3;
const HEADER: usize = 8 + 4 + 8;

/// Artifact read/write failures.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// Filesystem error.
    #[error("{path}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        #[source]
        error: std::io::Error,
    },
    /// Not a qgc artifact, wrong version, truncated, corrupted or inconsistent.
    #[error("{path}: {message}")]
    Invalid {
        /// File.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The payload is not the artifact schema of this version.
    #[error("{path}: unreadable payload")]
    Payload {
        /// File.
        path: String,
        /// The parser's message.
        #[source]
        source: serde_json::Error,
    },
    /// An embedded lowered graph does not verify.
    #[error("{path}: embedded IR does not verify")]
    Ir {
        /// File.
        path: String,
        /// Why.
        #[source]
        source: qgc_ir::VerifyError,
    },
    /// The embedded compiled program does not check out.
    #[error("{path}: embedded compiled program")]
    Compiled {
        /// File.
        path: String,
        /// Why.
        #[source]
        source: Box<CompileError>,
    },
}

/// The payload of an artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    /// Version of qgc that wrote it.
    pub qgc_version: String,
    /// SHA-256 (hex) of the spec's canonical JSON.
    pub spec_hash: String,
    /// The validated, expanded spec.
    pub spec: ModelSpec,
    /// Lowering options used.
    pub options: LowerOptions,
    /// The lowered program (what the reference interpreter runs).
    pub program: Program,
    /// The compiled program (what the compiled backends run).
    pub compiled: CompiledProgram,
    /// The PTX of every CUDA kernel the program launches, for one arch (`--target cuda`);
    /// `None` for a CPU artifact (the CUDA backend then compiles with NVRTC).
    pub cuda: Option<CudaKernels>,
}

/// SHA-256 hex of the spec's canonical JSON.
pub fn spec_hash(spec: &ModelSpec) -> String {
    let json = serde_json::to_vec(spec).expect("spec serialises");
    hex(&Sha256::digest(&json))
}

/// The first `limit` JSON paths where the architectures of `a` and `b` differ (everything but
/// the name), e.g. `rms_norm_eps: 1e-6 vs 1e-5`; empty when they describe the same model.
pub fn spec_differences(a: &ModelSpec, b: &ModelSpec, limit: usize) -> Vec<String> {
    fn walk(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>, limit: usize) {
        use serde_json::Value;
        if out.len() >= limit || a == b {
            return;
        }
        let at = |k: &str| if path.is_empty() { k.to_string() } else { format!("{path}.{k}") };
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let null = Value::Null;
                    walk(&at(k), x.get(k).unwrap_or(&null), y.get(k).unwrap_or(&null), out, limit);
                }
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
                for (i, (p, q)) in x.iter().zip(y).enumerate() {
                    walk(&format!("{path}[{i}]"), p, q, out, limit);
                }
            }
            _ => out.push(format!("{path}: {a} vs {b}")),
        }
    }
    let json = |s: &ModelSpec| {
        let mut v = serde_json::to_value(s).expect("spec serialises");
        v.as_object_mut().map(|o| o.remove("name"));
        v
    };
    let mut out = Vec::new();
    walk("", &json(a), &json(b), &mut out, limit);
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An artifact file around `payload` (the JSON document): magic, format version, length,
/// payload, SHA-256 of the payload.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len() + 32);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&Sha256::digest(payload));
    out
}

/// The payload of a well-framed artifact file (no check of its checksum or contents).
pub fn payload(bytes: &[u8]) -> Option<&[u8]> {
    let len = u64::from_le_bytes(bytes.get(12..HEADER)?.try_into().ok()?);
    bytes.get(HEADER..HEADER.checked_add(usize::try_from(len).ok()?)?)
}

impl Artifact {
    /// Packs a lowered program and its compiled form.
    pub fn new(spec: ModelSpec, options: LowerOptions, program: Program, compiled: CompiledProgram) -> Artifact {
        Artifact {
            qgc_version: env!("CARGO_PKG_VERSION").to_string(),
            spec_hash: spec_hash(&spec),
            spec,
            options,
            program,
            compiled,
            cuda: None,
        }
    }

    /// The file bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        frame(&serde_json::to_vec(self).expect("artifact serialises"))
    }

    /// Parses and checks file bytes; `path` is only used in messages.
    pub fn from_bytes(bytes: &[u8], path: &str) -> Result<Artifact, ArtifactError> {
        let bad = |message: String| ArtifactError::Invalid { path: path.into(), message };
        if bytes.len() < 8 || &bytes[..8] != MAGIC {
            return Err(bad("not a qgc artifact (bad magic)".into()));
        }
        if bytes.len() < HEADER {
            return Err(bad("truncated artifact header".into()));
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
        if version != FORMAT_VERSION {
            return Err(bad(format!(
                "artifact format version {version}, this qgc reads version {FORMAT_VERSION}; recompile the model"
            )));
        }
        let len = u64::from_le_bytes(bytes[12..20].try_into().unwrap());
        let want = (HEADER as u64).saturating_add(len).saturating_add(32);
        if (bytes.len() as u64) < want {
            return Err(bad(format!("truncated artifact: {} bytes, header says {want}", bytes.len())));
        }
        if (bytes.len() as u64) > want {
            return Err(bad(format!("{} trailing bytes after the artifact", bytes.len() as u64 - want)));
        }
        let payload = &bytes[HEADER..HEADER + len as usize];
        if Sha256::digest(payload).as_slice() != &bytes[HEADER + len as usize..] {
            return Err(bad("checksum mismatch: the artifact is corrupted".into()));
        }
        let art: Artifact =
            serde_json::from_slice(payload).map_err(|source| ArtifactError::Payload { path: path.into(), source })?;
        if art.spec_hash != spec_hash(&art.spec) {
            return Err(bad("spec hash does not match the embedded spec".into()));
        }
        for g in [&art.program.prefill, &art.program.decode].into_iter().chain(&art.program.mtp) {
            qgc_ir::verify(g).map_err(|source| ArtifactError::Ir { path: path.into(), source })?;
        }
        if art.compiled.state != art.program.state || art.compiled.mtp_state != art.program.mtp_state {
            return Err(bad("the compiled program's state layout differs from the program's".into()));
        }
        art.compiled.verify().map_err(|e| ArtifactError::Compiled { path: path.into(), source: Box::new(e) })?;
        if let Some(k) = &art.cuda {
            k.check(&art.compiled).map_err(bad)?;
        }
        Ok(art)
    }

    /// Writes atomically to `path`.
    pub fn write(&self, path: &Path) -> Result<(), ArtifactError> {
        let io = |error| ArtifactError::Io { path: path.display().to_string(), error };
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&self.to_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(io)
    }

    /// Reads and checks `path`.
    pub fn read(path: &Path) -> Result<Artifact, ArtifactError> {
        let bytes =
            std::fs::read(path).map_err(|error| ArtifactError::Io { path: path.display().to_string(), error })?;
        Artifact::from_bytes(&bytes, &path.display().to_string())
    }

    /// True when `bytes` start like an artifact.
    pub fn sniff(bytes: &[u8]) -> bool {
        bytes.starts_with(MAGIC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Artifact {
        let spec = ModelSpec::from_json(include_str!("../../models/qwen3-next-tiny.json")).unwrap();
        let opts = LowerOptions::default();
        let program = qgc_ir::lower(&spec, &opts).unwrap();
        let (compiled, _) = crate::compile::compile_program(&program, &mut |_, _| {}).unwrap();
        Artifact::new(spec, opts, program, compiled)
    }

    #[test]
    fn round_trip_and_deterministic() {
        let a = tiny();
        let bytes = a.to_bytes();
        assert_eq!(bytes, tiny().to_bytes(), "two compiles differ");
        assert_eq!(Artifact::from_bytes(&bytes, "x").unwrap(), a);
    }

    #[test]
    fn rejects_damage() {
        let bytes = tiny().to_bytes();
        let msg = |b: &[u8]| Artifact::from_bytes(b, "m.qgc").unwrap_err().to_string();
        assert_eq!(msg(b"hello"), "m.qgc: not a qgc artifact (bad magic)");
        let mut flipped = bytes.clone();
        flipped[HEADER + 10] ^= 1;
        assert_eq!(msg(&flipped), "m.qgc: checksum mismatch: the artifact is corrupted");
        let mut v2 = bytes.clone();
        v2[8] = 9;
        assert_eq!(msg(&v2), "m.qgc: artifact format version 9, this qgc reads version 3; recompile the model");
        assert!(msg(&bytes[..bytes.len() - 5]).starts_with("m.qgc: truncated artifact:"));
        assert_eq!(msg(&bytes[..15]), "m.qgc: truncated artifact header");
    }

    #[test]
    fn rejects_a_schedule_that_does_not_fit_its_graph_even_with_a_good_checksum() {
        let mut a = tiny();
        a.compiled.entries[2].schedule.arena_bytes = qgc_ir::Poly::zero();
        let err = Artifact::from_bytes(&a.to_bytes(), "m.qgc").unwrap_err();
        let chain = format!("{err}: {}", std::error::Error::source(&err).map(|e| e.to_string()).unwrap_or_default());
        assert_eq!(chain, "m.qgc: embedded compiled program: decode: the stored schedule does not match its graph");
        let mut b = tiny();
        b.compiled.entries[0].graph.nodes.pop();
        assert!(Artifact::from_bytes(&b.to_bytes(), "m.qgc").is_err());
        // Load outputs swapped between two `load:` weights of different types: refused, not
        // bound to a weight of the wrong size.
        let mut c = tiny();
        let load = &mut c.compiled.entries[2].load;
        let (i, j) = (0..load.outputs.len())
            .flat_map(|i| (0..i).map(move |j| (i, j)))
            .find(|&(i, j)| load.ty(load.outputs[i].1) != load.ty(load.outputs[j].1))
            .expect("two load weights of different types");
        let (vi, vj) = (load.outputs[i].1, load.outputs[j].1);
        (load.outputs[i].1, load.outputs[j].1) = (vj, vi);
        let err = Artifact::from_bytes(&c.to_bytes(), "m.qgc").unwrap_err();
        let cause = std::error::Error::source(&err).map(|e| e.to_string()).unwrap_or_default();
        assert!(
            cause.starts_with("decode: weight load:") && cause.ends_with("has no output of its type in the load graph"),
            "{cause}"
        );
    }

    /// Fake PTX for every chain the tiny model launches, and one family.
    fn with_cuda(arch: u32) -> Artifact {
        let mut a = tiny();
        let ptx = |arch: u32| format!("//\n.version 9.0\n.target sm_{arch}\n.address_size 64\n");
        let mut modules: std::collections::BTreeMap<String, String> =
            crate::cuda::launched_chains(&a.compiled).into_keys().map(|n| (n, ptx(arch))).collect();
        assert!(!modules.is_empty(), "the tiny model launches no chain");
        modules.insert("norm".into(), ptx(arch));
        a.cuda = Some(CudaKernels { arch, nvrtc: "13.0".into(), modules });
        a
    }

    #[test]
    fn carries_cuda_kernels_and_checks_them() {
        let a = with_cuda(90);
        let bytes = a.to_bytes();
        assert_eq!(bytes, with_cuda(90).to_bytes(), "two compiles differ");
        assert_eq!(Artifact::from_bytes(&bytes, "x").unwrap(), a);
        let k = a.cuda.as_ref().unwrap();
        assert_eq!((k.families(), k.chains()), (1, k.modules.len() - 1));
        assert!(
            k.summary().starts_with(&format!("sm_90, 1 kernel families + {} chains, ", k.chains())),
            "{}",
            k.summary()
        );
        let msg = |a: &Artifact| Artifact::from_bytes(&a.to_bytes(), "m.qgc").unwrap_err().to_string();
        assert_eq!(msg(&with_cuda(30)), "m.qgc: CUDA kernels for sm_30: not an arch qgc targets (sm_50 to sm_200)");
        let mut b = with_cuda(90);
        b.cuda.as_mut().unwrap().arch = 80;
        assert_eq!(msg(&b), "m.qgc: CUDA kernel module norm: its PTX does not target sm_80");
        let mut c = with_cuda(90);
        let first = c.cuda.as_ref().unwrap().modules.keys().find(|n| CudaKernels::is_chain(n)).unwrap().clone();
        c.cuda.as_mut().unwrap().modules.remove(&first);
        assert_eq!(
            msg(&c),
            format!("m.qgc: CUDA kernels: no PTX for the elementwise chain {first} the program launches")
        );
        assert_eq!(crate::cuda::ptx_target(".target sm_900\n"), Some(900));
        assert_eq!(crate::cuda::ptx_target("  .target sm_90a, debug\n"), Some(90));
        assert_eq!(crate::cuda::ptx_target(".version 9.0\n"), None);
    }
}
