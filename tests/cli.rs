//! The CLI end to end: exact error text, non-zero exit, no panic and nothing half-written for
//! bad specs, configs, checkpoints, artifacts and arguments; and the happy paths of every command.

mod common;

use common::{copy_fixture, fixture, qgc, root, temp_dir};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn tiny_spec() -> Value {
    serde_json::from_str(&std::fs::read_to_string(root().join("models/qwen3-next-tiny.json")).unwrap()).unwrap()
}

fn hf_config() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("hybrid-3to1").join("config.json")).unwrap()).unwrap()
}

/// Sets (or adds) the value at a JSON pointer.
fn set(v: &mut Value, pointer: &str, x: Value) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    match v.pointer_mut(parent).unwrap_or_else(|| panic!("no {parent}")) {
        Value::Object(m) => {
            m.insert(key.to_string(), x);
        }
        Value::Array(a) => a[key.parse::<usize>().unwrap()] = x,
        other => panic!("{parent} is {other}"),
    }
}

fn write_json(dir: &Path, name: &str, v: &Value) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_string_pretty(v).unwrap()).unwrap();
    p
}

/// Rewrites one tensor's header entry of a single-file checkpoint (same data length).
fn edit_header(file: &Path, f: impl FnOnce(&mut Value)) {
    let bytes = std::fs::read(file).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    f(&mut header);
    let mut h = serde_json::to_vec(&header).unwrap();
    while h.len() < n {
        h.push(b' ');
    }
    assert_eq!(h.len(), n, "edited header must keep its length");
    let mut out = bytes[..8].to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(file, out).unwrap();
}

/// One bad-input case: prepares files in `tmp`, returns the qgc arguments.
type Setup = fn(&Path) -> Vec<String>;

fn compile_spec(tmp: &Path, edit: impl FnOnce(&mut Value)) -> Vec<String> {
    let mut v = tiny_spec();
    edit(&mut v);
    let p = write_json(tmp, "spec.json", &v);
    vec!["compile".into(), p.display().to_string(), "-o".into(), tmp.join("out.qgc").display().to_string()]
}

fn compile_config(tmp: &Path, edit: impl FnOnce(&mut Value)) -> Vec<String> {
    let mut v = hf_config();
    edit(&mut v);
    let p = write_json(tmp, "config.json", &v);
    vec!["compile".into(), p.display().to_string(), "-o".into(), tmp.join("out.qgc").display().to_string()]
}

fn logits_on(dir: &Path, tmp: &Path, tokens: &str) -> Vec<String> {
    let out = tmp.join("out.safetensors").display().to_string();
    vec!["logits".into(), dir.display().to_string(), "--tokens".into(), tokens.into(), "--out".into(), out]
}

fn broken_checkpoint(tmp: &Path, edit: impl FnOnce(&Path)) -> Vec<String> {
    let d = copy_fixture("hybrid-3to1");
    let target = tmp.join("ckpt");
    std::fs::rename(&d, &target).unwrap();
    edit(&target);
    logits_on(&target, tmp, "1,2,3")
}

const CASES: &[(&str, Setup, &str)] = &[
    // ---- specs -------------------------------------------------------------------------------
    ("spec: kv heads", |t| compile_spec(t, |v| set(v, "/blocks/attn_moe/mixer/num_kv_heads", json!(3))), "error: $TMP/spec.json: invalid spec:\n  blocks.attn_moe.mixer.num_kv_heads: 3 does not divide num_heads 4"),
    ("spec: top_k", |t| compile_spec(t, |v| set(v, "/blocks/gdn_moe/ffn/top_k", json!(9))), "error: $TMP/spec.json: invalid spec:\n  blocks.gdn_moe.ffn.top_k: must be between 1 and num_experts 8, got 9"),
    ("spec: odd rotary", |t| compile_spec(t, |v| {
        set(v, "/blocks/attn_moe/mixer/head_dim", json!(5));
        set(v, "/blocks/attn_moe/mixer/partial_rotary_factor", json!(1.0));
    }), "error: $TMP/spec.json: invalid spec:\n  blocks.attn_moe.mixer.partial_rotary_factor: gives rotary dim int(head_dim 5 * 1) = 5, which rotates 6 dims (rounded up to even, as HF does), more than head_dim 5"),
    ("spec: value heads", |t| compile_spec(t, |v| set(v, "/blocks/gdn_moe/mixer/num_value_heads", json!(3))), "error: $TMP/spec.json: invalid spec:\n  blocks.gdn_moe.mixer.num_value_heads: 3 is not a multiple of num_key_heads 2"),
    ("spec: unknown block", |t| compile_spec(t, |v| set(v, "/layers/3", json!("attn"))), "error: $TMP/spec.json: invalid spec:\n  layers[3]: unknown block \"attn\" (blocks: attn_moe, gdn_moe)"),
    ("spec: repeat 0", |t| compile_spec(t, |v| set(v, "/layers", json!([{"pattern": ["gdn_moe"], "repeat": 0}]))), "error: $TMP/spec.json: invalid spec:\n  layers[0].repeat: must be at least 1, got 0"),
    ("spec: huge repeat", |t| compile_spec(t, |v| set(v, "/layers", json!([{"pattern": ["gdn_moe", "attn_moe"], "repeat": 1_000_000_000u64}]))), "error: $TMP/spec.json: invalid spec:\n  layers: expands to 2000000000 layers, more than the supported 4096"),
    ("spec: unknown field", |t| compile_spec(t, |v| set(v, "/blocks/gdn_moe/mixer/conv_width", json!(4))), "error: $TMP/spec.json: invalid spec:\n  blocks.gdn_moe.mixer.conv_width: unknown field `conv_width`, expected one of `num_key_heads`, `num_value_heads`, `key_head_dim`, `value_head_dim`, `conv_kernel` at line 47 column 5"),
    ("spec: wrong type", |t| compile_spec(t, |v| set(v, "/hidden_size", json!("64"))), "error: $TMP/spec.json: invalid spec:\n  hidden_size: invalid type: string \"64\", expected usize at line 49 column 21"),
    (
        "spec: three errors at once",
        |t| {
            compile_spec(t, |v| {
                set(v, "/vocab_size", json!(0));
                set(v, "/blocks/attn_moe/mixer/head_dim", json!(0));
                set(v, "/blocks/gdn_moe/ffn/expert_width", json!(0));
            })
        },
        "error: $TMP/spec.json: invalid spec:\n  vocab_size: must be positive\n  blocks.attn_moe.mixer.head_dim: must be positive\n  blocks.gdn_moe.ffn.expert_width: must be positive",
    ),
    ("spec: not JSON", |t| {
        let p = t.join("spec.json");
        std::fs::write(&p, "{\"name\": ").unwrap();
        vec!["compile".into(), p.display().to_string(), "-o".into(), t.join("out.qgc").display().to_string()]
    }, "error: $TMP/spec.json: not a qgc artifact, spec or HF config: invalid JSON: EOF while parsing a value at line 1 column 9"),
    // ---- HF configs --------------------------------------------------------------------------
    ("config: model type", |t| compile_config(t, |v| set(v, "/model_type", json!("llama"))), "error: $TMP/config.json: invalid HF config:\n  model_type: \"llama\" is not supported; qgc imports only \"qwen3_next\""),
    ("config: sparse step 0", |t| compile_config(t, |v| set(v, "/decoder_sparse_step", json!(0))), "error: $TMP/config.json: invalid HF config:\n  decoder_sparse_step: must be positive (layer i is moe when (i + 1) % decoder_sparse_step == 0)"),
    ("config: layer_types length", |t| compile_config(t, |v| set(v, "/num_hidden_layers", json!(6))), "error: $TMP/config.json: invalid HF config:\n  layer_types: has 4 entries but num_hidden_layers is 6"),
    ("config: yarn", |t| compile_config(t, |v| set(v, "/rope_parameters/rope_type", json!("yarn"))), "error: $TMP/config.json: invalid HF config:\n  rope_parameters.rope_type: \"yarn\" is not supported (only \"default\" rope is)"),
    ("config: kv heads", |t| compile_config(t, |v| set(v, "/num_key_value_heads", json!(3))), "error: $TMP/config.json: invalid HF config:\n  num_key_value_heads: 3 does not divide num_attention_heads 4"),
    // ---- checkpoints -------------------------------------------------------------------------
    ("checkpoint: missing tensor", |t| broken_checkpoint(t, |d| {
        edit_header(&d.join("model.safetensors"), |h| {
            let v = h.as_object_mut().unwrap().remove("model.norm.weight").unwrap();
            h.as_object_mut().unwrap().insert("model.norm.weigth".into(), v);
        })
    }), "error: checkpoint $TMP/ckpt does not match the spec: 1 missing, 1 unexpected\n  model.norm.weight: missing: expected [64]\n  model.norm.weigth: unexpected: found F32 [64]"),
    ("checkpoint: wrong shape", |t| broken_checkpoint(t, |d| {
        edit_header(&d.join("model.safetensors"), |h| set(h, "/model.layers.0.linear_attn.A_log/shape", json!([2, 2])))
    }), "error: checkpoint $TMP/ckpt does not match the spec: 1 mis-shaped\n  model.layers.0.linear_attn.A_log: mis-shaped: expected [4], found [2, 2]"),
    ("checkpoint: int dtype", |t| broken_checkpoint(t, |d| {
        edit_header(&d.join("model.safetensors"), |h| set(h, "/model.norm.weight/dtype", json!("I32")))
    }), "error: checkpoint $TMP/ckpt does not match the spec: 1 unsupported dtype\n  model.norm.weight: unsupported dtype: found I32 [64], supported F32, BF16, F16"),
    ("checkpoint: truncated", |t| broken_checkpoint(t, |d| {
        let f = d.join("model.safetensors");
        let b = std::fs::read(&f).unwrap();
        std::fs::write(&f, &b[..b.len() / 2]).unwrap();
    }), "error: $TMP/ckpt/model.safetensors: not a valid safetensors file: incomplete metadata, file not fully covered"),
    ("checkpoint: no safetensors", |t| broken_checkpoint(t, |d| {
        std::fs::remove_file(d.join("model.safetensors")).unwrap();
        std::fs::remove_file(d.join("reference.safetensors")).unwrap();
    }), "error: checkpoint directory $TMP/ckpt has no model.safetensors, no model.safetensors.index.json and no *.safetensors files"),
    ("checkpoint: missing shard", |t| {
        let d = copy_fixture("sharded-fused-mtp");
        std::fs::remove_file(d.join("model-00003-of-00007.safetensors")).unwrap();
        let target = t.join("ckpt");
        std::fs::rename(&d, &target).unwrap();
        logits_on(&target, t, "1,2,3")
    }, "error: $TMP/ckpt/model.safetensors.index.json: weight_map names 1 shard(s) that do not exist: model-00003-of-00007.safetensors"),
    ("checkpoint: other model's weights", |t| {
        let mut a = logits_on(&fixture("hybrid-3to1"), t, "1");
        a.extend(["--weights".into(), fixture("sharded-fused-mtp").display().to_string()]);
        a
    }, "error: checkpoint $ROOT/tests/fixtures/sharded-fused-mtp does not match the spec: 23 missing, 39 unexpected, 26 mis-shaped\n  model.layers.0.linear_attn.conv1d.weight: mis-shaped: expected [160, 1, 4], found [96, 1, 2]\n  model.layers.0.linear_attn.in_proj_qkvz.weight: mis-shaped: expected [256, 64], found [128, 64]\n…"),
    // ---- artifacts ---------------------------------------------------------------------------
    ("artifact: corrupted", |t| {
        let a = t.join("m.qgc");
        let (code, _, err) = qgc(&["compile", "models/qwen3-next-tiny.json", "-o", &a.display().to_string()], t);
        assert_eq!(code, 0, "{err}");
        let mut b = std::fs::read(&a).unwrap();
        let i = b.len() / 2;
        b[i] ^= 0x20;
        std::fs::write(&a, b).unwrap();
        vec!["inspect".into(), a.display().to_string()]
    }, "error: $TMP/m.qgc: checksum mismatch: the artifact is corrupted"),
    ("artifact: truncated", |t| {
        let a = t.join("m.qgc");
        let (code, _, err) = qgc(&["compile", "models/qwen3-next-tiny.json", "-o", &a.display().to_string()], t);
        assert_eq!(code, 0, "{err}");
        // Magic and version as compiled, a payload length of 5000, then 980 bytes of it.
        let mut b = std::fs::read(&a).unwrap()[..1000].to_vec();
        b[12..20].copy_from_slice(&5000u64.to_le_bytes());
        std::fs::write(&a, &b).unwrap();
        vec!["inspect".into(), a.display().to_string()]
    }, "error: $TMP/m.qgc: truncated artifact: 1000 bytes, header says 5052"),
    ("artifact: other format version", |t| {
        let a = t.join("m.qgc");
        let (code, _, err) = qgc(&["compile", "models/qwen3-next-tiny.json", "-o", &a.display().to_string()], t);
        assert_eq!(code, 0, "{err}");
        let mut b = std::fs::read(&a).unwrap();
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        std::fs::write(&a, &b).unwrap();
        vec!["run".into(), a.display().to_string(), "--random-weights".into(), "--tokens".into(), "1".into()]
    }, "error: $TMP/m.qgc: artifact format version 1, this qgc reads version 3; recompile the model"),
    ("artifact: compiled twice", |t| {
        let a = t.join("m.qgc");
        let (code, _, err) = qgc(&["compile", "models/qwen3-next-tiny.json", "-o", &a.display().to_string()], t);
        assert_eq!(code, 0, "{err}");
        vec!["compile".into(), a.display().to_string(), "-o".into(), t.join("out.qgc").display().to_string()]
    }, "error: $TMP/m.qgc: is already a compiled artifact"),
    // ---- arguments ---------------------------------------------------------------------------
    ("args: token out of vocab", |t| logits_on(&fixture("hybrid-3to1"), t, "1,320"), "error: --tokens: token id 320 is outside the vocabulary of $ROOT/tests/fixtures/hybrid-3to1 (0..320)"),
    ("args: negative token", |t| logits_on(&fixture("hybrid-3to1"), t, "1,-2"), "error: --tokens: token id -2 is outside the vocabulary of $ROOT/tests/fixtures/hybrid-3to1 (0..320)"),
    ("args: token not a number", |t| logits_on(&fixture("hybrid-3to1"), t, "1,two"), "error: --tokens: \"two\" is not a token id"),
    ("args: no tokens", |t| logits_on(&fixture("hybrid-3to1"), t, ","), "error: --tokens: no token ids given"),
    ("args: prefill too long", |t| {
        let mut a = logits_on(&fixture("hybrid-3to1"), t, "1,2");
        a.extend(["--prefill".into(), "3".into()]);
        a
    }, "error: --prefill 3 is more than the 2 tokens given"),
    ("args: spec without weights", |t| logits_on(&root().join("models/qwen3-next-tiny.json"), t, "1"), "error: $ROOT/models/qwen3-next-tiny.json: no weights: pass --weights DIR (an HF checkpoint directory)"),
    ("args: missing model", |t| logits_on(&t.join("nowhere"), t, "1"), "error: $TMP/nowhere: No such file or directory (os error 2)"),
    ("args: dir without config", |t| logits_on(t, t, "1"), "error: $TMP: directory has no config.json (expected an HF model directory)"),
];

#[test]
fn bad_inputs_give_exact_errors() {
    assert!(CASES.len() >= 20);
    let mut failures = Vec::new();
    for (what, setup, expected) in CASES {
        let tmp = temp_dir("cli");
        let args = setup(&tmp);
        let argv: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let (code, _out, err) = qgc(&argv, &tmp);
        if err.contains("panicked") {
            failures.push(format!("{what}: panicked: {err}"));
        }
        if code == 0 {
            failures.push(format!("{what}: exited 0"));
        }
        for leftover in ["out.qgc", "out.safetensors"] {
            if tmp.join(leftover).exists() {
                failures.push(format!("{what}: left {leftover} behind"));
            }
        }
        let err = err.trim_end();
        let matches = match expected.strip_suffix('…') {
            Some(prefix) => err.starts_with(prefix),
            None => err == *expected,
        };
        if !matches {
            failures.push(format!("{what}:\n  expected: {expected:?}\n  got:      {err:?}"));
        }
        let _ = std::fs::remove_dir_all(&tmp);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Reads the `logits` tensor written by `qgc logits`.
fn read_logits(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("logits").unwrap();
    assert_eq!(t.dtype(), safetensors::Dtype::F32);
    let v = t.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    (t.shape().to_vec(), v)
}

fn ids(v: &[i32]) -> String {
    v.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(",")
}

/// `qgc logits` on each fixture dir, in the HF schedule, matches HF; so do a spec written by
/// `qgc import` with `--weights`, and a compiled artifact with `--weights`.
#[test]
fn logits_command_matches_hf_for_every_model_form() {
    for dir in common::fixtures() {
        let r = common::reference(&dir);
        let tmp = temp_dir("logits");
        let out = tmp.join("l.safetensors");
        let (spec, art) = (tmp.join("spec.json"), tmp.join("m.qgc"));
        let d = dir.display().to_string();
        let (code, _, err) = qgc(&["import", &d, "-o", &spec.display().to_string()], &tmp);
        assert_eq!(code, 0, "{err}");
        let (code, _, err) = qgc(&["compile", &spec.display().to_string(), "-o", &art.display().to_string()], &tmp);
        assert_eq!(code, 0, "{err}");
        let prefill = r.prefill.to_string();
        for model in [d.clone(), spec.display().to_string(), art.display().to_string()] {
            let mut args = vec!["logits", &model, "--tokens"];
            let toks = ids(&r.tokens);
            args.extend([toks.as_str(), "--prefill", &prefill, "--out"]);
            let o = out.display().to_string();
            args.push(&o);
            if model != d {
                args.extend(["--weights", &d]);
            }
            let (code, _, err) = qgc(&args, &tmp);
            assert_eq!(code, 0, "{model}: {err}");
            let (shape, v) = read_logits(&out);
            assert_eq!(shape, vec![r.tokens.len(), r.vocab]);
            let e = common::rel_err(&v, &r.logits);
            assert!(e <= 1e-4, "{model}: rel {e:.3e}");
        }
        let _ = std::fs::remove_dir_all(&tmp);
    }
}

#[test]
fn compile_prints_the_flagship_numbers_and_is_deterministic() {
    let tmp = temp_dir("compile");
    let (a, b) = (tmp.join("a.qgc").display().to_string(), tmp.join("b.qgc").display().to_string());
    let (code, out, err) = qgc(&["compile", "models/qwen3-next.json", "-o", &a], &tmp);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("params     79,674,391,296 total without MTP"), "{out}");
    assert!(out.contains("active     3,252,599,552 non-embedding per token (3.25 B)"), "{out}");
    assert!(out.contains("layers     48: 36 gated_deltanet + 12 gated_attention; 48 moe + 0 dense"), "{out}");
    assert!(out.contains("layout     12 × LLLA"), "{out}");
    // 12 attention layers × 2 (K, V) × 2 kv heads × 256 dims × 32768 tokens × 2 bytes = 768 MiB.
    assert!(out.contains("KV cache 768.0 MiB (bf16)"), "{out}");
    // 36 GDN layers × 32 heads × 128 × 128 × 4 bytes = 72 MiB.
    assert!(out.contains("recurrent 72.0 MiB (f32)"), "{out}");
    let (code, _, err) = qgc(&["compile", "models/qwen3-next.json", "-o", &b], &tmp);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap(), "two compiles differ");
    let (code, inspected, err) = qgc(&["inspect", &a, "--ir"], &tmp);
    assert_eq!(code, 0, "{err}");
    assert!(inspected.starts_with(out.lines().take(7).collect::<Vec<_>>().join("\n").as_str()), "{inspected}");
    assert!(inspected.contains("graph prefill {") && inspected.contains("graph decode {"));
    assert!(inspected.contains("gated_delta_rule chunk=64") && inspected.contains("gated_delta_rule chunk=none"));
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn import_writes_a_compact_spec() {
    let tmp = temp_dir("import");
    let out = tmp.join("s.json");
    let src = fixture("sharded-fused-mtp").join("config.json").display().to_string();
    let (code, msg, err) = qgc(&["import", &src, "-o", &out.display().to_string()], &tmp);
    assert_eq!(code, 0, "{err}");
    assert_eq!(msg.trim(), "wrote $TMP/s.json (6 layers)");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    // layer i is attention iff (i+1) % 2 == 0; MoE iff (i+1) % 2 == 0 (decoder_sparse_step 2).
    assert_eq!(v["layers"], json!([{"pattern": ["gdn_dense", "attn_moe"], "repeat": 3}]));
    assert_eq!(v["mtp"]["num_layers"], json!(1));
    let _ = std::fs::remove_dir_all(&tmp);
}
