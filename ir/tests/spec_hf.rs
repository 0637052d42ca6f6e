//! HF config.json import: the three fixtures, the released 80B config, layer compression, MTP
//! detection and the RoPE/default rules.

use qgc_ir::spec::hf::{compress_layers, import_config};
use qgc_ir::spec::{FfnSpec, LayerItem, MixerSpec, ModelSpec, RepeatItem, SpecFile, TensorRole};
use serde_json::{json, Value};
use std::collections::BTreeMap;

const HYBRID: &str = include_str!("../../tests/fixtures/hybrid-3to1/config.json");
const DENSE_TIED: &str = include_str!("../../tests/fixtures/dense-tied-bf16/config.json");
const SHARDED: &str = include_str!("../../tests/fixtures/sharded-fused-mtp/config.json");
const INDEX: &str = include_str!("../../tests/fixtures/sharded-fused-mtp/model.safetensors.index.json");
const FLAGSHIP: &str = include_str!("../../models/qwen3-next.json");

fn import(text: &str, names: Option<&[String]>) -> (SpecFile, ModelSpec) {
    let file = import_config(text, names).unwrap_or_else(|e| panic!("import:\n{e}"));
    let spec = file.resolve().unwrap_or_else(|e| panic!("resolve:\n{e}"));
    // What `qgc import` writes reads back as the same spec.
    let again = SpecFile::from_json(&serde_json::to_string_pretty(&file).unwrap()).unwrap();
    assert_eq!(again, file);
    (file, spec)
}

fn names(items: &[&str]) -> Vec<LayerItem> {
    items.iter().map(|s| LayerItem::Block(s.to_string())).collect()
}

fn repeat(pattern: &[&str], n: usize) -> LayerItem {
    LayerItem::Repeat(RepeatItem { pattern: names(pattern), repeat: n })
}

fn u(c: &Value, key: &str) -> usize {
    c[key].as_u64().unwrap_or_else(|| panic!("{key}")) as usize
}

/// Checks every resolved layer against the config values, deriving the layer kinds independently
/// (`layer_types` or the interval; HF's MoE rule).
fn check_against_config(text: &str, spec: &ModelSpec) {
    let c: Value = serde_json::from_str(text).unwrap();
    let n = u(&c, "num_hidden_layers");
    assert_eq!(spec.num_layers(), n);
    assert_eq!((spec.vocab_size, spec.hidden_size), (u(&c, "vocab_size"), u(&c, "hidden_size")));
    assert_eq!(spec.max_position_embeddings, u(&c, "max_position_embeddings"));
    assert_eq!(spec.rms_norm_eps, c["rms_norm_eps"].as_f64().unwrap());
    assert_eq!(spec.tie_word_embeddings, c["tie_word_embeddings"].as_bool().unwrap());
    assert!(spec.zero_centred_norms);
    let rope = c.get("rope_parameters").cloned().unwrap_or(c.clone());
    let mlp_only: Vec<usize> = serde_json::from_value(c["mlp_only_layers"].clone()).unwrap();
    for (i, layer) in spec.layers.iter().enumerate() {
        let full = match c.get("layer_types") {
            Some(t) => t[i] == "full_attention",
            None => (i + 1) % u(&c, "full_attention_interval") == 0,
        };
        match &layer.mixer {
            MixerSpec::GatedAttention(a) => {
                assert!(full, "layer {i} should be linear attention");
                assert_eq!(a.num_heads, u(&c, "num_attention_heads"));
                assert_eq!(a.num_kv_heads, u(&c, "num_key_value_heads"));
                assert_eq!(a.head_dim, u(&c, "head_dim"));
                assert_eq!(a.rope_theta, rope["rope_theta"].as_f64().unwrap());
                assert_eq!(a.partial_rotary_factor, rope["partial_rotary_factor"].as_f64().unwrap());
                assert!(a.output_gate && a.qk_norm);
            }
            MixerSpec::GatedDeltanet(g) => {
                assert!(!full, "layer {i} should be full attention");
                assert_eq!(g.num_key_heads, u(&c, "linear_num_key_heads"));
                assert_eq!(g.num_value_heads, u(&c, "linear_num_value_heads"));
                assert_eq!(g.key_head_dim, u(&c, "linear_key_head_dim"));
                assert_eq!(g.value_head_dim, u(&c, "linear_value_head_dim"));
                assert_eq!(g.conv_kernel, u(&c, "linear_conv_kernel_dim"));
            }
        }
        let moe = !mlp_only.contains(&i) && u(&c, "num_experts") > 0 && (i + 1) % u(&c, "decoder_sparse_step") == 0;
        match &layer.ffn {
            FfnSpec::Moe(m) => {
                assert!(moe, "layer {i} should be dense");
                assert_eq!(m.num_experts, u(&c, "num_experts"));
                assert_eq!(m.top_k, u(&c, "num_experts_per_tok"));
                assert_eq!(m.expert_width, u(&c, "moe_intermediate_size"));
                assert_eq!(m.norm_topk_prob, c["norm_topk_prob"].as_bool().unwrap());
                let shared = m.shared_expert.as_ref().unwrap();
                assert_eq!((shared.width, shared.sigmoid_gate), (u(&c, "shared_expert_intermediate_size"), true));
            }
            FfnSpec::Dense(d) => {
                assert!(!moe, "layer {i} should be MoE");
                assert_eq!(d.width, u(&c, "intermediate_size"));
            }
        }
    }
}

/// Tensor names and shapes from a safetensors header.
fn header(path: &str) -> BTreeMap<String, Vec<usize>> {
    let bytes = std::fs::read(format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let h: BTreeMap<String, Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    h.into_iter()
        .filter(|(k, _)| k != "__metadata__")
        .map(|(k, v)| (k, serde_json::from_value(v["shape"].clone()).unwrap()))
        .collect()
}

/// The spec's tensors, stored per expert, are exactly the checkpoint's (names and shapes).
fn check_against_checkpoint(spec: &ModelSpec, ckpt: &BTreeMap<String, Vec<usize>>) {
    let mut want = BTreeMap::new();
    for t in spec.tensors() {
        let Some(prefix) = t.experts_prefix() else {
            want.insert(t.name.clone(), t.shape.clone());
            continue;
        };
        let proj = match t.role {
            TensorRole::ExpertsGate => "gate_proj",
            TensorRole::ExpertsUp => "up_proj",
            _ => "down_proj",
        };
        for e in 0..t.shape[0] {
            want.insert(format!("{prefix}.{e}.{proj}.weight"), t.shape[1..].to_vec());
        }
    }
    assert_eq!(&want, ckpt);
}

#[test]
fn hybrid_3to1_fixture() {
    let (file, spec) = import(HYBRID, None);
    check_against_config(HYBRID, &spec);
    assert_eq!(file.layers, names(&["gdn_moe", "gdn_moe", "gdn_moe", "attn_moe"]));
    assert_eq!(file.blocks.keys().collect::<Vec<_>>(), ["attn_moe", "gdn_moe"]);
    assert_eq!(file.name, "qwen3-next-imported");
    assert!(spec.mtp.is_none());
    check_against_checkpoint(&spec, &header("tests/fixtures/hybrid-3to1/model.safetensors"));
}

#[test]
fn dense_tied_fixture_legacy_rope() {
    let (file, spec) = import(DENSE_TIED, None);
    check_against_config(DENSE_TIED, &spec);
    assert_eq!(file.layers, names(&["attn_dense", "gdn_moe", "gdn_moe", "gdn_moe", "attn_moe"]));
    let MixerSpec::GatedAttention(a) = &spec.layers[0].mixer else { panic!() };
    assert_eq!((a.rope_theta, a.partial_rotary_factor, a.rotary_dim()), (10000.0, 0.5, 8));
    assert!(spec.tie_word_embeddings && spec.mtp.is_none());
    check_against_checkpoint(&spec, &header("tests/fixtures/dense-tied-bf16/model.safetensors"));
}

#[test]
fn sharded_fused_mtp_fixture() {
    let index: Value = serde_json::from_str(INDEX).unwrap();
    let ckpt: Vec<String> = index["weight_map"].as_object().unwrap().keys().cloned().collect();
    for names_given in [None, Some(&ckpt[..])] {
        let (file, spec) = import(SHARDED, names_given);
        check_against_config(SHARDED, &spec);
        assert_eq!(file.layers, vec![repeat(&["gdn_dense", "attn_moe"], 3)]);
        let mtp = spec.mtp.as_ref().expect("num_nextn_predict_layers: 1");
        assert_eq!(mtp.num_layers, 1);
        assert_eq!(mtp.layer, spec.layers[1], "mtp = full attention + the model's MoE");
    }
    // Without num_nextn_predict_layers the checkpoint decides.
    let mut c: Value = serde_json::from_str(SHARDED).unwrap();
    c.as_object_mut().unwrap().remove("num_nextn_predict_layers");
    let (_, spec) = import(&c.to_string(), Some(&ckpt));
    assert_eq!(spec.mtp.as_ref().map(|m| m.num_layers), Some(1));
    let main_only: Vec<String> = ckpt.iter().filter(|n| !n.starts_with("mtp.")).cloned().collect();
    assert!(import(&c.to_string(), Some(&main_only)).1.mtp.is_none());
    assert!(import(&c.to_string(), None).1.mtp.is_none());
    // An explicit 0 wins over the checkpoint.
    c["num_nextn_predict_layers"] = json!(0);
    assert!(import(&c.to_string(), Some(&ckpt)).1.mtp.is_none());
    // Qwen3.5's key, and the layer count taken from `mtp.layers.{i}`.
    c.as_object_mut().unwrap().remove("num_nextn_predict_layers");
    c["mtp_num_hidden_layers"] = json!(2);
    assert_eq!(import(&c.to_string(), None).1.mtp.map(|m| m.num_layers), Some(2));
    c.as_object_mut().unwrap().remove("mtp_num_hidden_layers");
    let three = ["mtp.fc.weight", "mtp.layers.2.input_layernorm.weight"].map(String::from);
    assert_eq!(import(&c.to_string(), Some(&three)).1.mtp.map(|m| m.num_layers), Some(3));
}

/// The released Qwen/Qwen3-Next-80B-A3B-Instruct config.json (qwen3-next.md §1.2).
fn released_80b_config() -> Value {
    json!({
        "architectures": ["Qwen3NextForCausalLM"], "model_type": "qwen3_next",
        "hidden_size": 2048, "num_hidden_layers": 48, "full_attention_interval": 4,
        "num_attention_heads": 16, "num_key_value_heads": 2, "head_dim": 256,
        "partial_rotary_factor": 0.25, "rope_theta": 10000000, "rope_scaling": null,
        "linear_num_key_heads": 16, "linear_num_value_heads": 32, "linear_key_head_dim": 128,
        "linear_value_head_dim": 128, "linear_conv_kernel_dim": 4,
        "num_experts": 512, "num_experts_per_tok": 10, "moe_intermediate_size": 512,
        "shared_expert_intermediate_size": 512, "norm_topk_prob": true, "decoder_sparse_step": 1,
        "mlp_only_layers": [], "intermediate_size": 5120, "hidden_act": "silu", "rms_norm_eps": 1e-6,
        "vocab_size": 151936, "tie_word_embeddings": false, "max_position_embeddings": 262144,
        "attention_bias": false, "attention_dropout": 0.0, "initializer_range": 0.02,
        "bos_token_id": 151643, "eos_token_id": 151645, "torch_dtype": "bfloat16", "use_cache": true,
        "use_sliding_window": false, "output_router_logits": false, "router_aux_loss_coef": 0.001,
        "transformers_version": "4.57.0.dev0"
    })
}

#[test]
fn released_80b_config_matches_the_flagship_spec() {
    let mtp_names = ["model.embed_tokens.weight", "mtp.fc.weight", "mtp.layers.0.mlp.gate.weight"].map(String::from);
    let (file, mut spec) = import(&released_80b_config().to_string(), Some(&mtp_names));
    assert_eq!(file.layers, vec![repeat(&["gdn_moe", "gdn_moe", "gdn_moe", "attn_moe"], 12)]);
    assert_eq!(file.blocks.keys().collect::<Vec<_>>(), ["attn_moe", "gdn_moe"]);
    assert_eq!(file.mtp.as_ref().map(|m| &m.layer), Some(&LayerItem::Block("attn_moe".into())));
    let flagship = ModelSpec::from_json(FLAGSHIP).unwrap();
    spec.name = flagship.name.clone();
    assert_eq!(spec, flagship);
    // The same file without checkpoint names: no MTP, otherwise identical.
    let (_, mut bare) = import(&released_80b_config().to_string(), None);
    bare.name = flagship.name.clone();
    assert_eq!(bare, ModelSpec { mtp: None, ..flagship });
}

#[test]
fn hf_defaults_and_rope_precedence() {
    // Only the required keys: everything else takes the HF default (qwen3-next.md §1.1).
    let minimal = json!({"model_type": "qwen3_next", "vocab_size": 100, "hidden_size": 64, "num_hidden_layers": 8,
                         "num_attention_heads": 4, "num_key_value_heads": 2, "_name_or_path": "me/minimal"});
    let (file, spec) = import(&minimal.to_string(), None);
    assert_eq!(file.name, "me/minimal");
    assert_eq!(file.layers, vec![repeat(&["gdn_moe", "gdn_moe", "gdn_moe", "attn_moe"], 2)]);
    let MixerSpec::GatedAttention(a) = &spec.layers[3].mixer else { panic!() };
    assert_eq!((a.head_dim, a.rope_theta, a.partial_rotary_factor), (256, 10000.0, 0.25));
    let MixerSpec::GatedDeltanet(g) = &spec.layers[0].mixer else { panic!() };
    assert_eq!(
        (g.num_key_heads, g.num_value_heads, g.key_head_dim, g.value_head_dim, g.conv_kernel),
        (16, 32, 128, 128, 4)
    );
    let FfnSpec::Moe(m) = &spec.layers[0].ffn else { panic!() };
    assert_eq!((m.num_experts, m.top_k, m.expert_width, m.norm_topk_prob), (512, 10, 512, true));
    assert_eq!(m.shared_expert.as_ref().map(|s| s.width), Some(512));
    assert_eq!((spec.max_position_embeddings, spec.rms_norm_eps, spec.tie_word_embeddings), (32768, 1e-6, false));

    // rope_parameters wins over the legacy keys; null rope_scaling and "default" are fine.
    let mut c = minimal.clone();
    c["rope_theta"] = json!(5.0);
    c["partial_rotary_factor"] = json!(0.5);
    c["rope_scaling"] = Value::Null;
    let legacy = import(&c.to_string(), None).1;
    let MixerSpec::GatedAttention(a) = &legacy.layers[3].mixer else { panic!() };
    assert_eq!((a.rope_theta, a.partial_rotary_factor), (5.0, 0.5));
    c["rope_parameters"] = json!({"rope_type": "default", "rope_theta": 1e6});
    let both = import(&c.to_string(), None).1;
    let MixerSpec::GatedAttention(a) = &both.layers[3].mixer else { panic!() };
    assert_eq!((a.rope_theta, a.partial_rotary_factor), (1e6, 0.5));
    c["rope_parameters"] = json!({"full_attention": {"rope_type": "default", "rope_theta": 2e6}});
    let per_type = import(&c.to_string(), None).1;
    let MixerSpec::GatedAttention(a) = &per_type.layers[3].mixer else { panic!() };
    assert_eq!(a.rope_theta, 2e6);

    // No shared expert, no experts at all, dense prefix via mlp_only_layers.
    let mut c = minimal.clone();
    c["shared_expert_intermediate_size"] = json!(0);
    c["mlp_only_layers"] = json!([0, 1, 99]);
    c["intermediate_size"] = json!(96);
    let (file, spec) = import(&c.to_string(), None);
    let expect = ["gdn_dense", "gdn_dense", "gdn_moe", "attn_moe", "gdn_moe", "gdn_moe", "gdn_moe", "attn_moe"];
    assert_eq!(file.layers, names(&expect), "no segment is cheaper here");
    let FfnSpec::Moe(m) = &spec.layers[2].ffn else { panic!() };
    assert!(m.shared_expert.is_none());
    c["num_experts"] = json!(0);
    c["num_nextn_predict_layers"] = json!(1);
    let (file, spec) = import(&c.to_string(), None);
    assert_eq!(file.layers, vec![repeat(&["gdn_dense", "gdn_dense", "gdn_dense", "attn_dense"], 2)]);
    assert_eq!(spec.mtp.map(|m| m.layer.ffn.kind()), Some("dense"));
}

#[test]
fn layer_compression() {
    let (g, a, d) = ("g", "a", "d");
    assert_eq!(compress_layers::<&str>(&[]), vec![]);
    assert_eq!(compress_layers(&[g, g, g, a]), names(&[g, g, g, a]));
    assert_eq!(compress_layers(&[g, g, g, g]), vec![repeat(&[g], 4)]);
    let mut seq = vec![d, d];
    for _ in 0..10 {
        seq.extend([g, a]);
    }
    assert_eq!(compress_layers(&seq), [names(&[d, d]), vec![repeat(&[g, a], 10)]].concat());
    // A periodic body with a broken last period keeps the remainder as plain names.
    let mut seq: Vec<&str> = [g, g, g, a].repeat(11);
    seq.extend([g, g, g, d]);
    assert_eq!(compress_layers(&seq), [vec![repeat(&[g, g, g, a], 11)], names(&[g, g, g, d])].concat());
    // Expanding the compressed form gives the sequence back, for many sequences.
    for n in 0..200usize {
        let seq: Vec<String> =
            (0..n % 37).map(|i| ["x", "y", "z"][(i * i + n) % 3 % (1 + n % 3)].to_string()).collect();
        let mut back = Vec::new();
        for item in compress_layers(&seq) {
            match item {
                LayerItem::Block(b) => back.push(b),
                LayerItem::Repeat(r) => {
                    for _ in 0..r.repeat {
                        back.extend(r.pattern.iter().map(|p| match p {
                            LayerItem::Block(b) => b.clone(),
                            _ => panic!("nested"),
                        }));
                    }
                }
                LayerItem::Layer(_) => panic!("inline"),
            }
        }
        assert_eq!(back, seq);
    }
    // 4096 identical layers compress to one segment, quickly.
    assert_eq!(compress_layers(&vec![g; 4096]), vec![repeat(&[g], 4096)]);
}
