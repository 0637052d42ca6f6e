//! `--backend` on run/logits and `qgc bench`: the compiled backend gives the interpreter's
//! greedy text and logits through the CLI; bench prints its documented JSON keys with sane
//! values (numbers only; speed claims live in BENCHMARKS.md), and rejects bad arguments.

mod common;

use common::{fixture, qgc, reference, rel_err, temp_dir};
use serde_json::Value;

const TINY: &str = "models/qwen3-next-tiny.json";

#[test]
fn run_greedy_text_is_the_same_on_both_backends() {
    let tmp = std::env::temp_dir();
    let out = |backend: &str| {
        let args = [
            "run",
            TINY,
            "--random-weights",
            "--prompt",
            "The hybrid model says",
            "-n",
            "12",
            "--temp",
            "0",
            "--json",
            "--backend",
            backend,
        ];
        let (code, out, err) = qgc(&args, &tmp);
        assert_eq!(code, 0, "{backend}: {err}");
        let v: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
        v["generated_ids"].clone()
    };
    assert_eq!(out("cpu"), out("interp"));
}

#[test]
fn logits_backends_agree_with_hf() {
    let dir = fixture("hybrid-3to1");
    let r = reference(&dir);
    let tmp = temp_dir("logits-backend");
    let toks: Vec<String> = r.tokens.iter().map(i32::to_string).collect();
    let toks = toks.join(",");
    let prefill = r.prefill.to_string();
    for backend in ["cpu", "interp"] {
        let out = tmp.join(format!("{backend}.safetensors"));
        let args = [
            "logits",
            dir.to_str().unwrap(),
            "--tokens",
            &toks,
            "--prefill",
            &prefill,
            "--out",
            out.to_str().unwrap(),
            "--backend",
            backend,
        ];
        let (code, _, err) = qgc(&args, &tmp);
        assert_eq!(code, 0, "{err}");
        let bytes = std::fs::read(&out).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let l: Vec<f32> = st
            .tensor("logits")
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let e = rel_err(&l, &r.logits);
        assert!(e <= 1e-4, "{backend}: rel {e:.3e} against HF");
    }
}

#[test]
fn bench_json_has_the_documented_keys() {
    let tmp = std::env::temp_dir();
    for dtype in ["f32", "bf16"] {
        let args =
            ["bench", TINY, "--random-weights", "--weights-dtype", dtype, "--prefill", "20", "--decode", "4", "--json"];
        let (code, out, err) = qgc(&args, &tmp);
        assert_eq!(code, 0, "{err}");
        let v: Value = serde_json::from_str(out.trim()).unwrap();
        for key in ["prefill_tok_s", "decode_tok_s", "decode_floor_ratio", "copy_bandwidth_gb_s", "compile_s"] {
            let x = v[key].as_f64().unwrap_or_else(|| panic!("{key} missing in {v}"));
            assert!(x.is_finite() && x > 0.0, "{key} = {x}");
        }
        assert_eq!(v["weights_dtype"], dtype);
        assert_eq!(v["prefill_tokens"], 20);
        // Tiny model: vocab 151936 x hidden 64 lm_head dominates; bf16 halves the bytes.
        let bytes = v["decode_bytes_per_token"].as_u64().unwrap();
        let lm_head = 151_936 * 64 * if dtype == "bf16" { 2 } else { 4 };
        assert!(bytes > lm_head && bytes < 2 * lm_head, "{bytes} bytes per token");
    }
}

#[test]
fn bench_rejects_bad_arguments() {
    let tmp = std::env::temp_dir();
    let (code, _, err) = qgc(&["bench", TINY, "--random-weights", "--prefill", "0"], &tmp);
    assert_ne!(code, 0);
    assert!(err.contains("--prefill") && !err.contains("panicked"), "{err}");
    let (code, _, err) = qgc(&["bench", TINY, "--decode", "3"], &tmp);
    assert_ne!(code, 0);
    assert!(err.contains("no weights") && !err.contains("panicked"), "{err}");
    let (code, _, err) = qgc(&["run", TINY, "--random-weights", "--prompt", "x", "--backend", "gpu"], &tmp);
    assert_ne!(code, 0);
    assert!(err.contains("invalid value 'gpu'"), "{err}");
}
