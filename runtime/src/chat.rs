//! Chat with kept state: a conversation over one [`Session`] whose KV caches and GDN states are
//! kept between turns, so each turn feeds only its new tokens and the conversation is never run
//! again.
//!
//! After a reply the state is one token short of the transcript: the last sampled token (or the
//! end-of-turn token that stopped the reply) was never fed. [`Chat`] keeps what the next turn
//! owes, the *pending* tokens: the last sampled token unless it ended the turn, then the turn's
//! close (`<|im_end|>\n` for the Qwen template). The next turn feeds pending ++ its own tokens, so
//! the state always equals one prefill of the transcript (`tests/chat.rs` checks the logits).
//!
//! One difference from re-rendering the conversation with Qwen3's chat template: that template
//! drops the `<think>…</think>` part of earlier assistant turns, while kept state cannot un-feed
//! tokens, so earlier reasoning stays in the context (`--hide-think` only hides it on screen).
//!
//! [`Chat::save`] and [`Chat::load`] move the whole state through a safetensors file: every
//! `state.*` tensor of the session (F32, or I32 where the program declares it), the transcript as
//! the I32 tensor `transcript` (fed tokens, then the pending ones), and `__metadata__`:
//!
//! | key | value |
//! |---|---|
//! | `format`, `format_version` | `qgc-chat-state`, `1` |
//! | `qgc_version` | the qgc that wrote it |
//! | `spec_hash` | SHA-256 of the model's spec ([`qgc_codegen::artifact::spec_hash`]) |
//! | `positions`, `padding` | JSON lists, one entry per sequence |
//! | `mtp_position` | tokens in the MTP block's cache |
//! | `pending` | how many of the transcript's last tokens are pending |
//! | `checksum` | FNV-1a 64 of every tensor's name, dtype, shape and bytes, in name order |

use crate::generate::{generate_from_logits, GenerateConfig, GenerateError, Generation, Timings};
use crate::session::{SavedState, Session, SessionError};
use crate::tensor::{Storage, Tensor};
use crate::tokenizer::Tokenizer;
use qgc_codegen::artifact::spec_hash;
use qgc_ir::ModelSpec;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::time::Instant;

/// The `format` metadata of a chat state file.
pub const STATE_FORMAT: &str = "qgc-chat-state";
/// The `format_version` this qgc writes and reads.
pub const STATE_FORMAT_VERSION: u32 = 1;

/// Chat failures. The conversation is unchanged after each, except [`ChatError::Reset`].
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The session rejected the turn's tokens (nothing was fed).
    #[error(transparent)]
    Session(#[from] SessionError),
    /// Generation failed after the turn's tokens were fed: the conversation was reset.
    #[error("{0}; the conversation was reset")]
    Reset(GenerateError),
    /// A state file that cannot be loaded (the message says why).
    #[error("{origin}: {message}")]
    StateFile {
        /// The file, as given.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// A file that is not a safetensors file at all.
    #[error("{origin}: not a qgc chat state file")]
    NotStateFile {
        /// The file, as given.
        origin: String,
        /// What the safetensors parser said.
        #[source]
        source: crate::weights::SafetensorsError,
    },
    /// A state file whose tensors this session cannot take.
    #[error("{origin}")]
    StateMismatch {
        /// The file, as given.
        origin: String,
        /// What the session said.
        #[source]
        source: Box<SessionError>,
    },
    /// Bad arguments: an empty turn, a batch of more than one sequence.
    #[error("{0}")]
    Input(String),
}

/// One turn of a [`Chat`].
#[derive(Debug, Clone)]
pub struct Turn {
    /// The tokens fed this turn: what the last reply owed, then the turn's own.
    pub fed: Vec<i32>,
    /// Logits after the last fed token, `[1, vocab]` (what the reply's first token is sampled
    /// from; the turn is fed through prefill without the vocabulary projection but for it).
    pub logits: Tensor,
    /// The reply; its `prompt_ids` are the whole conversation before it.
    pub reply: Generation,
    /// Timings; `prompt_tokens` counts the fed tokens only.
    pub timings: Timings,
}

/// A conversation with kept state (see the module docs).
pub struct Chat<'w> {
    session: Session<'w>,
    spec_hash: String,
    vocab: usize,
    close: Vec<i32>,
    /// Tokens in the state, in order (`session.position()` of them).
    fed: Vec<i32>,
    /// Tokens the next turn feeds first.
    pending: Vec<i32>,
}

impl<'w> Chat<'w> {
    /// A conversation on `session` (one sequence; it is reset) of the model `spec`. `close_turn`
    /// are the tokens that end a reply in the transcript (`<|im_end|>\n`), its first token the
    /// end-of-turn token.
    pub fn new(mut session: Session<'w>, spec: &ModelSpec, close_turn: Vec<i32>) -> Result<Self, ChatError> {
        let batch = session.positions().len();
        if batch != 1 {
            return Err(ChatError::Input(format!("a chat needs a session of one sequence, not {batch}")));
        }
        if let Some(&bad) = close_turn.iter().find(|&&t| t < 0 || t as usize >= spec.vocab_size) {
            return Err(ChatError::Input(format!("token id {bad} is outside the vocabulary (0..{})", spec.vocab_size)));
        }
        session.reset();
        Ok(Chat {
            session,
            spec_hash: spec_hash(spec),
            vocab: spec.vocab_size,
            close: close_turn,
            fed: Vec::new(),
            pending: Vec::new(),
        })
    }

    /// The session (its state holds [`Chat::fed`]).
    pub fn session(&self) -> &Session<'w> {
        &self.session
    }

    /// The model's spec hash, as state files carry it.
    pub fn spec_hash(&self) -> &str {
        &self.spec_hash
    }

    /// Tokens in the state.
    pub fn fed(&self) -> &[i32] {
        &self.fed
    }

    /// Tokens the next turn feeds before its own.
    pub fn pending(&self) -> &[i32] {
        &self.pending
    }

    /// The whole conversation: fed tokens, then pending ones.
    pub fn transcript(&self) -> Vec<i32> {
        [&self.fed[..], &self.pending[..]].concat()
    }

    /// Whether nothing has been said (a fresh or reset conversation).
    pub fn is_empty(&self) -> bool {
        self.fed.is_empty() && self.pending.is_empty()
    }

    /// Forgets the conversation: fresh state, empty transcript.
    pub fn reset(&mut self) {
        self.session.reset();
        self.fed.clear();
        self.pending.clear();
    }

    /// One turn: feeds the pending tokens and `tokens` (the new turn, e.g.
    /// `<|im_start|>user\n…<|im_end|>\n<|im_start|>assistant\n`) in one prefill, then generates
    /// the reply as [`generate_from_logits`] does, `on_text` getting its text as it comes (with
    /// a tokenizer). The sampler's seed is `cfg.sampling.seed` plus the tokens in the state
    /// before the turn, so turns draw differently and a reloaded state draws the same. The
    /// repetition penalty looks at the whole conversation.
    pub fn turn(
        &mut self,
        tokens: &[i32],
        tokenizer: Option<&Tokenizer>,
        cfg: &GenerateConfig,
        mut on_text: impl FnMut(&str),
    ) -> Result<Turn, ChatError> {
        if tokens.is_empty() {
            return Err(ChatError::Input("a turn needs at least one token".into()));
        }
        let fed: Vec<i32> = [&self.pending[..], tokens].concat();
        let start = self.fed.len();
        let t0 = Instant::now();
        let logits = self.session.prefill_last(std::slice::from_ref(&fed))?.remove(0);
        let prefill_s = t0.elapsed().as_secs_f64();
        self.fed.extend_from_slice(&fed);
        self.pending.clear();
        let mut cfg = cfg.clone();
        cfg.sampling.seed = cfg.sampling.seed.wrapping_add(start as u64);
        let contexts = std::slice::from_ref(&self.fed);
        let result = generate_from_logits(
            &mut self.session,
            contexts,
            std::slice::from_ref(&logits),
            tokenizer,
            &cfg,
            |_, p| on_text(p),
        );
        let (mut gens, mut timings) = match result {
            Ok(r) => r,
            Err(e) => {
                self.reset();
                return Err(ChatError::Reset(e));
            }
        };
        let reply = gens.remove(0);
        // Every sampled token but the last was fed by a decode step.
        if let Some((&last, rest)) = reply.generated_ids.split_last() {
            self.fed.extend_from_slice(rest);
            if !cfg.eos_ids.contains(&last) && self.close.first() != Some(&last) {
                self.pending.push(last);
            }
        }
        self.pending.extend_from_slice(&self.close);
        timings.prompt_tokens = fed.len();
        timings.prefill_s = prefill_s;
        timings.ttft_s += prefill_s;
        Ok(Turn { fed, logits, reply, timings })
    }

    /// The state file's bytes (see the module docs).
    pub fn save(&self) -> Result<Vec<u8>, ChatError> {
        let s = &self.session;
        let transcript = Tensor::i32(vec![self.fed.len() + self.pending.len()], self.transcript());
        let (state, mtp_state) = (s.state()?, s.mtp_state()?);
        let mut tensors: Vec<(&str, &Tensor)> =
            state.iter().chain(mtp_state.iter()).map(|(n, t)| (n.as_str(), t)).collect();
        tensors.push(("transcript", &transcript));
        tensors.sort_by_key(|(n, _)| *n);
        let bytes: Vec<(&str, Dtype, &[usize], Vec<u8>)> =
            tensors.iter().map(|(n, t)| (*n, dtype(t), &t.shape[..], le_bytes(t))).collect();
        let checksum = bytes.iter().fold(Fnv::new(), |h, (n, d, shape, b)| h.tensor(n, *d, shape, b));
        let json = |v: &[usize]| serde_json::to_string(v).expect("a list of numbers serialises");
        let meta: HashMap<String, String> = [
            ("format", STATE_FORMAT.to_string()),
            ("format_version", STATE_FORMAT_VERSION.to_string()),
            ("qgc_version", env!("CARGO_PKG_VERSION").to_string()),
            ("spec_hash", self.spec_hash.clone()),
            ("positions", json(&s.positions())),
            ("padding", json(s.padding())),
            ("mtp_position", s.mtp_position().to_string()),
            ("pending", self.pending.len().to_string()),
            ("checksum", checksum.hex()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let views = bytes
            .iter()
            .map(|(n, d, shape, b)| TensorView::new(*d, shape.to_vec(), b).map(|v| (*n, v)))
            .collect::<Result<Vec<_>, _>>();
        let bad = |e: safetensors::SafeTensorError| ChatError::Input(format!("serialising the state: {e}"));
        safetensors::serialize(views.map_err(bad)?, Some(meta)).map_err(bad)
    }

    /// Replaces the conversation with a state file's (`origin` names it in errors). The file must
    /// be a chat state of this model (same spec hash) whose tensors have this program's dtypes
    /// and shapes; otherwise nothing changes and the error says why.
    pub fn load(&mut self, bytes: &[u8], origin: &str) -> Result<(), ChatError> {
        let bad = |message: String| ChatError::StateFile { origin: origin.to_string(), message };
        let not_state = |why: String| bad(format!("not a qgc chat state file ({why})"));
        let parse = |e| ChatError::NotStateFile {
            origin: origin.to_string(),
            source: crate::weights::SafetensorsError(std::sync::Arc::new(e)),
        };
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(parse)?;
        let st = SafeTensors::deserialize(bytes).map_err(parse)?;
        let meta = header.metadata().clone().unwrap_or_default();
        let get = |k: &str| meta.get(k).map(String::as_str);
        if get("format") != Some(STATE_FORMAT) {
            return Err(not_state("no qgc-chat-state format in its metadata".into()));
        }
        let version = get("format_version").unwrap_or("none");
        if version != STATE_FORMAT_VERSION.to_string() {
            return Err(bad(format!(
                "chat state format version {version}, this qgc reads version {STATE_FORMAT_VERSION}"
            )));
        }
        let theirs = get("spec_hash").unwrap_or("none");
        if theirs != self.spec_hash {
            return Err(bad(format!(
                "the state is of another model: its spec hash is {theirs}, this model's is {}",
                self.spec_hash
            )));
        }
        let mut views = st.tensors();
        views.sort_by(|a, b| a.0.cmp(&b.0));
        let sum = views.iter().fold(Fnv::new(), |h, (n, v)| h.tensor(n, v.dtype(), v.shape(), v.data()));
        if get("checksum") != Some(sum.hex().as_str()) {
            return Err(bad("checksum mismatch: the state file is corrupted".into()));
        }
        let number = |k: &str| -> Result<usize, ChatError> {
            get(k).and_then(|v| v.parse().ok()).ok_or_else(|| bad(format!("metadata {k} is missing or not a number")))
        };
        let list = |k: &str| -> Result<Vec<usize>, ChatError> {
            get(k)
                .and_then(|v| serde_json::from_str(v).ok())
                .ok_or_else(|| bad(format!("metadata {k} is missing or not a list of numbers")))
        };
        let (positions, padding) = (list("positions")?, list("padding")?);
        let (mtp_position, pending) = (number("mtp_position")?, number("pending")?);
        let mut saved = SavedState { padding, mtp_position, ..SavedState::default() };
        let mut transcript = None;
        for (name, v) in views {
            let t = tensor(&v).ok_or_else(|| bad(format!("{name} has dtype {}, expected F32 or I32", v.dtype())))?;
            if name == "transcript" {
                transcript = Some(t);
            } else if name.starts_with("state.mtp") {
                saved.mtp_state.insert(name, t);
            } else if name.starts_with("state.") {
                saved.state.insert(name, t);
            } else {
                return Err(bad(format!("unexpected tensor {name}")));
            }
        }
        let transcript = transcript.ok_or_else(|| bad("no transcript tensor".into()))?;
        let ids = match (transcript.shape.len(), transcript.as_i32()) {
            (1, Some(ids)) => ids.to_vec(),
            _ => return Err(bad(format!("transcript is {}, expected i32[N]", transcript.describe()))),
        };
        if let Some(&t) = ids.iter().find(|&&t| t < 0 || t as usize >= self.vocab) {
            return Err(bad(format!("transcript token id {t} is outside the vocabulary (0..{})", self.vocab)));
        }
        if positions.len() != 1 || saved.padding != [0] {
            return Err(bad(format!("a chat state holds one unpadded sequence, this one has positions {positions:?}")));
        }
        if pending > ids.len() || ids.len() - pending != positions[0] {
            return Err(bad(format!(
                "the transcript has {} tokens ({pending} pending) but the state holds {}",
                ids.len(),
                positions[0]
            )));
        }
        saved.position = positions[0];
        let mismatch = |e| ChatError::StateMismatch { origin: origin.to_string(), source: Box::new(e) };
        self.session.restore(saved).map_err(mismatch)?;
        self.fed = ids[..positions[0]].to_vec();
        self.pending = ids[positions[0]..].to_vec();
        Ok(())
    }
}

fn dtype(t: &Tensor) -> Dtype {
    match t.storage() {
        Storage::F32(_) => Dtype::F32,
        Storage::I32(_) => Dtype::I32,
    }
}

fn le_bytes(t: &Tensor) -> Vec<u8> {
    match t.storage() {
        Storage::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Storage::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

/// A file tensor as a runtime tensor (`None` for dtypes other than F32 and I32, or a size that
/// does not match the shape).
fn tensor(v: &TensorView) -> Option<Tensor> {
    let words = v.data().chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]);
    let shape = v.shape().to_vec();
    if v.data().len() != shape.iter().try_fold(4usize, |n, d| n.checked_mul(*d))? {
        return None;
    }
    Some(match v.dtype() {
        Dtype::F32 => Tensor::f32(shape, words.map(f32::from_le_bytes).collect()),
        Dtype::I32 => Tensor::i32(shape, words.map(i32::from_le_bytes).collect()),
        _ => return None,
    })
}

/// 64-bit FNV-1a, the state file's checksum (it catches damage, not tampering).
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn bytes(self, b: &[u8]) -> Fnv {
        Fnv(b.iter().fold(self.0, |h, &x| (h ^ x as u64).wrapping_mul(0x0000_0100_0000_01b3)))
    }

    fn tensor(self, name: &str, dtype: Dtype, shape: &[usize], data: &[u8]) -> Fnv {
        let dims: Vec<u8> = shape.iter().flat_map(|&d| (d as u64).to_le_bytes()).collect();
        self.bytes(name.as_bytes()).bytes(&[0]).bytes(dtype.to_string().as_bytes()).bytes(&dims).bytes(data)
    }

    fn hex(self) -> String {
        format!("fnv1a64:{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_the_reference_values() {
        assert_eq!(Fnv::new().bytes(b"").0, 0xcbf2_9ce4_8422_2325);
        assert_eq!(Fnv::new().bytes(b"a").0, 0xaf63_dc4c_8601_ec8c);
        assert_eq!(Fnv::new().bytes(b"foobar").0, 0x8594_4171_f739_67e8);
    }

    #[test]
    fn tensors_round_trip_through_bytes() {
        let f = Tensor::f32(vec![2, 1], vec![1.5, -0.0]);
        let i = Tensor::i32(vec![3], vec![7, -1, 0]);
        for t in [f, i] {
            let b = le_bytes(&t);
            let v = TensorView::new(dtype(&t), t.shape.clone(), &b).unwrap();
            assert_eq!(tensor(&v).unwrap(), t);
        }
    }
}
