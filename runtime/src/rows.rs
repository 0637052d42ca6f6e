//! Regrouping sequences between batches. A batch's [`SavedState`] splits into one state per
//! sequence (its padding dropped), and states of sequences of different lengths stack into one
//! left-padded batch state, which [`Session::restore`](crate::Session::restore) takes whatever
//! its batch size. Continuous batching (`qgc serve`) regroups whenever sequences join or leave;
//! a prefix cache keeps single-sequence states to stack later.
//!
//! State tensors have the batch on axis 0 (every `state.*` declaration: KV `[B, N, P, D]`, conv
//! `[B, C, K−1]`, recurrent `[B, H, Dk, Dv]`); KV caches grow along the axis whose size depends
//! on `P` ([`grow_axis`]). Row `b` of a batch holds `padding[b]` padding slots before its
//! `position − padding[b]` real ones.

use crate::session::{SavedState, SessionError};
use crate::tensor::{grow_axis, Storage, Tensor};
use qgc_ir::StateDecl;
use std::collections::BTreeMap;

fn bad(m: String) -> SessionError {
    SessionError::Input(m)
}

/// Each sequence of `saved` on its own: batch 1, no padding, its own token count as position.
/// `decls` are the program's main state declarations (`Program::state`). MTP state is split
/// only when the MTP block holds nothing yet (rows cannot share a draft cache position).
pub fn split(decls: &[StateDecl], saved: &SavedState) -> Result<Vec<SavedState>, SessionError> {
    if saved.mtp_position != 0 {
        return Err(bad("sequences whose MTP block holds tokens cannot be regrouped".into()));
    }
    let batch = saved.padding.len();
    let mut rows: Vec<SavedState> = saved
        .padding
        .iter()
        .map(|&pad| SavedState {
            position: saved.position.saturating_sub(pad),
            padding: vec![0],
            ..SavedState::default()
        })
        .collect();
    for (name, t) in &saved.state {
        let axis = axis_of(decls, name)?;
        check_batch(name, t, batch)?;
        for (b, row) in rows.iter_mut().enumerate() {
            let from = saved.padding[b].min(saved.position);
            row.state.insert(name.clone(), slice(t, b, axis.map(|a| (a, from, saved.position))));
        }
    }
    for (name, t) in &saved.mtp_state {
        check_batch(name, t, batch)?;
        for (b, row) in rows.iter_mut().enumerate() {
            row.mtp_state.insert(name.clone(), slice(t, b, None));
        }
    }
    Ok(rows)
}

/// One batch of `rows` (each a single sequence, as [`split`] returns them): position the
/// longest row's, every shorter row left-padded with zero slots (masked by its padding).
pub fn stack(decls: &[StateDecl], rows: &[&SavedState]) -> Result<SavedState, SessionError> {
    let Some(first) = rows.first() else { return Err(bad("no sequences to stack".into())) };
    if let Some((i, r)) = rows.iter().enumerate().find(|(_, r)| r.padding.len() != 1 || r.mtp_position != 0) {
        return Err(bad(format!("row {i} is not one sequence without MTP tokens ({} rows)", r.padding.len())));
    }
    let lens: Vec<usize> = rows.iter().map(|r| r.position - r.padding[0]).collect();
    let position = lens.iter().copied().max().unwrap_or(0);
    let mut out = SavedState {
        position,
        padding: lens.iter().map(|l| position - l).collect(),
        state: BTreeMap::new(),
        mtp_position: 0,
        mtp_state: BTreeMap::new(),
    };
    for name in first.state.keys() {
        let axis = axis_of(decls, name)?;
        let parts: Vec<&Tensor> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| r.state.get(name).ok_or_else(|| bad(format!("row {i} has no {name}"))))
            .collect::<Result<_, _>>()?;
        let pieces: Vec<Tensor> = parts
            .iter()
            .zip(rows)
            .map(|(t, r)| {
                let real = axis.map(|a| (a, r.padding[0].min(r.position), r.position));
                let t = slice(t, 0, real);
                match axis {
                    Some(a) => pad_front(&t, a, position - (r.position - r.padding[0])),
                    None => t,
                }
            })
            .collect();
        out.state.insert(name.clone(), concat_batch(name, &pieces)?);
    }
    for name in first.mtp_state.keys() {
        let parts: Vec<Tensor> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| r.mtp_state.get(name).cloned().ok_or_else(|| bad(format!("row {i} has no {name}"))))
            .collect::<Result<_, _>>()?;
        out.mtp_state.insert(name.clone(), concat_batch(name, &parts)?);
    }
    Ok(out)
}

/// Bytes of `saved`'s tensors (what a cached copy of it holds).
pub fn bytes(saved: &SavedState) -> u64 {
    let n: usize = saved.state.values().chain(saved.mtp_state.values()).map(Tensor::numel).sum();
    n as u64 * 4
}

fn axis_of(decls: &[StateDecl], name: &str) -> Result<Option<usize>, SessionError> {
    decls
        .iter()
        .find(|d| d.name == name)
        .map(|d| grow_axis(&d.ty).filter(|&a| a > 0))
        .ok_or_else(|| bad(format!("{name} is not a state tensor of this model")))
}

fn check_batch(name: &str, t: &Tensor, batch: usize) -> Result<(), SessionError> {
    if t.shape.first() != Some(&batch) {
        return Err(bad(format!("{name} is {}, expected {batch} sequences on axis 0", t.describe())));
    }
    Ok(())
}

/// Row `b` of `t` (axis 0, kept as a batch of 1), with `range = (axis, from, to)` keeping only
/// entries `from..to` on `axis` (≥ 1).
fn slice(t: &Tensor, b: usize, range: Option<(usize, usize, usize)>) -> Tensor {
    let mut shape = t.shape.clone();
    let row: usize = shape[1..].iter().product();
    let span = range.map(|(axis, from, to)| {
        let (outer, len, inner) = around(&shape, axis);
        (outer, len, inner, from.min(len), to.min(len).max(from.min(len)))
    });
    fn take<T: Copy>(v: &[T], b: usize, row: usize, span: Option<(usize, usize, usize, usize, usize)>) -> Vec<T> {
        let r = &v[b * row..(b + 1) * row];
        let Some((outer, len, inner, from, to)) = span else { return r.to_vec() };
        let mut out = Vec::with_capacity(outer * (to - from) * inner);
        for o in 0..outer {
            out.extend_from_slice(&r[(o * len + from) * inner..(o * len + to) * inner]);
        }
        out
    }
    shape[0] = 1;
    if let (Some((axis, ..)), Some((_, _, _, from, to))) = (range, span) {
        shape[axis] = to - from;
    }
    match t.storage() {
        Storage::F32(v) => Tensor::f32(shape, take(v, b, row, span)),
        Storage::I32(v) => Tensor::i32(shape, take(v, b, row, span)),
    }
}

/// Element counts before `axis` (within one batch row), along it, and after it.
fn around(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (shape[1..axis].iter().product(), shape[axis], shape[axis + 1..].iter().product())
}

/// `t` (batch 1) with `n` zero entries before its first on `axis` (≥ 1).
fn pad_front(t: &Tensor, axis: usize, n: usize) -> Tensor {
    if n == 0 {
        return t.clone();
    }
    let mut shape = t.shape.clone();
    let (outer, len, inner) = around(&shape, axis);
    shape[axis] = len + n;
    fn grow<T: Copy + Default>(v: &[T], outer: usize, len: usize, inner: usize, n: usize) -> Vec<T> {
        let mut out = Vec::with_capacity(outer * (len + n) * inner);
        for o in 0..outer {
            out.extend(std::iter::repeat_n(T::default(), n * inner));
            out.extend_from_slice(&v[o * len * inner..(o + 1) * len * inner]);
        }
        out
    }
    match t.storage() {
        Storage::F32(v) => Tensor::f32(shape, grow(v, outer, len, inner, n)),
        Storage::I32(v) => Tensor::i32(shape, grow(v, outer, len, inner, n)),
    }
}

/// `parts` (batch 1 each, equal shapes otherwise) concatenated along axis 0.
fn concat_batch(name: &str, parts: &[Tensor]) -> Result<Tensor, SessionError> {
    let first = &parts[0];
    if let Some(p) = parts.iter().find(|p| p.shape[1..] != first.shape[1..] || p.dtype() != first.dtype()) {
        return Err(bad(format!("{name}: rows differ ({} and {})", first.describe(), p.describe())));
    }
    let mut shape = first.shape.clone();
    shape[0] = parts.iter().map(|p| p.shape[0]).sum();
    Ok(match first.storage() {
        Storage::F32(_) => {
            Tensor::f32(shape, parts.iter().flat_map(|p| p.as_f32().unwrap_or(&[]).iter().copied()).collect())
        }
        Storage::I32(_) => {
            Tensor::i32(shape, parts.iter().flat_map(|p| p.as_i32().unwrap_or(&[]).iter().copied()).collect())
        }
    })
}
