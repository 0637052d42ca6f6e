//! `qgc logits`: the stable interface external parity tests use.

use anyhow::{anyhow, bail, Context, Result};
use qgc_runtime::weights::{self, Checkpoint, Weights};
use qgc_runtime::{open_model, Session};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct LogitsArgs {
    /// A spec JSON, an HF model directory, or an artifact.
    model: PathBuf,
    /// HF checkpoint directory (default: MODEL when it is one).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Comma-separated token ids, e.g. 5,17,3.
    #[arg(long)]
    tokens: String,
    /// Tokens fed through prefill before decoding the rest one at a time (default: all).
    #[arg(long)]
    prefill: Option<usize>,
    /// Output safetensors file: one F32 tensor `logits` of shape [T, vocab].
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    lower: super::LowerArgs,
    #[command(flatten)]
    backend: crate::load::BackendArgs,
}

/// Parses `5,17,3` into ids (`--tokens`).
pub fn parse_tokens(s: &str) -> Result<Vec<i32>> {
    qgc_runtime::tokenizer::parse_tokens(s).map_err(|e| anyhow!(e))
}

pub fn run(a: &LogitsArgs) -> Result<()> {
    let tokens = parse_tokens(&a.tokens)?;
    let prefill = a.prefill.unwrap_or(tokens.len());
    if prefill > tokens.len() {
        bail!("--prefill {prefill} is more than the {} tokens given", tokens.len());
    }
    let m = open_model(&a.model, &a.lower.options())?;
    let vocab = m.spec.vocab_size;
    if let Some(&bad) = tokens.iter().find(|&&t| t < 0 || t as usize >= vocab) {
        bail!("--tokens: token id {bad} is outside the vocabulary of {} (0..{vocab})", a.model.display());
    }
    if tokens.len() > m.spec.max_position_embeddings {
        // HF's default RoPE does not enforce max_position_embeddings either; say so, then compute.
        eprintln!(
            "warning: {} tokens exceed the model's max_position_embeddings {}; computing anyway",
            tokens.len(),
            m.spec.max_position_embeddings
        );
    }
    let dir =
        a.weights.clone().or(m.hf_dir.clone()).ok_or_else(|| {
            anyhow!("{}: no weights: pass --weights DIR (an HF checkpoint directory)", a.model.display())
        })?;
    let ckpt = Checkpoint::open(&dir)?;
    if m.kind == qgc_runtime::ModelKind::Artifact {
        crate::load::check_artifact_config(&a.model, &m.spec, &dir)?;
    }
    weights::check(&m.spec, &ckpt)?;
    let w = Weights::new(ckpt);
    let cpu = a.backend.compile(&m, &w)?;
    let mut s = Session::with_backend(m.program, crate::load::backend(&cpu, &w), vocab, usize::MAX, 1);
    s.admit_context(tokens.len())?;
    let rows_bytes = (tokens.len() as u64).checked_mul(vocab as u64).and_then(|n| n.checked_mul(4));
    qgc_runtime::budget::global().admit(format!("logits of {} tokens", tokens.len()), rows_bytes)?;
    let mut rows: Vec<f32> = Vec::with_capacity(tokens.len() * vocab);
    if prefill > 0 {
        let l = s.prefill(&[tokens[..prefill].to_vec()]).context("prefill")?;
        rows.extend_from_slice(l.as_f32().expect("logits are f32"));
    }
    for (i, &t) in tokens[prefill..].iter().enumerate() {
        let l = s.decode(&[t]).with_context(|| format!("decoding token {}", prefill + i))?;
        rows.extend_from_slice(l.as_f32().expect("logits are f32"));
    }
    let bytes: Vec<u8> = rows.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![tokens.len(), vocab], &bytes)?;
    let data = safetensors::serialize([("logits", view)], None)?;
    super::write_atomic(&a.out, &data)?;
    eprintln!("wrote {} ([{}, {}])", a.out.display(), tokens.len(), vocab);
    Ok(())
}
