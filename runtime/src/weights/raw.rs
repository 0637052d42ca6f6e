//! Weights as the compiled CPU backend keeps them: f32, or bf16 bits that the kernels widen in
//! registers. A bf16 checkpoint tensor stored whole is borrowed straight from the memory map
//! (nothing converted, nothing copied); expert stacks are assembled once in their stored dtype.
//! F16 and mixed-dtype tensors are converted to f32.

use super::layout::{infer_role, resolve, Layout};
use super::Weights;
use half::bf16;
use qgc_ir::interp::{InterpError, MapWeights, Rng, Tensor, WeightSource};
use qgc_ir::ModelSpec;
use safetensors::Dtype;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One weight's elements in the dtype the backend computes with.
#[derive(Debug, Clone)]
pub enum HostTensor<'w> {
    /// f32 elements owned by a [`WeightSource`] (converted or drawn).
    Shared(Arc<Tensor>),
    /// f32 elements, borrowed from a memory map or owned.
    F32(Cow<'w, [f32]>),
    /// bf16 bits, borrowed from a memory map or owned.
    Bf16(Cow<'w, [u16]>),
}

impl HostTensor<'_> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            HostTensor::Shared(t) => t.as_f32().map_or(0, |v| v.len()),
            HostTensor::F32(v) => v.len(),
            HostTensor::Bf16(v) => v.len(),
        }
    }

    /// No elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the elements are bf16.
    pub fn is_bf16(&self) -> bool {
        matches!(self, HostTensor::Bf16(_))
    }

    /// The elements as f32 (bf16 widened).
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            HostTensor::Shared(t) => t.as_f32().map(|v| v.to_vec()).unwrap_or_default(),
            HostTensor::F32(v) => v.to_vec(),
            HostTensor::Bf16(v) => v.iter().map(|&b| bf16::from_bits(b).to_f32()).collect(),
        }
    }

    /// The f32 elements without a copy, when the tensor is f32.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match self {
            HostTensor::Shared(t) => t.as_f32(),
            HostTensor::F32(v) => Some(v),
            HostTensor::Bf16(_) => None,
        }
    }
}

/// A [`WeightSource`] that can also hand out weights in their stored dtype.
pub trait RawWeights: WeightSource + Sync {
    /// Logical tensor `name` with `shape`, bf16 when it is stored as bf16 (f32 otherwise).
    fn raw(&self, name: &str, shape: &[usize]) -> Result<HostTensor<'_>, InterpError> {
        Ok(HostTensor::Shared(self.weight(name, shape)?))
    }

    /// The same weights as the interpreter sees them.
    fn source(&self) -> &dyn WeightSource;
}

impl RawWeights for MapWeights {
    fn source(&self) -> &dyn WeightSource {
        self
    }
}

/// Reinterprets little-endian bytes as `T` without copying when aligned (copies otherwise).
fn cast<T: Copy + Default>(bytes: &[u8], from: fn(&[u8]) -> T) -> Cow<'_, [T]> {
    let size = std::mem::size_of::<T>();
    if cfg!(target_endian = "little") && (bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>()) {
        // SAFETY: aligned, in bounds (len / size whole elements), every bit pattern is a valid
        // f32/u16, and the slice borrows `bytes`.
        return Cow::Borrowed(unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const T, bytes.len() / size) });
    }
    Cow::Owned(bytes.chunks_exact(size).map(from).collect())
}

impl RawWeights for Weights {
    fn raw(&self, name: &str, shape: &[usize]) -> Result<HostTensor<'_>, InterpError> {
        let ckpt = self.checkpoint();
        let layout = resolve(ckpt, name, infer_role(ckpt, name, shape), shape).layout;
        let stored: Vec<&str> = match &layout {
            Some(Layout::Whole(n)) => vec![n],
            Some(Layout::PerExpert(ns)) => ns.iter().map(String::as_str).collect(),
            Some(Layout::FusedRows { name, .. }) => vec![name],
            None => vec![],
        };
        let tensors: Option<Vec<_>> = stored.iter().map(|n| ckpt.get(n).map(|t| (t, ckpt.data(t)))).collect();
        let numel: usize = shape.iter().product();
        let (Some(layout), Some(tensors)) = (layout, tensors) else {
            return Ok(HostTensor::Shared(self.weight(name, shape)?));
        };
        let all = |d: Dtype| tensors.iter().all(|(t, b)| t.dtype == d && b.is_some());
        let u16s = |b: &[u8]| u16::from_le_bytes([b[0], b[1]]);
        let f32s = |b: &[u8]| f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let t = match (&layout, all(Dtype::BF16), all(Dtype::F32)) {
            (Layout::Whole(_), true, _) => HostTensor::Bf16(cast(tensors[0].1.unwrap_or_default(), u16s)),
            (Layout::Whole(_), _, true) => HostTensor::F32(cast(tensors[0].1.unwrap_or_default(), f32s)),
            (Layout::PerExpert(_), true, _) => {
                let mut v = Vec::with_capacity(numel);
                for (_, b) in &tensors {
                    v.extend(cast(b.unwrap_or_default(), u16s).iter());
                }
                HostTensor::Bf16(Cow::Owned(v))
            }
            (Layout::FusedRows { first, rows, .. }, true, _) => {
                let (t, b) = tensors[0];
                let all = cast(b.unwrap_or_default(), u16s);
                let (experts, cols) = (t.shape[0], t.shape[2]);
                let mut v = Vec::with_capacity(numel);
                for e in 0..experts {
                    let start = (e * 2 * rows + first) * cols;
                    v.extend_from_slice(all.get(start..start + rows * cols).unwrap_or_default());
                }
                HostTensor::Bf16(Cow::Owned(v))
            }
            _ => return Ok(HostTensor::Shared(self.weight(name, shape)?)),
        };
        if t.len() != numel {
            return Err(InterpError::Weight {
                name: name.into(),
                message: format!("shape {shape:?} does not match the {} stored elements", t.len()),
            });
        }
        Ok(t)
    }

    fn source(&self) -> &dyn WeightSource {
        self
    }
}

/// Random weights stored as bf16 (drawn like [`MapWeights::random`], then rounded), for
/// benchmarks of bf16-stored checkpoints without one. The interpreter sees the rounded values.
#[derive(Debug, Default)]
pub struct Bf16Weights {
    tensors: BTreeMap<String, (Vec<usize>, Vec<u16>)>,
}

impl Bf16Weights {
    /// Every tensor `spec` declares, drawn with `seed` as [`MapWeights::random`] does and rounded
    /// to bf16 (one tensor at a time, so the f32 copy never exists whole).
    pub fn random(spec: &ModelSpec, seed: u64) -> Bf16Weights {
        let mut rng = Rng::new(seed);
        let mut tensors = BTreeMap::new();
        for decl in spec.tensors() {
            let (lo, hi) = qgc_ir::interp::init_range(&decl.name, &decl.shape, spec.zero_centred_norms);
            let t = rng.tensor(&decl.shape, lo, hi);
            let bits = t.as_f32().unwrap_or_default().iter().map(|&x| bf16::from_f32(x).to_bits()).collect();
            tensors.insert(decl.name.clone(), (decl.shape.clone(), bits));
        }
        Bf16Weights { tensors }
    }

    /// `weights` rounded to bf16.
    pub fn from_map(weights: &MapWeights) -> Bf16Weights {
        let round = |t: &Tensor| t.as_f32().unwrap_or_default().iter().map(|&x| bf16::from_f32(x).to_bits()).collect();
        let tensors = weights.tensors.iter().map(|(n, t)| (n.clone(), (t.shape.clone(), round(t)))).collect();
        Bf16Weights { tensors }
    }

    fn get(&self, name: &str, shape: &[usize]) -> Result<&[u16], InterpError> {
        match self.tensors.get(name) {
            Some((s, v)) if s.as_slice() == shape => Ok(v),
            Some((s, _)) => {
                Err(InterpError::Weight { name: name.into(), message: format!("has shape {s:?}, not {shape:?}") })
            }
            None => Err(InterpError::Weight { name: name.into(), message: "not among the random weights".into() }),
        }
    }
}

impl WeightSource for Bf16Weights {
    fn weight(&self, name: &str, shape: &[usize]) -> Result<Arc<Tensor>, InterpError> {
        let bits = self.get(name, shape)?;
        Ok(Arc::new(Tensor::f32(shape.to_vec(), bits.iter().map(|&b| bf16::from_bits(b).to_f32()).collect())))
    }
}

impl RawWeights for Bf16Weights {
    fn raw(&self, name: &str, shape: &[usize]) -> Result<HostTensor<'_>, InterpError> {
        Ok(HostTensor::Bf16(Cow::Borrowed(self.get(name, shape)?)))
    }

    fn source(&self) -> &dyn WeightSource {
        self
    }
}
