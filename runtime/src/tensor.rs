//! The runtime's tensors: what crosses the session boundary (logits, hidden states, state
//! tensors, inputs), owned by the runtime rather than borrowed from the reference interpreter.
//!
//! A [`Tensor`] is a shape and a [`Storage`]. Storage is host memory today (f32 or i32 elements,
//! row-major); a device variant joins [`Storage`] with the CUDA backend, and every accessor that
//! hands out host slices says so by returning `None` for storage elsewhere. Conversions to and
//! from `qgc_ir::interp::Tensor` are the one place the two meet (the interpreter backend).

use qgc_ir::interp;
use qgc_ir::{Bindings, DType, TensorType};

/// Where a tensor's elements are.
#[derive(Debug, Clone, PartialEq)]
pub enum Storage {
    /// Host f32 elements.
    F32(Vec<f32>),
    /// Host i32 elements.
    I32(Vec<i32>),
}

/// A dense row-major tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Dims, outermost first.
    pub shape: Vec<usize>,
    storage: Storage,
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Tensor {
    /// An f32 tensor. Panics when `data` does not have `shape`'s element count (an internal
    /// invariant: callers build both).
    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Tensor {
        assert_eq!(numel(&shape), data.len(), "tensor data does not match shape {shape:?}");
        Tensor { shape, storage: Storage::F32(data) }
    }

    /// An i32 tensor (same contract as [`Tensor::f32`]).
    pub fn i32(shape: Vec<usize>, data: Vec<i32>) -> Tensor {
        assert_eq!(numel(&shape), data.len(), "tensor data does not match shape {shape:?}");
        Tensor { shape, storage: Storage::I32(data) }
    }

    /// Zeros of `dtype` (i32 for [`DType::I32`], f32 otherwise).
    pub fn zeros(shape: Vec<usize>, dtype: DType) -> Tensor {
        let n = numel(&shape);
        match dtype {
            DType::I32 => Tensor::i32(shape, vec![0; n]),
            _ => Tensor::f32(shape, vec![0.0; n]),
        }
    }

    /// Element type as stored.
    pub fn dtype(&self) -> DType {
        match self.storage {
            Storage::F32(_) => DType::F32,
            Storage::I32(_) => DType::I32,
        }
    }

    /// Element count.
    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    /// The storage.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Host f32 elements, or `None` (i32, or not on the host).
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.storage {
            Storage::F32(v) => Some(v),
            Storage::I32(_) => None,
        }
    }

    /// Host f32 elements, writable.
    pub fn as_f32_mut(&mut self) -> Option<&mut [f32]> {
        match &mut self.storage {
            Storage::F32(v) => Some(v),
            Storage::I32(_) => None,
        }
    }

    /// Host i32 elements, or `None`.
    pub fn as_i32(&self) -> Option<&[i32]> {
        match &self.storage {
            Storage::I32(v) => Some(v),
            Storage::F32(_) => None,
        }
    }

    /// Host i32 elements, writable.
    pub fn as_i32_mut(&mut self) -> Option<&mut [i32]> {
        match &mut self.storage {
            Storage::I32(v) => Some(v),
            Storage::F32(_) => None,
        }
    }

    /// The host f32 elements, taken.
    pub fn into_f32(self) -> Option<Vec<f32>> {
        match self.storage {
            Storage::F32(v) => Some(v),
            Storage::I32(_) => None,
        }
    }

    /// `f32[2,3]`-style description, for messages.
    pub fn describe(&self) -> String {
        let dims: Vec<String> = self.shape.iter().map(|d| d.to_string()).collect();
        format!("{}[{}]", self.dtype().name(), dims.join(","))
    }

    /// Whether this tensor's dtype and shape fit `ty` under `bind` (bf16/f16 values are held as
    /// f32).
    pub fn fits(&self, ty: &TensorType, bind: &Bindings) -> bool {
        let dtype_ok = matches!(
            (self.dtype(), ty.dtype),
            (DType::I32, DType::I32) | (DType::F32, DType::F32 | DType::BF16 | DType::F16)
        );
        dtype_ok && self.shape == ty.eval(bind)
    }
}

impl From<interp::Tensor> for Tensor {
    fn from(t: interp::Tensor) -> Tensor {
        match t.data {
            interp::Data::F32(v) => Tensor::f32(t.shape, v),
            interp::Data::I32(v) => Tensor::i32(t.shape, v),
        }
    }
}

impl From<Tensor> for interp::Tensor {
    fn from(t: Tensor) -> interp::Tensor {
        match t.storage {
            Storage::F32(v) => interp::Tensor::f32(t.shape, v),
            Storage::I32(v) => interp::Tensor::i32(t.shape, v),
        }
    }
}

/// A state tensor of a sequence batch (KV cache, conv or recurrent state), f32, that may grow
/// along one axis: a KV cache `[B, N, P, D]` is stored as `[B, N, capacity, D]` with its first
/// `P` entries valid, so a call that appends `S` entries writes only those (the compiled
/// backend updates state buffers in place). Grows by doubling when an append needs more room,
/// so a long generation copies the cache `O(log P)` times, not once per token.
#[derive(Debug, Clone, PartialEq)]
pub struct StateTensor {
    /// Logical shape (the growing axis at its current length).
    shape: Vec<usize>,
    /// The growing axis, if any.
    axis: Option<usize>,
    /// Entries the buffer holds along `axis` (the logical length when there is none).
    capacity: usize,
    data: Vec<f32>,
}

/// Where a row of a regrouped batch comes from ([`StateTensor::regroup`]).
#[derive(Debug, Clone, Copy)]
pub enum Pick<'a> {
    /// Row `row` of the tensor, its entries from `from` on along the growing axis (the rest is
    /// left padding).
    Keep {
        /// Row in the old batch.
        row: usize,
        /// First valid entry (the row's padding).
        from: usize,
    },
    /// A dense batch-1 tensor (all its entries valid).
    New(&'a Tensor),
}

/// The axis a state tensor of type `ty` grows along from call to call (the one whose size
/// involves `P`: a KV cache's length), if any.
pub fn grow_axis(ty: &TensorType) -> Option<usize> {
    ty.shape.iter().position(|d| d.coeffs[2] != 0)
}

/// Smallest capacity a growing state is given.
pub const MIN_CAPACITY: usize = 256;

/// The capacity a growing buffer of `capacity` entries takes to hold `len`: unchanged when it
/// fits, else doubled (at least `len`, at least [`MIN_CAPACITY`]).
pub fn grown(capacity: usize, len: usize) -> usize {
    if len <= capacity {
        capacity
    } else {
        len.max(capacity.saturating_mul(2)).max(MIN_CAPACITY)
    }
}

/// Bytes of zero state of logical `shape` growing along `axis`, once it holds `len` entries
/// there (checked).
pub fn state_bytes(shape: &[usize], axis: Option<usize>, len: usize) -> Option<u64> {
    let mut p = shape.to_vec();
    if let Some(a) = axis {
        p[a] = grown(shape[a].max(MIN_CAPACITY), len);
    }
    crate::budget::bytes_of(&p, 4)
}

impl StateTensor {
    /// Zeros of logical `shape`, growing along `axis` (with room for [`MIN_CAPACITY`] entries).
    pub fn zeros(shape: Vec<usize>, axis: Option<usize>) -> StateTensor {
        let capacity = axis.map_or(0, |a| shape[a].max(MIN_CAPACITY));
        let mut t = StateTensor { shape, axis, capacity, data: Vec::new() };
        t.data = vec![0.0; t.physical_len()];
        t
    }

    /// The state in `t` (dense, logical shape), growing along `axis`.
    pub fn from_dense(t: &Tensor, axis: Option<usize>) -> StateTensor {
        let mut s = StateTensor::zeros(t.shape.clone(), axis);
        s.copy_rows_from(t.as_f32().unwrap_or_default(), t.shape.clone());
        s
    }

    fn physical(&self) -> Vec<usize> {
        let mut p = self.shape.clone();
        if let Some(a) = self.axis {
            p[a] = self.capacity;
        }
        p
    }

    fn physical_len(&self) -> usize {
        numel(&self.physical())
    }

    /// Copies dense `src` (logical `shape`, at most the capacity along the axis) into the buffer.
    fn copy_rows_from(&mut self, src: &[f32], shape: Vec<usize>) {
        let Some(a) = self.axis else {
            self.data.copy_from_slice(src);
            return;
        };
        let outer: usize = shape[..a].iter().product();
        let inner: usize = shape[a + 1..].iter().product();
        let (len, cap) = (shape[a], self.capacity);
        for o in 0..outer {
            self.data[o * cap * inner..][..len * inner].copy_from_slice(&src[o * len * inner..][..len * inner]);
        }
    }

    /// Logical shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The growing axis.
    pub fn axis(&self) -> Option<usize> {
        self.axis
    }

    /// Entries the buffer holds along the growing axis (0 without one).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The buffer (physical layout).
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// The buffer, writable (physical layout).
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// The capacity [`StateTensor::reserve`]`(len)` leaves.
    pub fn capacity_after(&self, len: usize) -> usize {
        grown(self.capacity, len)
    }

    /// Bytes of the buffer with `capacity` entries along the growing axis (checked).
    pub fn bytes_with(&self, capacity: usize) -> Option<u64> {
        let mut p = self.shape.clone();
        if let Some(a) = self.axis {
            p[a] = capacity;
        }
        crate::budget::bytes_of(&p, 4)
    }

    /// Makes room for `len` entries along the growing axis (doubling; contents kept).
    pub fn reserve(&mut self, len: usize) {
        let Some(a) = self.axis else { return };
        if len <= self.capacity {
            return;
        }
        let dense = self.dense();
        self.capacity = grown(self.capacity, len);
        self.data = vec![0.0; self.physical_len()];
        self.copy_rows_from(dense.as_f32().unwrap_or_default(), dense.shape.clone());
        debug_assert_eq!(self.shape[a], dense.shape[a]);
    }

    /// Sets the logical length along the growing axis (entries past the old length must have
    /// been written; within the capacity).
    pub fn set_len(&mut self, len: usize) {
        if let Some(a) = self.axis {
            assert!(len <= self.capacity, "state length {len} past its capacity {}", self.capacity);
            self.shape[a] = len;
        }
    }

    /// A new batch of this state (batch on axis 0), one row per pick: [`Pick::Keep`] takes a row
    /// of this tensor, [`Pick::New`] a batch-1 dense tensor. Along the growing axis each row's
    /// entries are right-aligned to `len` (zeros before them: left padding); the buffer keeps
    /// this tensor's capacity when `len` fits. One copy of the picked rows. `None` when a
    /// [`Pick::New`] tensor's shape does not fit.
    pub fn regroup(&self, picks: &[Pick], len: usize) -> Option<StateTensor> {
        let mut shape = self.shape.clone();
        shape[0] = picks.len();
        if let Some(a) = self.axis {
            shape[a] = len;
        }
        let capacity = self.axis.map_or(0, |_| grown(self.capacity.max(MIN_CAPACITY), len));
        let mut out = StateTensor { shape, axis: self.axis, capacity, data: Vec::new() };
        out.data = vec![0.0; out.physical_len()];
        let row_out = out.physical_len() / picks.len().max(1);
        let row_in = self.physical_len() / self.shape[0].max(1);
        for (i, pick) in picks.iter().enumerate() {
            let dst = &mut out.data[i * row_out..(i + 1) * row_out];
            let (src, cap_in, from, to): (&[f32], usize, usize, usize) = match *pick {
                Pick::Keep { row, from } => {
                    let to = self.axis.map_or(0, |a| self.shape[a]);
                    (&self.data[row * row_in..(row + 1) * row_in], self.capacity, from.min(to), to)
                }
                Pick::New(t) => {
                    let ok = t.shape.len() == self.shape.len()
                        && t.shape[0] == 1
                        && (1..t.shape.len()).all(|d| Some(d) == self.axis || t.shape[d] == self.shape[d]);
                    if !ok {
                        return None;
                    }
                    let l = self.axis.map_or(0, |a| t.shape[a]);
                    (t.as_f32()?, l, 0, l)
                }
            };
            let Some(a) = self.axis else {
                dst.copy_from_slice(&src[..row_out]);
                continue;
            };
            let n = to - from;
            if n > len {
                return None;
            }
            let outer: usize = self.shape[1..a].iter().product();
            let inner: usize = self.shape[a + 1..].iter().product();
            for o in 0..outer {
                let s0 = (o * cap_in + from) * inner;
                let d0 = (o * capacity + len - n) * inner;
                dst[d0..d0 + n * inner].copy_from_slice(&src[s0..s0 + n * inner]);
            }
        }
        Some(out)
    }

    /// A dense copy in the logical shape.
    pub fn dense(&self) -> Tensor {
        let Some(a) = self.axis else { return Tensor::f32(self.shape.clone(), self.data.clone()) };
        let outer: usize = self.shape[..a].iter().product();
        let inner: usize = self.shape[a + 1..].iter().product();
        let (len, cap) = (self.shape[a], self.capacity);
        let mut out = Vec::with_capacity(outer * len * inner);
        for o in 0..outer {
            out.extend_from_slice(&self.data[o * cap * inner..][..len * inner]);
        }
        Tensor::f32(self.shape.clone(), out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_growing_state_keeps_its_entries_through_growth() {
        // [2, 3, P, 2] with P = 2, then grown past the minimum capacity.
        let t = Tensor::f32(vec![2, 3, 2, 2], (0..24).map(|v| v as f32).collect());
        let mut s = StateTensor::from_dense(&t, Some(2));
        assert_eq!((s.capacity(), s.dense()), (MIN_CAPACITY, t.clone()));
        s.reserve(MIN_CAPACITY + 1);
        assert_eq!((s.capacity(), s.dense()), (2 * MIN_CAPACITY, t.clone()));
        // Write entry 2 of row (1, 2) and extend.
        let at = ((3 + 2) * s.capacity() + 2) * 2;
        s.data_mut()[at..at + 2].copy_from_slice(&[100.0, 101.0]);
        s.set_len(3);
        let d = s.dense();
        assert_eq!(d.shape, vec![2, 3, 3, 2]);
        assert_eq!(&d.as_f32().unwrap()[(5 * 3 + 2) * 2..][..2], &[100.0, 101.0]);
        assert_eq!(&d.as_f32().unwrap()[..4], &t.as_f32().unwrap()[..4]);
        let fixed = StateTensor::from_dense(&t, None);
        assert_eq!((fixed.capacity(), fixed.dense()), (0, t));
    }
}
