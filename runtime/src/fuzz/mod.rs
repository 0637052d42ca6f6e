//! Fuzz targets: one per family of input a user or a client hands qgc — spec JSON, HF
//! config, safetensors file, safetensors index, compiled artifact, chat state file,
//! tokenizer.json, token-id list, prompt bytes. Each target ([`run`]) takes raw bytes, drives
//! them through the same library calls the CLI makes, and must return `Ok` or a named error:
//! a panic, an abort, an empty error or a hang is a bug.
//!
//! [`campaign`] feeds a family deterministic mutations ([`mutate`]) of its seed corpus: the
//! repository's own files (fixtures, `models/`, `tests/fuzz/corpus/`), files made in process (an
//! artifact, a chat state), and every saved failure under `tests/fuzz/regressions/`, which are
//! replayed first. `cargo test` runs a bounded pass (`tests/fuzz.rs`); `scripts/fuzz` runs the
//! same campaigns open-ended and saves what fails.

pub mod mutate;
mod targets;

use mutate::Rng;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use targets::Context;

/// A family of user-supplied input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// A qgc spec (`models/*.json`), opened as `qgc compile SPEC` does.
    Spec,
    /// An HF `config.json`, imported as for an HF model directory.
    HfConfig,
    /// One `model.safetensors` beside a fixture's config.
    Safetensors,
    /// `model.safetensors.index.json` over a sharded fixture's shards.
    SafetensorsIndex,
    /// A compiled artifact (`qgc compile -o`).
    Artifact,
    /// A chat state file (`/save`, `--load-state`).
    ChatState,
    /// A `tokenizer.json` (`--tokenizer`).
    Tokenizer,
    /// A token-id list (`--tokens`, `qgc detokenize`).
    TokenIds,
    /// Prompt bytes (`--prompt-file`, `qgc tokenize --file`), generated from.
    Prompt,
}

impl Family {
    /// Every family.
    pub const ALL: [Family; 9] = [
        Family::Spec,
        Family::HfConfig,
        Family::Safetensors,
        Family::SafetensorsIndex,
        Family::Artifact,
        Family::ChatState,
        Family::Tokenizer,
        Family::TokenIds,
        Family::Prompt,
    ];

    /// The family's name (corpus and regression folder names, `scripts/fuzz` arguments).
    pub fn name(self) -> &'static str {
        match self {
            Family::Spec => "spec",
            Family::HfConfig => "hf-config",
            Family::Safetensors => "safetensors",
            Family::SafetensorsIndex => "safetensors-index",
            Family::Artifact => "artifact",
            Family::ChatState => "chat-state",
            Family::Tokenizer => "tokenizer",
            Family::TokenIds => "token-ids",
            Family::Prompt => "prompt",
        }
    }

    /// The family named `name`.
    pub fn from_name(name: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Whether mutations should edit the input as a JSON document.
    fn json(self) -> bool {
        matches!(self, Family::Spec | Family::HfConfig | Family::SafetensorsIndex | Family::Tokenizer)
    }
}

/// Runs one input of `family`: `Ok(())` when qgc took it, `Err(message)` when it refused it
/// with a named error. (Panics propagate; [`campaign`] catches them.) `deep`: also compile and
/// run what was accepted (slower; campaigns do it for a share of the inputs).
pub fn run(ctx: &Context, family: Family, input: &[u8], deep: bool) -> Result<(), String> {
    targets::run(ctx, family, input, deep)
}

/// What went wrong with one input.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Its family.
    pub family: Family,
    /// A panic's message, "an empty error", or "took N s".
    pub what: String,
    /// The input.
    pub input: Vec<u8>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} input of {} bytes: {}", self.family.name(), self.input.len(), self.what)
    }
}

/// Counts of a campaign.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Inputs run.
    pub inputs: u64,
    /// Taken (`Ok`).
    pub accepted: u64,
    /// Refused with a named error.
    pub refused: u64,
    /// Run deep (compiled and executed when accepted).
    pub deep: u64,
    /// Distinct refusals (first line, digits folded) and how often each came.
    pub messages: BTreeMap<String, u64>,
}

/// How long a campaign runs and what it does.
#[derive(Debug, Clone)]
pub struct Campaign {
    /// Seeds the mutation generator.
    pub seed: u64,
    /// Stop after this many mutated inputs (the replayed corpus not counted)…
    pub iterations: u64,
    /// …or at this instant, whichever comes first.
    pub until: Option<Instant>,
    /// Run every n-th input deep.
    pub deep_every: u64,
    /// An input that runs longer than this fails as a hang.
    pub slow: Duration,
}

/// Runs `family`'s campaign: the saved regressions and the corpus as they are, then
/// `cfg.iterations` mutations. `before(input)` sees each input before it runs (the long mode
/// writes it to disk, so an abort leaves it behind). Returns the counts, or the first failure.
pub fn campaign(
    ctx: &Context,
    family: Family,
    cfg: &Campaign,
    mut before: impl FnMut(&[u8]),
) -> Result<Stats, Failure> {
    let mut stats = Stats::default();
    let corpus = ctx.seeds(family).map_err(|e| Failure { family, what: e, input: Vec::new() })?;
    let mut rng = Rng::new(cfg.seed ^ (family as u64).wrapping_mul(0x1000_0001));
    let mut one = |input: &[u8], deep: bool, stats: &mut Stats| {
        before(input);
        let t0 = Instant::now();
        let r = catch_unwind(AssertUnwindSafe(|| run(ctx, family, input, deep)));
        let took = t0.elapsed();
        let fail = |what: String| Failure { family, what, input: input.to_vec() };
        stats.inputs += 1;
        stats.deep += deep as u64;
        match r {
            Err(p) => {
                let msg =
                    p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
                return Err(fail(format!("panicked: {}", msg.unwrap_or_default())));
            }
            Ok(Err(m)) if m.trim().is_empty() => return Err(fail("refused with an empty error".into())),
            Ok(Err(m)) => {
                stats.refused += 1;
                *stats.messages.entry(fold(&m)).or_default() += 1;
            }
            Ok(Ok(())) => stats.accepted += 1,
        }
        if took > cfg.slow {
            return Err(fail(format!("took {:.1} s (more than {:.0} s)", took.as_secs_f64(), cfg.slow.as_secs_f64())));
        }
        Ok(())
    };
    for input in &corpus {
        one(input, true, &mut stats)?;
    }
    for i in 0..cfg.iterations {
        if cfg.until.is_some_and(|t| Instant::now() >= t) {
            break;
        }
        let input = ctx.mutant(family, &corpus, &mut rng);
        one(&input, cfg.deep_every > 0 && i % cfg.deep_every == 0, &mut stats)?;
    }
    Ok(stats)
}

/// A refusal's message reduced to its kind: the first line (two when the first ends in `:`),
/// quoted text and numbers folded (`"…"`, `N`), a leading path cut to its file name, at most 100 characters.
fn fold(message: &str) -> String {
    let mut lines = message.lines();
    let mut first = lines.next().unwrap_or("").to_string();
    if first.ends_with(':') {
        first.push_str(lines.next().unwrap_or(""));
    }
    // A leading scratch path says nothing about the kind.
    if let Some((path, rest)) = first.split_once(": ").filter(|(p, _)| p.starts_with('/')) {
        let file = path.rsplit('/').next().unwrap_or("");
        first = format!("{file}: {rest}");
    }
    let mut out = String::new();
    let (mut digits, mut quoted) = (false, false);
    for c in first.trim().chars() {
        if c == '"' || c == '`' {
            quoted = !quoted;
            if quoted {
                out.push_str("\"…\"");
            }
            continue;
        }
        if quoted {
            continue;
        }
        if c.is_ascii_digit() {
            if !digits {
                out.push('N');
            }
            digits = true;
        } else {
            digits = false;
            out.push(c);
        }
    }
    out.chars().take(100).collect()
}

/// Where failing inputs of `family` are saved and replayed from.
pub fn regressions_dir(root: &Path, family: Family) -> PathBuf {
    root.join("tests/fuzz/regressions").join(family.name())
}

/// Saves `input` as a regression case of `family` under `root` (named by its hash); returns
/// the path.
pub fn save_regression(root: &Path, family: Family, input: &[u8]) -> std::io::Result<PathBuf> {
    let dir = regressions_dir(root, family);
    std::fs::create_dir_all(&dir)?;
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    let path = dir.join(format!("{hash:016x}.bin"));
    std::fs::write(&path, input)?;
    Ok(path)
}
