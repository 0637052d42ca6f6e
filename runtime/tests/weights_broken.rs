//! Broken checkpoints: each case asserts the exact error text (and, by returning at all, that
//! nothing panics). Checkpoints are written here with `safetensors::serialize`; the tensor list of
//! the tiny spec is written out by hand.

use qgc_ir::ModelSpec;
use qgc_runtime::weights::{check, Checkpoint};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh empty directory under the system temp dir.
fn tmp(tag: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("qgc-weights-broken-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// (name, dtype, shape); data is zeros of the right size.
type Decl = (String, Dtype, Vec<usize>);

fn write(file: &Path, tensors: &[Decl]) {
    let bytes: Vec<Vec<u8>> =
        tensors.iter().map(|(_, d, s)| vec![0u8; s.iter().product::<usize>() * d.bitsize() / 8]).collect();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, d, s), b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(file, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// One attention + MoE layer, hidden 4, vocab 8, `experts` experts of width 3.
fn spec(experts: usize, tied: bool) -> ModelSpec {
    spec_with(experts, tied, false)
}

/// [`spec`], with an MTP block of the same layer when `mtp`.
fn spec_with(experts: usize, tied: bool, mtp: bool) -> ModelSpec {
    let layer = format!(
        r#"{{"mixer": {{"type": "gated_attention", "num_heads": 1, "num_kv_heads": 1, "head_dim": 2,
                       "rope_theta": 10000.0, "partial_rotary_factor": 1.0}},
            "ffn": {{"type": "moe", "num_experts": {experts}, "top_k": 1, "expert_width": 3,
                     "norm_topk_prob": true}}}}"#
    );
    let mtp = if mtp { format!(r#", "mtp": {{"layer": {layer}}}"#) } else { String::new() };
    let text = format!(
        r#"{{"name": "tiny", "vocab_size": 8, "hidden_size": 4, "max_position_embeddings": 16,
            "tie_word_embeddings": {tied}, "layers": [{layer}]{mtp}}}"#
    );
    ModelSpec::from_json(&text).unwrap_or_else(|e| panic!("test spec does not parse:\n{e}"))
}

const X: &str = "model.layers.0.mlp.experts";

/// The checkpoint `spec(experts, false)` needs, per-expert layout, all F32.
fn good(experts: usize) -> Vec<Decl> {
    let mut out: Vec<Decl> = [
        ("model.embed_tokens.weight", vec![8, 4]),
        ("model.layers.0.input_layernorm.weight", vec![4]),
        ("model.layers.0.self_attn.q_proj.weight", vec![4, 4]),
        ("model.layers.0.self_attn.k_proj.weight", vec![2, 4]),
        ("model.layers.0.self_attn.v_proj.weight", vec![2, 4]),
        ("model.layers.0.self_attn.o_proj.weight", vec![4, 2]),
        ("model.layers.0.self_attn.q_norm.weight", vec![2]),
        ("model.layers.0.self_attn.k_norm.weight", vec![2]),
        ("model.layers.0.post_attention_layernorm.weight", vec![4]),
        ("model.layers.0.mlp.gate.weight", vec![experts, 4]),
        ("model.norm.weight", vec![4]),
        ("lm_head.weight", vec![8, 4]),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_string(), Dtype::F32, s))
    .collect();
    for e in 0..experts {
        out.push((format!("{X}.{e}.gate_proj.weight"), Dtype::F32, vec![3, 4]));
        out.push((format!("{X}.{e}.up_proj.weight"), Dtype::F32, vec![3, 4]));
        out.push((format!("{X}.{e}.down_proj.weight"), Dtype::F32, vec![4, 3]));
    }
    out
}

fn without(mut ts: Vec<Decl>, names: &[&str]) -> Vec<Decl> {
    ts.retain(|t| !names.contains(&t.0.as_str()));
    ts
}

fn with(mut ts: Vec<Decl>, name: &str, dtype: Dtype, shape: &[usize]) -> Vec<Decl> {
    ts.retain(|t| t.0 != name);
    ts.push((name.to_string(), dtype, shape.to_vec()));
    ts
}

/// `check` of `tensors` (one model.safetensors) against `spec`: `Ok(())` or the error text, with
/// the directory written as `DIR`.
fn check_text(spec: &ModelSpec, tensors: &[Decl]) -> Result<(), String> {
    let dir = tmp("check");
    write(&dir.join("model.safetensors"), tensors);
    let ckpt = Checkpoint::open(&dir).unwrap();
    let out = check(spec, &ckpt).map_err(|e| e.to_string().replace(&dir.display().to_string(), "DIR"));
    let _ = std::fs::remove_dir_all(dir);
    out
}

#[test]
fn good_checkpoints_pass() {
    assert_eq!(check_text(&spec(2, false), &good(2)), Ok(()));
    // Tied: a stray lm_head is ignored, and so is its absence. No MTP in the spec: mtp.* is ignored.
    assert_eq!(check_text(&spec(2, true), &good(2)), Ok(()));
    assert_eq!(check_text(&spec(2, true), &without(good(2), &["lm_head.weight"])), Ok(()));
    assert_eq!(check_text(&spec(2, false), &with(good(2), "mtp.fc.weight", Dtype::F32, &[4, 8])), Ok(()));
    // Fused experts.
    let fused: Vec<Decl> = good(2).into_iter().filter(|t| !t.0.starts_with(X)).collect();
    let fused = with(fused, &format!("{X}.gate_up_proj"), Dtype::BF16, &[2, 6, 4]);
    let fused = with(fused, &format!("{X}.down_proj"), Dtype::F16, &[2, 4, 3]);
    assert_eq!(check_text(&spec(2, false), &fused), Ok(()));
}

#[test]
fn check_reports_each_kind_of_mismatch() {
    let s = spec(2, false);
    let cases: Vec<(&str, Vec<Decl>, &str)> = vec![
        (
            "missing tensor",
            without(good(2), &["model.norm.weight"]),
            "checkpoint DIR does not match the spec: 1 missing\n  model.norm.weight: missing: expected [4]",
        ),
        (
            "extra tensor",
            with(good(2), "model.layers.0.extra.weight", Dtype::F32, &[3]),
            "checkpoint DIR does not match the spec: 1 unexpected\n  model.layers.0.extra.weight: unexpected: found F32 [3]",
        ),
        (
            "extra expert",
            with(good(2), &format!("{X}.2.up_proj.weight"), Dtype::F32, &[3, 4]),
            "checkpoint DIR does not match the spec: 1 unexpected\n  model.layers.0.mlp.experts.2.up_proj.weight: unexpected: found F32 [3, 4]",
        ),
        (
            "wrong shape",
            with(good(2), "model.layers.0.self_attn.q_norm.weight", Dtype::F32, &[3]),
            "checkpoint DIR does not match the spec: 1 mis-shaped\n  model.layers.0.self_attn.q_norm.weight: mis-shaped: expected [2], found [3]",
        ),
        (
            "I64 dtype",
            with(good(2), "model.embed_tokens.weight", Dtype::I64, &[8, 4]),
            "checkpoint DIR does not match the spec: 1 unsupported dtype\n  model.embed_tokens.weight: unsupported dtype: found I64 [8, 4], supported F32, BF16, F16",
        ),
        (
            "one per-expert tensor missing",
            without(good(2), &["model.layers.0.mlp.experts.1.up_proj.weight"]),
            "checkpoint DIR does not match the spec: 1 missing\n  model.layers.0.mlp.experts.1.up_proj.weight: missing: expected [3, 4]",
        ),
        (
            "all experts missing",
            good(2).into_iter().filter(|t| !t.0.starts_with(X)).collect(),
            "checkpoint DIR does not match the spec: 3 missing\n  \
             model.layers.0.mlp.experts.down_proj: missing: expected [2, 4, 3] (per expert model.layers.0.mlp.experts.{0..1}.down_proj.weight [4, 3], or fused model.layers.0.mlp.experts.down_proj [2, 4, 3])\n  \
             model.layers.0.mlp.experts.gate_proj: missing: expected [2, 3, 4] (per expert model.layers.0.mlp.experts.{0..1}.gate_proj.weight [3, 4], or fused model.layers.0.mlp.experts.gate_up_proj [2, 6, 4])\n  \
             model.layers.0.mlp.experts.up_proj: missing: expected [2, 3, 4] (per expert model.layers.0.mlp.experts.{0..1}.up_proj.weight [3, 4], or fused model.layers.0.mlp.experts.gate_up_proj [2, 6, 4])",
        ),
        (
            "fused gate_up_proj mis-shaped (reported once) beside per-expert down",
            with(
                without(good(2), &[&format!("{X}.0.gate_proj.weight"), &format!("{X}.0.up_proj.weight"), &format!("{X}.1.gate_proj.weight"), &format!("{X}.1.up_proj.weight")]),
                &format!("{X}.gate_up_proj"),
                Dtype::F32,
                &[2, 3, 4],
            ),
            "checkpoint DIR does not match the spec: 1 mis-shaped\n  model.layers.0.mlp.experts.gate_up_proj: mis-shaped: expected [2, 6, 4], found [2, 3, 4]",
        ),
        (
            "several problems, sorted by name",
            with(
                with(without(good(2), &["lm_head.weight", "model.layers.0.self_attn.k_proj.weight"]), "model.norm.weight", Dtype::BF16, &[5]),
                "aaa.weight",
                Dtype::F16,
                &[1],
            ),
            "checkpoint DIR does not match the spec: 2 missing, 1 unexpected, 1 mis-shaped\n  \
             aaa.weight: unexpected: found F16 [1]\n  \
             lm_head.weight: missing: expected [8, 4]\n  \
             model.layers.0.self_attn.k_proj.weight: missing: expected [2, 4]\n  \
             model.norm.weight: mis-shaped: expected [4], found [5]",
        ),
    ];
    for (label, tensors, want) in cases {
        assert_eq!(check_text(&s, &tensors), Err(want.to_string()), "{label}");
    }
    // With an MTP block in the spec, mtp.* is no longer ignored: an unused one is unexpected.
    let err = check_text(&spec_with(2, false, true), &with(good(2), "mtp.bogus.weight", Dtype::F32, &[4])).unwrap_err();
    assert!(err.lines().any(|l| l == "  mtp.bogus.weight: unexpected: found F32 [4]"), "{err}");
    assert!(err.lines().any(|l| l == "  mtp.fc.weight: missing: expected [4, 8]"), "{err}");
}

#[test]
fn long_reports_are_capped() {
    // 40 experts, only expert 0 stored: 39 × 3 missing per-expert tensors, 50 lines shown.
    let keep = |t: &Decl| !t.0.starts_with(X) || t.0.starts_with(&format!("{X}.0."));
    let tensors: Vec<Decl> = good(40).into_iter().filter(keep).collect();
    let err = check_text(&spec(40, false), &tensors).unwrap_err();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines[0], "checkpoint DIR does not match the spec: 117 missing");
    assert_eq!(lines.len(), 1 + 50 + 1);
    // Sorted by name as strings: experts.1.*, experts.10.*, experts.11.*, ...
    assert_eq!(lines[1], "  model.layers.0.mlp.experts.1.down_proj.weight: missing: expected [4, 3]");
    assert_eq!(lines[4], "  model.layers.0.mlp.experts.10.down_proj.weight: missing: expected [4, 3]");
    assert_eq!(lines[51], "  ... and 67 more");
}

/// `Checkpoint::open(path)` error text, with `dir` written as `DIR`.
fn open_err(path: &Path, dir: &Path) -> String {
    match Checkpoint::open(path) {
        Ok(c) => panic!("opened {} with {} tensors", path.display(), c.len()),
        Err(e) => {
            // The error with its causes, as the CLI prints it.
            let mut s = e.to_string();
            let mut at = std::error::Error::source(&e);
            while let Some(cause) = at {
                s += &format!(": {cause}");
                at = cause.source();
            }
            s.replace(&dir.display().to_string(), "DIR")
        }
    }
}

/// A two-shard checkpoint of `good(2)` in `dir`: shard 1 has the non-expert tensors.
fn sharded(dir: &Path) -> serde_json::Value {
    let (s1, s2) = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors");
    let (experts, rest): (Vec<Decl>, Vec<Decl>) = good(2).into_iter().partition(|t| t.0.starts_with(X));
    write(&dir.join(s1), &rest);
    write(&dir.join(s2), &experts);
    let map: serde_json::Map<String, serde_json::Value> =
        rest.iter().map(|t| (t.0.clone(), s1.into())).chain(experts.iter().map(|t| (t.0.clone(), s2.into()))).collect();
    serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map})
}

fn write_index(dir: &Path, index: &serde_json::Value) {
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

#[test]
fn sharded_checkpoint_opens_and_checks() {
    let dir = tmp("sharded-ok");
    let index = sharded(&dir);
    write_index(&dir, &index);
    let ckpt = Checkpoint::open(&dir).unwrap();
    assert_eq!(ckpt.files().len(), 2);
    assert_eq!(ckpt.len(), 12 + 6);
    check(&spec(2, false), &ckpt).unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn open_reports_broken_files() {
    let idx = "DIR/model.safetensors.index.json";
    type Setup = fn(&Path) -> PathBuf;
    let cases: Vec<(&str, Setup, String)> = vec![
        ("path does not exist", |d| d.join("nope"), "checkpoint DIR/nope does not exist".into()),
        (
            "empty dir",
            |d| d.to_path_buf(),
            "checkpoint directory DIR has no model.safetensors, no model.safetensors.index.json and no *.safetensors files".into(),
        ),
        (
            "corrupted header bytes",
            |d| {
                let f = d.join("model.safetensors");
                write(&f, &good(2));
                let mut b = std::fs::read(&f).unwrap();
                b[8] = 0xFF; // first byte of the JSON header
                std::fs::write(&f, b).unwrap();
                d.to_path_buf()
            },
            "DIR/model.safetensors: not a valid safetensors file: invalid UTF-8 in header: invalid utf-8 sequence of 1 bytes from index 0".into(),
        ),
        (
            "header length garbage",
            |d| {
                let f = d.join("model.safetensors");
                write(&f, &good(2));
                let mut b = std::fs::read(&f).unwrap();
                b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
                std::fs::write(&f, b).unwrap();
                d.to_path_buf()
            },
            "DIR/model.safetensors: not a valid safetensors file: header too large".into(),
        ),
        (
            "header JSON broken",
            |d| {
                let f = d.join("model.safetensors");
                write(&f, &good(2));
                let mut b = std::fs::read(&f).unwrap();
                b[8] = b'[';
                std::fs::write(&f, b).unwrap();
                d.to_path_buf()
            },
            "DIR/model.safetensors: not a valid safetensors file: invalid JSON in header: invalid type: sequence, expected struct HashMetadata at line 1 column 0".into(),
        ),
        (
            "truncated file",
            |d| {
                let f = d.join("model.safetensors");
                write(&f, &good(2));
                let b = std::fs::read(&f).unwrap();
                std::fs::write(&f, &b[..b.len() - 4]).unwrap();
                d.to_path_buf()
            },
            "DIR/model.safetensors: not a valid safetensors file: incomplete metadata, file not fully covered".into(),
        ),
        (
            "empty file given directly",
            |d| {
                std::fs::write(d.join("empty.safetensors"), b"").unwrap();
                d.join("empty.safetensors")
            },
            "DIR/empty.safetensors: not a valid safetensors file: header too small".into(),
        ),
        (
            "missing shard",
            |d| {
                write_index(d, &sharded(d));
                std::fs::remove_file(d.join("model-00002-of-00002.safetensors")).unwrap();
                d.to_path_buf()
            },
            format!("{idx}: weight_map names 1 shard(s) that do not exist: model-00002-of-00002.safetensors"),
        ),
        (
            "index pointing at a missing file",
            |d| {
                let mut index = sharded(d);
                index["weight_map"]["model.norm.weight"] = "model-typo.safetensors".into();
                index["weight_map"]["lm_head.weight"] = "other.safetensors".into();
                write_index(d, &index);
                d.to_path_buf()
            },
            format!("{idx}: weight_map names 2 shard(s) that do not exist: model-typo.safetensors, other.safetensors"),
        ),
        (
            "tensor listed in the index but not in its shard",
            |d| {
                let mut index = sharded(d);
                index["weight_map"]["model.norm.weight"] = "model-00002-of-00002.safetensors".into();
                index["weight_map"]["model.zzz.weight"] = "model-00001-of-00002.safetensors".into();
                write_index(d, &index);
                d.to_path_buf()
            },
            format!("{idx}: tensor model.norm.weight is mapped to model-00002-of-00002.safetensors, which does not contain it (and 1 more such tensors)"),
        ),
        (
            "index is not JSON",
            |d| {
                std::fs::write(d.join("model.safetensors.index.json"), "{weight_map").unwrap();
                d.to_path_buf()
            },
            format!("{idx}: invalid index: not JSON: key must be a string at line 1 column 2"),
        ),
        (
            "index without weight_map",
            |d| {
                std::fs::write(d.join("model.safetensors.index.json"), "{\"metadata\": {}}").unwrap();
                d.to_path_buf()
            },
            format!("{idx}: invalid index: no \"weight_map\" object"),
        ),
        (
            "same tensor in two files",
            |d| {
                write(&d.join("a.safetensors"), &good(2)[..3]);
                write(&d.join("b.safetensors"), &good(2)[2..4]);
                d.to_path_buf()
            },
            "tensor model.layers.0.self_attn.q_proj.weight is stored in both DIR/a.safetensors and DIR/b.safetensors".into(),
        ),
    ];
    for (label, setup, want) in cases {
        let dir = tmp("open");
        let path = setup(&dir);
        assert_eq!(open_err(&path, &dir), want, "{label}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
