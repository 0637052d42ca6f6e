//! [`Weights`]: logical tensors converted to f32 on first use, cached, served to the interpreter.

use super::checkpoint::{Checkpoint, StoredTensor};
use super::layout::{infer_role, resolve, Layout};
use super::{check, WeightsError};
use qgc_ir::interp::{InterpError, Tensor, WeightSource};
use qgc_ir::ModelSpec;
use safetensors::Dtype;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Converted tensors by (logical name, requested shape).
type Cache = HashMap<(String, Vec<usize>), Arc<Tensor>>;

/// A checkpoint as a [`WeightSource`]: each logical tensor is converted to f32 once and kept.
#[derive(Debug)]
pub struct Weights {
    ckpt: Checkpoint,
    cache: Mutex<Cache>,
}

impl Weights {
    /// Serves tensors from `ckpt` (unchecked: problems surface per tensor on first use).
    pub fn new(ckpt: Checkpoint) -> Weights {
        Weights { ckpt, cache: Mutex::new(HashMap::new()) }
    }

    /// Opens the checkpoint at `path` and [`check`]s it against `spec` first.
    pub fn open(spec: &ModelSpec, path: impl AsRef<Path>) -> Result<Weights, WeightsError> {
        let ckpt = Checkpoint::open(path)?;
        check(spec, &ckpt)?;
        Ok(Weights::new(ckpt))
    }

    /// The underlying checkpoint.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.ckpt
    }

    /// How many logical tensors have been converted so far.
    pub fn cached(&self) -> usize {
        self.lock().len()
    }

    /// Logical tensor `name` (see `qgc_ir::spec::TensorDecl`) as f32 with exactly `shape`.
    /// Expert stacks (`….experts.{gate,up,down}_proj`, shape `[E, I, H]` / `[E, H, I]`) are
    /// assembled from per-expert tensors or sliced from the fused layout.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Arc<Tensor>, WeightsError> {
        let key = (name.to_string(), shape.to_vec());
        // The lock is held while converting so that each tensor is converted exactly once.
        let mut cache = self.lock();
        if let Some(t) = cache.get(&key) {
            return Ok(t.clone());
        }
        let fail = |message: String| WeightsError::Tensor { name: name.to_string(), message };
        let r = resolve(&self.ckpt, name, infer_role(&self.ckpt, name, shape), shape);
        let Some(layout) = r.layout else {
            let lines: Vec<String> =
                r.problems.iter().map(|p| if p.tensor == name { p.detail() } else { p.to_string() }).collect();
            return Err(fail(format!("{} (in checkpoint {})", lines.join("; "), self.ckpt.path().display())));
        };
        let data = self.assemble(&layout).map_err(fail)?;
        let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if numel != Some(data.len()) {
            return Err(fail(format!("shape {shape:?} does not match the {} stored elements", data.len())));
        }
        let t = Arc::new(Tensor::f32(shape.to_vec(), data));
        cache.insert(key, t.clone());
        Ok(t)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        // A poisoned cache still holds only complete entries.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The f32 elements of a resolved logical tensor, in row-major order.
    fn assemble(&self, layout: &Layout) -> Result<Vec<f32>, String> {
        let mut out = Vec::new();
        match layout {
            Layout::Whole(n) => {
                let t = self.stored(n)?;
                self.convert(n, t, 0..t.shape.iter().product(), &mut out)?;
            }
            Layout::PerExpert(names) => {
                for n in names {
                    let t = self.stored(n)?;
                    self.convert(n, t, 0..t.shape.iter().product(), &mut out)?;
                }
            }
            Layout::FusedRows { name, first, rows } => {
                let t = self.stored(name)?;
                let (experts, cols) = (t.shape[0], t.shape[2]);
                for e in 0..experts {
                    let start = (e * 2 * rows + first) * cols;
                    self.convert(name, t, start..start + rows * cols, &mut out)?;
                }
            }
        }
        Ok(out)
    }

    fn stored(&self, name: &str) -> Result<&StoredTensor, String> {
        self.ckpt.get(name).ok_or_else(|| format!("{name} is not in checkpoint {}", self.ckpt.path().display()))
    }

    /// Appends elements `elems` of stored tensor `t` (named `name`) to `out` as f32.
    fn convert(
        &self,
        name: &str,
        t: &StoredTensor,
        elems: std::ops::Range<usize>,
        out: &mut Vec<f32>,
    ) -> Result<(), String> {
        let file = self.ckpt.file_of(t).display();
        let bytes = self.ckpt.data(t).ok_or_else(|| format!("{name}: data outside {file}"))?;
        let width = match t.dtype {
            Dtype::F32 => 4,
            Dtype::BF16 | Dtype::F16 => 2,
            other => return Err(format!("{name}: unsupported dtype {other} (supported: F32, BF16, F16)")),
        };
        let range = elems.start * width..elems.end * width;
        let bytes =
            bytes.get(range).ok_or_else(|| format!("{name}: elements {elems:?} lie outside its data in {file}"))?;
        out.reserve(elems.len());
        match t.dtype {
            Dtype::F32 => out.extend(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
            Dtype::BF16 => out.extend(bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())),
            _ => out.extend(bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())),
        }
        Ok(())
    }
}

impl WeightSource for Weights {
    fn weight(&self, name: &str, shape: &[usize]) -> Result<Arc<Tensor>, InterpError> {
        self.get(name, shape).map_err(|e| match e {
            WeightsError::Tensor { name, message } => InterpError::Weight { name, message },
            other => InterpError::Weight { name: name.to_string(), message: other.to_string() },
        })
    }
}
