//! The fuzz targets proper and their shared set-up: each writes its input where the CLI would
//! find it (a spec file, a model directory, a state file) or hands it to the same function, and
//! goes on as far as the input lets it — lowering, compiling, loading weights, running a step.

use super::mutate::{self, Rng};
use super::Family;
use crate::chat::Chat;
use crate::compiled::{CpuModel, CpuOptions};
use crate::generate::{generate, GenerateConfig};
use crate::model::{admit_one_step, open_model, weight_bytes, Model};
use crate::sampling::SamplingParams;
use crate::session::{Backend, Session};
use crate::tokenizer::{parse_ids, parse_tokens, Tokenizer, QWEN_TOKENIZER_JSON};
use crate::weights::{check, Checkpoint, RawWeights, Weights};
use qgc_codegen::compile::compile_program;
use qgc_codegen::Artifact;
use qgc_ir::interp::MapWeights;
use qgc_ir::LowerOptions;
use std::cell::OnceCell;
use std::error::Error;
use std::path::{Path, PathBuf};

/// Models above this many bytes of f32 weights are compiled but not drawn and run by a deep
/// input: drawing them is slow, not a different path.
const DEEP_WEIGHT_BYTES: u64 = 48 << 20;

/// Fixture whose config and weights the model-level targets use.
const FIXTURE: &str = "tests/fixtures/hybrid-3to1";
/// Fixture whose shards the index target points at.
const SHARDED: &str = "tests/fixtures/sharded-fused-mtp";

/// A compiled model ready for sessions.
struct Runner {
    model: Model,
    cpu: CpuModel<'static>,
}

impl Runner {
    fn new(model: Model, weights: &'static dyn RawWeights) -> Result<Runner, String> {
        let cpu = CpuModel::compile(&model.program, weights, CpuOptions::default()).map_err(|e| chain(&e))?;
        Ok(Runner { model, cpu })
    }

    fn session(&self, batch: usize) -> Session<'_> {
        let vocab = self.model.spec.vocab_size;
        Session::with_backend(self.model.program.clone(), Backend::Cpu(&self.cpu), vocab, usize::MAX, batch)
    }
}

/// What the targets share: the repository root (for fixtures and corpora), a scratch folder of
/// this context's own, and models built once on first use.
pub struct Context {
    root: PathBuf,
    tmp: PathBuf,
    fixture: OnceCell<Runner>,
    qwen: OnceCell<(Tokenizer, Runner)>,
}

impl Drop for Context {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

/// An error and its causes, `a: b: c`.
pub(super) fn chain(e: &dyn Error) -> String {
    crate::error_chain(e)
}

fn text(input: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(input).map_err(|_| "not UTF-8 text".to_string())
}

impl Context {
    /// A context over the repository at `root`, scratch files under the system temp folder.
    pub fn new(root: &Path) -> std::io::Result<Context> {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = std::env::temp_dir().join(format!("qgc-fuzz-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&tmp)?;
        Ok(Context { root: root.to_path_buf(), tmp, fixture: OnceCell::new(), qwen: OnceCell::new() })
    }

    fn fixture(&self) -> Result<&Runner, String> {
        if let Some(r) = self.fixture.get() {
            return Ok(r);
        }
        let dir = self.root.join(FIXTURE);
        let model = open_model(&dir, &LowerOptions::default()).map_err(|e| chain(&e))?;
        let weights = Weights::open(&model.spec, &dir).map_err(|e| chain(&e))?;
        let runner = Runner::new(model, Box::leak(Box::new(weights)))?;
        Ok(self.fixture.get_or_init(|| runner))
    }

    fn qwen(&self) -> Result<&(Tokenizer, Runner), String> {
        if let Some(r) = self.qwen.get() {
            return Ok(r);
        }
        let tok = Tokenizer::from_bytes(QWEN_TOKENIZER_JSON, "the shipped tokenizer").map_err(|e| chain(&e))?;
        let model = open_model(&self.root.join("models/qwen3-next-tiny.json"), &LowerOptions::default())
            .map_err(|e| chain(&e))?;
        let weights = MapWeights::random(&model.spec, 11);
        let runner = Runner::new(model, Box::leak(Box::new(weights)))?;
        Ok(self.qwen.get_or_init(|| (tok, runner)))
    }

    /// Writes `bytes` to `name` in this context's scratch folder (a subfolder is made).
    fn scratch(&self, name: &str, bytes: &[u8]) -> Result<PathBuf, String> {
        let path = self.tmp.join(name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("scratch folder: {e}"))?;
        }
        std::fs::write(&path, bytes).map_err(|e| format!("writing {}: {e}", path.display()))?;
        Ok(path)
    }

    /// A model folder `name` holding `config` and links to `files` of fixture `from`.
    fn model_dir(&self, name: &str, from: &str, files: &[&str]) -> Result<PathBuf, String> {
        let dir = self.tmp.join(name);
        if !dir.join("config.json").exists() {
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            std::fs::copy(self.root.join(from).join("config.json"), dir.join("config.json"))
                .map_err(|e| e.to_string())?;
            for f in files {
                std::fs::copy(self.root.join(from).join(f), dir.join(f)).map_err(|e| e.to_string())?;
            }
        }
        Ok(dir)
    }

    /// The seed corpus of `family`: saved regressions first, then the repository's files and
    /// files made here.
    pub fn seeds(&self, family: Family) -> Result<Vec<Vec<u8>>, String> {
        let mut out = files_in(&super::regressions_dir(&self.root, family));
        out.extend(files_in(&self.root.join("tests/fuzz/corpus").join(family.name())));
        let read = |p: &str| std::fs::read(self.root.join(p)).map_err(|e| format!("{p}: {e}"));
        match family {
            Family::Spec => {
                for m in ["qwen3-next-tiny", "qwen3-next-attn-first", "qwen3-next-5to1-dense-head", "qwen3-next"] {
                    out.push(read(&format!("models/{m}.json"))?);
                }
            }
            Family::HfConfig => {
                for f in ["hybrid-3to1", "dense-tied-bf16", "edge-odd-rope-noshared", "sharded-fused-mtp"] {
                    out.push(read(&format!("tests/fixtures/{f}/config.json"))?);
                }
            }
            Family::Safetensors => {
                out.push(read(&format!("{FIXTURE}/model.safetensors"))?);
                out.push(read("tests/fixtures/edge-odd-rope-noshared/model.safetensors")?);
            }
            Family::SafetensorsIndex => out.push(read(&format!("{SHARDED}/model.safetensors.index.json"))?),
            Family::Artifact => {
                let m = &self.fixture()?.model;
                let (c, _) = compile_program(&m.program, &mut |_, _| {}).map_err(|e| chain(&e))?;
                out.push(Artifact::new(m.spec.clone(), m.options, m.program.clone(), c).to_bytes());
            }
            Family::ChatState => {
                let r = self.fixture()?;
                let mut chat = Chat::new(r.session(1), &r.model.spec, vec![0]).map_err(|e| chain(&e))?;
                out.push(chat.save().map_err(|e| chain(&e))?);
                chat.turn(&[5, 6, 7], None, &config(3), |_| {}).map_err(|e| chain(&e))?;
                out.push(chat.save().map_err(|e| chain(&e))?);
            }
            Family::Tokenizer => {}
            Family::TokenIds => out.extend(["1,2,3", "5 17 3", "0,\n1,", "319"].map(|s| s.as_bytes().to_vec())),
            Family::Prompt => {
                let parity = read("tests/fixtures/tokenizer/parity.txt")?;
                out.push(parity[..parity.len().min(2000)].to_vec());
                out.push(b"<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n<think>\n".to_vec());
            }
        }
        if out.is_empty() {
            return Err(format!("no seeds for {} (tests/fuzz/corpus/{} is empty)", family.name(), family.name()));
        }
        Ok(out)
    }

    /// One mutated input of `family` from `corpus`.
    pub fn mutant(&self, family: Family, corpus: &[Vec<u8>], rng: &mut Rng) -> Vec<u8> {
        let seed = rng.pick(corpus).clone();
        match family {
            Family::TokenIds if rng.one_in(2) => {
                let vocab = if rng.one_in(2) { 320 } else { 151_936 };
                mutate::token_list(rng, vocab)
            }
            Family::Prompt if rng.one_in(2) => mutate::prompt(rng),
            Family::Safetensors | Family::ChatState if !rng.one_in(4) => {
                safetensors_header(&seed, rng).unwrap_or_else(|| mutate::mutate(&seed, corpus, false, rng))
            }
            Family::Artifact if !rng.one_in(4) => match qgc_codegen::artifact::payload(&seed) {
                Some(p) => qgc_codegen::artifact::frame(&mutate::mutate(p, &[], true, rng)),
                None => mutate::mutate(&seed, corpus, false, rng),
            },
            _ => mutate::mutate(&seed, corpus, family.json(), rng),
        }
    }
}

/// Files directly in `dir`, sorted by name (none when it is missing).
fn files_in(dir: &Path) -> Vec<Vec<u8>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|it| it.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    paths.sort();
    paths.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

/// A safetensors file with its JSON header mutated (the length prefix rewritten, or now and
/// then left stale); `None` when `bytes` has no readable header.
fn safetensors_header(bytes: &[u8], rng: &mut Rng) -> Option<Vec<u8>> {
    let n = usize::try_from(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)).ok()?;
    let header = bytes.get(8..8usize.checked_add(n)?)?;
    let data = &bytes[8 + n..];
    let new = mutate::mutate(header, &[], true, rng);
    let len = if rng.one_in(10) { n as u64 } else { new.len() as u64 };
    let mut out = len.to_le_bytes().to_vec();
    out.extend_from_slice(&new);
    out.extend_from_slice(data);
    Some(out)
}

/// Generation settings the targets use: greedy, `n` new tokens.
fn config(n: usize) -> GenerateConfig {
    GenerateConfig {
        max_new_tokens: n,
        max_positions: 4096,
        eos_ids: vec![0],
        stop: vec!["</think>".into()],
        sampling: SamplingParams::greedy(),
    }
}

pub(super) fn run(ctx: &Context, family: Family, input: &[u8], deep: bool) -> Result<(), String> {
    match family {
        Family::Spec => {
            let path = ctx.scratch("spec/model.json", input)?;
            let m = open_model(&path, &LowerOptions::default()).map_err(|e| chain(&e))?;
            exercise(&m, deep)
        }
        Family::HfConfig => {
            let dir = ctx.scratch("hf/config.json", input)?.with_file_name("");
            let m = open_model(&dir, &LowerOptions::default()).map_err(|e| chain(&e))?;
            exercise(&m, deep)
        }
        Family::Safetensors => {
            let dir = ctx.model_dir("st", FIXTURE, &[])?;
            std::fs::write(dir.join("model.safetensors"), input).map_err(|e| e.to_string())?;
            weights_dir(&dir, deep)
        }
        Family::SafetensorsIndex => {
            let shards: Vec<String> = (1..=7).map(|i| format!("model-{i:05}-of-00007.safetensors")).collect();
            let names: Vec<&str> = shards.iter().map(String::as_str).collect();
            let dir = ctx.model_dir("index", SHARDED, &names)?;
            std::fs::write(dir.join("model.safetensors.index.json"), input).map_err(|e| e.to_string())?;
            weights_dir(&dir, deep)
        }
        Family::Artifact => {
            let path = ctx.scratch("model.qgc", input)?;
            let m = open_model(&path, &LowerOptions::default()).map_err(|e| chain(&e))?;
            exercise(&m, deep)
        }
        Family::ChatState => {
            let r = ctx.fixture()?;
            let mut chat = Chat::new(r.session(1), &r.model.spec, vec![0]).map_err(|e| chain(&e))?;
            chat.load(input, "state file").map_err(|e| chain(&e))?;
            let before = chat.transcript();
            let saved = chat.save().map_err(|e| chain(&e))?;
            let mut again = Chat::new(r.session(1), &r.model.spec, vec![0]).map_err(|e| chain(&e))?;
            again
                .load(&saved, "re-saved state")
                .map_err(|e| format!("a loaded state did not reload: {}", chain(&e)))?;
            if again.transcript() != before {
                panic!("a chat state changed its transcript when saved and reloaded");
            }
            chat.turn(&[1, 2], None, &config(2), |_| {}).map_err(|e| chain(&e))?;
            Ok(())
        }
        Family::Tokenizer => {
            let tok = Tokenizer::from_bytes(input, "tokenizer.json").map_err(|e| chain(&e))?;
            for t in ["Hello, world!", "你好 🙂 e\u{301}", "<|im_start|>user\nhi<|im_end|>", "  \t\n"] {
                let ids = tok.encode(t).map_err(|e| chain(&e))?;
                let known: Vec<u32> = ids.into_iter().filter(|&i| tok.id_token(i).is_some()).collect();
                tok.decode(&known).map_err(|e| chain(&e))?;
            }
            let _ = tok.vocab_size();
            Ok(())
        }
        Family::TokenIds => {
            let text = text(input)?;
            let (tok, _) = ctx.qwen()?;
            let detok = parse_ids(text, "--ids").and_then(|ids| {
                let vocab = tok.vocab_size();
                match ids.iter().find(|&&id| id as usize >= vocab || tok.id_token(id).is_none()) {
                    Some(bad) => Err(format!("--ids: token id {bad} is outside the vocabulary (0..{vocab})")),
                    None => tok.decode(&ids).map(drop).map_err(|e| chain(&e)),
                }
            });
            let ids = parse_tokens(text)?;
            detok?;
            let r = ctx.fixture()?;
            let mut s = r.session(1);
            generate(&mut s, &[ids], None, &config(2), |_, _| {}).map_err(|e| chain(&e))?;
            Ok(())
        }
        Family::Prompt => {
            let text = text(input)?;
            let (tok, r) = ctx.qwen()?;
            let mut ids: Vec<i32> = tok.encode(text).map_err(|e| chain(&e))?.into_iter().map(|i| i as i32).collect();
            if ids.is_empty() {
                return Err("the prompt is empty".into());
            }
            ids.truncate(if deep { 512 } else { 48 });
            let mut s = r.session(1);
            generate(&mut s, &[ids], Some(tok), &config(3), |_, _| {}).map_err(|e| chain(&e))?;
            Ok(())
        }
    }
}

/// What a model target does with an opened model: sizes (checked), and when `deep`: compile,
/// admit one step, a byte-identical artifact round trip, and — when the weights are small —
/// random weights, a prefill and a decode step.
fn exercise(m: &Model, deep: bool) -> Result<(), String> {
    let _ = m.spec.param_counts();
    let _ = m.spec.state_bytes(1 << 20, 2);
    let f32_bytes = weight_bytes(&m.spec, 4, true);
    // What `qgc run --random-weights` admits before drawing anything.
    crate::budget::global()
        .admit(format!("random f32 weights of {}", m.spec.name), f32_bytes)
        .map_err(|e| e.to_string())?;
    if !deep {
        return Ok(());
    }
    let compiled = match &m.compiled {
        Some(c) => c.clone(),
        None => compile_program(&m.program, &mut |_, _| {}).map_err(|e| chain(&e))?.0,
    };
    admit_one_step(&m.spec, &compiled).map_err(|e| chain(&e))?;
    let art = Artifact::new(m.spec.clone(), m.options, m.program.clone(), compiled.clone());
    let bytes = art.to_bytes();
    let back = Artifact::from_bytes(&bytes, "round trip")
        .map_err(|e| format!("an artifact qgc wrote does not read back: {}", chain(&e)))?;
    if back.to_bytes() != bytes {
        panic!("an artifact changed when written, read and written again");
    }
    if f32_bytes.is_none_or(|b| b > DEEP_WEIGHT_BYTES) {
        return Ok(());
    }
    let w = MapWeights::random(&m.spec, 3);
    let cpu = CpuModel::load(&compiled, &w, CpuOptions::default()).map_err(|e| chain(&e))?;
    let vocab = m.spec.vocab_size;
    let mut s = Session::with_backend(m.program.clone(), Backend::Cpu(&cpu), vocab, usize::MAX, 1);
    let ids: Vec<i32> = (0..3).map(|i| (i % vocab) as i32).collect();
    s.prefill(&[ids]).map_err(|e| chain(&e))?;
    s.decode(&[1 % vocab as i32]).map_err(|e| chain(&e))?;
    Ok(())
}

/// A model directory's weights as `qgc run DIR` loads them: open, check against the config,
/// read every tensor (converted to f32); when `deep` and they check, compile and run a step.
fn weights_dir(dir: &Path, deep: bool) -> Result<(), String> {
    let m = open_model(dir, &LowerOptions::default()).map_err(|e| chain(&e))?;
    let ckpt = Checkpoint::open(dir).map_err(|e| chain(&e))?;
    check(&m.spec, &ckpt).map_err(|e| chain(&e))?;
    let w = Weights::new(ckpt);
    for d in m.spec.tensors() {
        w.get(&d.name, &d.shape).map_err(|e| chain(&e))?;
    }
    if deep {
        let cpu = CpuModel::compile(&m.program, &w, CpuOptions::default()).map_err(|e| chain(&e))?;
        let mut s = Session::with_backend(m.program.clone(), Backend::Cpu(&cpu), m.spec.vocab_size, usize::MAX, 1);
        s.prefill(&[vec![1, 2, 3]]).map_err(|e| chain(&e))?;
    }
    Ok(())
}
