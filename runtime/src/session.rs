//! A running sequence batch: the program, its weights, and the per-sequence state, advanced by
//! `prefill` (any number of tokens, continuing from the current state) and `decode` (one token);
//! with an MTP block also `mtp_draft`, which runs the draft entry point over its own KV cache.

use qgc_ir::interp::{self, InterpError, Tensor, WeightSource};
use qgc_ir::{Bindings, Graph, Program, StateDecl};
use std::collections::BTreeMap;

/// Session failures.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The interpreter rejected the call or a weight.
    #[error(transparent)]
    Interp(#[from] InterpError),
    /// Bad call: empty or ragged batch, too many positions, out-of-vocabulary tokens, no MTP block.
    #[error("{0}")]
    Input(String),
}

/// Batch state for `B` sequences of equal length, executed by the reference interpreter.
pub struct Session<'w> {
    program: Program,
    weights: &'w dyn WeightSource,
    vocab: usize,
    max_positions: usize,
    batch: usize,
    past: usize,
    state: BTreeMap<String, Tensor>,
    /// `hidden` output `[B,S,H]` of the last prefill/decode (only programs with an MTP block).
    hidden: Option<Tensor>,
    mtp_past: usize,
    mtp_state: BTreeMap<String, Tensor>,
}

impl<'w> Session<'w> {
    /// A fresh session for `batch` sequences (all state zero, nothing consumed).
    pub fn new(
        program: Program,
        weights: &'w dyn WeightSource,
        vocab: usize,
        max_positions: usize,
        batch: usize,
    ) -> Self {
        let mut s = Session {
            program,
            weights,
            vocab,
            max_positions,
            batch,
            past: 0,
            state: BTreeMap::new(),
            hidden: None,
            mtp_past: 0,
            mtp_state: BTreeMap::new(),
        };
        s.reset();
        s
    }

    /// Forget every token: zero state (main model and MTP block), both at position 0.
    pub fn reset(&mut self) {
        let bind = Bindings { b: self.batch, s: 0, p: 0 };
        let zeros =
            |decls: &[StateDecl]| decls.iter().map(|d| (d.name.clone(), Tensor::zeros(d.ty.eval(&bind)))).collect();
        self.past = 0;
        self.state = zeros(&self.program.state);
        self.hidden = None;
        self.mtp_past = 0;
        self.mtp_state = zeros(&self.program.mtp_state);
    }

    /// Tokens consumed so far (per sequence).
    pub fn position(&self) -> usize {
        self.past
    }

    /// The current state tensors, by `state.*` name.
    pub fn state(&self) -> &BTreeMap<String, Tensor> {
        &self.state
    }

    /// Whether the program has an MTP draft entry point.
    pub fn has_mtp(&self) -> bool {
        self.program.mtp.is_some()
    }

    /// The target's final hidden states (after `model.norm`) of the last prefill/decode call,
    /// `[B, S, H]` with that call's `S`; `None` before the first call or without an MTP block.
    pub fn hidden(&self) -> Option<&Tensor> {
        self.hidden.as_ref()
    }

    /// Positions the MTP block has consumed so far (its KV cache length, per sequence).
    pub fn mtp_position(&self) -> usize {
        self.mtp_past
    }

    /// The current MTP state tensors (`state.mtp{j}.{k,v}`).
    pub fn mtp_state(&self) -> &BTreeMap<String, Tensor> {
        &self.mtp_state
    }

    /// Feeds `tokens[b]` (all the same length ≥ 1) through the prefill entry point, continuing
    /// from the current state; returns logits `[B, S, vocab]`.
    pub fn prefill(&mut self, tokens: &[Vec<i32>]) -> Result<Tensor, SessionError> {
        let s = tokens.first().map(|t| t.len()).unwrap_or(0);
        self.call(false, tokens, s)
    }

    /// Feeds one token per sequence through the decode entry point; returns logits `[B, 1, vocab]`.
    pub fn decode(&mut self, tokens: &[i32]) -> Result<Tensor, SessionError> {
        let t: Vec<Vec<i32>> = tokens.iter().map(|&t| vec![t]).collect();
        self.call(true, &t, 1)
    }

    /// Runs the MTP block (qwen3-next.md §6) over `S` more positions of its own KV cache:
    /// `hidden` f32 `[B, S, H]` are target hidden states h_i (see [`Session::hidden`]), or the
    /// previous draft's hidden output when chaining, and `next_tokens[b]` (length `S`) the tokens
    /// x_{i+1} that follow them. Position i of the call is `mtp_position() + i`, i.e. the MTP
    /// cache is assumed to hold one entry per target position, fed in order from 0. Returns
    /// draft logits `[B, S, vocab]` (predicting x_{i+2}) and the MTP hidden `[B, S, H]`.
    pub fn mtp_draft(&mut self, hidden: &Tensor, next_tokens: &[Vec<i32>]) -> Result<(Tensor, Tensor), SessionError> {
        let Some(g) = self.program.mtp.as_ref() else {
            return Err(SessionError::Input("the model has no MTP block".into()));
        };
        let s = next_tokens.first().map(|t| t.len()).unwrap_or(0);
        self.check(next_tokens, s, self.mtp_past)?;
        let mut extra = self.ids(next_tokens, s, self.mtp_past);
        extra.push(("hidden", hidden.clone()));
        let bind = Bindings { b: self.batch, s, p: self.mtp_past };
        let mut out = step(g, &bind, &mut self.mtp_state, extra, self.weights)?;
        self.mtp_past += s;
        let logits = out.remove("logits").expect("the mtp entry point returns logits");
        let hidden = out.remove("hidden").expect("the mtp entry point returns hidden");
        Ok((logits, hidden))
    }

    fn call(&mut self, decode: bool, tokens: &[Vec<i32>], s: usize) -> Result<Tensor, SessionError> {
        self.check(tokens, s, self.past)?;
        let bind = Bindings { b: self.batch, s, p: self.past };
        let extra = self.ids(tokens, s, self.past);
        let g = if decode { &self.program.decode } else { &self.program.prefill };
        let mut out = step(g, &bind, &mut self.state, extra, self.weights)?;
        self.past += s;
        self.hidden = out.remove("hidden");
        Ok(out.remove("logits").expect("every entry point returns logits"))
    }

    /// Rejects a ragged, empty or out-of-vocabulary batch, or one running past the positions.
    fn check(&self, tokens: &[Vec<i32>], s: usize, past: usize) -> Result<(), SessionError> {
        if tokens.len() != self.batch {
            return Err(SessionError::Input(format!("expected {} sequences, got {}", self.batch, tokens.len())));
        }
        if s == 0 || tokens.iter().any(|t| t.len() != s) {
            return Err(SessionError::Input("every sequence needs the same number (at least one) of tokens".into()));
        }
        if past + s > self.max_positions {
            return Err(SessionError::Input(format!(
                "{} tokens exceed the model's {} positions",
                past + s,
                self.max_positions
            )));
        }
        if let Some(&bad) = tokens.iter().flatten().find(|&&t| t < 0 || t as usize >= self.vocab) {
            return Err(SessionError::Input(format!("token id {bad} is outside the vocabulary (0..{})", self.vocab)));
        }
        Ok(())
    }

    /// The `tokens` and `positions` (`past..past+s` in every row) inputs, `[B, S]` each.
    fn ids(&self, tokens: &[Vec<i32>], s: usize, past: usize) -> Vec<(&'static str, Tensor)> {
        let flat: Vec<i32> = tokens.iter().flatten().copied().collect();
        let pos: Vec<i32> = (0..self.batch).flat_map(|_| (past..past + s).map(|p| p as i32)).collect();
        vec![("tokens", Tensor::i32(vec![self.batch, s], flat)), ("positions", Tensor::i32(vec![self.batch, s], pos))]
    }
}

/// Runs `g` on `state` plus the `extra` inputs. On success `state` holds the advanced `state.*`
/// outputs and the other outputs are returned; on failure `state` is left as it was.
fn step(
    g: &Graph,
    bind: &Bindings,
    state: &mut BTreeMap<String, Tensor>,
    extra: Vec<(&'static str, Tensor)>,
    weights: &dyn WeightSource,
) -> Result<BTreeMap<String, Tensor>, SessionError> {
    let mut inputs = std::mem::take(state);
    let names: Vec<&str> = extra.iter().map(|(n, _)| *n).collect();
    inputs.extend(extra.into_iter().map(|(n, t)| (n.to_string(), t)));
    let result = interp::run(g, bind, &inputs, weights);
    for n in names {
        inputs.remove(n);
    }
    match result {
        Ok(out) => {
            let (new_state, rest) = out.into_iter().partition(|(n, _)| n.starts_with("state."));
            *state = new_state;
            Ok(rest)
        }
        Err(e) => {
            *state = inputs; // the call failed: keep the state it started from
            Err(e.into())
        }
    }
}
