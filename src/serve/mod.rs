//! `qgc serve`: an OpenAI-compatible HTTP server over one model, with continuous batching and a
//! prefix cache that works for hybrid (recurrent-state) models.
//!
//! - [`api`]: request parsing and OpenAI error bodies;
//! - [`http`]: axum routes, prompts (chat template → tokens), responses and SSE streaming;
//! - [`engine`]: the thread that owns the model and runs the batch;
//! - [`prefix`]: snapshots of sequence state for prompts that share a beginning;
//! - [`metrics`]: `/metrics` under vLLM's names, and the per-request log line.

pub mod api;
pub mod engine;
pub mod http;
pub mod metrics;
pub mod prefix;

use crate::load::{BackendArgs, ModelArgs};
use anyhow::{anyhow, bail, Context, Result};
use api::Defaults;
use engine::{Engine, Limits, ModelInfo};
use qgc_runtime::budget::{self, human};
use qgc_runtime::sampling::SamplingParams;
use qgc_runtime::template::ChatTemplate;
use qgc_runtime::Session;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port; the one chosen is printed).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// The model's name in /v1/models and requests (default: the spec's or model dir's name).
    #[arg(long, value_name = "NAME")]
    served_model_name: Option<String>,
    /// Most sequences decoding together (each choice of a request is one).
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = crate::load::at_least_one)]
    max_num_seqs: usize,
    /// Most tokens one step computes: one per decoding sequence plus a prefill chunk.
    #[arg(long, value_name = "N", default_value_t = 512, value_parser = crate::load::at_least_one)]
    max_num_batched_tokens: usize,
    /// Longest sequence, prompt + completion (default: the model's positions).
    #[arg(long, value_name = "N", value_parser = crate::load::at_least_one)]
    max_model_len: Option<usize>,
    /// Memory for sequence state and the prefix cache (default: 90% of what is left after the
    /// weights).
    #[arg(long, value_name = "SIZE", value_parser = budget::parse_size)]
    memory_budget: Option<u64>,
    /// Bytes of prefix-cache snapshots (0: no prefix cache; default: a quarter of the memory
    /// budget, at most 4 GiB).
    #[arg(long, value_name = "SIZE", value_parser = budget::parse_size)]
    prefix_cache_bytes: Option<u64>,
    /// Also snapshot long prompts every N tokens (0: only at prompt and reply ends and forks).
    #[arg(long, value_name = "N", default_value_t = 512)]
    prefix_cache_interval: usize,
    /// Storage of --random-weights.
    #[arg(long, value_enum, default_value_t = crate::bench::WeightsDtype::F32)]
    weights_dtype: crate::bench::WeightsDtype,
    /// Seed of --random-weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    lower: super::LowerArgs,
    #[command(flatten)]
    backend: BackendArgs,
}

/// Sampling defaults from an HF directory's generation_config.json; OpenAI's neutral ones
/// (temperature 1, nothing cut) without one.
fn defaults(dirs: &[PathBuf]) -> Defaults {
    let mut s =
        SamplingParams { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0, seed: 0, ..SamplingParams::default() };
    for d in dirs {
        let Ok(text) = std::fs::read_to_string(d.join("generation_config.json")) else { continue };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
        let f = |k: &str| v.get(k).and_then(|x| x.as_f64()).filter(|x| x.is_finite()).map(|x| x as f32);
        if v.get("do_sample").and_then(|x| x.as_bool()) == Some(false) {
            s.temperature = 0.0;
        } else if let Some(t) = f("temperature").filter(|t| (0.0..=2.0).contains(t)) {
            s.temperature = t;
        }
        if let Some(p) = f("top_p").filter(|p| *p > 0.0 && *p <= 1.0) {
            s.top_p = p;
        }
        if let Some(k) = v.get("top_k").and_then(|x| x.as_u64()) {
            s.top_k = k as usize;
        }
        if let Some(p) = f("min_p").filter(|p| (0.0..=1.0).contains(p)) {
            s.min_p = p;
        }
        if let Some(p) = f("repetition_penalty").filter(|p| *p > 0.0) {
            s.repetition_penalty = p;
        }
        break;
    }
    Defaults { sampling: s }
}

/// The model's name: --served-model-name, else the model dir's or spec file's name.
fn model_name(a: &ServeArgs, spec_name: &str) -> String {
    if let Some(n) = &a.served_model_name {
        return n.clone();
    }
    let p = &a.model.model;
    let stem = if p.is_dir() { p.file_name() } else { p.file_stem() };
    match stem.and_then(|s| s.to_str()) {
        Some("config") | None => spec_name.to_string(),
        Some(s) => s.to_string(),
    }
}

pub fn run(a: &ServeArgs) -> Result<()> {
    let opened = a.model.open(&a.lower.options())?;
    let tokenizer = opened.tokenizer(false, "pass a matching --tokenizer")?.map(Arc::new);
    let template = match tokenizer {
        None => None,
        Some(_) => Some(first_template(opened.hf_dirs())?.unwrap_or_else(ChatTemplate::qwen3)),
    };
    let name = model_name(a, &opened.model.spec.name);
    let eos = opened.eos_ids(tokenizer.as_deref());
    let defaults = defaults(opened.hf_dirs());
    let spec = opened.model.spec.clone();
    let info = Arc::new(ModelInfo { state: opened.model.program.state.clone(), eos, vocab: spec.vocab_size });
    let metrics = Arc::new(metrics::Metrics::new(&name));
    if a.weights_dtype == crate::bench::WeightsDtype::Bf16 && !a.model.random_weights() {
        bail!("--weights-dtype applies to --random-weights; a checkpoint is served in its own dtype");
    }

    let (submit, rx) = tokio::sync::mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<Limits>>();
    let backend_args = a.backend;
    let (seed, bf16) = (a.seed, a.weights_dtype == crate::bench::WeightsDtype::Bf16);
    let sizes = Sizes {
        max_num_seqs: a.max_num_seqs,
        max_num_batched_tokens: a.max_num_batched_tokens,
        max_model_len: a.max_model_len.unwrap_or(spec.max_position_embeddings).min(spec.max_position_embeddings),
        memory_budget: a.memory_budget,
        prefix_bytes: a.prefix_cache_bytes,
        interval: a.prefix_cache_interval,
    };
    let (tok, inf, met) = (tokenizer.clone(), info.clone(), metrics.clone());
    let engine = std::thread::Builder::new().name("qgc-engine".into()).spawn(move || {
        let r = engine_main(opened, (backend_args, seed, bf16), sizes, tok, inf, met, rx, &ready_tx);
        if let Err(e) = r {
            let _ = ready_tx.send(Err(e));
        }
    })?;
    let limits = match ready_rx.recv() {
        Ok(r) => r?,
        Err(_) => {
            let _ = engine.join();
            bail!("the engine thread ended while loading the model");
        }
    };
    let app = Arc::new(http::App {
        name,
        created: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        submit,
        tokenizer,
        template,
        defaults,
        info,
        limits,
        metrics,
    });
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let addr = format!("{}:{}", a.host, a.port);
        let listener = tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("listening on {addr}"))?;
        let local = listener.local_addr()?;
        eprintln!("qgc serve: listening on http://{local} (model {:?})", app.name);
        // SIGINT (ctrl-c) or SIGTERM (what process managers send): stop accepting, finish what
        // runs, exit.
        let shutdown = async {
            let term = async {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term => {}
            }
            eprintln!("qgc serve: shutting down");
        };
        axum::serve(listener, http::router(app)).with_graceful_shutdown(shutdown).await.context("serving HTTP")
    })?;
    Ok(())
}

fn first_template(dirs: &[PathBuf]) -> Result<Option<ChatTemplate>> {
    for d in dirs {
        if let Some(t) = ChatTemplate::from_model_dir(d).map_err(|e| anyhow!("{e}"))? {
            return Ok(Some(t));
        }
    }
    Ok(None)
}

/// The engine's size flags.
struct Sizes {
    max_num_seqs: usize,
    max_num_batched_tokens: usize,
    max_model_len: usize,
    memory_budget: Option<u64>,
    prefix_bytes: Option<u64>,
    interval: usize,
}

/// The engine thread: loads the weights, compiles, sizes the memory, reports ready, runs.
#[allow(clippy::too_many_arguments)]
fn engine_main(
    opened: crate::load::Opened,
    (args, seed, bf16): (BackendArgs, u64, bool),
    sizes: Sizes,
    tokenizer: Option<Arc<Tokenizer>>,
    info: Arc<ModelInfo>,
    metrics: Arc<metrics::Metrics>,
    rx: tokio::sync::mpsc::UnboundedReceiver<engine::Submit>,
    ready: &std::sync::mpsc::Sender<Result<Limits>>,
) -> Result<()> {
    let (m, loaded) = opened.load(seed, args.backend, bf16)?;
    let compiled = args.compile(&m, loaded.raw())?;
    let backend = crate::load::backend(&compiled, loaded.source());
    let left = budget::global().left();
    let total = sizes.memory_budget.unwrap_or(left / 10 * 9);
    let cache_bytes = sizes.prefix_bytes.unwrap_or((total / 4).min(4 << 30)).min(total);
    let state_budget = total - cache_bytes;
    let mut max_len = sizes.max_model_len;
    if info.seq_bytes(max_len) > state_budget {
        let fits = (1..=max_len).rev().step_by((max_len / 256).max(1)).find(|&l| info.seq_bytes(l) <= state_budget);
        let Some(l) = fits.filter(|&l| info.seq_bytes(1) <= state_budget && l > 1) else {
            bail!(
                "--memory-budget {} leaves {} for sequence state; one sequence needs at least {}",
                human(total),
                human(state_budget),
                human(info.seq_bytes(2))
            );
        };
        eprintln!("qgc serve: warning: the memory budget fits one sequence of {l} tokens at most; --max-model-len lowered from {max_len}");
        max_len = l;
    }
    let per_seq = info.seq_bytes(max_len);
    let fit = (state_budget / per_seq.max(1)) as usize;
    let limits = Limits {
        max_num_seqs: sizes.max_num_seqs,
        max_num_batched_tokens: sizes.max_num_batched_tokens,
        max_model_len: max_len,
        state_budget,
    };
    let fixed = info.seq_bytes(0);
    eprintln!(
        "qgc serve: {} — max {} sequences at {} tokens ({} each: {} KV + {} GDN state); state budget {}, prefix cache {}{}",
        m.spec.name,
        fit.min(sizes.max_num_seqs),
        crate::summary::thousands(max_len as u64),
        human(per_seq),
        human(per_seq - fixed),
        human(fixed),
        human(state_budget),
        human(cache_bytes),
        if sizes.interval > 0 && cache_bytes > 0 { format!(", snapshots every {} tokens", sizes.interval) } else { String::new() },
    );
    let (program, vocab) = (m.program.clone(), m.spec.vocab_size);
    let fresh = Box::new(move || Session::with_backend(program.clone(), backend, vocab, max_len, 1));
    let cache = prefix::PrefixCache::new(cache_bytes, sizes.interval);
    let engine = Engine::new(fresh, tokenizer.as_deref(), info, limits.clone(), cache, metrics);
    let _ = ready.send(Ok(limits));
    engine.run(rx);
    Ok(())
}

use qgc_runtime::tokenizer::Tokenizer;
