//! A running sequence batch: the program, its weights, and the per-sequence state, advanced by
//! `prefill` (any number of tokens, continuing from the current state) and `decode` (one token).

use qgc_ir::interp::{self, InterpError, Tensor, WeightSource};
use qgc_ir::{Bindings, Program};
use std::collections::BTreeMap;

/// Session failures.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The interpreter rejected the call or a weight.
    #[error(transparent)]
    Interp(#[from] InterpError),
    /// Bad call: empty or ragged batch, too many positions, out-of-vocabulary tokens.
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
        let mut s = Session { program, weights, vocab, max_positions, batch, past: 0, state: BTreeMap::new() };
        s.reset();
        s
    }

    /// Forget every token: zero state, position 0.
    pub fn reset(&mut self) {
        let bind = Bindings { b: self.batch, s: 0, p: 0 };
        self.past = 0;
        self.state = self.program.state.iter().map(|d| (d.name.clone(), Tensor::zeros(d.ty.eval(&bind)))).collect();
    }

    /// Tokens consumed so far (per sequence).
    pub fn position(&self) -> usize {
        self.past
    }

    /// The current state tensors, by `state.*` name.
    pub fn state(&self) -> &BTreeMap<String, Tensor> {
        &self.state
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

    fn call(&mut self, decode: bool, tokens: &[Vec<i32>], s: usize) -> Result<Tensor, SessionError> {
        if tokens.len() != self.batch {
            return Err(SessionError::Input(format!("expected {} sequences, got {}", self.batch, tokens.len())));
        }
        if s == 0 || tokens.iter().any(|t| t.len() != s) {
            return Err(SessionError::Input("every sequence needs the same number (at least one) of tokens".into()));
        }
        if self.past + s > self.max_positions {
            return Err(SessionError::Input(format!(
                "{} tokens exceed the model's {} positions",
                self.past + s,
                self.max_positions
            )));
        }
        if let Some(&bad) = tokens.iter().flatten().find(|&&t| t < 0 || t as usize >= self.vocab) {
            return Err(SessionError::Input(format!("token id {bad} is outside the vocabulary (0..{})", self.vocab)));
        }
        let bind = Bindings { b: self.batch, s, p: self.past };
        let mut inputs = std::mem::take(&mut self.state);
        let flat: Vec<i32> = tokens.iter().flatten().copied().collect();
        inputs.insert("tokens".into(), Tensor::i32(vec![self.batch, s], flat));
        let pos: Vec<i32> = (0..self.batch).flat_map(|_| (self.past..self.past + s).map(|p| p as i32)).collect();
        inputs.insert("positions".into(), Tensor::i32(vec![self.batch, s], pos));
        let g = if decode { &self.program.decode } else { &self.program.prefill };
        let result = interp::run(g, &bind, &inputs, self.weights);
        inputs.remove("tokens");
        inputs.remove("positions");
        let mut out = match result {
            Ok(out) => out,
            Err(e) => {
                self.state = inputs; // the call failed: keep the state it started from
                return Err(e.into());
            }
        };
        let logits = out.remove("logits").expect("every entry point returns logits");
        self.state = out;
        self.past += s;
        Ok(logits)
    }
}
