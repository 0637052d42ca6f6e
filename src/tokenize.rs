//! `qgc tokenize` and `qgc detokenize`: text ↔ token ids with a model's tokenizer, a given
//! `tokenizer.json`, or the shipped Qwen tokenizer.
//!
//! `tokenize` prints the ids comma-separated and a newline; `detokenize` prints exactly the
//! decoded text (no newline added). Special tokens written literally in the text (`<|im_start|>`)
//! become their ids, and decode back to their literal text.

use anyhow::{anyhow, bail, Context, Result};
use qgc_runtime::tokenizer::Tokenizer;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where the tokenizer comes from.
#[derive(clap::Args)]
pub struct TokenizerArgs {
    /// An HF model directory (its tokenizer.json is used) or its config.json.
    model: Option<PathBuf>,
    /// A tokenizer.json to use instead (default: MODEL's, else the shipped Qwen tokenizer).
    #[arg(long, value_name = "FILE")]
    tokenizer: Option<PathBuf>,
}

impl TokenizerArgs {
    fn load(&self) -> Result<Tokenizer> {
        Ok(Tokenizer::resolve(self.model.as_deref(), self.tokenizer.as_deref())?)
    }
}

#[derive(clap::Args)]
pub struct TokenizeArgs {
    #[command(flatten)]
    source: TokenizerArgs,
    /// The text to encode.
    #[arg(long, value_name = "T", allow_hyphen_values = true)]
    text: Option<String>,
    /// A UTF-8 file whose whole content is encoded.
    #[arg(long, value_name = "F")]
    file: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct DetokenizeArgs {
    #[command(flatten)]
    source: TokenizerArgs,
    /// Comma-separated token ids, e.g. 9707,11,1879.
    #[arg(long, value_name = "1,2,3", allow_hyphen_values = true)]
    ids: Option<String>,
    /// A file of token ids separated by commas and/or whitespace (what `qgc tokenize` prints).
    #[arg(long, value_name = "F")]
    file: Option<PathBuf>,
}

fn read(path: &Path) -> Result<Vec<u8>> {
    qgc_runtime::budget::read(path).with_context(|| path.display().to_string())
}

pub fn tokenize(a: &TokenizeArgs) -> Result<()> {
    let text = match (&a.text, &a.file) {
        (Some(_), Some(_)) => bail!("--text and --file are mutually exclusive"),
        (None, None) => bail!("give the text with --text T or --file F"),
        (Some(t), None) => {
            if t.is_empty() {
                bail!("--text: the text is empty");
            }
            t.clone()
        }
        (None, Some(f)) => {
            let bytes = read(f)?;
            if bytes.is_empty() {
                bail!("{}: the file is empty", f.display());
            }
            String::from_utf8(bytes).map_err(|e| {
                anyhow!("{}: not UTF-8 text (invalid byte at offset {})", f.display(), e.utf8_error().valid_up_to())
            })?
        }
    };
    let tok = a.source.load()?;
    let ids = tok.encode(&text)?;
    let line = ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    println!("{line}");
    Ok(())
}

/// Parses ids separated by commas and/or whitespace; `what` names the source in errors.
pub fn parse_ids(s: &str, what: &str) -> Result<Vec<u32>> {
    qgc_runtime::tokenizer::parse_ids(s, what).map_err(|e| anyhow!(e))
}

pub fn detokenize(a: &DetokenizeArgs) -> Result<()> {
    let (ids, what) = match (&a.ids, &a.file) {
        (Some(_), Some(_)) => bail!("--ids and --file are mutually exclusive"),
        (None, None) => bail!("give the ids with --ids 1,2,3 or --file F"),
        (Some(s), None) => (parse_ids(s, "--ids")?, "--ids".to_string()),
        (None, Some(f)) => {
            let what = f.display().to_string();
            let text = String::from_utf8(read(f)?).map_err(|_| anyhow!("{what}: not UTF-8 text"))?;
            (parse_ids(&text, &what)?, what)
        }
    };
    let tok = a.source.load()?;
    let vocab = tok.vocab_size();
    if let Some(&bad) = ids.iter().find(|&&id| id as usize >= vocab || tok.id_token(id).is_none()) {
        bail!("{what}: token id {bad} is outside the vocabulary (0..{vocab})");
    }
    let text = tok.decode(&ids)?;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|_| out.flush()).context("writing to stdout")?;
    Ok(())
}
