//! Text generation over a [`Session`]: prefill the prompts, then decode one token at a time,
//! sampling each next token, until every sequence has stopped.
//!
//! - [`generate`] runs `B` sequences in one batch, each with its own sampler, stop state and
//!   text. Prompts of different lengths share the batch through [`Session::prefill_ragged`]
//!   (left-padded, each row at its own positions), so every sequence computes what it would
//!   alone.
//! - [`TextStream`] turns generated ids into text as they arrive, emitting only complete UTF-8
//!   and holding back what might be the start of a stop string.
//! - [`ThinkFilter`] removes `<think>…</think>` from streamed text, across token boundaries.
//! - [`Timings`] are llama.cpp-style numbers: prompt tokens, prefill rate, time to first token,
//!   decode rate.

use crate::sampling::{History, Sampler, SamplingParams};
use crate::session::{Session, SessionError};
use crate::tensor::Tensor;
use crate::tokenizer::{Tokenizer, TokenizerError};
use std::time::Instant;

/// Generation failures.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The session rejected a call or the interpreter failed.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// Decoding generated ids failed.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// Bad arguments: no prompts, an empty prompt, a batch that does not match the session.
    #[error("{0}")]
    Input(String),
}

/// When to stop and how to sample.
#[derive(Debug, Clone)]
pub struct GenerateConfig {
    /// At most this many new tokens per sequence.
    pub max_new_tokens: usize,
    /// The model's positions (`max_position_embeddings`): generation stops when the session
    /// has consumed this many tokens.
    pub max_positions: usize,
    /// Ids that end a sequence (they are kept in `generated_ids`, not in `text`).
    pub eos_ids: Vec<i32>,
    /// Strings that end a sequence once they appear in its text (which is cut before them).
    /// They need a tokenizer.
    pub stop: Vec<String>,
    /// Sampling; every sequence has its own sampler seeded with `sampling.seed`, so a prompt
    /// gives the same tokens alone or in a batch.
    pub sampling: SamplingParams,
}

/// Why a sequence stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// It generated one of the EOS ids.
    Eos,
    /// Its text reached a stop string.
    StopString,
    /// It generated `max_new_tokens`.
    MaxTokens,
    /// The model has no positions left.
    Positions,
}

impl StopReason {
    /// `eos`, `stop`, `length` or `positions`.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Eos => "eos",
            StopReason::StopString => "stop",
            StopReason::MaxTokens => "length",
            StopReason::Positions => "positions",
        }
    }
}

/// One finished sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The prompt as fed.
    pub prompt_ids: Vec<i32>,
    /// Every sampled id, an EOS included.
    pub generated_ids: Vec<i32>,
    /// The text of the generated ids (EOS left out, cut before a stop string); `None` without a
    /// tokenizer.
    pub text: Option<String>,
    /// Why it stopped.
    pub stop_reason: StopReason,
}

/// Timings of one [`generate`] call (all sequences together).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Timings {
    /// Prompt tokens fed, over all sequences.
    pub prompt_tokens: usize,
    /// Seconds until every prompt was consumed.
    pub prefill_s: f64,
    /// Seconds until every sequence had its first token.
    pub ttft_s: f64,
    /// Tokens generated, over all sequences.
    pub generated_tokens: usize,
    /// Tokens generated after the first token of every sequence existed.
    pub decode_tokens: usize,
    /// Seconds from then to the end.
    pub decode_s: f64,
}

impl Timings {
    /// Prompt tokens per second of prefill.
    pub fn prefill_tok_s(&self) -> Option<f64> {
        rate(self.prompt_tokens, self.prefill_s)
    }

    /// Tokens per second after the first tokens.
    pub fn decode_tok_s(&self) -> Option<f64> {
        rate(self.decode_tokens, self.decode_s)
    }
}

fn rate(n: usize, s: f64) -> Option<f64> {
    (n > 0 && s > 0.0).then(|| n as f64 / s)
}

impl std::fmt::Display for Timings {
    /// `prompt 12 tokens, 0.05 s (240.0 tok/s) | first token 0.06 s | generated 24 tokens, 0.50 s (46.0 tok/s)`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.1}"));
        write!(
            f,
            "prompt {} tokens, {:.2} s ({} tok/s) | first token {:.2} s | generated {} tokens, {:.2} s ({} tok/s)",
            self.prompt_tokens,
            self.prefill_s,
            r(self.prefill_tok_s()),
            self.ttft_s,
            self.generated_tokens,
            self.decode_s,
            r(self.decode_tok_s())
        )
    }
}

/// Per-sequence state of [`generate`].
struct Seq<'t> {
    prompt: Vec<i32>,
    generated: Vec<i32>,
    sampler: Sampler,
    text: Option<TextStream<'t>>,
    stop: Option<StopReason>,
}

impl Seq<'_> {
    /// The finished sequence; `emit` gets the last piece of text the stream held back.
    fn finish(self, mut emit: impl FnMut(&str)) -> Result<Generation, GenerateError> {
        let text = match self.text {
            Some(mut t) => {
                let rest = t.finish()?;
                if !rest.is_empty() {
                    emit(&rest);
                }
                Some(t.into_text())
            }
            None => None,
        };
        let stop_reason = self.stop.expect("every sequence stopped");
        Ok(Generation { prompt_ids: self.prompt, generated_ids: self.generated, text, stop_reason })
    }

    /// The token to feed at the next decode step (a stopped sequence repeats its last one; its
    /// logits are not looked at).
    fn last_token(&self) -> i32 {
        *self.generated.last().or(self.prompt.last()).expect("prompts are not empty")
    }
}

/// Generates from `prompts`, one per sequence of `session`. Prompts of different lengths need a
/// fresh session (they are left-padded by [`Session::prefill_last`]); equal lengths may continue
/// one. `on_text(b, piece)` gets each piece of sequence `b`'s text as soon as it is complete (only
/// with a tokenizer). Returns the sequences in order and the timings.
pub fn generate(
    session: &mut Session,
    prompts: &[Vec<i32>],
    tokenizer: Option<&Tokenizer>,
    cfg: &GenerateConfig,
    on_text: impl FnMut(usize, &str),
) -> Result<(Vec<Generation>, Timings), GenerateError> {
    if prompts.is_empty() || prompts.iter().any(|p| p.is_empty()) {
        return Err(GenerateError::Input("every prompt needs at least one token".into()));
    }
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    session.admit_context(longest.saturating_add(cfg.max_new_tokens).min(cfg.max_positions.max(longest)))?;
    let t0 = Instant::now();
    let logits = session.prefill_last(prompts)?;
    let prefill_s = t0.elapsed().as_secs_f64();
    let (gens, mut timings) = generate_from_logits(session, prompts, &logits, tokenizer, cfg, on_text)?;
    timings.prompt_tokens = prompts.iter().map(Vec::len).sum();
    timings.prefill_s = prefill_s;
    timings.ttft_s += prefill_s;
    Ok((gens, timings))
}

/// Generates for sequences whose tokens `session` has already consumed: `contexts[b]` are
/// sequence `b`'s tokens so far (the repetition penalty looks at them; they become
/// `prompt_ids`) and `logits[b]` its logits over the last ones fed (`[S_b, vocab]`, the last row
/// is sampled from), e.g. what [`Session::prefill`] returned. This is how a chat continues a kept
/// state with only a new turn's tokens fed. Timings count no prompt tokens and start at the
/// call; otherwise as [`generate`].
pub fn generate_from_logits(
    session: &mut Session,
    contexts: &[Vec<i32>],
    logits: &[Tensor],
    tokenizer: Option<&Tokenizer>,
    cfg: &GenerateConfig,
    mut on_text: impl FnMut(usize, &str),
) -> Result<(Vec<Generation>, Timings), GenerateError> {
    if contexts.is_empty() || contexts.iter().any(|p| p.is_empty()) || contexts.len() != logits.len() {
        return Err(GenerateError::Input("every sequence needs at least one token and its logits".into()));
    }
    let end = session.position().saturating_add(cfg.max_new_tokens).min(cfg.max_positions.max(session.position()));
    session.admit_context(end)?;
    let mut seqs: Vec<Seq> = contexts
        .iter()
        .map(|p| Seq {
            prompt: p.clone(),
            generated: Vec::new(),
            sampler: Sampler::new(cfg.sampling),
            text: tokenizer.map(|t| TextStream::new(t, &cfg.stop)),
            stop: None,
        })
        .collect();
    let mut timings = Timings::default();
    let t0 = Instant::now();
    // Each sequence's logits after its last token, [B * vocab].
    let mut logits: Vec<f32> = logits
        .iter()
        .flat_map(|t| {
            let rows = t.as_f32().expect("logits are f32");
            &rows[rows.len() - t.shape.last().copied().unwrap_or(0)..]
        })
        .copied()
        .collect();
    let vocab = logits.len() / seqs.len();
    let mut first_done: Option<Instant> = None;
    // Greedy sequences need only the argmax (on the device, for the CUDA backend).
    let greedy = seqs.iter().all(|s| s.sampler.params().is_greedy() && !s.sampler.params().penalised());
    let mut ids: Option<Vec<i32>> = None;
    loop {
        for (b, s) in seqs.iter_mut().enumerate().filter(|(_, s)| s.stop.is_none()) {
            let pick = match &ids {
                Some(ids) => Pick::Id(ids[b]),
                None => Pick::Row(&logits[b * vocab..(b + 1) * vocab]),
            };
            step(s, pick, cfg, |piece| on_text(b, piece))?;
            if first_done.is_some() {
                timings.decode_tokens += 1;
            }
        }
        if first_done.is_none() {
            first_done = Some(Instant::now());
            timings.ttft_s = t0.elapsed().as_secs_f64();
        }
        if seqs.iter().all(|s| s.stop.is_some()) {
            break;
        }
        // The longest prompt has no padding, so its count is the session's position.
        if session.position() >= cfg.max_positions {
            seqs.iter_mut().filter(|s| s.stop.is_none()).for_each(|s| s.stop = Some(StopReason::Positions));
            break;
        }
        let inputs: Vec<i32> = seqs.iter().map(Seq::last_token).collect();
        if greedy {
            ids = Some(session.decode_argmax(&inputs)?);
        } else {
            logits = session.decode(&inputs)?.as_f32().expect("logits are f32").to_vec();
        }
    }
    let end = Instant::now();
    timings.generated_tokens = seqs.iter().map(|s| s.generated.len()).sum();
    timings.decode_s = end.duration_since(first_done.unwrap_or(end)).as_secs_f64();
    let out = seqs.into_iter().enumerate().map(|(b, s)| s.finish(|piece| on_text(b, piece)));
    Ok((out.collect::<Result<_, _>>()?, timings))
}

/// How the next token is chosen: sampled from a logits row, or already chosen (greedy, argmax
/// on the device).
enum Pick<'a> {
    Row(&'a [f32]),
    Id(i32),
}

/// Samples sequence `s`'s next token (or takes the chosen one) and applies the stop conditions.
fn step(s: &mut Seq, pick: Pick, cfg: &GenerateConfig, mut emit: impl FnMut(&str)) -> Result<(), GenerateError> {
    if s.generated.len() >= cfg.max_new_tokens {
        s.stop = Some(StopReason::MaxTokens);
        return Ok(());
    }
    let history = History { prompt: &s.prompt, generated: &s.generated };
    let id = match pick {
        Pick::Row(row) => s.sampler.sample(row, history),
        Pick::Id(id) => id,
    };
    s.generated.push(id);
    if cfg.eos_ids.contains(&id) {
        s.stop = Some(StopReason::Eos);
        return Ok(());
    }
    if let Some(t) = s.text.as_mut() {
        let (piece, hit) = t.push(id as u32)?;
        if !piece.is_empty() {
            emit(&piece);
        }
        if hit {
            s.stop = Some(StopReason::StopString);
            return Ok(());
        }
    }
    if s.generated.len() >= cfg.max_new_tokens {
        s.stop = Some(StopReason::MaxTokens);
    }
    Ok(())
}

/// Length of the longest proper prefix of `pattern` that `text` ends with.
fn partial_suffix(text: &str, pattern: &str) -> usize {
    (1..pattern.len()).rev().find(|&k| pattern.is_char_boundary(k) && text.ends_with(&pattern[..k])).unwrap_or(0)
}

/// Incremental detokenisation of one sequence: ids in, complete text out.
///
/// Each push decodes a short window of recent ids (from the last point where the text was
/// complete) and emits what it adds, unless it ends in an incomplete UTF-8 sequence (U+FFFD),
/// which waits for the next token. Text that may be the start of a stop string is held back
/// until it is known not to be one.
pub struct TextStream<'t> {
    tokenizer: &'t Tokenizer,
    stop: Vec<String>,
    ids: Vec<u32>,
    /// Window start: ids before it have been turned into `text`.
    prefix_offset: usize,
    /// Ids up to here are in `text`.
    read_offset: usize,
    /// All complete text so far.
    text: String,
    /// Bytes of `text` handed out.
    emitted: usize,
    stopped: bool,
}

impl<'t> TextStream<'t> {
    /// A stream over `tokenizer` that stops at any of `stop` (empty strings are ignored).
    pub fn new(tokenizer: &'t Tokenizer, stop: &[String]) -> Self {
        let stop = stop.iter().filter(|s| !s.is_empty()).cloned().collect();
        TextStream {
            tokenizer,
            stop,
            ids: Vec::new(),
            prefix_offset: 0,
            read_offset: 0,
            text: String::new(),
            emitted: 0,
            stopped: false,
        }
    }

    /// Adds one id; returns the text that is now safe to show and whether a stop string was
    /// reached (the text is then cut before it and nothing more is emitted).
    pub fn push(&mut self, id: u32) -> Result<(String, bool), TokenizerError> {
        if self.stopped {
            return Ok((String::new(), true));
        }
        self.ids.push(id);
        let prefix = self.tokenizer.decode(&self.ids[self.prefix_offset..self.read_offset])?;
        let full = self.tokenizer.decode(&self.ids[self.prefix_offset..])?;
        if full.len() > prefix.len() && !full.ends_with('\u{FFFD}') {
            if let Some(new) = full.get(prefix.len()..) {
                self.text.push_str(new);
                self.prefix_offset = self.read_offset;
                self.read_offset = self.ids.len();
            }
        }
        Ok(self.release(false))
    }

    /// Ends the stream: whatever is left (an incomplete sequence as U+FFFD) becomes text.
    /// Returns the last piece to show.
    pub fn finish(&mut self) -> Result<String, TokenizerError> {
        if !self.stopped && self.read_offset < self.ids.len() {
            let prefix = self.tokenizer.decode(&self.ids[self.prefix_offset..self.read_offset])?;
            let full = self.tokenizer.decode(&self.ids[self.prefix_offset..])?;
            if let Some(new) = full.get(prefix.len()..) {
                self.text.push_str(new);
            }
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
        }
        Ok(self.release(true).0)
    }

    /// The text so far (the final text after [`TextStream::finish`]).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The final text.
    pub fn into_text(self) -> String {
        self.text
    }

    /// Emits what is safe: up to a stop string (then stops), else all but a possible stop-string
    /// start (all of it at the end).
    fn release(&mut self, end: bool) -> (String, bool) {
        if self.stopped {
            return (String::new(), true);
        }
        let pending = &self.text[self.emitted..];
        if let Some(at) = self.stop.iter().filter_map(|s| pending.find(s.as_str())).min() {
            let cut = self.emitted + at;
            let piece = self.text[self.emitted..cut].to_string();
            self.text.truncate(cut);
            self.emitted = cut;
            self.stopped = true;
            return (piece, true);
        }
        let hold = if end { 0 } else { self.stop.iter().map(|s| partial_suffix(pending, s)).max().unwrap_or(0) };
        let upto = self.text.len() - hold;
        let piece = self.text[self.emitted..upto].to_string();
        self.emitted = upto;
        (piece, false)
    }
}

/// Drops `<think>…</think>` blocks from a text stream, tags split across pieces included, and
/// the whitespace right after a closing tag.
#[derive(Debug, Clone, Default)]
pub struct ThinkFilter {
    inside: bool,
    /// Text not yet decided on (a possible partial tag).
    pending: String,
    /// Drop leading whitespace (just after `</think>`).
    trim: bool,
}

const THINK_OPEN: &str = "<think>";
const THINK_CLOSE: &str = "</think>";

impl ThinkFilter {
    /// A filter; `inside` when the prompt already opened a think block (ends in `<think>`).
    pub fn new(inside: bool) -> Self {
        ThinkFilter { inside, ..Self::default() }
    }

    /// Feeds a piece; returns the visible text it releases.
    pub fn push(&mut self, piece: &str) -> String {
        self.pending.push_str(piece);
        let mut out = String::new();
        loop {
            let tag = if self.inside { THINK_CLOSE } else { THINK_OPEN };
            if let Some(at) = self.pending.find(tag) {
                if !self.inside {
                    show(&mut self.trim, &self.pending[..at], &mut out);
                }
                self.pending.drain(..at + tag.len());
                self.inside = !self.inside;
                self.trim = !self.inside;
                continue;
            }
            let keep = partial_suffix(&self.pending, tag);
            let upto = self.pending.len() - keep;
            if !self.inside {
                show(&mut self.trim, &self.pending[..upto], &mut out);
            }
            self.pending.drain(..upto);
            return out;
        }
    }

    /// Ends the stream: releases a held-back partial tag outside a think block.
    pub fn finish(&mut self) -> String {
        let rest = std::mem::take(&mut self.pending);
        let mut out = String::new();
        if !self.inside {
            show(&mut self.trim, &rest, &mut out);
        }
        out
    }
}

/// Appends visible `text` to `out`, without leading whitespace while `trim` (which the first
/// visible character clears).
fn show(trim: &mut bool, text: &str, out: &mut String) {
    let text = if *trim { text.trim_start() } else { text };
    if !text.is_empty() {
        *trim = false;
        out.push_str(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(inside: bool, pieces: &[&str]) -> String {
        let mut f = ThinkFilter::new(inside);
        let mut out: String = pieces.iter().map(|p| f.push(p)).collect();
        out += &f.finish();
        out
    }

    #[test]
    fn think_filter_drops_blocks_split_anywhere() {
        let text = "a<think>\nsecret\n</think>\n\nb <think>x</think>c";
        // Every way of cutting the text in two, and one byte at a time.
        for i in 0..=text.len() {
            assert_eq!(filter(false, &[&text[..i], &text[i..]]), "ab c", "split at {i}");
        }
        let bytes: Vec<String> = text.chars().map(String::from).collect();
        assert_eq!(filter(false, &bytes.iter().map(String::as_str).collect::<Vec<_>>()), "ab c");
    }

    #[test]
    fn think_filter_keeps_look_alikes_and_handles_open_ends() {
        assert_eq!(filter(false, &["x <thin", "k about it"]), "x <think about it");
        assert_eq!(filter(false, &["tail <thi"]), "tail <thi");
        assert_eq!(filter(false, &["a<think>never closed"]), "a");
        assert_eq!(filter(true, &["reasoning</th", "ink>\n\nanswer"]), "answer");
    }

    #[test]
    fn partial_suffix_finds_tag_starts() {
        assert_eq!(partial_suffix("abc<th", "<think>"), 3);
        assert_eq!(partial_suffix("abc", "<think>"), 0);
        assert_eq!(partial_suffix("<think>", "<think>"), 0);
        assert_eq!(partial_suffix("xé", "éa"), 2);
    }

    #[test]
    fn timings_line() {
        let t = Timings {
            prompt_tokens: 12,
            prefill_s: 0.05,
            ttft_s: 0.06,
            generated_tokens: 24,
            decode_tokens: 23,
            decode_s: 0.5,
        };
        assert_eq!(
            t.to_string(),
            "prompt 12 tokens, 0.05 s (240.0 tok/s) | first token 0.06 s | generated 24 tokens, 0.50 s (46.0 tok/s)"
        );
        assert_eq!(Timings::default().decode_tok_s(), None);
    }
}
