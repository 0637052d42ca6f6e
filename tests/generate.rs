//! Generation against HF: greedy ids equal `generate(do_sample=False)` for every fixture, through
//! the library and through `qgc run`; batches (ragged ones too) give each sequence what it gets
//! alone; streamed text is complete UTF-8 and `<think>` filtering works across real tokens.

mod common;

use common::{fixture, fixtures, reference, root};
use qgc_ir::LowerOptions;
use qgc_runtime::generate::{generate, GenerateConfig, StopReason, TextStream, ThinkFilter};
use qgc_runtime::sampling::SamplingParams;
use qgc_runtime::tokenizer::Tokenizer;
use qgc_runtime::weights::Weights;
use qgc_runtime::{open_model, Session};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn greedy(n: usize, max_positions: usize) -> GenerateConfig {
    GenerateConfig {
        max_new_tokens: n,
        max_positions,
        eos_ids: Vec::new(),
        stop: Vec::new(),
        sampling: SamplingParams::greedy(),
    }
}

/// Generates from `prompts` on a fixture checkpoint in one batch.
fn run_fixture(dir: &Path, prompts: &[Vec<i32>], cfg: &GenerateConfig) -> Vec<Vec<i32>> {
    let m = open_model(dir, &LowerOptions::default()).unwrap();
    let w = Weights::open(&m.spec, dir).unwrap();
    // Like HF's generate, run past max_position_embeddings (edge-odd-rope-noshared has 16).
    let mut s = Session::new(m.program, &w, m.spec.vocab_size, cfg.max_positions, prompts.len());
    let (gens, t) = generate(&mut s, prompts, None, cfg, |_, _| panic!("no tokenizer, no text")).unwrap();
    assert_eq!(t.prompt_tokens, prompts.iter().map(Vec::len).sum::<usize>());
    assert_eq!(t.generated_tokens, gens.iter().map(|g| g.generated_ids.len()).sum::<usize>());
    gens.into_iter()
        .map(|g| {
            assert_eq!(g.text, None);
            g.generated_ids
        })
        .collect()
}

#[test]
fn greedy_ids_equal_hf_generate_through_the_library() {
    for dir in fixtures() {
        let r = reference(&dir);
        let got = run_fixture(&dir, std::slice::from_ref(&r.gen_prompt), &greedy(r.gen_ids.len(), usize::MAX));
        assert_eq!(got[0], r.gen_ids, "{}", dir.display());
    }
}

#[test]
fn greedy_ids_equal_hf_generate_through_the_cli() {
    for dir in fixtures() {
        let r = reference(&dir);
        let prompt: Vec<String> = r.gen_prompt.iter().map(i32::to_string).collect();
        let out = Command::new(env!("CARGO_BIN_EXE_qgc"))
            .args([
                "run",
                &dir.display().to_string(),
                "--temp",
                "0",
                "-n",
                "24",
                "--tokens",
                &prompt.join(","),
                "--json",
            ])
            .current_dir(root())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let ids = |k: &str| -> Vec<i32> { serde_json::from_value(v[k].clone()).unwrap() };
        assert_eq!(ids("generated_ids"), r.gen_ids, "{}", dir.display());
        assert_eq!(ids("prompt_ids"), r.gen_prompt);
        assert_eq!(v["text"], Value::Null, "a fixture has no tokenizer that fits");
        assert_eq!(v["stop_reason"], "length");
    }
}

#[test]
fn a_ragged_batch_gives_every_sequence_its_own_result() {
    let dir = fixture("hybrid-3to1");
    let r = reference(&dir);
    let other = vec![5, 6, 7];
    let longer: Vec<i32> = r.tokens[..13].to_vec();
    let cfg = greedy(24, usize::MAX);
    let batch = run_fixture(&dir, &[other.clone(), r.gen_prompt.clone(), longer.clone()], &cfg);
    assert_eq!(batch[1], r.gen_ids);
    assert_eq!(batch[0], run_fixture(&dir, &[other], &cfg)[0]);
    assert_eq!(batch[2], run_fixture(&dir, &[longer], &cfg)[0]);
}

#[test]
fn stops_at_eos_max_tokens_and_positions() {
    let dir = fixture("hybrid-3to1");
    let r = reference(&dir);
    // EOS: the first occurrence of the 6th greedy id ends the sequence and is kept.
    let eos = r.gen_ids[5];
    let first = r.gen_ids.iter().position(|&t| t == eos).unwrap();
    let cfg = GenerateConfig { eos_ids: vec![eos], ..greedy(24, usize::MAX) };
    assert_eq!(run_fixture(&dir, std::slice::from_ref(&r.gen_prompt), &cfg)[0], r.gen_ids[..=first]);
    // Positions: 8 prompt tokens and 11 positions leave room for 4 tokens (the last not fed).
    let m = open_model(&dir, &LowerOptions::default()).unwrap();
    let w = Weights::open(&m.spec, &dir).unwrap();
    let mut s = Session::new(m.program, &w, m.spec.vocab_size, 11, 1);
    let (g, _) = generate(&mut s, std::slice::from_ref(&r.gen_prompt), None, &greedy(24, 11), |_, _| {}).unwrap();
    assert_eq!(g[0].generated_ids, r.gen_ids[..4]);
    assert_eq!(g[0].stop_reason, StopReason::Positions);
    let g = run_fixture(&dir, std::slice::from_ref(&r.gen_prompt), &greedy(3, usize::MAX));
    assert_eq!(g[0], r.gen_ids[..3]);
}

/// GPT-2's byte → character map, which byte-level BPE vocabularies (Qwen's) are written in.
fn byte_char(b: u8) -> char {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    if printable(b) {
        return char::from(b);
    }
    let n = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + n).unwrap()
}

fn byte_token(t: &Tokenizer, b: u8) -> u32 {
    t.token_id(&byte_char(b).to_string()).unwrap_or_else(|| panic!("no byte token for {b:#x}"))
}

#[test]
fn streamed_text_holds_back_multi_byte_characters_split_across_tokens() {
    let t = Tokenizer::qwen();
    let mut s = TextStream::new(&t, &[]);
    let mut pieces = Vec::new();
    // "a", then 😀 (F0 9F 98 80) one byte token at a time, then "é" (C3 A9) likewise.
    let mut ids = vec![t.encode("a").unwrap()[0]];
    ids.extend("😀é".bytes().map(|b| byte_token(&t, b)));
    for id in ids {
        pieces.push(s.push(id).unwrap().0);
    }
    pieces.push(s.finish().unwrap());
    assert_eq!(pieces, ["a", "", "", "", "😀", "", "é", ""]);
    assert_eq!(s.text(), "a😀é");
    // An incomplete character at the very end comes out as U+FFFD on finish.
    let mut s = TextStream::new(&t, &[]);
    assert_eq!(s.push(byte_token(&t, 0xE4)).unwrap().0, "");
    assert_eq!(s.finish().unwrap(), "\u{FFFD}");
}

#[test]
fn stop_strings_cut_the_text_across_tokens() {
    let t = Tokenizer::qwen();
    let ids = t.encode("Hello world, this is the END of it").unwrap();
    let mut s = TextStream::new(&t, &["EN".to_string(), "of it".to_string()]);
    let mut shown = String::new();
    let mut stopped_at = None;
    for (i, &id) in ids.iter().enumerate() {
        let (piece, hit) = s.push(id).unwrap();
        shown += &piece;
        if hit {
            stopped_at = Some(i);
            break;
        }
    }
    shown += &s.finish().unwrap();
    assert_eq!(shown, "Hello world, this is the ");
    assert_eq!(s.text(), shown);
    assert!(stopped_at.is_some());
}

#[test]
fn hide_think_works_on_real_token_boundaries() {
    let t = Tokenizer::qwen();
    let ids = t.encode("<think>\nLet me think: 2+2.\n</think>\n\nIt is 4.").unwrap();
    assert_eq!(ids[0], 151667, "<think> is one token");
    assert!(ids.contains(&151668), "</think> is one token");
    let mut s = TextStream::new(&t, &[]);
    let mut f = ThinkFilter::new(false);
    let mut shown = String::new();
    for id in ids {
        shown += &f.push(&s.push(id).unwrap().0);
    }
    shown += &f.push(&s.finish().unwrap());
    shown += &f.finish();
    assert_eq!(shown, "It is 4.");
}
