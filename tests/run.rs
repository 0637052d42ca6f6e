//! `qgc run` end to end: every flag family on the embedded tiny model with random weights and
//! the shipped tokenizer, and every bad input with its exact error, a non-zero exit and no panic.

mod common;

use common::{fixture, qgc, reference, root, temp_dir};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

const TINY: &str = "models/qwen3-next-tiny.json";

/// `qgc run TINY --random-weights ARGS --json`: the one JSON object per prompt.
fn tiny_json(args: &[&str]) -> Vec<Value> {
    let tmp = std::env::temp_dir();
    let mut all = vec!["run", TINY, "--random-weights", "--json"];
    all.extend_from_slice(args);
    let (code, out, err) = qgc(&all, &tmp);
    assert_eq!(code, 0, "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    out.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn one(args: &[&str]) -> Value {
    let mut v = tiny_json(args);
    assert_eq!(v.len(), 1, "{v:?}");
    v.remove(0)
}

fn ids(v: &Value, key: &str) -> Vec<i32> {
    serde_json::from_value(v[key].clone()).unwrap()
}

fn text(v: &Value) -> String {
    v["text"].as_str().unwrap_or_else(|| panic!("no text in {v}")).to_string()
}

#[test]
fn random_weights_tiny_model_streams_text() {
    let tmp = temp_dir("stream");
    let (code, out, err) = qgc(&["run", TINY, "--random-weights", "--prompt", "Hello, my name is", "-n", "12"], &tmp);
    assert_eq!(code, 0, "{err}");
    assert!(out.ends_with('\n') && out.trim().chars().count() >= 12, "{out:?}");
    // The timing line, llama.cpp style.
    let line = err.lines().last().unwrap();
    assert!(line.starts_with("load ") && line.contains(" | prompt 5 tokens, "), "{err}");
    assert!(line.contains(" | first token ") && line.contains(" | generated 12 tokens, "), "{err}");
    assert!(line.ends_with(" tok/s)"), "{err}");
    // No progress bar when stderr is not a terminal.
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn json_has_the_documented_keys() {
    let v = one(&["--prompt", "Hi", "-n", "5"]);
    for k in ["text", "prompt_ids", "generated_ids", "timings", "stop_reason"] {
        assert!(v.get(k).is_some(), "{k} missing in {v}");
    }
    for k in ["prompt_tokens", "prefill_s", "prefill_tok_s", "ttft_s", "generated_tokens", "decode_s", "decode_tok_s"] {
        assert!(v["timings"].get(k).is_some(), "timings.{k} missing in {v}");
    }
    assert_eq!(ids(&v, "prompt_ids"), [13048]); // "Hi"
    assert_eq!(ids(&v, "generated_ids").len(), 5);
    assert_eq!(v["stop_reason"], "length");
    assert_eq!(v["timings"]["generated_tokens"], 5);
    assert!(!text(&v).is_empty());
}

#[test]
fn seed_makes_sampling_reproducible() {
    let a = one(&["--prompt", "Once upon a time", "-n", "8", "--seed", "5"]);
    let b = one(&["--prompt", "Once upon a time", "-n", "8", "--seed", "5"]);
    let c = one(&["--prompt", "Once upon a time", "-n", "8", "--seed", "6"]);
    assert_eq!(a["generated_ids"], b["generated_ids"]);
    assert_eq!(a["text"], b["text"]);
    assert_ne!(a["generated_ids"], c["generated_ids"]);
}

#[test]
fn samplers_that_keep_one_token_equal_greedy() {
    let base = ["--prompt", "The weather", "-n", "6", "--seed", "1"];
    let run = |extra: &[&str]| ids(&one(&[&base[..], extra].concat()), "generated_ids");
    let greedy = run(&["--temp", "0"]);
    assert_eq!(run(&["--temp", "1.5", "--top-k", "1"]), greedy);
    assert_eq!(run(&["--temp", "1", "--top-k", "0", "--top-p", "0.000001"]), greedy);
    assert_eq!(run(&["--temp", "1", "--top-k", "0", "--top-p", "1", "--min-p", "1"]), greedy);
    // Greedy ignores every other sampler.
    assert_eq!(run(&["--temp", "0", "--top-k", "3", "--repetition-penalty", "5"]), greedy);
    // Defaults (temperature 0.7, top-k 20, top-p 0.8) do sample.
    assert_ne!(run(&[]), greedy);
}

#[test]
fn repetition_penalty_stops_repeats() {
    // dense-tied-bf16's greedy continuation repeats ids; with a huge penalty and top-k 1 none
    // repeats and none comes from the prompt.
    let dir = fixture("dense-tied-bf16");
    let r = reference(&dir);
    let prompt: Vec<String> = r.gen_prompt.iter().map(i32::to_string).collect();
    let tmp = temp_dir("penalty");
    let args = ["run", &dir.display().to_string(), "--tokens", &prompt.join(","), "-n", "24", "--json"];
    let run = |extra: &[&str]| {
        let (code, out, err) = qgc(&[&args[..], extra].concat(), &tmp);
        assert_eq!(code, 0, "{err}");
        ids(&serde_json::from_str(&out).unwrap(), "generated_ids")
    };
    let plain = run(&["--temp", "1", "--top-k", "1"]);
    assert_eq!(plain, r.gen_ids);
    let penalised = run(&["--temp", "1", "--top-k", "1", "--repeat-penalty", "1000000"]);
    let mut seen: Vec<i32> = r.gen_prompt.clone();
    for t in &penalised {
        assert!(!seen.contains(t), "{t} repeats in {penalised:?}");
        seen.push(*t);
    }
}

#[test]
fn chat_template_wraps_the_prompt() {
    let v = one(&["--chat", "--prompt", "Hi", "-n", "2"]);
    // <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n
    assert_eq!(ids(&v, "prompt_ids"), [151644, 872, 198, 13048, 151645, 198, 151644, 77091, 198]);
    let v = one(&["--chat", "--system", "Be brief.", "--prompt", "Hi", "-n", "2"]);
    let p = ids(&v, "prompt_ids");
    assert_eq!(p[..3], [151644, 8948, 198]); // <|im_start|>system\n
    assert_eq!(p[p.len() - 9..], [151644, 872, 198, 13048, 151645, 198, 151644, 77091, 198]);
}

#[test]
fn stop_strings_and_max_tokens() {
    let base = ["--prompt", "Hello", "--temp", "0", "-n", "16"];
    let full = one(&base);
    let t = text(&full);
    assert_eq!(ids(&full, "generated_ids").len(), 16);
    // Cut at a stop string taken from the middle of the greedy text.
    let chars: Vec<char> = t.chars().collect();
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 3].iter().collect();
    let at = t.find(&stop).unwrap();
    let v = one(&[&base[..], &["--stop", "zzzz-never", "--stop", &stop]].concat());
    assert_eq!(text(&v), t[..at]);
    assert_eq!(v["stop_reason"], "stop");
    assert!(ids(&v, "generated_ids").len() < 16);
    assert_eq!(ids(&v, "generated_ids")[..], ids(&full, "generated_ids")[..ids(&v, "generated_ids").len()]);
    // -n 3 keeps the first three greedy ids.
    let v = one(&["--prompt", "Hello", "--temp", "0", "-n", "3"]);
    assert_eq!(ids(&v, "generated_ids")[..], ids(&full, "generated_ids")[..3]);
}

#[test]
fn hide_think_hides_an_open_think_block() {
    // A prompt that opens a think block: everything generated is inside it.
    let shown = one(&["--prompt", "Question?<think>\n", "-n", "6", "--temp", "0"]);
    assert!(!text(&shown).is_empty());
    let hidden = one(&["--prompt", "Question?<think>\n", "-n", "6", "--temp", "0", "--hide-think"]);
    assert_eq!(hidden["generated_ids"], shown["generated_ids"]);
    assert_eq!(text(&hidden), "");
    // Streamed: nothing but the final newline.
    let tmp = temp_dir("think");
    let (code, out, err) =
        qgc(&["run", TINY, "--random-weights", "--prompt", "Q<think>", "-n", "4", "--temp", "0", "--hide-think"], &tmp);
    assert_eq!((code, out.as_str()), (0, "\n"), "{err}");
}

#[test]
fn prompts_file_runs_one_batch_in_order() {
    let tmp = temp_dir("batch");
    let prompts = ["Hello", "The capital of France is", "", "One two three four five six"];
    let f = tmp.join("prompts.txt");
    std::fs::write(&f, prompts.join("\n") + "\n").unwrap();
    let batch = tiny_json(&["--prompts-file", &f.display().to_string(), "-n", "5", "--seed", "3"]);
    let nonblank: Vec<&str> = prompts.iter().copied().filter(|p| !p.is_empty()).collect();
    assert_eq!(batch.len(), nonblank.len());
    for (v, p) in batch.iter().zip(&nonblank) {
        // Each sequence has its own sampler and state: the same as the prompt run alone.
        let alone = one(&["--prompt", p, "-n", "5", "--seed", "3"]);
        assert_eq!(v["prompt_ids"], alone["prompt_ids"], "{p}");
        assert_eq!(v["generated_ids"], alone["generated_ids"], "{p}");
        assert_eq!(v["text"], alone["text"], "{p}");
    }
    // Text mode: each result under a header, in order.
    let (code, out, err) =
        qgc(&["run", TINY, "--random-weights", "--prompts-file", &f.display().to_string(), "-n", "3"], &tmp);
    assert_eq!(code, 0, "{err}");
    let headers: Vec<&str> = out.lines().filter(|l| l.starts_with("--- prompt ")).collect();
    assert_eq!(headers, ["--- prompt 1 ---", "--- prompt 2 ---", "--- prompt 3 ---"]);
}

#[test]
fn tokens_without_a_fitting_tokenizer_print_ids() {
    let tmp = temp_dir("ids");
    let dir = fixture("hybrid-3to1").display().to_string();
    let (code, out, err) = qgc(&["run", &dir, "--tokens", "1,2,3", "-n", "4", "--temp", "0"], &tmp);
    assert_eq!(code, 0, "{err}");
    let got: Vec<i32> = out.trim().split(',').map(|t| t.parse().unwrap()).collect();
    assert_eq!(got.len(), 4);
}

#[test]
fn artifact_with_weights_runs() {
    let tmp = temp_dir("artifact");
    let art = tmp.join("m.qgc").display().to_string();
    let dir = fixture("hybrid-3to1");
    let (code, _, err) = qgc(&["compile", &dir.display().to_string(), "-o", &art], &tmp);
    assert_eq!(code, 0, "{err}");
    let r = reference(&dir);
    let prompt: Vec<String> = r.gen_prompt.iter().map(i32::to_string).collect();
    let w = dir.display().to_string();
    let (code, out, err) =
        qgc(&["run", &art, "--weights", &w, "--tokens", &prompt.join(","), "--temp", "0", "-n", "24", "--json"], &tmp);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(ids(&v, "generated_ids"), r.gen_ids);
}

/// A tiny spec with `edit` applied, written to `tmp/spec.json`.
fn tiny_spec(tmp: &Path, edit: impl FnOnce(&mut Value)) -> String {
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(root().join(TINY)).unwrap()).unwrap();
    edit(&mut v);
    let p = tmp.join("spec.json");
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    p.display().to_string()
}

#[test]
fn generation_runs_past_the_model_positions_like_hf() {
    // HF's generate does not stop at max_position_embeddings (its default RoPE does not enforce
    // it); the prompt must fit, the continuation may run past with a warning.
    let tmp = temp_dir("positions");
    let spec = tiny_spec(&tmp, |v| v["max_position_embeddings"] = json!(10));
    let (code, out, err) =
        qgc(&["run", &spec, "--random-weights", "--tokens", "1,2,3,4,5,6,7,8", "-n", "6", "--json"], &tmp);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(ids(&v, "generated_ids").len(), 6);
    assert_eq!(v["stop_reason"], "length");
    assert_eq!(
        err.lines().next().unwrap(),
        "warning: generation ran past the model's max_position_embeddings 10; computed anyway, as HF does"
    );
    // Up to the last position: no warning.
    let (code, _, err) = qgc(&["run", &spec, "--random-weights", "--tokens", "1,2,3,4,5,6,7,8", "-n", "3"], &tmp);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning"), "{err}");
}

type Setup = fn(&Path) -> Vec<String>;

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn fix(name: &str) -> String {
    fixture(name).display().to_string()
}

/// Clap's usage line for the prompt-source group.
const SOURCES: &str = "<--prompt <TEXT>|--prompt-file <FILE>|--tokens <IDS>|--prompts-file <FILE>>";

fn usage(msg: &str) -> String {
    format!("error: {msg}\n\nFor more information, try '--help'.")
}

/// (name, setup, exact stderr without its final newline, exit code).
fn cases() -> Vec<(&'static str, Setup, String, i32)> {
    vec![
        ("missing weights dir", |t| args(&["run", TINY, "--weights", &t.join("nowhere").display().to_string(), "--tokens", "1"]),
            "error: checkpoint $TMP/nowhere does not exist".into(), 1),
        ("spec without weights", |_| args(&["run", TINY, "--tokens", "1"]),
            "error: models/qwen3-next-tiny.json: no weights: pass --weights DIR (an HF checkpoint directory) or --random-weights".into(), 1),
        ("other model's weights", |_| args(&["run", &fix("hybrid-3to1"), "--weights", &fix("dense-tied-bf16"), "--tokens", "1"]),
            "error: checkpoint $ROOT/tests/fixtures/dense-tied-bf16 does not match the spec: 40 missing, 47 unexpected, 80 mis-shaped".into(), 1),
        ("missing tokenizer file", |t| args(&["run", TINY, "--random-weights", "--tokenizer", &t.join("tok.json").display().to_string(), "--prompt", "hi"]),
            "error: $TMP/tok.json: No such file or directory (os error 2)".into(), 1),
        ("tokenizer larger than the vocabulary", |_| args(&["run", &fix("hybrid-3to1"), "--prompt", "hi"]),
            "error: tokenizer has 151669 tokens but the model's vocabulary is 320; pass --tokens or a matching --tokenizer".into(), 1),
        ("explicit tokenizer larger than the vocabulary", |_| args(&["run", &fix("hybrid-3to1"), "--tokenizer", "runtime/assets/qwen-tokenizer.json", "--tokens", "1"]),
            "error: tokenizer has 151669 tokens but the model's vocabulary is 320; pass --tokens or a matching --tokenizer".into(), 1),
        ("stop without a tokenizer", |_| args(&["run", &fix("hybrid-3to1"), "--tokens", "1", "--stop", "x"]),
            "error: --stop needs a tokenizer and $ROOT/tests/fixtures/hybrid-3to1 has none that fits; pass a matching --tokenizer".into(), 1),
        ("corrupted artifact", |t| {
            let a = t.join("m.qgc");
            let out = Command::new(env!("CARGO_BIN_EXE_qgc")).args(["compile", TINY, "-o", &a.display().to_string()]).current_dir(root()).output().unwrap();
            assert!(out.status.success());
            let mut b = std::fs::read(&a).unwrap();
            let i = b.len() / 2;
            b[i] ^= 0x20;
            std::fs::write(&a, b).unwrap();
            args(&["run", &a.display().to_string(), "--random-weights", "--tokens", "1"])
        }, "error: $TMP/m.qgc: checksum mismatch: the artifact is corrupted".into(), 1),
        ("empty prompt", |_| args(&["run", TINY, "--random-weights", "--prompt", ""]), "error: the prompt is empty".into(), 1),
        ("empty prompt file", |t| {
            std::fs::write(t.join("p.txt"), "\n").unwrap();
            args(&["run", TINY, "--random-weights", "--prompt-file", &t.join("p.txt").display().to_string()])
        }, "error: the prompt is empty".into(), 1),
        ("blank prompts file", |t| {
            std::fs::write(t.join("p.txt"), "\n  \n").unwrap();
            args(&["run", TINY, "--random-weights", "--prompts-file", &t.join("p.txt").display().to_string()])
        }, "error: $TMP/p.txt: no prompts (one prompt per line)".into(), 1),
        ("missing prompt file", |t| args(&["run", TINY, "--random-weights", "--prompt-file", &t.join("p.txt").display().to_string()]),
            "error: $TMP/p.txt: No such file or directory (os error 2)".into(), 1),
        ("no token ids", |_| args(&["run", TINY, "--random-weights", "--tokens", ","]), "error: --tokens: no token ids given".into(), 1),
        ("token out of vocab", |_| args(&["run", &fix("hybrid-3to1"), "--tokens", "1,320"]),
            "error: --tokens: token id 320 is outside the vocabulary of $ROOT/tests/fixtures/hybrid-3to1 (0..320)".into(), 1),
        ("ids longer than the positions", |t| {
            let spec = tiny_spec(t, |v| v["max_position_embeddings"] = json!(4));
            args(&["run", &spec, "--random-weights", "--tokens", "1,2,3,4,5"])
        }, "error: the prompt has 5 tokens but the model has 4 positions".into(), 1),
        ("text longer than the positions", |t| {
            let spec = tiny_spec(t, |v| v["max_position_embeddings"] = json!(4));
            std::fs::write(t.join("p.txt"), "hi\none two three four five\n").unwrap();
            args(&["run", &spec, "--random-weights", "--prompts-file", &t.join("p.txt").display().to_string()])
        }, "error: prompt on line 2 of $TMP/p.txt has 5 tokens but the model has 4 positions".into(), 1),
        ("negative temperature", |_| args(&["run", TINY, "--tokens", "1", "--temp", "-1"]),
            usage("invalid value '-1' for '--temp <T>': must be >= 0"), 2),
        ("temperature not a number", |_| args(&["run", TINY, "--tokens", "1", "--temp", "hot"]),
            usage("invalid value 'hot' for '--temp <T>': not a number"), 2),
        ("top-p above 1", |_| args(&["run", TINY, "--tokens", "1", "--top-p", "1.5"]),
            usage("invalid value '1.5' for '--top-p <P>': must be in (0, 1]"), 2),
        ("min-p negative", |_| args(&["run", TINY, "--tokens", "1", "--min-p", "-0.1"]),
            usage("invalid value '-0.1' for '--min-p <P>': must be in [0, 1]"), 2),
        ("zero repetition penalty", |_| args(&["run", TINY, "--tokens", "1", "--repetition-penalty", "0"]),
            usage("invalid value '0' for '--repetition-penalty <X>': must be > 0"), 2),
        ("negative top-k", |_| args(&["run", TINY, "--tokens", "1", "--top-k", "-2"]),
            usage("invalid value '-2' for '--top-k <K>': invalid digit found in string"), 2),
        ("zero new tokens", |_| args(&["run", TINY, "--tokens", "1", "-n", "0"]),
            usage("invalid value '0' for '--max-new-tokens <N>': must be at least 1"), 2),
        ("two prompt sources", |_| args(&["run", TINY, "--tokens", "1", "--prompt", "a"]),
            usage(&format!("the argument '--tokens <IDS>' cannot be used with '--prompt <TEXT>'\n\nUsage: qgc run {SOURCES} <MODEL>")), 2),
        ("system without chat", |_| args(&["run", TINY, "--prompt", "a", "--system", "s"]),
            usage(&format!("the following required arguments were not provided:\n  --chat\n\nUsage: qgc run --chat --system <TEXT> {SOURCES} <MODEL>")), 2),
        ("chat with ids", |_| args(&["run", TINY, "--tokens", "1", "--chat"]),
            usage(&format!("the argument '--tokens <IDS>' cannot be used with '--chat'\n\nUsage: qgc run {SOURCES} <MODEL>")), 2),
        ("random and real weights", |_| args(&["run", TINY, "--tokens", "1", "--random-weights", "--weights", "x"]),
            usage(&format!("the argument '--random-weights' cannot be used with '--weights <DIR>'\n\nUsage: qgc run --random-weights {SOURCES} <MODEL>")), 2),
    ]
}

#[test]
fn bad_inputs_give_exact_errors() {
    let mut failures = Vec::new();
    for (name, setup, want, want_code) in cases() {
        let tmp = temp_dir("bad");
        let a = setup(&tmp);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let (code, out, err) = qgc(&a, &tmp);
        let err = err.trim_end();
        let first = |s: &str| s.lines().next().unwrap_or("").to_string();
        // Mismatch reports list every problem; the first line is the stable part.
        let got = if want.lines().count() == 1 && name.contains("weights") { first(err) } else { err.to_string() };
        if code != want_code || got != want || !out.is_empty() || err.contains("panicked") {
            failures.push(format!("{name}: exit {code}, stdout {out:?}\n  got:  {err:?}\n  want: {want:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
