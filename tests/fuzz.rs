//! The bounded fuzz pass: every input family's target ([`qgc_runtime::fuzz`]) fed its saved
//! regressions, its seed corpus and a fixed number of deterministic mutations, under an
//! address-space cap (an allocation bomb fails this test instead of taking the machine) and a
//! memory budget below it (so qgc's own admission is what refuses). Every input must be taken
//! or refused with a named error, none may panic, and a share of them must get through, so the
//! mutators are known to reach the deep paths. `scripts/fuzz` runs the same campaigns without
//! an end.

mod common;

use qgc_runtime::fuzz::{campaign, save_regression, Campaign, Context, Family, Stats};
use std::sync::Once;
use std::time::Duration;

/// The address space this test process may map: far above what the targets need (fixture
/// models, the tiny spec's random weights, Cranelift code) and far below the machine.
const ADDRESS_SPACE: u64 = 16 << 30;
/// The memory budget qgc admits allocations against inside it.
const BUDGET: u64 = 2 << 30;

fn setup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let cap = libc::rlimit { rlim_cur: ADDRESS_SPACE, rlim_max: ADDRESS_SPACE };
        // SAFETY: setrlimit reads the struct we pass and changes only this process's limit.
        let rc = unsafe { libc::setrlimit(libc::RLIMIT_AS, &cap) };
        assert_eq!(rc, 0, "setrlimit(RLIMIT_AS) failed");
        qgc_runtime::budget::set_limit(Some(BUDGET));
    });
}

/// Runs `family`'s bounded campaign and checks what it saw.
fn pass(family: Family, iterations: u64, deep_every: u64) -> Stats {
    setup();
    let root = common::root();
    let ctx = Context::new(&root).expect("scratch folder");
    let cfg = Campaign { seed: 2026, iterations, until: None, deep_every, slow: Duration::from_secs(60) };
    let stats = match campaign(&ctx, family, &cfg, |_| {}) {
        Ok(s) => s,
        Err(f) => {
            // Kept where the next run replays it; the test names the file.
            let saved = save_regression(&root, family, &f.input).map(|p| p.display().to_string());
            panic!("{f}\nsaved as {}", saved.unwrap_or_else(|e| format!("(not saved: {e})")));
        }
    };
    eprintln!(
        "{}: {} inputs ({} deep): {} taken, {} refused with {} kinds of error",
        family.name(),
        stats.inputs,
        stats.deep,
        stats.accepted,
        stats.refused,
        stats.messages.len()
    );
    let mut kinds: Vec<(&String, &u64)> = stats.messages.iter().collect();
    kinds.sort_by(|a, b| b.1.cmp(a.1));
    for (m, n) in kinds.iter().take(12) {
        eprintln!("  {n:6}  {m}");
    }
    assert!(stats.inputs >= iterations, "{} ran {} inputs", family.name(), stats.inputs);
    assert!(stats.refused > 0, "{}: no mutation was refused; the mutators do not reach the checks", family.name());
    assert!(stats.accepted > 0, "{}: nothing was taken; the mutators never get past the parser", family.name());
    stats
}

#[test]
fn spec() {
    let s = pass(Family::Spec, 1500, 30);
    // Sizes that cannot fit are among the refusals, named as such.
    assert!(s.messages.keys().any(|m| m.contains("needed") || m.contains("overflows")), "{:?}", s.messages.keys());
}

#[test]
fn hf_config() {
    pass(Family::HfConfig, 1500, 60);
}

#[test]
fn safetensors() {
    pass(Family::Safetensors, 800, 50);
}

#[test]
fn safetensors_index() {
    pass(Family::SafetensorsIndex, 600, 50);
}

#[test]
fn artifact() {
    pass(Family::Artifact, 200, 40);
}

#[test]
fn chat_state() {
    pass(Family::ChatState, 800, 0);
}

#[test]
fn tokenizer() {
    let s = pass(Family::Tokenizer, 1500, 0);
    assert!(s.messages.keys().any(|m| m.contains("padding")), "{:?}", s.messages.keys());
}

#[test]
fn token_ids() {
    pass(Family::TokenIds, 1500, 0);
}

#[test]
fn prompt() {
    pass(Family::Prompt, 800, 50);
}
