//! The HF fixture checkpoints (`tests/fixtures/*`) open, match their specs and load the values
//! their safetensors files hold (read independently here with the `safetensors` crate).

use qgc_ir::interp::WeightSource;
use qgc_ir::ModelSpec;
use qgc_runtime::weights::{check, Checkpoint, Weights, WeightsError};
use safetensors::{Dtype, SafeTensors};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
}

fn spec(text: &str) -> ModelSpec {
    ModelSpec::from_json(text).unwrap_or_else(|e| panic!("test spec does not parse:\n{e}"))
}

/// `hybrid-3to1/config.json`: GDN ×3 then attention, MoE everywhere.
const HYBRID: &str = r#"{
  "name": "hybrid-3to1", "vocab_size": 320, "hidden_size": 64, "max_position_embeddings": 32768,
  "blocks": {
    "gdn": {"mixer": {"type": "gated_deltanet", "num_key_heads": 2, "num_value_heads": 4,
                      "key_head_dim": 16, "value_head_dim": 24, "conv_kernel": 4},
            "ffn": {"type": "moe", "num_experts": 8, "top_k": 3, "expert_width": 16,
                    "norm_topk_prob": true, "shared_expert": {"width": 20}}},
    "attn": {"mixer": {"type": "gated_attention", "num_heads": 4, "num_kv_heads": 2, "head_dim": 32,
                       "rope_theta": 10000000.0, "partial_rotary_factor": 0.25},
             "ffn": {"type": "moe", "num_experts": 8, "top_k": 3, "expert_width": 16,
                     "norm_topk_prob": true, "shared_expert": {"width": 20}}}
  },
  "layers": ["gdn", "gdn", "gdn", "attn"]
}"#;

/// `dense-tied-bf16/config.json`: A L L L A, layer 0 dense, tied embeddings.
const DENSE_TIED: &str = r#"{
  "name": "dense-tied-bf16", "vocab_size": 320, "hidden_size": 64, "max_position_embeddings": 32768,
  "tie_word_embeddings": true,
  "blocks": {
    "attn_dense": {"mixer": {"type": "gated_attention", "num_heads": 2, "num_kv_heads": 1, "head_dim": 16,
                             "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
                   "ffn": {"type": "dense", "width": 48}},
    "gdn": {"mixer": {"type": "gated_deltanet", "num_key_heads": 2, "num_value_heads": 2,
                      "key_head_dim": 16, "value_head_dim": 16, "conv_kernel": 3},
            "ffn": {"type": "moe", "num_experts": 6, "top_k": 2, "expert_width": 12,
                    "norm_topk_prob": false, "shared_expert": {"width": 16}}},
    "attn": {"mixer": {"type": "gated_attention", "num_heads": 2, "num_kv_heads": 1, "head_dim": 16,
                       "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
             "ffn": {"type": "moe", "num_experts": 6, "top_k": 2, "expert_width": 12,
                     "norm_topk_prob": false, "shared_expert": {"width": 16}}}
  },
  "layers": ["attn_dense", "gdn", "gdn", "gdn", "attn"]
}"#;

/// `sharded-fused-mtp/config.json`: (L dense, A moe) ×3, with or without its MTP block.
fn sharded(mtp: bool) -> String {
    let mtp = if mtp { r#", "mtp": {"num_layers": 1, "layer": "attn_moe"}"# } else { "" };
    format!(
        r#"{{
  "name": "sharded-fused-mtp", "vocab_size": 320, "hidden_size": 64, "max_position_embeddings": 32768,
  "blocks": {{
    "gdn_dense": {{"mixer": {{"type": "gated_deltanet", "num_key_heads": 1, "num_value_heads": 4,
                            "key_head_dim": 32, "value_head_dim": 8, "conv_kernel": 2}},
                  "ffn": {{"type": "dense", "width": 40}}}},
    "attn_moe": {{"mixer": {{"type": "gated_attention", "num_heads": 4, "num_kv_heads": 4, "head_dim": 8,
                           "rope_theta": 10000.0, "partial_rotary_factor": 0.25}},
                 "ffn": {{"type": "moe", "num_experts": 4, "top_k": 4, "expert_width": 8,
                         "norm_topk_prob": true, "shared_expert": {{"width": 8}}}}}}
  }},
  "layers": [{{"pattern": ["gdn_dense", "attn_moe"], "repeat": 3}}]{mtp}
}}"#
    )
}

/// Stored tensor `name` of the safetensors file `file`, decoded here without qgc: (dtype, shape, f32s).
fn raw(file: &PathBuf, name: &str) -> (Dtype, Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(file).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    let values = match t.dtype() {
        Dtype::F32 => t.data().chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
        // bf16 is the top half of an f32.
        Dtype::BF16 => {
            t.data().chunks(2).map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16)).collect()
        }
        d => panic!("unexpected dtype {d}"),
    };
    (t.dtype(), t.shape().to_vec(), values)
}

fn values(w: &Weights, name: &str, shape: &[usize]) -> Vec<f32> {
    w.weight(name, shape).unwrap_or_else(|e| panic!("{e}")).as_f32().unwrap().to_vec()
}

#[test]
fn every_fixture_matches_its_spec() {
    let cases = [
        ("hybrid-3to1", spec(HYBRID)),
        ("dense-tied-bf16", spec(DENSE_TIED)),
        ("sharded-fused-mtp", spec(&sharded(false))),
        ("sharded-fused-mtp", spec(&sharded(true))),
    ];
    for (dir, spec) in cases {
        let ckpt = Checkpoint::open(fixture(dir)).unwrap();
        check(&spec, &ckpt).unwrap_or_else(|e| panic!("{dir}: {e}"));
    }
}

#[test]
fn fixtures_do_not_match_each_others_specs() {
    let ckpt = Checkpoint::open(fixture("hybrid-3to1")).unwrap();
    let err = check(&spec(DENSE_TIED), &ckpt).unwrap_err().to_string();
    let first = err.lines().next().unwrap();
    assert!(first.starts_with("checkpoint ") && first.contains("does not match the spec: "), "{err}");
}

#[test]
fn sharded_fixture_lists_all_seven_shards_and_the_index_tensors() {
    let ckpt = Checkpoint::open(fixture("sharded-fused-mtp")).unwrap();
    let files: Vec<String> =
        ckpt.files().iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    let expected: Vec<String> = (1..=7).map(|i| format!("model-0000{i}-of-00007.safetensors")).collect();
    assert_eq!(files, expected);
    let index = std::fs::read_to_string(fixture("sharded-fused-mtp/model.safetensors.index.json")).unwrap();
    let index: serde_json::Value = serde_json::from_str(&index).unwrap();
    let mut listed: Vec<String> = index["weight_map"].as_object().unwrap().keys().cloned().collect();
    listed.sort();
    assert_eq!(ckpt.names(), listed);
    assert_eq!(ckpt.get("model.layers.1.mlp.experts.gate_up_proj").unwrap().shape, vec![4, 16, 64]);
}

#[test]
fn hybrid_per_expert_stacks_equal_the_stored_experts() {
    let file = fixture("hybrid-3to1/model.safetensors");
    let w = Weights::open(&spec(HYBRID), fixture("hybrid-3to1")).unwrap();
    for (leaf, shape) in [("gate_proj", [8, 16, 64]), ("up_proj", [8, 16, 64]), ("down_proj", [8, 64, 16])] {
        let got = values(&w, &format!("model.layers.2.mlp.experts.{leaf}"), &shape);
        let mut want = Vec::new();
        for e in 0..8 {
            want.extend(raw(&file, &format!("model.layers.2.mlp.experts.{e}.{leaf}.weight")).2);
        }
        assert_eq!(got, want, "{leaf}");
    }
    let (_, shape, want) = raw(&file, "model.layers.0.linear_attn.A_log");
    assert_eq!(values(&w, "model.layers.0.linear_attn.A_log", &shape), want);
}

#[test]
fn fused_fixture_slices_gate_and_up_rows() {
    let dir = fixture("sharded-fused-mtp");
    let index = std::fs::read_to_string(dir.join("model.safetensors.index.json")).unwrap();
    let index: serde_json::Value = serde_json::from_str(&index).unwrap();
    let shard = |name: &str| dir.join(index["weight_map"][name].as_str().unwrap());
    let w = Weights::open(&spec(&sharded(true)), &dir).unwrap();

    let fused = "model.layers.3.mlp.experts.gate_up_proj";
    let (_, shape, all) = raw(&shard(fused), fused);
    assert_eq!(shape, vec![4, 16, 64]);
    let gate = values(&w, "model.layers.3.mlp.experts.gate_proj", &[4, 8, 64]);
    let up = values(&w, "model.layers.3.mlp.experts.up_proj", &[4, 8, 64]);
    for e in 0..4 {
        let slab = &all[e * 16 * 64..(e + 1) * 16 * 64];
        assert_eq!(&gate[e * 512..(e + 1) * 512], &slab[..512], "gate, expert {e}");
        assert_eq!(&up[e * 512..(e + 1) * 512], &slab[512..], "up, expert {e}");
    }
    let down = "model.layers.3.mlp.experts.down_proj";
    assert_eq!(values(&w, down, &[4, 64, 8]), raw(&shard(down), down).2);

    // The MTP layer stores its experts per expert, in the last shard.
    let got = values(&w, "mtp.layers.0.mlp.experts.up_proj", &[4, 8, 64]);
    let mut want = Vec::new();
    for e in 0..4 {
        let n = format!("mtp.layers.0.mlp.experts.{e}.up_proj.weight");
        want.extend(raw(&shard(&n), &n).2);
    }
    assert_eq!(got, want);
}

#[test]
fn bf16_fixture_converts_exactly() {
    let file = fixture("dense-tied-bf16/model.safetensors");
    let w = Weights::open(&spec(DENSE_TIED), fixture("dense-tied-bf16")).unwrap();
    let (dtype, shape, want) = raw(&file, "model.embed_tokens.weight");
    assert_eq!((dtype, shape.clone()), (Dtype::BF16, vec![320, 64]));
    let got = values(&w, "model.embed_tokens.weight", &shape);
    assert_eq!(
        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    // Tied: there is no lm_head on disk.
    let err = w.weight("lm_head.weight", &[320, 64]).unwrap_err().to_string();
    assert!(err.starts_with("weight \"lm_head.weight\": missing: expected [320, 64]"), "{err}");
}

#[test]
fn opening_converts_nothing() {
    for dir in ["hybrid-3to1", "dense-tied-bf16", "sharded-fused-mtp"] {
        let w = Weights::new(Checkpoint::open(fixture(dir)).unwrap());
        assert_eq!(w.cached(), 0);
        assert!(w.checkpoint().data_bytes() > 0);
    }
    assert!(matches!(Checkpoint::open(fixture("no-such-fixture")), Err(WeightsError::NotFound { .. })));
}
