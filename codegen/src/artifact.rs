//! The artifact file: `MAGIC` (8 bytes), format version (u32 LE), payload length (u64 LE), the
//! payload (JSON: qgc version, spec hash, spec, lowering options, both entry points), and the
//! SHA-256 of the payload (32 bytes). Writing is deterministic (same spec, same bytes) and atomic
//! (a temporary file renamed into place), so a failed compile leaves nothing half-written.

use qgc_ir::{LowerOptions, ModelSpec, Program};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

/// First bytes of every artifact.
pub const MAGIC: &[u8; 8] = b"QGCART\0\n";
/// Bumped whenever the layout or payload schema changes.
pub const FORMAT_VERSION: u32 = 1;
const HEADER: usize = 8 + 4 + 8;

/// Artifact read/write failures.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// Filesystem error.
    #[error("{path}: {error}")]
    Io {
        /// File.
        path: String,
        /// Cause.
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
    /// Both entry points and the state layout.
    pub program: Program,
}

/// SHA-256 hex of the spec's canonical JSON.
pub fn spec_hash(spec: &ModelSpec) -> String {
    let json = serde_json::to_vec(spec).expect("spec serialises");
    hex(&Sha256::digest(&json))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Artifact {
    /// Packs an already lowered program.
    pub fn new(spec: ModelSpec, options: LowerOptions, program: Program) -> Artifact {
        Artifact {
            qgc_version: env!("CARGO_PKG_VERSION").to_string(),
            spec_hash: spec_hash(&spec),
            spec,
            options,
            program,
        }
    }

    /// The file bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let payload = serde_json::to_vec(self).expect("artifact serialises");
        let mut out = Vec::with_capacity(HEADER + payload.len() + 32);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(&payload);
        out.extend_from_slice(&Sha256::digest(&payload));
        out
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
        let art: Artifact = serde_json::from_slice(payload).map_err(|e| bad(format!("unreadable payload: {e}")))?;
        if art.spec_hash != spec_hash(&art.spec) {
            return Err(bad("spec hash does not match the embedded spec".into()));
        }
        for g in [&art.program.prefill, &art.program.decode].into_iter().chain(&art.program.mtp) {
            qgc_ir::verify(g).map_err(|e| bad(format!("embedded IR does not verify: {e}")))?;
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
        Artifact::new(spec, opts, program)
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
        assert_eq!(msg(&v2), "m.qgc: artifact format version 9, this qgc reads version 1; recompile the model");
        assert!(msg(&bytes[..bytes.len() - 5]).starts_with("m.qgc: truncated artifact:"));
        assert_eq!(msg(&bytes[..15]), "m.qgc: truncated artifact header");
    }
}
