//! `qgc run`: generate text from a prompt, streaming it as it arrives.
//!
//! Everything a user can get wrong (prompt, tokenizer, weights, flag values) is checked before
//! any weight is converted; then the weights load (with a progress bar on a terminal, see
//! [`crate::load`]), the prompts run as one batch through [`qgc_runtime::generate::generate`],
//! and a llama.cpp-style timing line goes to stderr.

use crate::load::{at_least_one, chat_prompt, prompt_opens_think, ModelArgs, SamplingArgs, TextOut};
use anyhow::{anyhow, bail, Context, Result};
use qgc_runtime::generate::{generate, GenerateConfig, Generation, ThinkFilter, Timings};
use qgc_runtime::tokenizer::Tokenizer;
use qgc_runtime::{Model, Session};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    prompt: PromptArgs,
    /// Wrap the prompt in the Qwen chat template (user turn, then the assistant's).
    #[arg(long, conflicts_with = "tokens")]
    chat: bool,
    /// System message for --chat.
    #[arg(long, requires = "chat", value_name = "TEXT")]
    system: Option<String>,
    /// Hide <think>…</think> blocks from the text.
    #[arg(long)]
    hide_think: bool,
    /// Generate at most N new tokens per prompt.
    #[arg(short = 'n', long = "max-new-tokens", value_name = "N", default_value_t = 128, value_parser = at_least_one)]
    max_new_tokens: usize,
    /// Stop when the text reaches STR (repeatable; the text is cut before it).
    #[arg(long, value_name = "STR")]
    stop: Vec<String>,
    /// Do not stop at the end-of-sequence tokens.
    #[arg(long)]
    ignore_eos: bool,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Print one JSON object per prompt at the end (keys text, prompt_ids, generated_ids,
    /// stop_reason, timings) instead of streaming text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    lower: super::LowerArgs,
    #[command(flatten)]
    backend: crate::load::BackendArgs,
}

/// Exactly one source of prompts.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct PromptArgs {
    /// The prompt text.
    #[arg(long, value_name = "TEXT")]
    prompt: Option<String>,
    /// Read the prompt from FILE (a final line break is dropped).
    #[arg(long, value_name = "FILE")]
    prompt_file: Option<PathBuf>,
    /// The prompt as comma-separated token ids (no tokenizer needed).
    #[arg(long, value_name = "IDS")]
    tokens: Option<String>,
    /// One prompt per line (blank lines skipped), run together as one batch.
    #[arg(long, value_name = "FILE")]
    prompts_file: Option<PathBuf>,
}

/// What the user asked to run, before tokenisation.
enum Prompts {
    /// Text prompts (one, or a batch from --prompts-file), with a label for messages.
    Text(Vec<(String, String)>),
    /// Token ids from --tokens.
    Ids(Vec<i32>),
}

impl Prompts {
    fn read(p: &PromptArgs) -> Result<Prompts> {
        let single = |text: String| Prompts::Text(vec![("the prompt".into(), text)]);
        if let Some(t) = &p.prompt {
            return Ok(single(t.clone()));
        }
        if let Some(f) = &p.prompt_file {
            let text = read_text(f)?;
            let text = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
            return Ok(single(text.to_string()));
        }
        if let Some(t) = &p.tokens {
            return Ok(Prompts::Ids(super::logits::parse_tokens(t)?));
        }
        let f = p.prompts_file.as_ref().expect("clap requires one prompt source");
        let text = read_text(f)?;
        let lines: Vec<(String, String)> = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| (format!("prompt on line {} of {}", i + 1, f.display()), l.to_string()))
            .collect();
        if lines.is_empty() {
            bail!("{}: no prompts (one prompt per line)", f.display());
        }
        Ok(Prompts::Text(lines))
    }
}

fn read_text(f: &Path) -> Result<String> {
    qgc_runtime::budget::read_to_string(f).map_err(|e| anyhow!("{}: {e}", f.display()))
}

pub fn run(a: &RunArgs) -> Result<()> {
    let sampling = a.sampling.params()?;
    let prompts = Prompts::read(&a.prompt)?;
    let opened = a.model.open(&a.lower.options())?;
    let tokenizer = opened.tokenizer(matches!(prompts, Prompts::Text(_)), "pass --tokens or a matching --tokenizer")?;
    if tokenizer.is_none() && !a.stop.is_empty() {
        bail!(
            "--stop needs a tokenizer and {} has none that fits; pass a matching --tokenizer",
            a.model.model.display()
        );
    }
    let ids = encode(a, &opened.model, &prompts, tokenizer.as_ref())?;
    let eos = if a.ignore_eos { Vec::new() } else { opened.eos_ids(tokenizer.as_ref()) };

    let t_load = Instant::now();
    let (m, loaded) = opened.load(a.sampling.seed, a.backend.backend, false)?;
    let weights_s = t_load.elapsed().as_secs_f64();
    let cpu = a.backend.compile(&m, loaded.raw())?;
    let load_s = t_load.elapsed().as_secs_f64();
    let t = load_s - weights_s;
    let how = match (&cpu, m.compiled.is_some()) {
        (crate::load::Compiled::Interp, _) => "interpreter".to_string(),
        (crate::load::Compiled::Cuda(c), _) => {
            format!("{}: compiled + kernels + upload {t:.2} s", c.device().describe())
        }
        (_, true) => format!("compiled program loaded, host code + binding {t:.2} s"),
        (_, false) => format!("compiled + host code + binding {t:.2} s"),
    };

    // The prompt must fit the positions; the continuation may run past them, as HF's generate
    // does (its default RoPE does not enforce max_position_embeddings), with a warning.
    let positions = m.spec.max_position_embeddings;
    let backend = crate::load::backend(&cpu, loaded.source());
    let mut session = Session::with_backend(m.program, backend, m.spec.vocab_size, usize::MAX, ids.len());
    let cfg = GenerateConfig {
        max_new_tokens: a.max_new_tokens,
        max_positions: usize::MAX,
        eos_ids: eos,
        stop: a.stop.clone(),
        sampling,
    };
    let think_inside: Vec<bool> = ids.iter().map(|p| prompt_opens_think(tokenizer.as_ref(), p)).collect();
    let mut out = std::io::stdout().lock();
    let (gens, timings) = if !a.json && ids.len() == 1 && tokenizer.is_some() {
        let mut text = TextOut::new(&mut out, a.hide_think, think_inside[0]);
        let r = generate(&mut session, &ids, tokenizer.as_ref(), &cfg, |_, piece| text.push(piece))
            .context("generating")?;
        text.finish()?;
        r
    } else {
        let (gens, timings) =
            generate(&mut session, &ids, tokenizer.as_ref(), &cfg, |_, _| {}).context("generating")?;
        print_results(&mut out, a, &gens, &think_inside, &timings, load_s)?;
        out.flush()?;
        (gens, timings)
    };
    if gens.iter().any(|g| g.prompt_ids.len() + g.generated_ids.len() - 1 > positions) {
        eprintln!(
            "warning: generation ran past the model's max_position_embeddings {positions}; computed anyway, as HF does"
        );
    }
    eprintln!("load {load_s:.2} s ({how}) | {timings}");
    Ok(())
}

/// Token ids of every prompt, checked: not empty, inside the vocabulary, within the positions.
fn encode(a: &RunArgs, m: &Model, prompts: &Prompts, tok: Option<&Tokenizer>) -> Result<Vec<Vec<i32>>> {
    let vocab = m.spec.vocab_size;
    let positions = m.spec.max_position_embeddings;
    let labelled: Vec<(String, Vec<i32>)> = match prompts {
        Prompts::Ids(ids) => {
            if let Some(&bad) = ids.iter().find(|&&t| t < 0 || t as usize >= vocab) {
                bail!("--tokens: token id {bad} is outside the vocabulary of {} (0..{vocab})", a.model.model.display());
            }
            vec![("the prompt".into(), ids.clone())]
        }
        Prompts::Text(texts) => {
            let tok = tok.expect("text prompts have a tokenizer");
            let mut v = Vec::with_capacity(texts.len());
            for (label, text) in texts {
                if text.is_empty() {
                    bail!("{label} is empty");
                }
                let text = if a.chat { chat_prompt(a.system.as_deref(), text) } else { text.clone() };
                let ids = tok.encode(&text)?.into_iter().map(|t| t as i32).collect::<Vec<_>>();
                if ids.is_empty() {
                    bail!("{label} is empty");
                }
                v.push((label.clone(), ids));
            }
            v
        }
    };
    for (label, ids) in &labelled {
        if ids.len() > positions {
            bail!("{label} has {} tokens but the model has {positions} positions", ids.len());
        }
    }
    Ok(labelled.into_iter().map(|(_, ids)| ids).collect())
}

/// The non-streamed output: JSON objects, or each prompt's text (or ids) in order.
fn print_results(
    out: &mut impl Write,
    a: &RunArgs,
    gens: &[Generation],
    think_inside: &[bool],
    timings: &Timings,
    load_s: f64,
) -> Result<()> {
    let shown = |g: &Generation, inside: bool| {
        g.text.as_ref().map(|t| match a.hide_think {
            true => {
                let mut f = ThinkFilter::new(inside);
                f.push(t) + &f.finish()
            }
            false => t.clone(),
        })
    };
    for (i, (g, &inside)) in gens.iter().zip(think_inside).enumerate() {
        let text = shown(g, inside);
        if a.json {
            let j = serde_json::json!({
                "text": text,
                "prompt_ids": g.prompt_ids,
                "generated_ids": g.generated_ids,
                "stop_reason": g.stop_reason.as_str(),
                "timings": {
                    "load_s": load_s,
                    "prompt_tokens": timings.prompt_tokens,
                    "prefill_s": timings.prefill_s,
                    "prefill_tok_s": timings.prefill_tok_s(),
                    "ttft_s": timings.ttft_s,
                    "generated_tokens": timings.generated_tokens,
                    "decode_s": timings.decode_s,
                    "decode_tok_s": timings.decode_tok_s(),
                },
            });
            writeln!(out, "{j}")?;
            continue;
        }
        if gens.len() > 1 {
            writeln!(out, "--- prompt {} ---", i + 1)?;
        }
        match text {
            Some(t) => writeln!(out, "{t}")?,
            None => {
                let ids: Vec<String> = g.generated_ids.iter().map(i32::to_string).collect();
                writeln!(out, "{}", ids.join(","))?;
            }
        }
    }
    Ok(())
}
