//! Opening a checkpoint: find its safetensors files, memory-map them and parse their headers.
//! Tensor data stays on disk until [`Checkpoint::data`] is asked for it.

use super::WeightsError;
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// The single-file checkpoint name `save_pretrained` writes.
pub const SINGLE_FILE: &str = "model.safetensors";
/// The index of a sharded checkpoint (`{"weight_map": {tensor: shard file}}`).
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// Length of the little-endian u64 that starts every safetensors file.
const HEADER_LEN_BYTES: usize = 8;

/// One stored tensor, as its file's header describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTensor {
    /// Element type on disk.
    pub dtype: Dtype,
    /// Shape on disk, outermost first.
    pub shape: Vec<usize>,
    /// Index of its file in [`Checkpoint::files`].
    pub file: usize,
    /// Byte range of its data within that file.
    pub bytes: Range<usize>,
}

/// One mapped safetensors file.
#[derive(Debug)]
struct Shard {
    path: PathBuf,
    map: Mmap,
}

/// The safetensors files of one model, memory-mapped, with every tensor's header entry.
#[derive(Debug)]
pub struct Checkpoint {
    path: PathBuf,
    shards: Vec<Shard>,
    tensors: BTreeMap<String, StoredTensor>,
}

impl Checkpoint {
    /// Opens `path`: a model directory (`model.safetensors`; else `model.safetensors.index.json`
    /// and the shards its `weight_map` names; else every `*.safetensors` in it, sorted by name) or
    /// one `.safetensors` file. Only headers are read.
    pub fn open(path: impl AsRef<Path>) -> Result<Checkpoint, WeightsError> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => WeightsError::NotFound { path: shown(path) },
            _ => io_error(path, e),
        })?;
        if !meta.is_dir() {
            return Self::from_files(path, &[path.to_path_buf()], None);
        }
        let single = path.join(SINGLE_FILE);
        let index = path.join(INDEX_FILE);
        if single.is_file() {
            Self::from_files(path, &[single], None)
        } else if index.is_file() {
            let weight_map = read_index(&index)?;
            let files = index_files(path, &index, &weight_map)?;
            Self::from_files(path, &files, Some((&index, &weight_map)))
        } else {
            let files = list_safetensors(path)?;
            if files.is_empty() {
                return Err(WeightsError::NoSafetensors { dir: shown(path) });
            }
            Self::from_files(path, &files, None)
        }
    }

    /// Maps `files` in order, collects their tensors and checks them against the index.
    fn from_files(
        path: &Path,
        files: &[PathBuf],
        index: Option<(&Path, &BTreeMap<String, String>)>,
    ) -> Result<Checkpoint, WeightsError> {
        let mut ckpt = Checkpoint { path: path.to_path_buf(), shards: Vec::new(), tensors: BTreeMap::new() };
        for file in files {
            let (shard, tensors) = map_shard(file)?;
            let id = ckpt.shards.len();
            ckpt.shards.push(shard);
            for (name, mut t) in tensors {
                t.file = id;
                if let Some(prev) = ckpt.tensors.get(&name) {
                    return Err(WeightsError::Duplicate {
                        tensor: name,
                        first: shown(&ckpt.shards[prev.file].path),
                        second: shown(file),
                    });
                }
                ckpt.tensors.insert(name, t);
            }
        }
        if let Some((index, weight_map)) = index {
            ckpt.check_index(index, weight_map)?;
        }
        Ok(ckpt)
    }

    /// Every tensor the index lists must be in the shard it names. Tensors a shard holds that the
    /// index does not list are kept.
    fn check_index(&self, index: &Path, weight_map: &BTreeMap<String, String>) -> Result<(), WeightsError> {
        let dir = index.parent().unwrap_or(Path::new(""));
        let mut bad = weight_map.iter().filter(|(tensor, shard)| {
            self.tensors.get(*tensor).is_none_or(|t| self.shards[t.file].path != dir.join(shard))
        });
        match bad.next() {
            None => Ok(()),
            Some((tensor, shard)) => Err(WeightsError::NotInShard {
                index: shown(index),
                tensor: tensor.clone(),
                shard: shard.clone(),
                more: bad.count(),
            }),
        }
    }

    /// The path that was opened (directory or file).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The mapped files, in the order they were read.
    pub fn files(&self) -> Vec<&Path> {
        self.shards.iter().map(|s| s.path.as_path()).collect()
    }

    /// Every stored tensor name, sorted.
    pub fn names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    /// Every stored tensor with its header entry, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &StoredTensor)> {
        self.tensors.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// The header entry of stored tensor `name`.
    pub fn get(&self, name: &str) -> Option<&StoredTensor> {
        self.tensors.get(name)
    }

    /// Number of stored tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether no tensor is stored.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// The file that holds `t`.
    pub fn file_of(&self, t: &StoredTensor) -> &Path {
        self.shards.get(t.file).map_or(Path::new(""), |s| s.path.as_path())
    }

    /// Total bytes of tensor data over all files.
    pub fn data_bytes(&self) -> usize {
        self.tensors.values().map(|t| t.bytes.len()).sum()
    }

    /// The raw little-endian bytes of `t` (pages are read from disk as they are touched).
    /// `None` only for a `StoredTensor` that did not come from this checkpoint.
    pub fn data(&self, t: &StoredTensor) -> Option<&[u8]> {
        self.shards.get(t.file)?.map.get(t.bytes.clone())
    }
}

/// A path as error messages show it.
fn shown(path: &Path) -> String {
    path.display().to_string()
}

fn io_error(path: &Path, e: std::io::Error) -> WeightsError {
    WeightsError::Io { path: shown(path), source: std::sync::Arc::new(e) }
}

/// Maps `path` and parses its header; the tensors' `file` fields are left 0.
fn map_shard(path: &Path) -> Result<(Shard, Vec<(String, StoredTensor)>), WeightsError> {
    let file = File::open(path).map_err(|e| io_error(path, e))?;
    // SAFETY: the map is only read. Another process truncating or rewriting the file while it is
    // mapped is outside what we can guard against (every mmap-based loader shares this caveat).
    let map = unsafe { Mmap::map(&file) }.map_err(|e| io_error(path, e))?;
    let (header_len, meta) = SafeTensors::read_metadata(&map).map_err(|e| WeightsError::Header {
        path: shown(path),
        source: super::SafetensorsError(std::sync::Arc::new(e)),
    })?;
    let start = HEADER_LEN_BYTES + header_len;
    let mut tensors: Vec<(String, StoredTensor)> = meta
        .tensors()
        .into_iter()
        .map(|(name, info)| {
            let (s, e) = info.data_offsets;
            let t = StoredTensor { dtype: info.dtype, shape: info.shape.clone(), file: 0, bytes: start + s..start + e };
            (name, t)
        })
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((Shard { path: path.to_path_buf(), map }, tensors))
}

/// Reads the `weight_map` of an index file.
fn read_index(index: &Path) -> Result<BTreeMap<String, String>, WeightsError> {
    let bad = |message: String| WeightsError::Index { path: shown(index), message };
    let text = crate::budget::read_to_string(index).map_err(|e| io_error(index, e))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| WeightsError::IndexJson { path: shown(index), source: std::sync::Arc::new(e) })?;
    let map = value.get("weight_map").ok_or_else(|| bad("no \"weight_map\" object".into()))?;
    let map = map.as_object().ok_or_else(|| bad("\"weight_map\" is not an object".into()))?;
    let mut out = BTreeMap::new();
    for (tensor, shard) in map {
        let shard = shard.as_str().ok_or_else(|| bad(format!("weight_map[{tensor:?}] is not a file name")))?;
        out.insert(tensor.clone(), shard.to_string());
    }
    Ok(out)
}

/// The distinct shard files an index names, sorted; all must exist.
fn index_files(dir: &Path, index: &Path, weight_map: &BTreeMap<String, String>) -> Result<Vec<PathBuf>, WeightsError> {
    let names: BTreeSet<&String> = weight_map.values().collect();
    let missing: Vec<String> = names.iter().filter(|n| !dir.join(n).is_file()).map(|n| n.to_string()).collect();
    if !missing.is_empty() {
        return Err(WeightsError::MissingShards { index: shown(index), shards: missing });
    }
    Ok(names.into_iter().map(|n| dir.join(n)).collect())
}

/// Every `*.safetensors` file directly in `dir`, sorted by name.
fn list_safetensors(dir: &Path) -> Result<Vec<PathBuf>, WeightsError> {
    let entries = std::fs::read_dir(dir).map_err(|e| io_error(dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| io_error(dir, e))?.path();
        if path.is_file() && path.extension().is_some_and(|x| x == "safetensors") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}
