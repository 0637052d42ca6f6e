//! `qgc run`: generate text from a prompt, streaming it as it arrives.
//!
//! Everything a user can get wrong (prompt, tokenizer, weights, flag values) is checked before
//! any weight is converted; then the weights load (with a progress bar on a terminal), the
//! prompts run as one batch through [`qgc_runtime::generate::generate`], and a llama.cpp-style
//! timing line goes to stderr.

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use qgc_ir::interp::{MapWeights, WeightSource};
use qgc_ir::ModelSpec;
use qgc_runtime::generate::{generate, GenerateConfig, Generation, ThinkFilter, Timings};
use qgc_runtime::sampling::SamplingParams;
use qgc_runtime::tokenizer::Tokenizer;
use qgc_runtime::weights::{self, Checkpoint, Weights};
use qgc_runtime::{open_model, Model, ModelKind, Session};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args)]
pub struct RunArgs {
    /// A spec JSON, an HF model directory, an HF config.json, or an artifact.
    model: PathBuf,
    /// HF checkpoint directory (default: MODEL when it is one).
    #[arg(long, value_name = "DIR")]
    weights: Option<PathBuf>,
    /// Draw random weights in Rust instead of reading a checkpoint (seeded by --seed).
    #[arg(long, conflicts_with = "weights")]
    random_weights: bool,
    /// tokenizer.json to use (default: MODEL's, else the shipped Qwen tokenizer when it fits).
    #[arg(long, value_name = "FILE")]
    tokenizer: Option<PathBuf>,
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
    /// Temperature; 0 is greedy (plain argmax, no other sampler applies).
    #[arg(long = "temp", value_name = "T", default_value_t = SamplingParams::default().temperature,
          value_parser = non_negative, allow_negative_numbers = true)]
    temperature: f32,
    /// Keep the K most likely tokens (0: off).
    #[arg(long, value_name = "K", default_value_t = SamplingParams::default().top_k, allow_negative_numbers = true)]
    top_k: usize,
    /// Keep the smallest set of most likely tokens with probability at least P (1: off).
    #[arg(long, value_name = "P", default_value_t = SamplingParams::default().top_p,
          value_parser = in_open_closed_unit, allow_negative_numbers = true)]
    top_p: f32,
    /// Drop tokens less likely than P times the most likely one (0: off).
    #[arg(long, value_name = "P", default_value_t = SamplingParams::default().min_p,
          value_parser = in_closed_unit, allow_negative_numbers = true)]
    min_p: f32,
    /// Repetition penalty over prompt and generated ids, as HF applies it (1: off).
    #[arg(long, alias = "repeat-penalty", value_name = "X", default_value_t = SamplingParams::default().repetition_penalty,
          value_parser = positive, allow_negative_numbers = true)]
    repetition_penalty: f32,
    /// Seed of the sampler and of --random-weights.
    #[arg(long, value_name = "N", default_value_t = 0)]
    seed: u64,
    /// Print one JSON object per prompt at the end (keys text, prompt_ids, generated_ids,
    /// stop_reason, timings) instead of streaming text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    lower: super::LowerArgs,
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

fn number(s: &str) -> Result<f32, String> {
    s.parse::<f32>().ok().filter(|v| v.is_finite()).ok_or_else(|| "not a number".to_string())
}

fn non_negative(s: &str) -> Result<f32, String> {
    number(s).and_then(|v| if v >= 0.0 { Ok(v) } else { Err("must be >= 0".into()) })
}

fn positive(s: &str) -> Result<f32, String> {
    number(s).and_then(|v| if v > 0.0 { Ok(v) } else { Err("must be > 0".into()) })
}

fn in_open_closed_unit(s: &str) -> Result<f32, String> {
    number(s).and_then(|v| if v > 0.0 && v <= 1.0 { Ok(v) } else { Err("must be in (0, 1]".into()) })
}

fn in_closed_unit(s: &str) -> Result<f32, String> {
    number(s).and_then(|v| if (0.0..=1.0).contains(&v) { Ok(v) } else { Err("must be in [0, 1]".into()) })
}

fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        Ok(_) => Err("must be at least 1".into()),
        Err(_) => Err("not a whole number".into()),
    }
}

/// Vocabulary size of the shipped Qwen tokenizer (151,643 BPE ranks and 26 special tokens).
const QWEN_VOCAB: usize = 151_669;

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
    std::fs::read_to_string(f).map_err(|e| anyhow!("{}: {e}", f.display()))
}

/// Where the weights come from, checked against the spec from headers alone.
enum WeightsPlan {
    Random,
    Checkpoint(Checkpoint),
}

/// Loaded weights.
enum Loaded {
    Random(MapWeights),
    Checkpoint(Weights),
}

impl Loaded {
    fn source(&self) -> &dyn WeightSource {
        match self {
            Loaded::Random(w) => w,
            Loaded::Checkpoint(w) => w,
        }
    }
}

pub fn run(a: &RunArgs) -> Result<()> {
    let sampling = SamplingParams {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        min_p: a.min_p,
        repetition_penalty: a.repetition_penalty,
        seed: a.seed,
    };
    sampling.validate().map_err(|e| anyhow!(e))?;
    let prompts = Prompts::read(&a.prompt)?;
    let m = open_model(&a.model, &a.lower.options())?;
    let (plan, weights_dir) = plan_weights(a, &m)?;
    let config_dir = (m.kind == ModelKind::HfConfig).then(|| a.model.parent().unwrap_or(Path::new("")).to_path_buf());
    let hf_dirs: Vec<&Path> = m.hf_dir.iter().chain(&config_dir).chain(&weights_dir).map(PathBuf::as_path).collect();
    let tokenizer = resolve_tokenizer(a, &m.spec, &hf_dirs, matches!(prompts, Prompts::Text(_)))?;
    if tokenizer.is_none() && !a.stop.is_empty() {
        bail!("--stop needs a tokenizer and {} has none that fits; pass a matching --tokenizer", a.model.display());
    }
    let ids = encode(a, &m, &prompts, tokenizer.as_ref())?;
    let eos = if a.ignore_eos { Vec::new() } else { eos_ids(&hf_dirs, tokenizer.as_ref(), m.spec.vocab_size) };

    let t_load = Instant::now();
    let loaded = load_weights(plan, &m.spec, a.seed)?;
    let load_s = t_load.elapsed().as_secs_f64();

    // The prompt must fit the positions; the continuation may run past them, as HF's generate
    // does (its default RoPE does not enforce max_position_embeddings), with a warning.
    let positions = m.spec.max_position_embeddings;
    let mut session = Session::new(m.program, loaded.source(), m.spec.vocab_size, usize::MAX, ids.len());
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
        stream(&mut out, &mut session, &ids, tokenizer.as_ref(), &cfg, a.hide_think, think_inside[0])?
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
    eprintln!("load {load_s:.2} s | {timings}");
    Ok(())
}

/// Generates one sequence, writing its text to `out` as it arrives (through the think filter
/// with `hide_think`) and a final line break.
fn stream(
    out: &mut impl Write,
    session: &mut Session,
    ids: &[Vec<i32>],
    tokenizer: Option<&Tokenizer>,
    cfg: &GenerateConfig,
    hide_think: bool,
    think_inside: bool,
) -> Result<(Vec<Generation>, Timings)> {
    let mut filter = hide_think.then(|| ThinkFilter::new(think_inside));
    let mut write_err: Option<std::io::Error> = None;
    let (gens, timings) = generate(session, ids, tokenizer, cfg, |_, piece| {
        if write_err.is_some() {
            return;
        }
        let shown = match filter.as_mut() {
            Some(f) => f.push(piece),
            None => piece.to_string(),
        };
        if let Err(e) = out.write_all(shown.as_bytes()).and_then(|_| out.flush()) {
            write_err = Some(e);
        }
    })
    .context("generating")?;
    if let Some(e) = write_err {
        return Err(e).context("writing to stdout");
    }
    let rest = filter.as_mut().map(ThinkFilter::finish).unwrap_or_default();
    writeln!(out, "{rest}")?;
    out.flush()?;
    Ok((gens, timings))
}

/// Decides where weights come from and checks a checkpoint against the spec (headers only).
fn plan_weights(a: &RunArgs, m: &Model) -> Result<(WeightsPlan, Option<PathBuf>)> {
    if a.random_weights {
        return Ok((WeightsPlan::Random, None));
    }
    let dir = a.weights.clone().or(m.hf_dir.clone()).ok_or_else(|| {
        anyhow!(
            "{}: no weights: pass --weights DIR (an HF checkpoint directory) or --random-weights",
            a.model.display()
        )
    })?;
    let ckpt = Checkpoint::open(&dir)?;
    weights::check(&m.spec, &ckpt)?;
    Ok((WeightsPlan::Checkpoint(ckpt), a.weights.clone()))
}

/// --tokenizer, else the first model/weights directory's tokenizer.json, else the shipped Qwen
/// tokenizer. One larger than the model's vocabulary is an error when it was asked for or the
/// prompt is text (`need_text`); otherwise the run goes on without one (`text` is then null).
fn resolve_tokenizer(a: &RunArgs, spec: &ModelSpec, dirs: &[&Path], need_text: bool) -> Result<Option<Tokenizer>> {
    let vocab = spec.vocab_size;
    let too_big = |n: usize| {
        anyhow!(
            "tokenizer has {n} tokens but the model's vocabulary is {vocab}; pass --tokens or a matching --tokenizer"
        )
    };
    if let Some(p) = &a.tokenizer {
        let t = Tokenizer::from_file(p)?;
        if t.vocab_size() > vocab {
            return Err(too_big(t.vocab_size()));
        }
        return Ok(Some(t));
    }
    for d in dirs {
        if let Some(t) = Tokenizer::from_model_dir(d)? {
            return match t.vocab_size() > vocab {
                true if need_text => Err(too_big(t.vocab_size())),
                true => Ok(None),
                false => Ok(Some(t)),
            };
        }
    }
    if vocab < QWEN_VOCAB {
        return if need_text { Err(too_big(QWEN_VOCAB)) } else { Ok(None) };
    }
    Ok(Some(Tokenizer::qwen()))
}

/// The Qwen chat template (Instruct): an optional system turn, the user turn, the assistant's
/// opening.
pub fn chat_prompt(system: Option<&str>, user: &str) -> String {
    let mut s = String::new();
    if let Some(sys) = system {
        s += &format!("<|im_start|>system\n{sys}<|im_end|>\n");
    }
    s + &format!("<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")
}

/// Token ids of every prompt, checked: not empty, inside the vocabulary, within the positions.
fn encode(a: &RunArgs, m: &Model, prompts: &Prompts, tok: Option<&Tokenizer>) -> Result<Vec<Vec<i32>>> {
    let vocab = m.spec.vocab_size;
    let positions = m.spec.max_position_embeddings;
    let labelled: Vec<(String, Vec<i32>)> = match prompts {
        Prompts::Ids(ids) => {
            if let Some(&bad) = ids.iter().find(|&&t| t < 0 || t as usize >= vocab) {
                bail!("--tokens: token id {bad} is outside the vocabulary of {} (0..{vocab})", a.model.display());
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

/// End-of-sequence ids: an HF directory's generation_config.json (what HF `generate` uses), else
/// its config.json; with neither, the tokenizer's `<|im_end|>` and `<|endoftext|>`.
fn eos_ids(hf_dirs: &[&Path], tok: Option<&Tokenizer>, vocab: usize) -> Vec<i32> {
    for d in hf_dirs {
        for file in ["generation_config.json", "config.json"] {
            let Ok(text) = std::fs::read_to_string(d.join(file)) else { continue };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
            if file == "config.json" && v.get("eos_token_id").is_none() {
                continue;
            }
            let ids = match v.get("eos_token_id") {
                Some(serde_json::Value::Array(a)) => a.iter().filter_map(|x| x.as_i64()).collect(),
                Some(x) => x.as_i64().into_iter().collect(),
                None => Vec::new(),
            };
            return ids.into_iter().filter(|&i| i >= 0 && (i as usize) < vocab).map(|i| i as i32).collect();
        }
    }
    let Some(tok) = tok else { return Vec::new() };
    ["<|im_end|>", "<|endoftext|>"].iter().filter_map(|s| tok.token_id(s)).map(|i| i as i32).collect()
}

/// Whether the prompt ends inside an open `<think>` (a thinking template's assistant turn).
fn prompt_opens_think(tok: Option<&Tokenizer>, ids: &[i32]) -> bool {
    let Some(tok) = tok else { return false };
    let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
    tok.decode(&ids).map(|t| t.trim_end().ends_with("<think>")).unwrap_or(false)
}

/// Converts (or draws) every weight the entry points use, with a progress bar on a terminal.
fn load_weights(plan: WeightsPlan, spec: &ModelSpec, seed: u64) -> Result<Loaded> {
    let tty = std::io::stderr().is_terminal();
    match plan {
        WeightsPlan::Random => {
            let pb = if tty { ProgressBar::new_spinner() } else { ProgressBar::hidden() };
            pb.set_message(format!("drawing random weights (seed {seed})"));
            pb.enable_steady_tick(std::time::Duration::from_millis(100));
            let w = MapWeights::random(spec, seed);
            pb.finish_and_clear();
            Ok(Loaded::Random(w))
        }
        WeightsPlan::Checkpoint(ckpt) => {
            let decls: Vec<_> = spec.tensors().into_iter().filter(|d| !d.mtp).collect();
            let total: u64 = decls.iter().map(|d| d.numel() as u64).sum();
            let pb = if tty { ProgressBar::new(total) } else { ProgressBar::hidden() };
            pb.set_style(
                ProgressStyle::with_template("loading weights [{bar:30}] {percent:>3}% {wide_msg}")
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            let w = Weights::new(ckpt);
            for d in &decls {
                pb.set_message(d.name.clone());
                w.get(&d.name, &d.shape).context("loading weights")?;
                pb.inc(d.numel() as u64);
            }
            pb.finish_and_clear();
            Ok(Loaded::Checkpoint(w))
        }
    }
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
