//! What the generating commands (`qgc run`, `qgc chat`) share: the model, weights, tokenizer and
//! sampling flags, checking them before any weight is converted, loading the weights (with a
//! progress bar on a terminal), end-of-sequence ids, the Qwen chat template, and streaming text
//! to stdout through the `<think>` filter.

use anyhow::{anyhow, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use qgc_ir::interp::{MapWeights, WeightSource};
use qgc_ir::{LowerOptions, ModelSpec};
use qgc_runtime::budget::{self, Reservation};
use qgc_runtime::compiled::{CpuModel, CpuOptions};
use qgc_runtime::cuda::gpu::GpuDevice;
use qgc_runtime::cuda::model::CudaModel;
use qgc_runtime::cuda::ptx::PtxDevice;
use qgc_runtime::cuda::Device;
use qgc_runtime::generate::ThinkFilter;
use qgc_runtime::sampling::SamplingParams;
use qgc_runtime::session::Backend;
use qgc_runtime::tokenizer::Tokenizer;
use qgc_runtime::weights::{self, Checkpoint, Weights};
use qgc_runtime::weights::{Bf16Weights, RawWeights};
use qgc_runtime::{open_model, Model, ModelKind};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// MODEL and where its weights and tokenizer come from.
#[derive(clap::Args)]
pub struct ModelArgs {
    /// A spec JSON, an HF model directory, an HF config.json, or an artifact.
    pub model: PathBuf,
    /// HF checkpoint directory (default: MODEL when it is one).
    #[arg(long, value_name = "DIR")]
    weights: Option<PathBuf>,
    /// Draw random weights in Rust instead of reading a checkpoint (seeded by --seed).
    #[arg(long, conflicts_with = "weights")]
    random_weights: bool,
    /// tokenizer.json to use (default: MODEL's, else the shipped Qwen tokenizer when it fits).
    #[arg(long, value_name = "FILE")]
    tokenizer: Option<PathBuf>,
}

/// Which executor runs the entry points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// The compiled CPU backend: fused kernels, Cranelift host code, bf16 weights kept bf16.
    Cpu,
    /// The reference interpreter (plain loops, f64 accumulation; slow, obviously right).
    Interp,
    /// The compiled program on a CUDA device (`--device gpu`, or `--device ptx`: the PTX
    /// interpreter, any machine).
    Cuda,
}

/// `--device` for `--backend cuda`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceKind {
    /// GPU 0 through the CUDA driver.
    Gpu,
    /// The PTX interpreter: the same kernels and launches executed on the CPU, with memcheck and
    /// racecheck (slow; for checking on machines without a GPU).
    Ptx,
}

/// `--backend` (and `--device`, `--prefill-order`).
#[derive(clap::Args, Clone, Copy)]
pub struct BackendArgs {
    /// What runs the model: `cpu` (compiled), `interp` (the reference interpreter) or `cuda`.
    #[arg(long, value_enum, default_value_t = BackendKind::Cpu)]
    pub backend: BackendKind,
    /// The CUDA device for `--backend cuda`: `gpu` or `ptx` (the PTX interpreter).
    #[arg(long, value_enum, default_value_t = DeviceKind::Gpu)]
    pub device: DeviceKind,
    /// How prompt tokens are summed: `invariant` (in decode's order, so a prompt gives the same
    /// logits bit for bit prefilled at once, in chunks, after a cached prefix, or decoded token
    /// by token) or `fastest` (a GEMM — the panel GEMM on the CPU, cuBLAS for f32 weights on
    /// CUDA — and the chunked delta rule for long prompts; equal to f32 rounding).
    #[arg(long, value_enum, default_value_t = PrefillOrder::Invariant)]
    pub prefill_order: PrefillOrder,
}

/// `--prefill-order`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PrefillOrder {
    /// Every prompt token summed as decode sums it.
    Invariant,
    /// The fastest kernels for many tokens (GEMM, chunked delta rule).
    Fastest,
}

impl PrefillOrder {
    fn row_order(self) -> qgc_runtime::cpu::RowOrder {
        match self {
            PrefillOrder::Invariant => qgc_runtime::cpu::RowOrder::Invariant,
            PrefillOrder::Fastest => qgc_runtime::cpu::RowOrder::Fastest,
        }
    }
}

/// What `--backend` compiled: nothing (the interpreter), a CPU model, or a CUDA model.
pub enum Compiled<'w> {
    /// The reference interpreter runs the lowered program.
    Interp,
    /// The compiled CPU backend.
    Cpu(CpuModel<'w>),
    /// The compiled program on a CUDA device.
    Cuda(CudaModel<'w>),
}

impl Compiled<'_> {
    /// Bytes of weights one decode step reads (compiled backends).
    pub fn decode_bytes(&self) -> Option<u64> {
        match self {
            Compiled::Interp => None,
            Compiled::Cpu(c) => Some(c.decode_bytes()),
            Compiled::Cuda(c) => Some(c.cpu().decode_bytes()),
        }
    }
}

impl BackendArgs {
    /// The compiled model for `--backend cpu` (weights bound, host code generated), or `None`
    /// for the interpreter: an artifact's compiled program is loaded as stored (no pass runs),
    /// anything else is compiled first. A spinner runs on a terminal.
    pub fn compile<'w>(&self, model: &Model, weights: &'w dyn RawWeights) -> Result<Compiled<'w>> {
        if self.backend == BackendKind::Interp {
            return Ok(Compiled::Interp);
        }
        // The device first: no driver or no GPU is named before any compile work.
        let dev: Option<Arc<dyn Device>> = match (self.backend, self.device) {
            (BackendKind::Cuda, DeviceKind::Gpu) => Some(Arc::new(GpuDevice::open(0)?)),
            (BackendKind::Cuda, DeviceKind::Ptx) => {
                let opts = qgc_ptx::Options::default();
                Some(Arc::new(PtxDevice::new(90, budget::global().left() as usize, opts)))
            }
            _ => None,
        };
        let pb = if std::io::stderr().is_terminal() { ProgressBar::new_spinner() } else { ProgressBar::hidden() };
        pb.enable_steady_tick(std::time::Duration::from_millis(100));
        let opts = CpuOptions { prefill: self.prefill_order.row_order(), ..CpuOptions::default() };
        let m = match &model.compiled {
            Some(c) => {
                pb.set_message("generating host code and binding weights");
                CpuModel::load(c, weights, opts).context("loading the compiled program")
            }
            None => {
                pb.set_message("compiling for the CPU and binding weights");
                CpuModel::compile(&model.program, weights, opts).context("compiling for the CPU backend")
            }
        };
        let m = match (m, dev) {
            (Ok(cpu), Some(dev)) => {
                // An artifact's embedded PTX when it has some (no NVRTC call), else NVRTC.
                let what = if model.cuda.is_some() { "loading the artifact's kernels" } else { "compiling kernels" };
                pb.set_message(format!("{what} and uploading weights to {}", dev.describe()));
                let context = match &model.cuda {
                    Some(k) => {
                        format!("loading the program and its embedded sm_{} PTX onto {}", k.arch, dev.describe())
                    }
                    None => "loading the program onto the CUDA device".to_string(),
                };
                CudaModel::with_kernels(cpu, dev, model.cuda.as_ref()).map(Compiled::Cuda).context(context)
            }
            (m, _) => m.map(Compiled::Cpu),
        };
        pb.finish_and_clear();
        m
    }
}

/// The session backend: the compiled model when there is one, else the interpreter over `w`.
pub fn backend<'w>(c: &'w Compiled<'w>, w: &'w dyn WeightSource) -> Backend<'w> {
    match c {
        Compiled::Cpu(m) => Backend::Cpu(m),
        Compiled::Cuda(m) => Backend::Cuda(m),
        Compiled::Interp => Backend::Interp(w),
    }
}

/// The sampling flags.
#[derive(clap::Args)]
pub struct SamplingArgs {
    /// Temperature; 0 is greedy (the argmax after the penalties; top-k/p and min-p do not apply).
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
    /// Subtracted once from the logit of every id generated so far (OpenAI's presence penalty,
    /// -2..2; 0: off).
    #[arg(long, value_name = "X", default_value_t = 0.0, value_parser = penalty, allow_negative_numbers = true)]
    presence_penalty: f32,
    /// Subtracted from an id's logit once per time it was generated (OpenAI's frequency
    /// penalty, -2..2; 0: off).
    #[arg(long, value_name = "X", default_value_t = 0.0, value_parser = penalty, allow_negative_numbers = true)]
    frequency_penalty: f32,
    /// Seed of the sampler and of --random-weights.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,
}

impl SamplingArgs {
    /// The checked parameters.
    pub fn params(&self) -> Result<SamplingParams> {
        let p = SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repetition_penalty: self.repetition_penalty,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            seed: self.seed,
        };
        p.validate().map_err(|e| anyhow!(e))?;
        Ok(p)
    }
}

fn penalty(s: &str) -> Result<f32, String> {
    number(s).and_then(|v| if (-2.0..=2.0).contains(&v) { Ok(v) } else { Err("must be in [-2, 2]".into()) })
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

/// Parser of `-n`: a whole number, at least 1.
pub fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        Ok(_) => Err("must be at least 1".into()),
        Err(_) => Err("not a whole number".into()),
    }
}

/// Vocabulary size of the shipped Qwen tokenizer (151,643 BPE ranks and 26 special tokens).
const QWEN_VOCAB: usize = 151_669;

/// Where the weights come from, checked against the spec from headers alone.
enum WeightsPlan {
    Random,
    Checkpoint(Checkpoint),
}

/// Loaded weights, and the memory they hold in the budget.
pub struct Loaded {
    kind: Kind,
    _held: Reservation,
}

enum Kind {
    Random(MapWeights),
    RandomBf16(Bf16Weights),
    Checkpoint(Weights),
}

impl Loaded {
    /// The weights, for a session.
    pub fn source(&self) -> &dyn WeightSource {
        self.raw().source()
    }

    /// Whether they come from a checkpoint (not drawn).
    pub fn is_checkpoint(&self) -> bool {
        matches!(self.kind, Kind::Checkpoint(_))
    }

    /// The weights in their stored dtype, for the compiled backend.
    pub fn raw(&self) -> &dyn RawWeights {
        match &self.kind {
            Kind::Random(w) => w,
            Kind::RandomBf16(w) => w,
            Kind::Checkpoint(w) => w,
        }
    }
}

/// An opened MODEL whose weights are checked (not yet loaded).
pub struct Opened {
    /// The model.
    pub model: Model,
    plan: WeightsPlan,
    /// HF directories that may hold a tokenizer and generation settings, most specific first.
    hf_dirs: Vec<PathBuf>,
    tokenizer_file: Option<PathBuf>,
}

impl ModelArgs {
    /// Whether --random-weights was given.
    pub fn random_weights(&self) -> bool {
        self.random_weights
    }

    /// Opens MODEL and checks where its weights come from (a checkpoint against the spec, from
    /// its headers alone).
    pub fn open(&self, options: &LowerOptions) -> Result<Opened> {
        let m = open_model(&self.model, options)?;
        let (plan, weights_dir) = if self.random_weights {
            (WeightsPlan::Random, None)
        } else {
            let dir = self.weights.clone().or(m.hf_dir.clone()).ok_or_else(|| {
                anyhow!(
                    "{}: no weights: pass --weights DIR (an HF checkpoint directory) or --random-weights",
                    self.model.display()
                )
            })?;
            let ckpt = Checkpoint::open(&dir)?;
            if m.kind == ModelKind::Artifact {
                check_artifact_config(&self.model, &m.spec, &dir)?;
            }
            weights::check(&m.spec, &ckpt)?;
            (WeightsPlan::Checkpoint(ckpt), self.weights.clone())
        };
        let config_dir =
            (m.kind == ModelKind::HfConfig).then(|| self.model.parent().unwrap_or(Path::new("")).to_path_buf());
        let hf_dirs = m.hf_dir.iter().chain(&config_dir).chain(&weights_dir).cloned().collect();
        Ok(Opened { model: m, plan, hf_dirs, tokenizer_file: self.tokenizer.clone() })
    }
}

impl Opened {
    /// HF directories that may hold a tokenizer, a chat template and generation settings, most
    /// specific first.
    pub fn hf_dirs(&self) -> &[PathBuf] {
        &self.hf_dirs
    }

    /// --tokenizer, else the first model/weights directory's tokenizer.json, else the shipped
    /// Qwen tokenizer. One larger than the model's vocabulary is an error (ending in `hint`, what
    /// to pass instead) when it was asked for or text must be encoded (`need_text`); otherwise
    /// there is none.
    pub fn tokenizer(&self, need_text: bool, hint: &str) -> Result<Option<Tokenizer>> {
        let vocab = self.model.spec.vocab_size;
        let too_big = |n: usize| anyhow!("tokenizer has {n} tokens but the model's vocabulary is {vocab}; {hint}");
        if let Some(p) = &self.tokenizer_file {
            let t = Tokenizer::from_file(p)?;
            if t.vocab_size() > vocab {
                return Err(too_big(t.vocab_size()));
            }
            return Ok(Some(t));
        }
        for d in &self.hf_dirs {
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

    /// End-of-sequence ids: an HF directory's generation_config.json (what HF `generate` uses),
    /// else its config.json; with neither, the tokenizer's `<|im_end|>` and `<|endoftext|>`.
    pub fn eos_ids(&self, tok: Option<&Tokenizer>) -> Vec<i32> {
        let vocab = self.model.spec.vocab_size;
        for d in &self.hf_dirs {
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

    /// Loads the weights, with a progress bar on a terminal: random ones are drawn (seeded by
    /// `seed`; stored as bf16 when `bf16`), a checkpoint is converted to f32 up front for the
    /// interpreter and left mapped for the compiled backend (which binds it in its stored dtype).
    /// Returns the model and its weights.
    pub fn load(self, seed: u64, backend: BackendKind, bf16: bool) -> Result<(Model, Loaded)> {
        let spec = &self.model.spec;
        let tty = std::io::stderr().is_terminal();
        let loaded = match self.plan {
            WeightsPlan::Random => {
                let (elem, dtype) = if bf16 { (2, "bf16") } else { (4, "f32") };
                let what = format!("random {dtype} weights of {}", spec.name);
                let held = budget::global().reserve(what, qgc_runtime::model::weight_bytes(spec, elem, true))?;
                let pb = if tty { ProgressBar::new_spinner() } else { ProgressBar::hidden() };
                pb.set_message(format!("drawing random weights (seed {seed})"));
                pb.enable_steady_tick(std::time::Duration::from_millis(100));
                let kind = if bf16 {
                    Kind::RandomBf16(Bf16Weights::random(spec, seed))
                } else {
                    Kind::Random(MapWeights::random(spec, seed))
                };
                pb.finish_and_clear();
                Loaded { kind, _held: held }
            }
            WeightsPlan::Checkpoint(ckpt) if backend != BackendKind::Interp => {
                Loaded { kind: Kind::Checkpoint(Weights::new(ckpt)), _held: Reservation::none() }
            }
            WeightsPlan::Checkpoint(ckpt) => {
                let what = format!("{}'s weights converted to f32 for the interpreter", spec.name);
                let held = budget::global().reserve(what, qgc_runtime::model::weight_bytes(spec, 4, false))?;
                Loaded { kind: Kind::Checkpoint(load_checkpoint(ckpt, spec, tty)?), _held: held }
            }
        };
        Ok((self.model, loaded))
    }
}

fn load_checkpoint(ckpt: Checkpoint, spec: &ModelSpec, tty: bool) -> Result<Weights> {
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
    Ok(w)
}

/// An artifact run with a checkpoint whose `config.json` describes another model: refused
/// before any weight is read, naming the first differences.
pub fn check_artifact_config(artifact: &Path, spec: &ModelSpec, dir: &Path) -> Result<()> {
    let config = dir.join("config.json");
    if !config.is_file() {
        return Ok(());
    }
    let theirs = open_model(dir, &LowerOptions::default())
        .with_context(|| format!("reading {} to check it against {}", config.display(), artifact.display()))?;
    let diffs = qgc_codegen::artifact::spec_differences(spec, &theirs.spec, 3);
    if diffs.is_empty() {
        return Ok(());
    }
    Err(anyhow!(
        "{}: compiled for another model than {} describes ({}); recompile it from that config",
        artifact.display(),
        config.display(),
        diffs.join("; ")
    ))
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

/// Whether the prompt ends inside an open `<think>` (a thinking template's assistant turn).
pub fn prompt_opens_think(tok: Option<&Tokenizer>, ids: &[i32]) -> bool {
    let Some(tok) = tok else { return false };
    let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
    tok.decode(&ids).map(|t| t.trim_end().ends_with("<think>")).unwrap_or(false)
}

/// Streamed text on its way to a writer: pieces go through the think filter (with
/// `hide_think`) and are flushed as they come; the first write error stops the writing and is
/// returned by [`TextOut::finish`].
pub struct TextOut<W: Write> {
    out: W,
    filter: Option<ThinkFilter>,
    error: Option<std::io::Error>,
}

impl<W: Write> TextOut<W> {
    /// Text for `out`; `think_inside` when the prompt opened a think block.
    pub fn new(out: W, hide_think: bool, think_inside: bool) -> Self {
        TextOut { out, filter: hide_think.then(|| ThinkFilter::new(think_inside)), error: None }
    }

    /// Writes a piece of generated text.
    pub fn push(&mut self, piece: &str) {
        if self.error.is_some() {
            return;
        }
        let shown = match self.filter.as_mut() {
            Some(f) => f.push(piece),
            None => piece.to_string(),
        };
        if let Err(e) = self.out.write_all(shown.as_bytes()).and_then(|_| self.out.flush()) {
            self.error = Some(e);
        }
    }

    /// Writes what the filter held back and a line break; the first write error, if any.
    pub fn finish(mut self) -> Result<()> {
        if let Some(e) = self.error {
            return Err(e).context("writing to stdout");
        }
        let rest = self.filter.as_mut().map(ThinkFilter::finish).unwrap_or_default();
        writeln!(self.out, "{rest}").and_then(|_| self.out.flush()).context("writing to stdout")
    }
}
