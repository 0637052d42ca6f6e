//! A session's state on the device between calls: KV caches, conv and recurrent state stay in
//! device buffers from one step to the next, so a decode step moves only its token ids in and
//! its logits out. The host [`StateTensor`]s keep the shapes and capacities (what the session
//! admits against its memory budget) but not the values while the device holds them:
//! [`DeviceState::dense`] reads a tensor back when someone asks (saving a chat, tests).
//!
//! Buffers have the host tensor's physical layout (a growing axis at its capacity). When the
//! session grows a capacity, the buffer is re-laid out on the device (row by row), never
//! through the host.

use super::model::{bytes_f32, f32_bytes};
use super::{CudaError, DevPtr, Device};
use crate::tensor::{StateTensor, Tensor};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One resident tensor: its buffer and the capacity it was laid out with.
struct Resident {
    ptr: DevPtr,
    /// Entries along the growing axis the buffer holds (the tensor's length when it has none).
    cap: usize,
}

/// State tensors resident on one device, by name.
pub struct DeviceState {
    dev: Arc<dyn Device>,
    bufs: BTreeMap<String, Resident>,
}

fn elems(st: &StateTensor, cap: usize) -> usize {
    let mut shape = st.shape().to_vec();
    if let Some(a) = st.axis() {
        shape[a] = cap;
    }
    shape.iter().product()
}

impl DeviceState {
    /// No tensor resident yet.
    pub fn new(dev: Arc<dyn Device>) -> DeviceState {
        DeviceState { dev, bufs: BTreeMap::new() }
    }

    /// Whether `name` is on the device.
    pub fn has(&self, name: &str) -> bool {
        self.bufs.contains_key(name)
    }

    /// The device buffer of state `name`, whose host tensor is `st` (its capacity possibly just
    /// grown by the caller, its length `len_before` entries along the growing axis): uploaded
    /// from the host the first time, re-laid out on the device when the capacity grew.
    pub fn buffer(&mut self, name: &str, st: &StateTensor, len_before: usize) -> Result<DevPtr, CudaError> {
        let cap = st.axis().map_or(0, |_| st.capacity());
        let dev = self.dev.as_ref();
        match self.bufs.get(name) {
            Some(r) if r.cap == cap => Ok(r.ptr),
            Some(r) => {
                let (a, old) = (st.axis().unwrap_or(0), r.cap);
                let outer: usize = st.shape()[..a].iter().product();
                let inner: usize = st.shape()[a + 1..].iter().product();
                let p = dev.alloc(4 * elems(st, cap).max(1))?;
                dev.zero(p, 4 * elems(st, cap))?;
                for o in 0..outer {
                    let n = 4 * len_before * inner;
                    if n > 0 {
                        dev.dtod(r.ptr.offset(4 * o * old * inner), p.offset(4 * o * cap * inner), n)?;
                    }
                }
                let _ = dev.free(r.ptr);
                self.bufs.insert(name.to_string(), Resident { ptr: p, cap });
                Ok(p)
            }
            None => {
                let data = f32_bytes(st.data());
                let p = dev.alloc(data.len().max(4))?;
                dev.htod(&data, p)?;
                self.bufs.insert(name.to_string(), Resident { ptr: p, cap });
                Ok(p)
            }
        }
    }

    /// A fresh zeroed buffer for state output `name` laid out as `st`, replacing (after the call)
    /// any buffer it had: returns the pointer; [`DeviceState::commit`] installs it.
    pub fn fresh(&self, st: &StateTensor) -> Result<DevPtr, CudaError> {
        let n = 4 * elems(st, st.axis().map_or(0, |_| st.capacity()));
        let p = self.dev.alloc(n.max(4))?;
        self.dev.zero(p, n)?;
        Ok(p)
    }

    /// Installs `ptr` (from [`DeviceState::fresh`]) as the buffer of `name`.
    pub fn commit(&mut self, name: &str, st: &StateTensor, ptr: DevPtr) {
        let cap = st.axis().map_or(0, |_| st.capacity());
        if let Some(old) = self.bufs.insert(name.to_string(), Resident { ptr, cap }) {
            let _ = self.dev.free(old.ptr);
        }
    }

    /// A dense copy of state `name` (host tensor `st` gives shape and layout), read from the
    /// device; `None` when it is not resident.
    pub fn dense(&self, name: &str, st: &StateTensor) -> Result<Option<Tensor>, CudaError> {
        let Some(r) = self.bufs.get(name) else { return Ok(None) };
        let mut b = vec![0u8; 4 * elems(st, r.cap)];
        self.dev.dtoh(r.ptr, &mut b)?;
        let v = bytes_f32(&b);
        let shape = st.shape().to_vec();
        let Some(a) = st.axis() else { return Ok(Some(Tensor::f32(shape, v))) };
        let outer: usize = shape[..a].iter().product();
        let inner: usize = shape[a + 1..].iter().product();
        let len = shape[a];
        let mut out = Vec::with_capacity(outer * len * inner);
        for o in 0..outer {
            out.extend_from_slice(&v[o * r.cap * inner..][..len * inner]);
        }
        Ok(Some(Tensor::f32(shape, out)))
    }
}

impl Drop for DeviceState {
    fn drop(&mut self) {
        for (_, r) in std::mem::take(&mut self.bufs) {
            let _ = self.dev.free(r.ptr);
        }
    }
}
