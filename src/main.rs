//! `qgc`: compile, inspect and run hybrid Gated DeltaNet / gated attention LLMs.

mod bench;
mod chat;
mod load;
mod logits;
mod run;
mod serve;
mod summary;
mod tokenize;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use qgc_codegen::compile::{compile_program, CompiledProgram};
use qgc_codegen::Artifact;
use qgc_ir::LowerOptions;
use qgc_runtime::open_model;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Parser)]
#[command(name = "qgc", version, about = "A model-graph compiler for hybrid Gated DeltaNet / gated attention LLMs")]
struct Cli {
    /// Memory qgc may allocate (e.g. 8GiB, 512MiB, 24G); default: what the machine has
    /// available. Anything sized from the model or the request is refused, with a named
    /// error, when it would not fit.
    #[arg(long, global = true, value_name = "SIZE", value_parser = qgc_runtime::budget::parse_size)]
    memory_limit: Option<u64>,
    #[command(subcommand)]
    cmd: Cmd,
}

/// How GDN prefill is evaluated (the same function either way).
#[derive(Clone, Copy, ValueEnum)]
enum GdnPrefill {
    /// 64-token chunked form, as HF and flash-linear-attention compute it.
    Chunked,
    /// Exact per-token recurrence.
    Recurrent,
}

#[derive(clap::Args)]
struct LowerArgs {
    /// GDN prefill form.
    #[arg(long, value_enum, default_value = "chunked")]
    gdn_prefill: GdnPrefill,
}

impl LowerArgs {
    fn options(&self) -> LowerOptions {
        LowerOptions {
            gdn_prefill_chunk: match self.gdn_prefill {
                GdnPrefill::Chunked => Some(64),
                GdnPrefill::Recurrent => None,
            },
        }
    }
}

/// `qgc compile --target`: what the artifact carries beyond the compiled program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// The compiled program only (the CUDA backend compiles its kernels with NVRTC).
    Cpu,
    /// Also the PTX of every CUDA kernel the program launches, for `sm_<arch>`.
    Cuda(u32),
}

/// Parser of `--target`: `cpu`, `cuda` (sm_90) or `cuda:sm_XX`.
fn target(s: &str) -> Result<Target, String> {
    const FORMS: &str = "expected cpu, cuda (= cuda:sm_90) or cuda:sm_XX, e.g. cuda:sm_80, cuda:sm_90, cuda:sm_100";
    match s {
        "cpu" => Ok(Target::Cpu),
        "cuda" => Ok(Target::Cuda(90)),
        _ => s
            .strip_prefix("cuda:sm_")
            .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse::<u32>().ok())
            .filter(|a| qgc_codegen::cuda::ARCHES.contains(a))
            .map(Target::Cuda)
            .ok_or_else(|| FORMS.to_string()),
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Validate, lower and verify MODEL, write an artifact, print a summary.
    Compile {
        /// A spec JSON, an HF model directory or config.json.
        model: PathBuf,
        /// Artifact to write.
        #[arg(short, long)]
        out: PathBuf,
        /// Context length for the state-size line of the summary.
        #[arg(long, default_value_t = 32768)]
        context: u64,
        #[command(flatten)]
        lower: LowerArgs,
        /// Print each entry point's IR after pass NAME (dce, cse, canonicalise, fuse, select).
        #[arg(long, value_name = "NAME")]
        dump_after: Option<String>,
        /// Write each entry point's IR before and after every pass to DIR/<entry>.<NN>-<pass>.qir.
        #[arg(long, value_name = "DIR")]
        dump_all: Option<PathBuf>,
        /// `cpu` (the compiled program only), or `cuda[:sm_XX]` (default sm_90): also embed the
        /// PTX of every CUDA kernel the program launches, compiled now with NVRTC, so that
        /// `--backend cuda` runs the artifact without NVRTC.
        #[arg(long, value_name = "TARGET", default_value = "cpu", value_parser = target)]
        target: Target,
    },
    /// Print MODEL's summary (and its IR with --ir); an artifact's compiled program as stored.
    Inspect {
        /// A spec JSON, an HF model directory or config.json, or an artifact.
        model: PathBuf,
        /// Also print both entry points' IR text.
        #[arg(long)]
        ir: bool,
        /// Print the summary as one JSON object (params, active_params, state_bytes_per_sequence,
        /// fallback_nodes, per-entry kernel counts and arenas; `cuda`: an artifact's embedded PTX
        /// — arch, families, chains, ptx_bytes, nvrtc — or null).
        #[arg(long, conflicts_with_all = ["ir", "dot"])]
        json: bool,
        /// Context length for the state-size line.
        #[arg(long, default_value_t = 32768)]
        context: u64,
        #[command(flatten)]
        lower: LowerArgs,
        /// Write each entry point's graph before and after fusion to
        /// DIR/<entry>.{lowered,fused}.dot (and .svg when Graphviz `dot` is on PATH).
        #[arg(long, value_name = "DIR")]
        dot: Option<PathBuf>,
    },
    /// Generate text from a prompt (streamed), with sampling, chat template and stop conditions.
    Run(run::RunArgs),
    /// Chat interactively (messages from stdin), keeping the model's state between turns.
    Chat(chat::ChatArgs),
    /// Time prefill and decode (tok/s) and compare decode with the DRAM floor.
    Bench(bench::BenchArgs),
    /// Serve MODEL over HTTP with OpenAI's API (chat, completions, models, health, metrics):
    /// continuous batching and a prefix cache for hybrid state.
    Serve(serve::ServeArgs),
    /// Compute logits for a token sequence: prefill the first N, decode the rest one at a time.
    Logits(logits::LogitsArgs),
    /// Encode text to token ids (printed comma-separated) with MODEL's tokenizer, --tokenizer
    /// FILE, or the shipped Qwen tokenizer.
    Tokenize(tokenize::TokenizeArgs),
    /// Decode token ids to text (printed exactly, no newline added).
    Detokenize(tokenize::DetokenizeArgs),
    /// Convert an HF Qwen3Next config.json (or model directory) into a qgc spec.
    Import {
        /// HF model directory or its config.json.
        source: PathBuf,
        /// Spec JSON to write.
        #[arg(short, long)]
        out: PathBuf,
    },
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    qgc_runtime::budget::set_limit(cli.memory_limit);
    match cli.cmd {
        Cmd::Compile { model, out, context, lower, dump_after, dump_all, target } => {
            compile(&model, &out, context, &lower.options(), &Dumps { after: dump_after, dir: dump_all }, target)
        }
        Cmd::Inspect { model, ir, json, context, lower, dot } => {
            let t0 = Instant::now();
            let m = open_model(&model, &lower.options())?;
            let opened_ms = t0.elapsed().as_secs_f64() * 1e3;
            let compiled = match &m.compiled {
                Some(c) => c.clone(),
                None => compile_program(&m.program, &mut |_, _| {})?.0,
            };
            qgc_runtime::model::admit_one_step(&m.spec, &compiled)?;
            if json {
                let mut v = summary::json(&m.spec, &compiled, context);
                v["cuda"] = m.cuda.as_ref().map_or(serde_json::Value::Null, |k| k.json());
                println!("{v}");
                return Ok(());
            }
            print!("{}", summary::render(&m.spec, &m.program, context));
            print!("{}", summary::compiled(&compiled));
            if let Some(k) = &m.cuda {
                println!("cuda       {}", k.summary());
            }
            if m.kind == qgc_runtime::ModelKind::Artifact {
                println!("loaded     {} in {opened_ms:.1} ms (checked, no pass run)", model.display());
            }
            if ir {
                println!();
                print!("{}", qgc_ir::print(&m.program.prefill));
                println!();
                print!("{}", qgc_ir::print(&m.program.decode));
                if let Some(mtp) = &m.program.mtp {
                    println!();
                    print!("{}", qgc_ir::print(mtp));
                }
            }
            if let Some(dir) = &dot {
                write_dots(&m.program, dir)?;
            }
            Ok(())
        }
        Cmd::Run(args) => run::run(&args),
        Cmd::Chat(args) => chat::run(&args),
        Cmd::Logits(args) => logits::run(&args),
        Cmd::Bench(args) => bench::run(&args),
        Cmd::Serve(args) => serve::run(&args),
        Cmd::Tokenize(args) => tokenize::tokenize(&args),
        Cmd::Detokenize(args) => tokenize::detokenize(&args),
        Cmd::Import { source, out } => import(&source, &out),
    }
}

/// `--dump-after` / `--dump-all` of `qgc compile`.
struct Dumps {
    after: Option<String>,
    dir: Option<PathBuf>,
}

fn compile(
    model: &Path,
    out: &Path,
    context: u64,
    options: &LowerOptions,
    dumps: &Dumps,
    target: Target,
) -> Result<()> {
    let t0 = Instant::now();
    let m = open_model(model, options)?;
    if m.kind == qgc_runtime::ModelKind::Artifact {
        bail!("{}: is already a compiled artifact", model.display());
    }
    let (compiled, reports, dumped) = run_passes(&m.program, dumps)?;
    qgc_runtime::model::admit_one_step(&m.spec, &compiled)?;
    let mut art = Artifact::new(m.spec, m.options, m.program, compiled);
    // All the PTX before anything is written: a failed kernel leaves no artifact.
    if let Target::Cuda(arch) = target {
        let k = qgc_runtime::cuda::nvrtc::kernels_for(&art.compiled, arch)
            .with_context(|| format!("--target cuda:sm_{arch}: compiling the CUDA kernels"))?;
        art.cuda = Some(k);
    }
    art.write(out)?;
    print!("{}", summary::render(&art.spec, &art.program, context));
    reports.iter().for_each(|r| print!("{r}"));
    print!("{}", summary::compiled(&art.compiled));
    if let Some(k) = &art.cuda {
        println!("cuda       {}", k.summary());
    }
    print!("{dumped}");
    println!("wrote      {} in {:.1} ms", out.display(), t0.elapsed().as_secs_f64() * 1e3);
    Ok(())
}

/// Compiles every entry point (the pass pipeline, hoisting, schedules); returns the compiled
/// program, the pass reports and the `--dump-after` text.
fn run_passes(p: &qgc_ir::Program, dumps: &Dumps) -> Result<(CompiledProgram, Vec<qgc_passes::Report>, String)> {
    let passes = qgc_passes::PASSES;
    if let Some(name) = dumps.after.as_deref().filter(|n| !passes.contains(n)) {
        bail!("--dump-after {name}: no such pass (passes: {})", passes.join(", "));
    }
    if let Some(dir) = &dumps.dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for g in [&p.prefill, &p.decode].into_iter().chain(&p.mtp) {
            write_atomic(&dir.join(format!("{}.00-lowered.qir", g.name)), qgc_ir::print(g).as_bytes())?;
        }
    }
    let (mut text, mut failed) = (String::new(), None);
    let mut after = |pass: &str, g: &qgc_ir::Graph| {
        if dumps.after.as_deref() == Some(pass) {
            text.push_str(&format!("\n{}", qgc_ir::print(g)));
        }
        if let Some(dir) = &dumps.dir {
            let n = passes.iter().position(|p| *p == pass).unwrap_or(0) + 1;
            let path = dir.join(format!("{}.{n:02}-{pass}.qir", g.name));
            failed = failed.take().or(write_atomic(&path, qgc_ir::print(g).as_bytes()).err());
        }
    };
    let (compiled, reports) = compile_program(p, &mut after)?;
    failed.map_or(Ok((compiled, reports, text)), Err)
}

/// `qgc inspect --dot DIR`: DOT files of every entry point, lowered and fused; SVGs when `dot`
/// is on PATH (a note otherwise).
fn write_dots(p: &qgc_ir::Program, dir: &Path) -> Result<()> {
    let (fused, _) = qgc_passes::optimise_program(p, &qgc_passes::Options::default(), &mut |_, _| {})?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut files = Vec::new();
    for (stage, prog) in [("lowered", p), ("fused", &fused)] {
        for g in [&prog.prefill, &prog.decode].into_iter().chain(&prog.mtp) {
            let path = dir.join(format!("{}.{stage}.dot", g.name));
            write_atomic(&path, qgc_ir::dot::dot(g, &format!("{}.{stage}", g.name)).as_bytes())?;
            println!("wrote {}", path.display());
            files.push(path);
        }
    }
    let has_dot = std::process::Command::new("dot").arg("-V").output().is_ok();
    if !has_dot {
        println!("note: Graphviz `dot` not found on PATH; no .svg rendered");
        return Ok(());
    }
    for path in files {
        let svg = path.with_extension("svg");
        let out = std::process::Command::new("dot")
            .arg("-Tsvg")
            .arg(&path)
            .output()
            .with_context(|| format!("running dot on {}", path.display()))?;
        if !out.status.success() {
            bail!("dot -Tsvg {}: {}", path.display(), String::from_utf8_lossy(&out.stderr).trim());
        }
        write_atomic(&svg, &out.stdout)?;
        println!("wrote {}", svg.display());
    }
    Ok(())
}

fn import(source: &Path, out: &Path) -> Result<()> {
    let m = open_model(source, &LowerOptions::default())?;
    if !matches!(m.kind, qgc_runtime::ModelKind::HfDir | qgc_runtime::ModelKind::HfConfig) {
        bail!("{}: not an HF config.json or model directory", source.display());
    }
    let dir = if source.is_dir() { source.join("config.json") } else { source.to_path_buf() };
    let text = std::fs::read_to_string(&dir).with_context(|| format!("reading {}", dir.display()))?;
    let names = m.hf_dir.as_deref().and_then(|d| qgc_runtime::weights::Checkpoint::open(d).ok()).map(|c| c.names());
    let file = qgc_ir::spec::hf::import_config(&text, names.as_deref()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let json = serde_json::to_string_pretty(&file)? + "\n";
    write_atomic(out, json.as_bytes())?;
    println!("wrote {} ({} layers)", out.display(), m.spec.num_layers());
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file, so a failure leaves nothing behind.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    let r = std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, path));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r.with_context(|| format!("writing {}", path.display()))
}
