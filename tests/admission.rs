//! Hostile inputs through the CLI: sizes that cannot fit (huge-but-valid dims in a spec and in
//! an HF config, a context or a batch the state cannot hold, a file with no end) and a
//! tokenizer.json with a hostile padding section. Each must end in a named error and exit 1,
//! and qgc runs under an address-space cap far below what the input asks for, so an attempt to
//! allocate it would abort the process and fail the test: nothing is allocated beyond the
//! budget.

mod common;

use common::{fixture, root, temp_dir};
use serde_json::{json, Value};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

/// The child's address space: room for qgc itself, nowhere near the sizes asked for.
const ADDRESS_SPACE: u64 = 8 << 30;

/// Runs qgc with `--memory-limit 2GiB` under the address-space cap; (exit code, stderr).
fn capped(args: &[&str]) -> (i32, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_qgc"));
    cmd.args(args).args(["--memory-limit", "2GiB"]).current_dir(root());
    // SAFETY: the closure runs in the forked child before exec and only calls setrlimit,
    // which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let cap = libc::rlimit { rlim_cur: ADDRESS_SPACE, rlim_max: ADDRESS_SPACE };
            if libc::setrlimit(libc::RLIMIT_AS, &cap) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Asserts a refusal: exit 1 (not a signal, not a panic's 101), one `error:` line naming
/// `what`, and the size it names at least `at_least` bytes.
fn refused(args: &[&str], what: &str, at_least: f64) {
    let (code, err) = capped(args);
    assert_eq!(code, 1, "qgc {args:?} exited {code}: {err}");
    assert!(!err.contains("panicked") && !err.contains("memory allocation"), "qgc {args:?}: {err}");
    let line = err.lines().find(|l| l.contains(what)).unwrap_or_else(|| panic!("qgc {args:?}: no {what:?} in {err}"));
    assert!(line.ends_with("of memory left under --memory-limit"), "{line}");
    let (num, unit) = {
        let before = line.split(" needed").next().unwrap();
        let mut it = before.rsplit(' ');
        let unit = it.next().unwrap();
        (it.next().unwrap().parse::<f64>().unwrap(), unit)
    };
    let scale = match unit {
        "KiB" => 1024f64,
        "MiB" => 1024f64.powi(2),
        "GiB" => 1024f64.powi(3),
        "TiB" => 1024f64.powi(4),
        "PiB" => 1024f64.powi(5),
        u => panic!("unit {u} in {line}"),
    };
    assert!(num * scale >= at_least, "{line}: expected at least {at_least} bytes");
}

fn tiny() -> Value {
    serde_json::from_str(&std::fs::read_to_string(root().join("models/qwen3-next-tiny.json")).unwrap()).unwrap()
}

fn write(dir: &Path, name: &str, v: &Value) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_string_pretty(v).unwrap()).unwrap();
    p
}

/// An HF directory: the hybrid fixture's weights under a config with `key` set to `value`.
fn hf_dir_with(key: &str, value: Value) -> PathBuf {
    let d = temp_dir("huge-config");
    let src = fixture("hybrid-3to1");
    for f in ["model.safetensors", "generation_config.json"] {
        std::fs::copy(src.join(f), d.join(f)).unwrap();
    }
    let mut c: Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    c[key] = value;
    write(&d, "config.json", &c);
    d
}

#[test]
fn a_huge_head_dim_in_a_spec_is_refused_by_every_command() {
    let d = temp_dir("huge-head");
    let mut s = tiny();
    s["blocks"]["attn_moe"]["mixer"]["head_dim"] = json!(1u64 << 31);
    let spec = write(&d, "spec.json", &s);
    let spec = spec.to_str().unwrap();
    let out = d.join("m.qgc");
    // One decode step: the gated query alone is 4 heads × 2^31 × 2 × 4 bytes.
    let step = 4.0 * 2f64.powi(31) * 2.0 * 4.0;
    refused(&["compile", spec, "-o", out.to_str().unwrap()], "one decode step of qwen3-next-tiny", step);
    assert!(!out.exists(), "nothing half-written");
    refused(&["inspect", spec], "one decode step of qwen3-next-tiny", step);
    // Random weights: q_proj alone is hidden 64 × (4 heads × 2^31 × 2) f32s.
    let weights = 64.0 * 4.0 * 2f64.powi(31) * 2.0 * 4.0;
    refused(&["run", spec, "--random-weights", "--tokens", "1,2"], "random f32 weights of qwen3-next-tiny", weights);
    refused(&["bench", spec, "--random-weights"], "random f32 weights of qwen3-next-tiny", weights);
    refused(&["bench", spec, "--random-weights", "--weights-dtype", "bf16"], "random bf16 weights", weights / 2.0);
    // logits needs weights: a spec imported from the hybrid fixture with the same head dim,
    // given the fixture's checkpoint, is refused at the weight check before anything is sized.
    let hf = hf_dir_with("head_dim", json!(1u64 << 31));
    let imported = d.join("imported.json");
    let (code, _, err) = common::qgc(&["import", hf.to_str().unwrap(), "-o", imported.to_str().unwrap()], &d);
    assert_eq!(code, 0, "{err}");
    let fx = fixture("hybrid-3to1");
    let args =
        ["logits", imported.to_str().unwrap(), "--weights", fx.to_str().unwrap(), "--tokens", "1,2", "--out", "x"];
    let (code, err) = capped(&args);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("model.layers.3.self_attn.q_norm.weight: mis-shaped: expected [2147483648], found [32]"),
        "{err}"
    );
}

#[test]
fn six_billion_experts_in_a_spec_are_refused() {
    let d = temp_dir("huge-experts");
    let mut s = tiny();
    for b in ["attn_moe", "gdn_moe"] {
        s["blocks"][b]["ffn"]["num_experts"] = json!(6_000_000_000u64);
    }
    let spec = write(&d, "spec.json", &s);
    let spec = spec.to_str().unwrap();
    // The router's logits for one token: 6e9 f32s.
    refused(&["compile", spec, "-o", d.join("m.qgc").to_str().unwrap()], "one decode step", 6e9 * 4.0);
    refused(&["inspect", spec], "one decode step", 6e9 * 4.0);
    // Expert weights: 4 layers × 6e9 experts × 3 matrices of 64 × 32.
    let weights = 4.0 * 6e9 * 3.0 * 64.0 * 32.0 * 4.0;
    refused(&["run", spec, "--random-weights", "--tokens", "1"], "random f32 weights", weights);
    refused(&["bench", spec, "--random-weights"], "random f32 weights", weights);
}

#[test]
fn a_huge_head_dim_in_an_hf_config_is_refused_by_every_command() {
    let d = hf_dir_with("head_dim", json!(1u64 << 31));
    let dir = d.to_str().unwrap();
    let step = 2f64.powi(31) * 4.0;
    refused(&["compile", dir, "-o", d.join("m.qgc").to_str().unwrap()], "one decode step of qwen3-next-imported", step);
    refused(&["inspect", dir], "one decode step of qwen3-next-imported", step);
    refused(&["run", dir, "--random-weights", "--tokens", "1,2"], "random f32 weights of qwen3-next-imported", step);
    refused(&["bench", dir, "--random-weights"], "random f32 weights of qwen3-next-imported", step);
    // With its own weights the checkpoint check names the tensor before anything is sized.
    for args in [
        vec!["run", dir, "--tokens", "1,2"],
        vec!["bench", dir],
        vec!["logits", dir, "--tokens", "1,2", "--out", "x.safetensors"],
        vec!["logits", dir, "--tokens", "1,2", "--out", "x.safetensors", "--backend", "interp"],
    ] {
        let (code, err) = capped(&args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(
            err.contains("model.layers.3.self_attn.q_norm.weight: mis-shaped: expected [2147483648], found [32]"),
            "{err}"
        );
    }
}

#[test]
fn contexts_and_batches_that_cannot_fit_are_refused_before_the_work() {
    let f = fixture("hybrid-3to1");
    let f = f.to_str().unwrap();
    // The fixture's one attention layer keeps 2 KV heads × 32 dims × (K and V) f32s per token.
    let per_token = 2.0 * 32.0 * 2.0 * 4.0;
    let n = 100_000_000_000u64;
    refused(
        &["run", f, "--tokens", "1,2", "-n", &n.to_string()],
        "the decode state of 1 sequence(s) at 100000000002 tokens",
        per_token * 1e11,
    );
    refused(
        &["run", f, "--tokens", "1,2", "-n", &n.to_string(), "--backend", "interp"],
        "the decode state of 1 sequence(s)",
        per_token * 1e11,
    );
    refused(
        &["bench", f, "--prefill", "10000000000"],
        "the decode state of 1 sequence(s) at 10000000024 tokens",
        per_token * 1e10,
    );
    refused(
        &["bench", f, "--decode", "100000000000"],
        "the decode state of 1 sequence(s) at 100000000512 tokens",
        per_token * 1e11,
    );
    let d = temp_dir("batch");
    let prompts = d.join("prompts.txt");
    std::fs::write(&prompts, "hello\nworld there\nthird\n").unwrap();
    let spec = root().join("models/qwen3-next-tiny.json");
    let args = ["run", spec.to_str().unwrap(), "--random-weights", "--prompts-file", prompts.to_str().unwrap(), "-n"];
    let n = 10_000_000_000u64.to_string();
    refused(&[&args[..], &[n.as_str()]].concat(), "the decode state of 3 sequence(s)", 3.0 * 1e10 * 4.0);
    // A prompt file with no end is read only as far as the budget.
    refused(&["tokenize", "--file", "/dev/zero"], "reading /dev/zero", 2.0 * 1024f64.powi(3));
}

#[test]
fn a_hostile_padding_section_is_a_named_error_for_tokenize_and_run() {
    let d = temp_dir("hostile-tokenizer");
    let mut t: Value = serde_json::from_slice(qgc_runtime::tokenizer::QWEN_TOKENIZER_JSON).unwrap();
    t["padding"] = json!({"strategy": {"Fixed": 1_000_000_000_000_000u64}, "direction": "Right",
        "pad_to_multiple_of": null, "pad_id": 0, "pad_type_id": 0, "pad_token": "<pad>"});
    let tok = write(&d, "tokenizer.json", &t);
    let tok = tok.to_str().unwrap();
    let want = format!(
        "error: {tok}: not a valid tokenizer.json: padding.strategy.Fixed is 1000000000000000, more than the 16777216 tokens qgc accepts (qgc pads batches itself and ignores this section; remove it)\n"
    );
    let spec = root().join("models/qwen3-next-tiny.json");
    for args in [
        vec!["tokenize", "--tokenizer", tok, "--text", "hello"],
        vec!["run", spec.to_str().unwrap(), "--random-weights", "--tokenizer", tok, "--prompt", "hello"],
    ] {
        let (code, err) = capped(&args);
        assert_eq!((code, err.as_str()), (1, want.as_str()), "{args:?}");
    }
    // A reasonable padding section is validated and dropped: the same text encodes as without it.
    t["padding"]["strategy"] = json!({"Fixed": 8});
    let ok = write(&d, "ok.json", &t);
    let a = common::qgc(&["tokenize", "--tokenizer", ok.to_str().unwrap(), "--text", "hello world"], &d);
    let b = common::qgc(&["tokenize", "--text", "hello world"], &d);
    assert_eq!(a, b);
    assert_eq!(a.0, 0);
}
