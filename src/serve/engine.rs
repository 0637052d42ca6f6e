//! The engine: one thread owns the model and runs the continuous-batching loop.
//!
//! Requests arrive on a channel and wait in a FIFO queue. Every step:
//! 1. new requests are taken in; those whose client went away are dropped (their rows leave the
//!    batch at once);
//! 2. waiting requests are admitted while the running ones leave room (`--max-num-seqs`, and
//!    the state bytes each needs at its longest: KV for attention layers only, fixed conv and
//!    recurrent state for GDN layers);
//! 3. prompts are prefilled, oldest first, under the step's token budget
//!    (`--max-num-batched-tokens` minus one token per running sequence), in chunks that end at
//!    the points a later request may want to resume from (see [`super::prefix`]); each chunk
//!    continues the sequence's own state, so chunked prefill computes what one prefill would;
//! 4. every running sequence decodes one token in one batched call. A prompt's last token goes
//!    through this decode too (as `qgc run` feeds it), so a sequence's first token comes from the
//!    same kernels whether it runs alone or in a batch.
//!
//! The batch is regrouped ([`qgc_runtime::rows`]) whenever sequences join or leave: rows of
//! different lengths are left-padded to the longest and each decodes at its own position.

use super::metrics::Metrics;
use super::prefix::PrefixCache;
use qgc_ir::{Bindings, StateDecl};
use qgc_runtime::generate::TextStream;
use qgc_runtime::sampling::{History, Sampler, SamplingParams};
use qgc_runtime::session::SavedState;
use qgc_runtime::tokenizer::Tokenizer;
use qgc_runtime::Session;
use rayon::prelude::*;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// What a request asks the engine for (checked by the HTTP layer).
#[derive(Debug, Clone)]
pub struct Params {
    /// At most this many new tokens per choice.
    pub max_tokens: usize,
    /// How tokens are picked (each choice has its own generator).
    pub sampling: SamplingParams,
    /// Strings that end a choice (its text is cut before them).
    pub stop: Vec<String>,
    /// Keep going past end-of-sequence ids.
    pub ignore_eos: bool,
    /// Choices to generate from the one prompt.
    pub n: usize,
    /// Log-probabilities: `None` off; `Some(k)` the chosen token's and the `k` most likely.
    pub logprobs: Option<usize>,
}

/// One request for the engine.
pub struct Submit {
    /// `chatcmpl-…` / `cmpl-…`, for logs.
    pub id: String,
    /// The prompt's token ids (≥ 1, within the context).
    pub prompt: Vec<i32>,
    /// What to generate.
    pub params: Params,
    /// Where the events go; a closed receiver cancels the request.
    pub events: UnboundedSender<Event>,
    /// When the HTTP layer received it.
    pub arrived: Instant,
}

/// A token's log-probability and the most likely alternatives.
#[derive(Debug, Clone)]
pub struct TokenLogprob {
    /// The token as text (bytes that are not UTF-8 on their own decode to U+FFFD).
    pub token: String,
    /// The token's own bytes (part of a character, for byte-level tokens that split one).
    pub bytes: Vec<u8>,
    /// `log p` under the model's distribution (raw logits).
    pub logprob: f32,
    /// The most likely tokens (text, bytes, log-probability), most likely first.
    pub top: Vec<(String, Vec<u8>, f32)>,
}

/// Why a choice ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// An end-of-sequence id or a stop string.
    Stop,
    /// `max_tokens`, or the context is full.
    Length,
}

impl Finish {
    /// OpenAI's `finish_reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }
}

/// Token counts of a finished request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens over all choices.
    pub completion_tokens: usize,
    /// Prompt tokens restored from the prefix cache instead of computed.
    pub cached_tokens: usize,
}

/// What the engine tells a request's handler, in order: tokens and finishes of each choice,
/// then [`Event::Done`] (or [`Event::Failed`]).
#[derive(Debug, Clone)]
pub enum Event {
    /// One generated token of choice `choice` and the text it completes (possibly empty: held
    /// back as an incomplete character or a possible stop string).
    Token {
        /// Which choice.
        choice: usize,
        /// The token's id.
        id: i32,
        /// Text now safe to show.
        text: String,
        /// With `logprobs`.
        logprob: Option<TokenLogprob>,
    },
    /// Choice `choice` ended; `text` is what was still held back.
    Finish {
        /// Which choice.
        choice: usize,
        /// The rest of its text.
        text: String,
        /// Why.
        reason: Finish,
    },
    /// Every choice ended.
    Done(Usage),
    /// The engine failed on this request (an internal error: the model call failed).
    Failed(String),
}

/// Engine limits (from the command line).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most sequences (choices) in the decode batch.
    pub max_num_seqs: usize,
    /// Most tokens one step computes (prefill chunk + one per running sequence).
    pub max_num_batched_tokens: usize,
    /// Longest sequence (prompt + generated).
    pub max_model_len: usize,
    /// Bytes of sequence state the running sequences may hold together.
    pub state_budget: u64,
}

/// The model facts the HTTP layer and the admission need.
pub struct ModelInfo {
    /// The state declarations (main model).
    pub state: Vec<StateDecl>,
    /// End-of-sequence ids.
    pub eos: Vec<i32>,
    /// Vocabulary size.
    pub vocab: usize,
}

impl ModelInfo {
    /// Bytes of one sequence's state once it holds `len` tokens (KV grows, conv and recurrent
    /// state do not).
    pub fn seq_bytes(&self, len: usize) -> u64 {
        let bind = Bindings { b: 1, s: 0, p: len };
        self.state.iter().map(|d| d.ty.eval(&bind).iter().product::<usize>() as u64 * 4).sum()
    }
}

struct Choice<'t> {
    generated: Vec<i32>,
    sampler: Sampler,
    text: Option<TextStream<'t>>,
    done: Option<Finish>,
    /// The token this choice feeds next.
    next: i32,
}

struct Seq<'t> {
    req: Submit,
    /// Prompt tokens consumed into `state` (or into the prefill session).
    fed: usize,
    cached: usize,
    /// The single-sequence state while not in the batch (`None`: in the prefill session or the
    /// batch).
    state: Option<SavedState>,
    choices: Vec<Choice<'t>>,
    /// Bytes admitted for it.
    reserved: u64,
    started: Option<Instant>,
    first_token: Option<Instant>,
    last_token: Option<Instant>,
}

impl Seq<'_> {
    fn closed(&self) -> bool {
        self.req.events.is_closed()
    }
    fn send(&self, e: Event) {
        let _ = self.req.events.send(e);
    }
    fn prefilled(&self) -> bool {
        self.fed + 1 >= self.req.prompt.len()
    }
}

/// The engine: the sessions, the queue and the sequences it runs.
pub struct Engine<'w, 't> {
    /// Makes a fresh session of the model (batch 1) for the decode batch.
    fresh: Box<dyn Fn() -> Session<'w> + 'w>,
    /// Decode batch (its rows: `rows`, request id and choice).
    batch: Option<Session<'w>>,
    rows: Vec<(u64, usize)>,
    /// Batch-1 session for prefill chunks; `prefill_owner` is the request whose state it holds.
    prefill: Session<'w>,
    prefill_owner: Option<u64>,
    running: Vec<(u64, Seq<'t>)>,
    prefilling: VecDeque<(u64, Seq<'t>)>,
    waiting: VecDeque<Submit>,
    /// The batch's rows must change before the next decode.
    dirty: bool,
    next_id: u64,
    tokenizer: Option<&'t Tokenizer>,
    info: Arc<ModelInfo>,
    limits: Limits,
    cache: PrefixCache,
    metrics: Arc<Metrics>,
    /// State bytes admitted.
    used: u64,
}

impl<'w, 't> Engine<'w, 't> {
    /// An engine whose sessions come from `fresh` (a new batch-1 session of the model).
    pub fn new(
        fresh: Box<dyn Fn() -> Session<'w> + 'w>,
        tokenizer: Option<&'t Tokenizer>,
        info: Arc<ModelInfo>,
        limits: Limits,
        cache: PrefixCache,
        metrics: Arc<Metrics>,
    ) -> Self {
        Engine {
            prefill: fresh(),
            fresh,
            batch: None,
            rows: Vec::new(),
            prefill_owner: None,
            running: Vec::new(),
            prefilling: VecDeque::new(),
            waiting: VecDeque::new(),
            dirty: false,
            next_id: 0,
            tokenizer,
            info,
            limits,
            cache,
            metrics,
            used: 0,
        }
    }

    /// Runs until the channel closes (the server shut down).
    pub fn run(mut self, mut rx: UnboundedReceiver<Submit>) {
        loop {
            if self.idle() && !self.dirty {
                self.publish();
                match rx.blocking_recv() {
                    Some(s) => self.waiting.push_back(s),
                    None => return,
                }
            }
            while let Ok(s) = rx.try_recv() {
                self.waiting.push_back(s);
            }
            self.step();
            self.publish();
        }
    }

    fn idle(&self) -> bool {
        self.waiting.is_empty() && self.prefilling.is_empty() && self.running.is_empty()
    }

    fn publish(&self) {
        let m = &self.metrics;
        m.set_queue(self.rows.len(), self.waiting.len() + self.prefilling.len());
        m.set_usage(self.used, self.limits.state_budget, self.cache.bytes(), self.cache.limit());
        m.set_cache(self.cache.len(), self.cache.evictions());
    }

    /// One scheduling step.
    fn step(&mut self) {
        self.drop_cancelled();
        self.admit();
        self.prefill_step();
        if self.dirty {
            if let Err(e) = self.regroup() {
                self.fail_running(&format!("regrouping the batch: {e}"));
                return;
            }
        }
        if !self.rows.is_empty() {
            if let Err(e) = self.decode_step() {
                self.fail_running(&format!("decode step: {e}"));
            }
        }
    }

    /// Drops requests whose client went away (their rows leave at the next regroup).
    fn drop_cancelled(&mut self) {
        let metrics = &self.metrics;
        self.waiting.retain(|s| {
            let gone = s.events.is_closed();
            if gone {
                metrics.cancelled();
                eprintln!("request {}: cancelled while waiting (the client went away)", s.id);
            }
            !gone
        });
        let mut freed = 0;
        let owner = self.prefill_owner;
        let mut gone = Vec::new();
        self.prefilling.retain(|(id, s)| {
            if s.closed() {
                freed += s.reserved;
                gone.push((*id, s.req.id.clone()));
            }
            !s.closed()
        });
        self.running.retain(|(id, s)| {
            if s.closed() {
                freed += s.reserved;
                gone.push((*id, s.req.id.clone()));
            }
            !s.closed()
        });
        for (id, name) in &gone {
            if Some(*id) == owner {
                self.prefill_owner = None;
            }
            self.metrics.cancelled();
            eprintln!("request {name}: cancelled (the client went away)");
            self.dirty |= self.rows.iter().any(|(r, _)| r == id);
        }
        self.used -= freed;
    }

    /// Moves waiting requests into prefill while sequences and state bytes allow.
    fn admit(&mut self) {
        while let Some(req) = self.waiting.front() {
            let seqs: usize = self.running.iter().chain(self.prefilling.iter()).map(|(_, s)| s.choices.len()).sum();
            let n = req.params.n;
            let len = (req.prompt.len() + req.params.max_tokens).min(self.limits.max_model_len);
            let need = self.info.seq_bytes(len) * n as u64;
            let fits = seqs + n <= self.limits.max_num_seqs && self.used + need <= self.limits.state_budget;
            if !fits && seqs > 0 {
                return;
            }
            let req = self.waiting.pop_front().expect("front exists");
            // An empty engine takes the request even when it exceeds the limits on its own
            // (the HTTP layer already refused what can never fit).
            self.used += need;
            let id = self.next_id;
            self.next_id += 1;
            let seq = self.seq(req, need);
            self.prefilling.push_back((id, seq));
        }
    }

    fn seq(&self, req: Submit, reserved: u64) -> Seq<'t> {
        let p = &req.params;
        let choices = (0..p.n)
            .map(|c| Choice {
                generated: Vec::new(),
                sampler: Sampler::new(SamplingParams { seed: p.sampling.seed.wrapping_add(c as u64), ..p.sampling }),
                text: self.tokenizer.map(|t| TextStream::new(t, &p.stop)),
                done: None,
                next: *req.prompt.last().expect("prompts are not empty"),
            })
            .collect();
        Seq {
            req,
            fed: 0,
            cached: 0,
            state: None,
            choices,
            reserved,
            started: None,
            first_token: None,
            last_token: None,
        }
    }

    /// Prefills admitted prompts under the step's token budget; those done join the batch at the
    /// next regroup.
    fn prefill_step(&mut self) {
        let mut budget = self.limits.max_num_batched_tokens.saturating_sub(self.rows.len()).max(1);
        while budget > 0 {
            let Some((id, mut seq)) = self.prefilling.pop_front() else { break };
            match self.prefill_chunk(id, &mut seq, &mut budget) {
                Ok(true) => {
                    self.dirty = true;
                    self.running.push((id, seq));
                }
                Ok(false) => {
                    self.prefilling.push_front((id, seq));
                    break;
                }
                Err(e) => {
                    self.used -= seq.reserved;
                    self.prefill_owner = None;
                    self.metrics.failed();
                    eprintln!("request {}: prefill failed: {e}", seq.req.id);
                    seq.send(Event::Failed(format!("prefill failed: {e}")));
                }
            }
        }
    }

    /// Feeds the next chunks of `seq`'s prompt (all but its last token) within `budget`; true
    /// when it is ready to join the batch.
    fn prefill_chunk(&mut self, id: u64, seq: &mut Seq<'t>, budget: &mut usize) -> Result<bool, String> {
        let n = seq.req.prompt.len();
        if seq.started.is_none() {
            seq.started = Some(Instant::now());
            self.start_prefill(seq)?;
        }
        while !seq.prefilled() && *budget > 0 {
            // Where other admitted or waiting prompts part from this one: snapshot there, so
            // they resume from it (a shared document is computed once).
            let others =
                self.prefilling.iter().map(|(_, s)| &s.req.prompt).chain(self.waiting.iter().map(|r| &r.prompt));
            let forks: Vec<usize> =
                others.map(|p| common_prefix(p, &seq.req.prompt)).filter(|&f| f > seq.fed && f + 1 < n).collect();
            let end = self.cache.chunk_end(seq.fed, n - 1, &forks).min(seq.fed + *budget);
            if self.prefill_owner != Some(id) {
                let state = seq.state.take().ok_or("lost the sequence's state")?;
                self.prefill.restore(state).map_err(|e| e.to_string())?;
                self.prefill_owner = Some(id);
            }
            let chunk = seq.req.prompt[seq.fed..end].to_vec();
            self.prefill.feed(&[chunk]).map_err(|e| e.to_string())?;
            *budget -= end - seq.fed;
            self.metrics.computed(end - seq.fed);
            seq.fed = end;
            if self.cache.snapshot_at(end, n - 1, &forks) {
                let saved = self.prefill.saved().map_err(|e| e.to_string())?;
                self.cache.insert(seq.req.prompt[..end].to_vec(), saved);
            }
        }
        if !seq.prefilled() {
            return Ok(false);
        }
        if self.prefill_owner == Some(id) {
            seq.state = Some(self.prefill.saved().map_err(|e| e.to_string())?);
            self.prefill_owner = None;
        }
        Ok(true)
    }

    /// Restores the longest cached prefix of `seq`'s prompt, or zero state.
    fn start_prefill(&mut self, seq: &mut Seq<'t>) -> Result<(), String> {
        let prompt = &seq.req.prompt;
        let n = prompt.len();
        self.metrics.queried(n - 1);
        let hit = self.cache.lookup(&prompt[..n - 1]);
        let state = match hit {
            Some((len, state)) => {
                seq.fed = len;
                seq.cached = len;
                self.metrics.hit(len);
                state
            }
            None => {
                self.prefill.reset();
                self.prefill.saved().map_err(|e| e.to_string())?
            }
        };
        seq.state = Some(state);
        self.prefill_owner = None;
        Ok(())
    }

    /// Rebuilds the decode batch: rows of running choices stay, the others leave, joiners'
    /// states are added.
    fn regroup(&mut self) -> Result<(), String> {
        self.dirty = false;
        let mut keep = Vec::new();
        let mut rows = Vec::new();
        if self.batch.is_some() {
            for (r, &(id, c)) in self.rows.iter().enumerate() {
                if self.running.iter().any(|(i, s)| *i == id && s.choices[c].done.is_none()) {
                    keep.push(r);
                    rows.push((id, c));
                }
            }
        }
        let mut joining = Vec::new();
        for (id, seq) in self.running.iter_mut() {
            if let Some(st) = seq.state.take() {
                for c in 0..seq.choices.len() {
                    rows.push((*id, c));
                }
                joining.push((seq.choices.len(), st));
            }
        }
        self.rows = rows;
        if self.rows.is_empty() {
            self.batch = None;
            return Ok(());
        }
        let join: Vec<&SavedState> = joining.iter().flat_map(|(n, st)| std::iter::repeat_n(st, *n)).collect();
        let fresh = &self.fresh;
        let batch = self.batch.get_or_insert_with(fresh);
        batch.regroup(&keep, &join).map_err(|e| e.to_string())
    }

    /// One batched decode: every row feeds its next token, each choice samples from its row;
    /// requests whose choices all ended get their usage and leave.
    fn decode_step(&mut self) -> Result<(), String> {
        let mut tokens = Vec::with_capacity(self.rows.len());
        for &(id, c) in &self.rows {
            tokens
                .push(self.running.iter().find(|(i, _)| *i == id).ok_or("a row without a request")?.1.choices[c].next);
        }
        let batch = self.batch.as_mut().ok_or("no batch")?;
        let logits = batch.decode(&tokens).map_err(|e| e.to_string())?;
        let positions = batch.positions();
        let data = logits.as_f32().ok_or("logits are not f32")?;
        let (vocab, max_len, now) = (self.info.vocab, self.limits.max_model_len, Instant::now());
        if data.len() < self.rows.len() * vocab {
            return Err("logits too short".into());
        }
        let picks = pick_all(&mut self.running, &self.rows, data, vocab, self.tokenizer);
        for (r, (&(id, c), (token, logprob))) in self.rows.iter().zip(picks).enumerate() {
            let Some((_, seq)) = self.running.iter_mut().find(|(i, _)| *i == id) else { continue };
            let full = positions[r] + 1 >= max_len;
            if apply(seq, c, token, logprob, &self.info.eos, full) {
                self.dirty = true;
            }
        }
        let mut i = 0;
        while i < self.running.len() {
            let seq = &mut self.running[i].1;
            match seq.last_token {
                Some(last) => self.metrics.inter_token(now.duration_since(last).as_secs_f64()),
                None => {
                    seq.first_token = Some(now);
                    self.metrics.first_token(now.duration_since(seq.req.arrived).as_secs_f64());
                }
            }
            seq.last_token = Some(now);
            if seq.choices.iter().all(|c| c.done.is_some()) {
                let (id, seq) = self.running.remove(i);
                // Snapshot before the client hears the end: its next turn may follow at once.
                self.snapshot_reply(id, &seq)?;
                self.used -= seq.reserved;
                let usage = Usage {
                    prompt_tokens: seq.req.prompt.len(),
                    completion_tokens: seq.choices.iter().map(|c| c.generated.len()).sum(),
                    cached_tokens: seq.cached,
                };
                self.metrics.finished(&summary(&seq, usage, now));
                seq.send(Event::Done(usage));
                self.dirty = true;
            } else {
                i += 1;
            }
        }
        Ok(())
    }

    /// Keeps the state of request `id`'s first choice (its prompt and every generated token
    /// but the last, which was never fed) in the prefix cache: the next turn of a conversation
    /// starts with exactly these tokens.
    fn snapshot_reply(&mut self, id: u64, seq: &Seq) -> Result<(), String> {
        let (Some(batch), Some(r)) = (&self.batch, self.rows.iter().position(|&(i, c)| i == id && c == 0)) else {
            return Ok(());
        };
        let ch = &seq.choices[0];
        let mut tokens = seq.req.prompt.clone();
        tokens.extend_from_slice(&ch.generated[..ch.generated.len().saturating_sub(1)]);
        let st = batch.row(r).map_err(|e| e.to_string())?;
        if tokens.len() == st.position {
            self.cache.insert(tokens, st);
        }
        Ok(())
    }

    /// Fails every running request (the batch state is gone) and empties the batch.
    fn fail_running(&mut self, msg: &str) {
        eprintln!("engine: {msg}; failing {} running request(s)", self.running.len());
        for (_, s) in self.running.drain(..) {
            self.used -= s.reserved;
            self.metrics.failed();
            s.send(Event::Failed(msg.to_string()));
        }
        self.rows.clear();
        self.batch = None;
        self.dirty = false;
    }
}

/// Every row's next token and its log-probabilities, drawn in parallel (sampling sorts the
/// vocabulary; rows are independent, each choice has its own generator).
fn pick_all(
    running: &mut [(u64, Seq)],
    rows: &[(u64, usize)],
    data: &[f32],
    vocab: usize,
    tok: Option<&Tokenizer>,
) -> Vec<(i32, Option<TokenLogprob>)> {
    type Slot<'a, 't> = Option<(&'a mut Choice<'t>, &'a [i32], Option<usize>)>;
    let mut slots: Vec<Slot> = (0..rows.len()).map(|_| None).collect();
    for (id, seq) in running.iter_mut() {
        let Seq { req, choices, .. } = seq;
        for (c, ch) in choices.iter_mut().enumerate() {
            if let Some(r) = rows.iter().position(|&(i, cc)| i == *id && cc == c) {
                slots[r] = Some((ch, &req.prompt, req.params.logprobs));
            }
        }
    }
    slots
        .into_par_iter()
        .enumerate()
        .map(|(r, slot)| {
            let Some((ch, prompt, lp)) = slot else { return (0, None) };
            let row = &data[r * vocab..(r + 1) * vocab];
            let id = ch.sampler.sample(row, History { prompt, generated: &ch.generated });
            (id, lp.map(|k| logprobs(row, id, k, tok)))
        })
        .collect()
}

/// Appends `id` to choice `c` of `seq`, streams its text, and applies the stop conditions
/// (`full`: the context has no room for another token). True when the choice ended.
fn apply(seq: &mut Seq, c: usize, id: i32, logprob: Option<TokenLogprob>, eos: &[i32], full: bool) -> bool {
    let params = &seq.req.params;
    let ch = &mut seq.choices[c];
    ch.generated.push(id);
    ch.next = id;
    let mut end = None;
    let mut text = String::new();
    if !params.ignore_eos && eos.contains(&id) {
        end = Some(Finish::Stop);
    } else if let Some(t) = ch.text.as_mut() {
        match t.push(id as u32) {
            Ok((piece, hit)) => {
                text = piece;
                if hit {
                    end = Some(Finish::Stop);
                }
            }
            Err(e) => {
                let _ = seq.req.events.send(Event::Failed(format!("detokenising: {e}")));
                end = Some(Finish::Stop);
            }
        }
    }
    if end.is_none() && (ch.generated.len() >= params.max_tokens || full) {
        end = Some(Finish::Length);
    }
    let _ = seq.req.events.send(Event::Token { choice: c, id, text, logprob });
    let Some(reason) = end else { return false };
    ch.done = Some(reason);
    let rest = ch.text.as_mut().and_then(|t| t.finish().ok()).unwrap_or_default();
    let _ = seq.req.events.send(Event::Finish { choice: c, text: rest, reason });
    true
}

/// The chosen token's log-probability and the `k` most likely tokens of a logits row.
fn logprobs(row: &[f32], id: i32, k: usize, tok: Option<&Tokenizer>) -> TokenLogprob {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max as f64 + row.iter().map(|&x| ((x - max) as f64).exp()).sum::<f64>().ln();
    let lp = |i: usize| (row[i] as f64 - lse) as f32;
    let mut idx: Vec<usize> = (0..row.len()).collect();
    let k = k.min(row.len());
    if k > 0 {
        idx.select_nth_unstable_by(k - 1, |&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        idx.truncate(k);
        idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    } else {
        idx.clear();
    }
    let (token, bytes) = token_text(tok, id);
    TokenLogprob {
        token,
        bytes,
        logprob: lp(id as usize),
        top: idx
            .into_iter()
            .map(|i| {
                let (t, b) = token_text(tok, i as i32);
                (t, b, lp(i))
            })
            .collect(),
    }
}

/// A token's text (U+FFFD where it holds part of a character) and its own bytes: a byte-level
/// BPE token's vocabulary string maps back to bytes through GPT-2's byte alphabet.
fn token_text(tok: Option<&Tokenizer>, id: i32) -> (String, Vec<u8>) {
    let Some(t) = tok else { return (id.to_string(), id.to_string().into_bytes()) };
    let text = t.decode(&[id as u32]).unwrap_or_default();
    if !text.contains('\u{FFFD}') {
        let b = text.as_bytes().to_vec();
        return (text, b);
    }
    let b = t.token_bytes(id as u32).unwrap_or_else(|| text.as_bytes().to_vec());
    (text, b)
}

/// The longest common prefix of `a` and `b`.
fn common_prefix(a: &[i32], b: &[i32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// What the request log line and the latency histograms need.
pub struct Summary {
    /// Request id.
    pub id: String,
    /// Token counts.
    pub usage: Usage,
    /// Seconds from arrival to the first token.
    pub ttft: f64,
    /// Seconds from arrival to the end.
    pub e2e: f64,
    /// Generated tokens per second after the first.
    pub tok_s: f64,
    /// Why the first choice ended.
    pub finish: &'static str,
}

fn summary(seq: &Seq, usage: Usage, now: Instant) -> Summary {
    let arrived = seq.req.arrived;
    let first = seq.first_token.unwrap_or(now);
    let decode = now.duration_since(first).as_secs_f64();
    let after_first = usage.completion_tokens.saturating_sub(seq.choices.len());
    Summary {
        id: seq.req.id.clone(),
        usage,
        ttft: first.duration_since(arrived).as_secs_f64(),
        e2e: now.duration_since(arrived).as_secs_f64(),
        tok_s: if decode > 0.0 { after_first as f64 / decode } else { 0.0 },
        finish: seq.choices[0].done.map_or("abort", Finish::as_str),
    }
}
