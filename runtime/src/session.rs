//! A running sequence batch: the program, its weights, and the per-sequence state, advanced by
//! `prefill` (any number of tokens, continuing from the current state), `prefill_ragged`
//! (sequences of different lengths, left-padded) and `decode` (one token per sequence); with an
//! MTP block also `mtp_draft`, which runs the draft entry point over its own KV cache.

use crate::budget::Reservation;
use crate::compiled::{CompiledError, CpuModel, Entry};
use crate::tensor::{StateTensor, Tensor};
use qgc_ir::interp::{self, InterpError, WeightSource};
use qgc_ir::{Bindings, DType, Graph, Program, StateDecl};
use std::collections::BTreeMap;

/// Session failures.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The interpreter rejected the call or a weight.
    #[error(transparent)]
    Interp(#[from] InterpError),
    /// The compiled backend rejected the call.
    #[error(transparent)]
    Compiled(#[from] CompiledError),
    /// Bad call: empty batch or sequence, unequal lengths where they must be equal, too many
    /// positions, out-of-vocabulary tokens, no MTP block.
    #[error("{0}")]
    Input(String),
    /// The state (or what the call needs) does not fit in the memory budget.
    #[error(transparent)]
    Budget(#[from] crate::budget::BudgetError),
    /// The CUDA backend rejected the call (a launch, a copy, device memory).
    #[error(transparent)]
    Cuda(#[from] crate::cuda::CudaError),
    /// An earlier call failed while updating the state in place; the session must be reset.
    #[error("the session's state was lost when an earlier call failed; reset it")]
    Poisoned,
}

/// The token id fed into left-padding slots. Any valid id would do: padding slots are masked
/// out of every other slot's computation.
pub const PAD_TOKEN: i32 = 0;

/// Everything a [`Session`] carries between calls, for [`Session::restore`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SavedState {
    /// Cache slots per row ([`Session::position`]).
    pub position: usize,
    /// Left-padding slots per row ([`Session::padding`]); its length is the batch size.
    pub padding: Vec<usize>,
    /// The `state.*` tensors ([`Session::state`]), dense.
    pub state: BTreeMap<String, Tensor>,
    /// Positions the MTP block has consumed ([`Session::mtp_position`]).
    pub mtp_position: usize,
    /// The `state.mtp*` tensors ([`Session::mtp_state`]; empty without an MTP block), dense.
    pub mtp_state: BTreeMap<String, Tensor>,
}

/// What executes a session's entry points.
#[derive(Clone, Copy)]
pub enum Backend<'w> {
    /// The reference interpreter over these weights.
    Interp(&'w dyn WeightSource),
    /// The compiled CPU backend.
    Cpu(&'w CpuModel<'w>),
    /// The same compiled program on a CUDA device (a GPU or the PTX interpreter).
    Cuda(&'w crate::cuda::model::CudaModel<'w>),
}

/// Batch state for `B` sequences, executed by the reference interpreter or the compiled backend.
///
/// Every row holds the same number of cache slots ([`Session::position`]). Sequences of
/// different lengths start with [`Session::prefill_ragged`], which left-pads the shorter ones;
/// from then on each row counts its own tokens ([`Session::positions`]) and every call feeds the
/// same number of tokens to every row. Each row computes exactly what its sequence computes alone
/// (up to f32 rounding).
pub struct Session<'w> {
    program: Program,
    /// `program.prefill` without its logits (interpreter backend only; the compiled model has
    /// its own).
    prefill_hidden: Option<Graph>,
    backend: Backend<'w>,
    vocab: usize,
    max_positions: usize,
    batch: usize,
    /// Cache slots per row, padding included.
    past: usize,
    /// Left-padding slots at the front of each row.
    pad: Vec<usize>,
    /// KV caches grow along their length with spare capacity; the compiled backend updates
    /// every state tensor in place.
    state: BTreeMap<String, StateTensor>,
    /// `hidden` output `[B,S,H]` of the last prefill/decode (only programs with an MTP block).
    hidden: Option<Tensor>,
    mtp_past: usize,
    mtp_state: BTreeMap<String, StateTensor>,
    /// A call failed after updating state in place: everything but [`Session::reset`] refuses.
    poisoned: bool,
    /// What the state tensors hold in the memory budget (both maps).
    held: Reservation,
    /// The CUDA backend's copies of `state` / `mtp_state` on the device: while present, they
    /// hold the values (the host tensors only shapes and capacities).
    dev_state: Option<crate::cuda::state::DeviceState>,
    dev_mtp_state: Option<crate::cuda::state::DeviceState>,
}

pub use crate::tensor::grow_axis;

fn zero_state(decls: &[StateDecl], batch: usize) -> BTreeMap<String, StateTensor> {
    let bind = Bindings { b: batch, s: 0, p: 0 };
    decls.iter().map(|d| (d.name.clone(), StateTensor::zeros(d.ty.eval(&bind), grow_axis(&d.ty)))).collect()
}

/// Bytes the state of `decls` holds once it has room for `len` entries: the tensors of
/// `current` grown, or fresh zero state when `current` is empty (checked).
fn state_bytes_after(
    decls: &[StateDecl],
    current: &BTreeMap<String, StateTensor>,
    batch: usize,
    len: usize,
) -> Option<u64> {
    let bind = Bindings { b: batch, s: 0, p: 0 };
    decls.iter().try_fold(0u64, |acc, d| {
        let b = match current.get(&d.name) {
            Some(t) => t.bytes_with(t.axis().map_or(0, |_| t.capacity_after(len)))?,
            None => crate::tensor::state_bytes(&d.ty.eval(&bind), grow_axis(&d.ty), len)?,
        };
        acc.checked_add(b)
    })
}

impl<'w> Session<'w> {
    /// A fresh session for `batch` sequences (all state zero, nothing consumed) run by the
    /// interpreter over `weights`.
    pub fn new(
        program: Program,
        weights: &'w dyn WeightSource,
        vocab: usize,
        max_positions: usize,
        batch: usize,
    ) -> Self {
        Session::with_backend(program, Backend::Interp(weights), vocab, max_positions, batch)
    }

    /// A fresh session for `batch` sequences run by `backend` (for [`Backend::Cpu`], a model
    /// compiled from the same `program`).
    pub fn with_backend(
        program: Program,
        backend: Backend<'w>,
        vocab: usize,
        max_positions: usize,
        batch: usize,
    ) -> Self {
        let prefill_hidden = matches!(backend, Backend::Interp(_)).then(|| {
            qgc_codegen::compile::without_logits(&program.prefill).unwrap_or_else(|_| program.prefill.clone())
        });
        let mut s = Session {
            program,
            prefill_hidden,
            backend,
            vocab,
            max_positions,
            batch,
            past: 0,
            pad: vec![0; batch],
            state: BTreeMap::new(),
            hidden: None,
            mtp_past: 0,
            mtp_state: BTreeMap::new(),
            poisoned: false,
            held: Reservation::none(),
            dev_state: None,
            dev_mtp_state: None,
        };
        s.reset();
        s
    }

    /// Forget every token: zero state (main model and MTP block), both at position 0, no padding.
    /// (State buffers are allocated by the first call, within the memory budget.)
    pub fn reset(&mut self) {
        self.past = 0;
        self.pad = vec![0; self.batch];
        self.state = BTreeMap::new();
        self.hidden = None;
        self.mtp_past = 0;
        self.mtp_state = BTreeMap::new();
        self.dev_state = None;
        self.dev_mtp_state = None;
        self.poisoned = false;
        let _ = self.held.resize("", Some(0));
    }

    /// Admits and allocates the state a call that grows the main state to `len` entries (MTP:
    /// `mtp`) needs; nothing changes when it does not fit.
    fn make_room(&mut self, mtp: bool, len: usize) -> Result<(), SessionError> {
        let (b, p) = (self.batch, &self.program);
        let main = if mtp { self.past } else { len };
        let draft = if mtp { len } else { self.mtp_past };
        let total = state_bytes_after(&p.state, &self.state, b, main)
            .zip(state_bytes_after(&p.mtp_state, &self.mtp_state, b, draft))
            .and_then(|(x, y)| x.checked_add(y));
        let (tokens, held) = (main.max(draft), self.held.bytes());
        let what = format_args!("the decode state of {b} sequence(s) at {tokens} tokens");
        self.held.resize(what, total.map(|t| t.max(held)))?;
        if self.state.is_empty() {
            self.state = zero_state(&p.state, b);
        }
        if self.mtp_state.is_empty() {
            self.mtp_state = zero_state(&p.mtp_state, b);
        }
        Ok(())
    }

    /// Checks, holding nothing, that the state of this session's sequences fits the memory
    /// budget once they are `len` tokens long (KV grows with the context, conv and recurrent
    /// state do not; the MTP block's cache too when the model has one). Callers that know how
    /// far they will go (a prompt plus its `max_new_tokens`, a benchmark's context) call it
    /// before any work, so a run that cannot finish is refused at the start, not midway.
    pub fn admit_context(&self, len: usize) -> Result<(), SessionError> {
        let (b, p) = (self.batch, &self.program);
        let none = BTreeMap::new();
        let mtp = if p.mtp.is_some() { state_bytes_after(&p.mtp_state, &none, b, len) } else { Some(0) };
        let need = state_bytes_after(&p.state, &none, b, len).zip(mtp).and_then(|(x, y)| x.checked_add(y));
        let what = format!("the decode state of {b} sequence(s) at {len} tokens");
        crate::budget::global().admit(what, need.map(|n| n.saturating_sub(self.held.bytes())))?;
        Ok(())
    }

    /// Cache slots per row, padding included: the tokens consumed by the longest sequence. Equal
    /// to every sequence's token count unless [`Session::prefill_ragged`] padded some rows.
    pub fn position(&self) -> usize {
        self.past
    }

    /// Tokens consumed so far by each sequence (its next token's position), `[B]`.
    pub fn positions(&self) -> Vec<usize> {
        self.pad.iter().map(|p| self.past - p).collect()
    }

    /// Left-padding slots at the front of each row, `[B]` (all 0 unless
    /// [`Session::prefill_ragged`] was given sequences of different lengths).
    pub fn padding(&self) -> &[usize] {
        &self.pad
    }

    /// The current state tensors, by `state.*` name (dense copies; read back from the device
    /// when the CUDA backend holds them).
    pub fn state(&self) -> Result<BTreeMap<String, Tensor>, SessionError> {
        with_device(dense_state(&self.program.state, &self.state, self.batch), &self.state, &self.dev_state)
    }

    /// Replaces everything the session carries between calls with `saved` (what
    /// [`Session::position`], [`Session::padding`], [`Session::state`], [`Session::mtp_position`]
    /// and [`Session::mtp_state`] returned for a session of the same program, or what
    /// [`Session::saved`] returned), e.g. a state saved to a file. The batch size becomes the
    /// state's ([`crate::rows`] regroups sequences). Every state tensor must be there with this program's dtype and shape at those
    /// positions; otherwise nothing changes and the error names the first problem.
    /// [`Session::hidden`] is `None` afterwards.
    pub fn restore(&mut self, saved: SavedState) -> Result<(), SessionError> {
        let bad = |m: String| Err(SessionError::Input(m));
        if saved.padding.is_empty() {
            return bad("the state holds no sequences".into());
        }
        if let Some(&p) = saved.padding.iter().find(|&&p| p > saved.position) {
            return bad(format!("padding {p} is more than the {} cache slots", saved.position));
        }
        let batch = saved.padding.len();
        let check = |decls: &[StateDecl], got: &BTreeMap<String, Tensor>, p: usize| {
            let bind = Bindings { b: batch, s: 0, p };
            for d in decls {
                // As stored: bf16/f16 state lives in f32 tensors.
                let want = || {
                    let dims: Vec<String> = d.ty.eval(&bind).iter().map(usize::to_string).collect();
                    let dtype = if d.ty.dtype == DType::I32 { "i32" } else { "f32" };
                    format!("{dtype}[{}]", dims.join(","))
                };
                match got.get(&d.name) {
                    None => return Err(format!("{} is missing", d.name)),
                    Some(t) if !t.fits(&d.ty, &bind) => {
                        return Err(format!("{} is {}, this model needs {}", d.name, t.describe(), want()))
                    }
                    Some(_) => {}
                }
            }
            match got.keys().find(|n| !decls.iter().any(|d| &d.name == *n)) {
                Some(n) => Err(format!("{n} is not a state tensor of this model")),
                None => Ok(()),
            }
        };
        check(&self.program.state, &saved.state, saved.position).or_else(bad)?;
        check(&self.program.mtp_state, &saved.mtp_state, saved.mtp_position).or_else(bad)?;
        let b = batch;
        let room = |decls: &[StateDecl], len| state_bytes_after(decls, &BTreeMap::new(), b, len);
        let total = room(&self.program.state, saved.position)
            .zip(room(&self.program.mtp_state, saved.mtp_position))
            .and_then(|(x, y)| x.checked_add(y));
        self.held.resize(format!("the decode state of {b} sequence(s) being restored"), total)?;
        let load = |decls: &[StateDecl], got: &BTreeMap<String, Tensor>| {
            decls.iter().map(|d| (d.name.clone(), StateTensor::from_dense(&got[&d.name], grow_axis(&d.ty)))).collect()
        };
        self.state = load(&self.program.state, &saved.state);
        self.mtp_state = load(&self.program.mtp_state, &saved.mtp_state);
        self.dev_state = None;
        self.dev_mtp_state = None;
        self.batch = batch;
        self.past = saved.position;
        self.pad = saved.padding;
        self.hidden = None;
        self.mtp_past = saved.mtp_position;
        self.poisoned = false;
        Ok(())
    }

    /// Everything the session carries between calls, for [`Session::restore`] (dense copies).
    pub fn saved(&self) -> Result<SavedState, SessionError> {
        Ok(SavedState {
            position: self.past,
            padding: self.pad.clone(),
            state: self.state()?,
            mtp_position: self.mtp_past,
            mtp_state: self.mtp_state()?,
        })
    }

    /// Regroups the batch in place: rows `keep` of this batch (in that order) followed by the
    /// single sequences `join` (as [`Session::row`] or [`crate::rows::split`] give them). Each
    /// row keeps its own length; shorter rows are left-padded to the longest. One copy of the
    /// kept state (the CUDA backend's state goes through the host). The MTP block must hold
    /// nothing. On error nothing changes.
    pub fn regroup(&mut self, keep: &[usize], join: &[&SavedState]) -> Result<(), SessionError> {
        let bad = |m: String| SessionError::Input(m);
        if self.poisoned {
            return Err(SessionError::Poisoned);
        }
        if let Some(&b) = keep.iter().find(|&&b| b >= self.batch) {
            return Err(bad(format!("row {b} of a batch of {}", self.batch)));
        }
        if keep.is_empty() && join.is_empty() {
            return Err(bad("a batch needs at least one sequence".into()));
        }
        if self.mtp_past != 0 || join.iter().any(|j| j.mtp_position != 0) {
            return Err(bad("sequences whose MTP block holds tokens cannot be regrouped".into()));
        }
        if let Some(j) = join.iter().find(|j| j.padding != [0]) {
            return Err(bad(format!("a joining state must be one unpadded sequence, not {} rows", j.padding.len())));
        }
        if self.dev_state.is_some() {
            // The device holds the values: regroup through host copies.
            let saved = self.saved()?;
            let rows = crate::rows::split(&self.program.state, &saved)?;
            let picked: Vec<&SavedState> = keep.iter().map(|&b| &rows[b]).chain(join.iter().copied()).collect();
            let stacked = crate::rows::stack(&self.program.state, &picked)?;
            return self.restore(stacked);
        }
        let lens: Vec<usize> =
            keep.iter().map(|&b| self.past - self.pad[b]).chain(join.iter().map(|j| j.position)).collect();
        let len = lens.iter().copied().max().unwrap_or(0);
        let batch = lens.len();
        let fresh = zero_state(&self.program.state, 1);
        let mut state = BTreeMap::new();
        for d in &self.program.state {
            let old = self.state.get(&d.name).or_else(|| fresh.get(&d.name)).expect("every declared state exists");
            let mut picks: Vec<crate::tensor::Pick> = Vec::with_capacity(batch);
            for &b in keep {
                let from = if self.state.contains_key(&d.name) { self.pad[b] } else { 0 };
                picks.push(crate::tensor::Pick::Keep { row: if self.state.is_empty() { 0 } else { b }, from });
            }
            for (i, j) in join.iter().enumerate() {
                let t = j.state.get(&d.name).ok_or_else(|| bad(format!("joining sequence {i} has no {}", d.name)))?;
                picks.push(crate::tensor::Pick::New(t));
            }
            let t = old
                .regroup(&picks, len)
                .ok_or_else(|| bad(format!("a joining sequence's {} does not fit this model's state", d.name)))?;
            state.insert(d.name.clone(), t);
        }
        let total = state.values().try_fold(0u64, |acc, t| t.bytes_with(t.capacity()).and_then(|b| acc.checked_add(b)));
        self.held.resize(format!("the decode state of {batch} sequence(s) being regrouped"), total)?;
        self.state = state;
        self.mtp_state = BTreeMap::new();
        self.batch = batch;
        self.past = len;
        self.pad = lens.iter().map(|l| len - l).collect();
        self.hidden = None;
        Ok(())
    }

    /// Row `b` on its own: batch 1, its padding dropped (dense copies).
    pub fn row(&self, b: usize) -> Result<SavedState, SessionError> {
        if b >= self.batch {
            return Err(SessionError::Input(format!("row {b} of a batch of {}", self.batch)));
        }
        if self.dev_state.is_some() || self.state.is_empty() {
            let rows = crate::rows::split(&self.program.state, &self.saved()?)?;
            return Ok(rows.into_iter().nth(b).expect("split keeps every row"));
        }
        let len = self.past - self.pad[b];
        let pick = [crate::tensor::Pick::Keep { row: b, from: self.pad[b] }];
        let state = self
            .state
            .iter()
            .map(|(n, t)| {
                Ok((n.clone(), t.regroup(&pick, len).ok_or_else(|| SessionError::Input(n.to_string()))?.dense()))
            })
            .collect::<Result<_, SessionError>>()?;
        Ok(SavedState { position: len, padding: vec![0], state, mtp_position: 0, mtp_state: BTreeMap::new() })
    }

    /// Sequences in the batch.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The program the session runs.
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// Whether the program has an MTP draft entry point.
    pub fn has_mtp(&self) -> bool {
        self.program.mtp.is_some()
    }

    /// The target's final hidden states (after `model.norm`) of the last prefill/decode call,
    /// `[B, S, H]` with that call's `S` (padding slots included, their rows meaningless); `None`
    /// before the first call or without an MTP block.
    pub fn hidden(&self) -> Option<&Tensor> {
        self.hidden.as_ref()
    }

    /// Positions the MTP block has consumed so far (its KV cache length, per sequence).
    pub fn mtp_position(&self) -> usize {
        self.mtp_past
    }

    /// The current MTP state tensors (`state.mtp{j}.{k,v}`, dense copies).
    pub fn mtp_state(&self) -> Result<BTreeMap<String, Tensor>, SessionError> {
        with_device(
            dense_state(&self.program.mtp_state, &self.mtp_state, self.batch),
            &self.mtp_state,
            &self.dev_mtp_state,
        )
    }

    /// Feeds `tokens[b]` (all the same length ≥ 1) through the prefill entry point, continuing
    /// from the current state; returns logits `[B, S, vocab]`. Prompts of different lengths go
    /// through [`Session::prefill_ragged`].
    pub fn prefill(&mut self, tokens: &[Vec<i32>]) -> Result<Tensor, SessionError> {
        let s = tokens.first().map(|t| t.len()).unwrap_or(0);
        self.call(false, tokens, s)
    }

    /// Feeds `prompts[b]` (each ≥ 1 token, lengths may differ) through the prefill entry point
    /// and returns each sequence's logits, `[len_b, vocab]`, exactly as if it ran alone.
    ///
    /// Shorter prompts are left-padded with [`PAD_TOKEN`] to the longest; padding must sit before
    /// a sequence's first token, so prompts of different lengths need a fresh session (or
    /// [`Session::reset`]). Equal lengths continue any session, like [`Session::prefill`].
    /// Afterwards [`Session::decode`] continues every row at its own position.
    pub fn prefill_ragged(&mut self, prompts: &[Vec<i32>]) -> Result<Vec<Tensor>, SessionError> {
        let (padded, s, old_pad) = self.pad_prompts(prompts)?;
        let logits = self.call(false, &padded, s).inspect_err(|_| self.pad = old_pad)?;
        let (v, data) = (logits.shape[2], logits.as_f32().expect("logits are f32"));
        let row = |(b, p): (usize, &Vec<i32>)| {
            let from = (b * s + s - p.len()) * v;
            Tensor::f32(vec![p.len(), v], data[from..(b + 1) * s * v].to_vec())
        };
        Ok(prompts.iter().enumerate().map(row).collect())
    }

    /// Left-pads `prompts` to the longest (`s`) and sets the rows' padding when they differ;
    /// returns the padded rows, `s`, and the padding to restore if the call then fails.
    fn pad_prompts(&mut self, prompts: &[Vec<i32>]) -> Result<Padded, SessionError> {
        if let Some(b) = prompts.iter().position(|p| p.is_empty()) {
            return Err(SessionError::Input(format!("sequence {b} is empty")));
        }
        let s = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
        let ragged = prompts.iter().any(|p| p.len() != s);
        if ragged && self.past > 0 {
            return Err(SessionError::Input(format!(
                "sequences of different lengths can only start a session (this one holds {} tokens)",
                self.past
            )));
        }
        let old_pad = self.pad.clone();
        if ragged && prompts.len() == self.batch {
            self.pad = prompts.iter().map(|p| s - p.len()).collect();
        }
        let padded = prompts.iter().map(|p| [vec![PAD_TOKEN; s - p.len()], p.clone()].concat()).collect();
        Ok((padded, s, old_pad))
    }

    /// Like [`Session::prefill_ragged`], but returns only each sequence's last logits `[1, vocab]`
    /// (what generation samples from). All but the last token of each (left-padded) row go
    /// through prefill without the vocabulary projection, the last token through decode, so the
    /// projection runs once per row instead of once per token. [`Session::hidden`] covers every
    /// token, as after one prefill. The whole batch is checked first; an internal failure after
    /// that may leave the state advanced by the first part.
    pub fn prefill_last(&mut self, prompts: &[Vec<i32>]) -> Result<Vec<Tensor>, SessionError> {
        if prompts.iter().map(|p| p.len()).max().unwrap_or(0) <= 1 {
            let all = self.prefill_ragged(prompts)?;
            return Ok(all.iter().map(last_row).collect());
        }
        let (padded, s, old_pad) = self.pad_prompts(prompts)?;
        self.check(&padded, s, self.past).inspect_err(|_| self.pad = old_pad.clone())?;
        let head: Vec<Vec<i32>> = padded.iter().map(|p| p[..s - 1].to_vec()).collect();
        self.call_entry(Entry::PrefillHidden, &head, s - 1).inspect_err(|_| self.pad = old_pad)?;
        let first_hidden = self.hidden.take();
        let tail: Vec<Vec<i32>> = padded.iter().map(|p| vec![p[s - 1]]).collect();
        let logits = self.call(true, &tail, 1)?;
        if let (Some(a), Some(b)) = (first_hidden, self.hidden.take()) {
            self.hidden = Some(concat_seq(&a, &b));
        }
        let v = logits.shape[2];
        let data = logits.as_f32().expect("logits are f32");
        Ok((0..self.batch).map(|b| Tensor::f32(vec![1, v], data[b * v..(b + 1) * v].to_vec())).collect())
    }

    /// Feeds `tokens[b]` (all the same length ≥ 1) through prefill without the vocabulary
    /// projection, continuing from the current state: the state advances, no logits are made
    /// (what [`Session::prefill_last`] does with all but a prompt's last token).
    pub fn feed(&mut self, tokens: &[Vec<i32>]) -> Result<(), SessionError> {
        let s = tokens.first().map(|t| t.len()).unwrap_or(0);
        self.call_entry(Entry::PrefillHidden, tokens, s).map(drop)
    }

    /// Feeds one token per sequence through the decode entry point, each at its own position;
    /// returns logits `[B, 1, vocab]`.
    pub fn decode(&mut self, tokens: &[i32]) -> Result<Tensor, SessionError> {
        let t: Vec<Vec<i32>> = tokens.iter().map(|&t| vec![t]).collect();
        self.call(true, &t, 1)
    }

    /// As [`Session::decode`], returning each sequence's greedy next token (the first index of
    /// its largest logit, [`crate::sampling::argmax`]) instead of the logits: on the CUDA backend
    /// the argmax runs on the device and only `B` ids come back.
    pub fn decode_argmax(&mut self, tokens: &[i32]) -> Result<Vec<i32>, SessionError> {
        let t: Vec<Vec<i32>> = tokens.iter().map(|&t| vec![t]).collect();
        let argmax = matches!(self.backend, Backend::Cuda(_));
        let mut out = self.call_entry_with(Entry::Decode, &t, 1, argmax)?;
        if let Some(ids) = out.remove("argmax") {
            return Ok(ids.as_i32().map(<[i32]>::to_vec).unwrap_or_default());
        }
        let logits = out.remove("logits").expect("every entry point returns logits");
        let v = logits.shape.last().copied().unwrap_or(1).max(1);
        let rows = logits.as_f32().expect("logits are f32");
        Ok(rows.chunks(v).map(|r| crate::sampling::argmax(r) as i32).collect())
    }

    /// Runs the MTP block (qwen3-next.md §6) over `S` more positions of its own KV cache:
    /// `hidden` f32 `[B, S, H]` are target hidden states h_i (see [`Session::hidden`]), or the
    /// previous draft's hidden output when chaining, and `next_tokens[b]` (length `S`) the tokens
    /// x_{i+1} that follow them. The MTP cache holds one entry per target cache slot, fed in
    /// order from slot 0: slot j of row b is at position `j − padding()[b]`, so the target's
    /// padding slots are padding here too. Returns draft logits `[B, S, vocab]` (predicting
    /// x_{i+2}) and the MTP hidden `[B, S, H]`.
    pub fn mtp_draft(&mut self, hidden: &Tensor, next_tokens: &[Vec<i32>]) -> Result<(Tensor, Tensor), SessionError> {
        if self.program.mtp.is_none() {
            return Err(SessionError::Input("the model has no MTP block".into()));
        }
        let s = next_tokens.first().map(|t| t.len()).unwrap_or(0);
        self.check(next_tokens, s, self.mtp_past)?;
        let mut extra = self.ids(next_tokens, s, self.mtp_past);
        extra.push(("hidden", hidden.clone()));
        let bind = Bindings { b: self.batch, s, p: self.mtp_past };
        self.make_room(true, self.mtp_past + s)?;
        let g = self.program.mtp.as_ref().expect("checked above");
        let r =
            step(self.backend, (Entry::Mtp, g, false), &bind, (&mut self.mtp_state, &mut self.dev_mtp_state), extra);
        let mut out = self.poison_on(r)?;
        self.mtp_past += s;
        let logits = out.remove("logits").expect("the mtp entry point returns logits");
        let hidden = out.remove("hidden").expect("the mtp entry point returns hidden");
        Ok((logits, hidden))
    }

    fn call(&mut self, decode: bool, tokens: &[Vec<i32>], s: usize) -> Result<Tensor, SessionError> {
        let entry = if decode { Entry::Decode } else { Entry::Prefill };
        let mut out = self.call_entry(entry, tokens, s)?;
        Ok(out.remove("logits").expect("every entry point returns logits"))
    }

    /// Runs `entry` (prefill, prefill without logits, or decode) on `tokens`; keeps the state and
    /// `hidden`, returns the other outputs.
    fn call_entry(
        &mut self,
        entry: Entry,
        tokens: &[Vec<i32>],
        s: usize,
    ) -> Result<BTreeMap<String, Tensor>, SessionError> {
        self.call_entry_with(entry, tokens, s, false)
    }

    /// [`Session::call_entry`]; with `argmax`, the CUDA backend returns `argmax` ids `[B, S]`
    /// computed on the device in place of `logits`.
    fn call_entry_with(
        &mut self,
        entry: Entry,
        tokens: &[Vec<i32>],
        s: usize,
        argmax: bool,
    ) -> Result<BTreeMap<String, Tensor>, SessionError> {
        self.check(tokens, s, self.past)?;
        let bind = Bindings { b: self.batch, s, p: self.past };
        let extra = self.ids(tokens, s, self.past);
        self.make_room(false, self.past + s)?;
        let g = match entry {
            Entry::Decode => &self.program.decode,
            Entry::PrefillHidden => self.prefill_hidden.as_ref().unwrap_or(&self.program.prefill),
            _ => &self.program.prefill,
        };
        let r = step(self.backend, (entry, g, argmax), &bind, (&mut self.state, &mut self.dev_state), extra);
        let mut out = self.poison_on(r)?;
        self.past += s;
        self.hidden = out.remove("hidden");
        Ok(out)
    }

    /// Marks the session poisoned when a call failed after it may have updated state in place.
    fn poison_on<T>(&mut self, r: Result<T, SessionError>) -> Result<T, SessionError> {
        if matches!(r, Err(SessionError::Compiled(CompiledError::Kernel(_)) | SessionError::Cuda(_))) {
            self.poisoned = true;
        }
        r
    }

    /// Rejects a ragged, empty or out-of-vocabulary batch, or one where a sequence would run past
    /// the positions (`past` cache slots before the call, minus each row's padding).
    fn check(&self, tokens: &[Vec<i32>], s: usize, past: usize) -> Result<(), SessionError> {
        if self.poisoned {
            return Err(SessionError::Poisoned);
        }
        if tokens.len() != self.batch {
            return Err(SessionError::Input(format!("expected {} sequences, got {}", self.batch, tokens.len())));
        }
        if s == 0 || tokens.iter().any(|t| t.len() != s) {
            return Err(SessionError::Input("every sequence needs the same number (at least one) of tokens".into()));
        }
        for (b, &pad) in self.pad.iter().enumerate() {
            let n = (past + s).saturating_sub(pad);
            if n > self.max_positions {
                let which = if self.batch > 1 { format!("sequence {b}: ") } else { String::new() };
                let max = self.max_positions;
                return Err(SessionError::Input(format!("{which}{n} tokens exceed the model's {max} positions")));
            }
        }
        if let Some(&bad) = tokens.iter().flatten().find(|&&t| t < 0 || t as usize >= self.vocab) {
            return Err(SessionError::Input(format!("token id {bad} is outside the vocabulary (0..{})", self.vocab)));
        }
        Ok(())
    }

    /// The `tokens` and `positions` inputs, `[B, S]` each: row b's positions are
    /// `past − pad_b .. past − pad_b + s` (negative on padding slots).
    fn ids(&self, tokens: &[Vec<i32>], s: usize, past: usize) -> Vec<(&'static str, Tensor)> {
        let flat: Vec<i32> = tokens.iter().flatten().copied().collect();
        let first = |b: usize| past as i64 - self.pad[b] as i64;
        let pos: Vec<i32> = (0..self.batch).flat_map(|b| (0..s).map(move |t| (first(b) + t as i64) as i32)).collect();
        vec![("tokens", Tensor::i32(vec![self.batch, s], flat)), ("positions", Tensor::i32(vec![self.batch, s], pos))]
    }
}

/// `dense` with every tensor the device holds read back from it.
fn with_device(
    mut dense: BTreeMap<String, Tensor>,
    state: &BTreeMap<String, StateTensor>,
    dev: &Option<crate::cuda::state::DeviceState>,
) -> Result<BTreeMap<String, Tensor>, SessionError> {
    let Some(ds) = dev else { return Ok(dense) };
    for (name, st) in state {
        if let Some(t) = ds.dense(name, st)? {
            dense.insert(name.clone(), t);
        }
    }
    Ok(dense)
}

/// Dense copies of `state`, or zero state of `decls` at position 0 before the first call.
fn dense_state(decls: &[StateDecl], state: &BTreeMap<String, StateTensor>, batch: usize) -> BTreeMap<String, Tensor> {
    if state.is_empty() {
        return zero_state(decls, batch).into_iter().map(|(n, t)| (n, t.dense())).collect();
    }
    state.iter().map(|(n, t)| (n.clone(), t.dense())).collect()
}

/// Left-padded rows, their length, and the padding before padding them.
type Padded = (Vec<Vec<i32>>, usize, Vec<usize>);

/// The last row of `[n, vocab]` logits, as `[1, vocab]`.
fn last_row(t: &Tensor) -> Tensor {
    let v = *t.shape.last().expect("logits have a vocab dim");
    let d = t.as_f32().expect("logits are f32");
    Tensor::f32(vec![1, v], d[d.len() - v..].to_vec())
}

/// `a [B,S1,H]` and `b [B,S2,H]` concatenated along S.
fn concat_seq(a: &Tensor, b: &Tensor) -> Tensor {
    let (batch, s1, s2, h) = (a.shape[0], a.shape[1], b.shape[1], a.shape[2]);
    let (x, y) = (a.as_f32().expect("hidden is f32"), b.as_f32().expect("hidden is f32"));
    let mut out = Vec::with_capacity(x.len() + y.len());
    for r in 0..batch {
        out.extend_from_slice(&x[r * s1 * h..(r + 1) * s1 * h]);
        out.extend_from_slice(&y[r * s2 * h..(r + 1) * s2 * h]);
    }
    Tensor::f32(vec![batch, s1 + s2, h], out)
}

/// Runs the entry point (`g` for the interpreter) on `state` plus the `extra` inputs. On success
/// `state` holds the advanced `state.*` outputs and the other outputs are returned. On failure
/// the interpreter leaves `state` as it was; the compiled backend, which updates state in place,
/// may have written part of it (a kernel error).
fn step(
    backend: Backend,
    (entry, g, argmax): (Entry, &Graph, bool),
    bind: &Bindings,
    (state, dev_state): (&mut BTreeMap<String, StateTensor>, &mut Option<crate::cuda::state::DeviceState>),
    extra: Vec<(&'static str, Tensor)>,
) -> Result<BTreeMap<String, Tensor>, SessionError> {
    match backend {
        Backend::Interp(w) => {
            let (name, (b, s, p)) = (entry.name(), (bind.b, bind.s, bind.p));
            let what = format_args!("the interpreter's values for {name} at B={b},S={s},P={p}");
            crate::budget::global().admit(what, interp::peak_bytes(g, bind))?;
            let mut inputs: BTreeMap<String, interp::Tensor> =
                state.iter().map(|(n, t)| (n.clone(), t.dense().into())).collect();
            inputs.extend(extra.into_iter().map(|(n, t)| (n.to_string(), t.into())));
            let out = interp::run(g, bind, &inputs, w)?;
            let mut rest = BTreeMap::new();
            for (name, t) in out {
                let t = Tensor::from(t);
                match state.get_mut(&name) {
                    Some(st) => *st = StateTensor::from_dense(&t, st.axis()),
                    None => {
                        rest.insert(name, t);
                    }
                }
            }
            Ok(rest)
        }
        Backend::Cpu(m) => {
            let inputs: BTreeMap<String, Tensor> = extra.into_iter().map(|(n, t)| (n.to_string(), t)).collect();
            Ok(m.run(entry, bind, &inputs, state)?)
        }
        Backend::Cuda(m) => {
            let inputs: BTreeMap<String, Tensor> = extra.into_iter().map(|(n, t)| (n.to_string(), t)).collect();
            let ds = dev_state.get_or_insert_with(|| m.device_state());
            let argmax = argmax.then_some("logits");
            Ok(m.run_resident(entry, bind, &inputs, state, Some(ds), argmax)?)
        }
    }
}
