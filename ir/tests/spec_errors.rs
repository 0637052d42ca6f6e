//! Malformed specs and HF configs: the exact error text (every error, one per line, as
//! `SpecErrors` displays them), and no panics.

use qgc_ir::spec::hf::import_config;
use qgc_ir::spec::{ModelSpec, SpecFile};
use serde_json::{json, Value};

/// A small valid spec the cases edit: blocks `attn` and `gdn`, one inline dense layer.
fn base_spec() -> Value {
    json!({
        "name": "t",
        "vocab_size": 32,
        "hidden_size": 16,
        "max_position_embeddings": 64,
        "blocks": {
            "attn": {
                "mixer": {"type": "gated_attention", "num_heads": 4, "num_kv_heads": 2, "head_dim": 8,
                          "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
                "ffn": {"type": "moe", "num_experts": 8, "top_k": 2, "expert_width": 8, "norm_topk_prob": true,
                        "shared_expert": {"width": 8}}
            },
            "gdn": {
                "mixer": {"type": "gated_deltanet", "num_key_heads": 2, "num_value_heads": 4,
                          "key_head_dim": 8, "value_head_dim": 8, "conv_kernel": 4},
                "ffn": {"type": "moe", "num_experts": 8, "top_k": 2, "expert_width": 8, "norm_topk_prob": true}
            }
        },
        "layers": [
            {"pattern": ["gdn", "gdn", "attn"], "repeat": 2},
            {"mixer": {"type": "gated_deltanet", "num_key_heads": 1, "num_value_heads": 1,
                       "key_head_dim": 8, "value_head_dim": 8, "conv_kernel": 2},
             "ffn": {"type": "dense", "width": 32}}
        ],
        "mtp": {"num_layers": 1, "layer": "attn"}
    })
}

/// The hybrid-3to1 fixture's config, which the config cases edit.
fn base_config() -> Value {
    serde_json::from_str(include_str!("../../tests/fixtures/hybrid-3to1/config.json")).unwrap()
}

/// Sets (or adds, in an object) the value at a JSON pointer.
fn set(v: &mut Value, pointer: &str, new: Value) {
    let (parent, last) = pointer.rsplit_once('/').unwrap();
    match v.pointer_mut(parent).unwrap_or_else(|| panic!("no {parent}")) {
        Value::Object(m) => {
            m.insert(last.to_string(), new);
        }
        Value::Array(a) => a[last.parse::<usize>().unwrap()] = new,
        _ => panic!("{parent} is not a container"),
    }
}

fn remove(v: &mut Value, key: &str) {
    v.as_object_mut().unwrap().remove(key).unwrap_or_else(|| panic!("no {key}"));
}

/// Errors of a spec text (parse, validate and expand), as displayed.
fn spec_errors(text: &str) -> String {
    match ModelSpec::from_json(text) {
        Ok(_) => "no error".into(),
        Err(e) => e.to_string(),
    }
}

/// Errors of a config text (import, then resolve the imported spec), as displayed.
fn config_errors(text: &str) -> String {
    match import_config(text, None).and_then(|f| f.resolve()) {
        Ok(_) => "no error".into(),
        Err(e) => e.to_string(),
    }
}

type Edit = fn(&mut Value);

/// (what, edit of the base spec, the exact error text).
const SPEC_CASES: &[(&str, Edit, &str)] = &[
    ("empty name", |v| set(v, "/name", json!("  ")), "name: must not be empty"),
    ("zero vocab", |v| set(v, "/vocab_size", json!(0)), "vocab_size: must be positive"),
    ("zero hidden", |v| set(v, "/hidden_size", json!(0)), "hidden_size: must be positive"),
    ("negative eps", |v| set(v, "/rms_norm_eps", json!(-1.0)), "rms_norm_eps: must be positive and finite, got -1"),
    ("zero positions", |v| set(v, "/max_position_embeddings", json!(0)), "max_position_embeddings: must be positive"),
    ("no layers", |v| set(v, "/layers", json!([])), "layers: must not be empty"),
    ("empty pattern", |v| set(v, "/layers/0/pattern", json!([])), "layers[0].pattern: must not be empty"),
    ("repeat 0", |v| set(v, "/layers/0/repeat", json!(0)), "layers[0].repeat: must be at least 1, got 0"),
    (
        "huge repeat",
        |v| set(v, "/layers/0/repeat", json!(1_000_000_000)),
        "layers: expands to 3000000001 layers, more than the supported 4096",
    ),
    (
        "overflowing nested repeat",
        |v| set(v, "/layers/0/pattern/0", json!({"pattern": ["gdn"], "repeat": u64::MAX})),
        "layers: expands to more than 2^64 layers, more than the supported 4096",
    ),
    (
        "unknown block",
        |v| set(v, "/layers/0/pattern/2", json!("gdnn")),
        "layers[0].pattern[2]: unknown block \"gdnn\" (blocks: attn, gdn)",
    ),
    (
        "unknown block, none defined",
        |v| {
            set(v, "/blocks", json!({}));
            set(v, "/layers", json!(["attn"]));
            v.as_object_mut().unwrap().remove("mtp");
        },
        "layers[0]: unknown block \"attn\" (no blocks are defined)",
    ),
    (
        "gdn zero dims",
        |v| {
            set(v, "/blocks/gdn/mixer/num_key_heads", json!(0));
            set(v, "/blocks/gdn/mixer/value_head_dim", json!(0));
        },
        "blocks.gdn.mixer.num_key_heads: must be positive\nblocks.gdn.mixer.value_head_dim: must be positive",
    ),
    (
        "gdn value heads not a multiple",
        |v| set(v, "/blocks/gdn/mixer/num_value_heads", json!(3)),
        "blocks.gdn.mixer.num_value_heads: 3 is not a multiple of num_key_heads 2",
    ),
    ("gdn conv 0", |v| set(v, "/blocks/gdn/mixer/conv_kernel", json!(0)), "blocks.gdn.mixer.conv_kernel: must be positive"),
    (
        "kv heads do not divide",
        |v| set(v, "/blocks/attn/mixer/num_kv_heads", json!(3)),
        "blocks.attn.mixer.num_kv_heads: 3 does not divide num_heads 4",
    ),
    ("head_dim 0", |v| set(v, "/blocks/attn/mixer/head_dim", json!(0)), "blocks.attn.mixer.head_dim: must be positive"),
    (
        "rope theta 0",
        |v| set(v, "/blocks/attn/mixer/rope_theta", json!(0.0)),
        "blocks.attn.mixer.rope_theta: must be positive and finite, got 0",
    ),
    (
        "partial rotary above 1",
        |v| set(v, "/blocks/attn/mixer/partial_rotary_factor", json!(1.5)),
        "blocks.attn.mixer.partial_rotary_factor: must be in [0, 1], got 1.5",
    ),
    (
        "odd rotary dim filling the head",
        |v| {
            set(v, "/blocks/attn/mixer/head_dim", json!(5));
            set(v, "/blocks/attn/mixer/partial_rotary_factor", json!(1.0));
        },
        "blocks.attn.mixer.partial_rotary_factor: gives rotary dim int(head_dim 5 * 1) = 5, which rotates 6 dims \
         (rounded up to even, as HF does), more than head_dim 5",
    ),
    (
        "top_k above experts",
        |v| set(v, "/blocks/attn/ffn/top_k", json!(9)),
        "blocks.attn.ffn.top_k: must be between 1 and num_experts 8, got 9",
    ),
    (
        "moe zeros",
        |v| {
            set(v, "/blocks/gdn/ffn/num_experts", json!(0));
            set(v, "/blocks/gdn/ffn/top_k", json!(0));
            set(v, "/blocks/gdn/ffn/expert_width", json!(0));
            set(v, "/blocks/attn/ffn/shared_expert/width", json!(0));
        },
        "blocks.attn.ffn.shared_expert.width: must be positive\n\
         blocks.gdn.ffn.num_experts: must be positive\n\
         blocks.gdn.ffn.top_k: must be at least 1, got 0\n\
         blocks.gdn.ffn.expert_width: must be positive",
    ),
    ("dense width 0 (inline)", |v| set(v, "/layers/1/ffn/width", json!(0)), "layers[1].ffn.width: must be positive"),
    (
        "inline layer inside a pattern",
        |v| {
            let mut l = v.pointer("/blocks/attn").unwrap().clone();
            l["mixer"]["num_heads"] = json!(0);
            set(v, "/layers/0/pattern/1", l);
        },
        "layers[0].pattern[1].mixer.num_heads: must be positive",
    ),
    ("mtp zero layers", |v| set(v, "/mtp/num_layers", json!(0)), "mtp.num_layers: must be at least 1, got 0"),
    (
        "mtp too many layers",
        |v| set(v, "/mtp/num_layers", json!(100_000)),
        "mtp.num_layers: 100000 is more than the supported 4096",
    ),
    (
        "mtp gdn block",
        |v| set(v, "/mtp/layer", json!("gdn")),
        "mtp.layer: block \"gdn\" uses gated_deltanet; the mtp layer must use gated_attention",
    ),
    (
        "mtp inline gdn",
        |v| {
            let l = v.pointer("/layers/1").unwrap().clone();
            set(v, "/mtp/layer", l);
        },
        "mtp.layer.mixer: must be gated_attention in the mtp layer, got gated_deltanet",
    ),
    (
        "mtp segment",
        |v| set(v, "/mtp/layer", json!({"pattern": ["attn"], "repeat": 1})),
        "mtp.layer: must be a block name or a layer, not a {\"pattern\", \"repeat\"} segment",
    ),
    ("mtp unknown block", |v| set(v, "/mtp/layer", json!("atn")), "mtp.layer: unknown block \"atn\" (blocks: attn, gdn)"),
    (
        "embedding too large",
        |v| {
            set(v, "/vocab_size", json!(1u64 << 40));
            set(v, "/hidden_size", json!(1u64 << 20));
        },
        "vocab_size: the embedding (vocab_size * hidden_size) has about 1.153e18 parameters, more than the supported 2^48",
    ),
    (
        "layer too large (2^62 experts)",
        |v| set(v, "/blocks/gdn/ffn/num_experts", json!(1u64 << 62)),
        "blocks.gdn: this layer has about 1.845e21 parameters, more than the supported 2^48",
    ),
    (
        "layer too large, valid otherwise",
        |v| {
            set(v, "/blocks/gdn/ffn/num_experts", json!(1u64 << 40));
            set(v, "/blocks/gdn/ffn/expert_width", json!(1u64 << 40));
        },
        "blocks.gdn: this layer has about 5.803e25 parameters, more than the supported 2^48",
    ),
    (
        "whole model too large",
        |v| {
            set(v, "/blocks/gdn/ffn/num_experts", json!(1u64 << 30));
            set(v, "/layers/0/repeat", json!(1365));
        },
        // 2730 GDN layers of about 384 * 2^30 * 16 + 2^30 * 16 = 4.295e11 parameters each.
        "layers: the expanded model has about 1.173e15 parameters, more than the supported 2^48",
    ),
];

/// Parse errors come from serde (`SpecFile::from_json`), one at a time, with their path and the
/// text position. These pin today's behaviour: inside inline layers and inside the internally
/// tagged `mixer`/`ffn` objects serde reports the enclosing object's path, not the field's.
const PARSE_CASES: &[(&str, Edit, &str)] = &[
    (
        "unknown field",
        |v| set(v, "/blocks/gdn/mixer/conv_width", json!(4)),
        "blocks.gdn.mixer.conv_width: unknown field `conv_width`, expected one of `num_key_heads`, `num_value_heads`, \
         `key_head_dim`, `value_head_dim`, `conv_kernel` at line 1 column 495",
    ),
    (
        "wrong type",
        |v| set(v, "/hidden_size", json!("16")),
        "hidden_size: invalid type: string \"16\", expected usize at line 1 column 500",
    ),
    (
        "negative integer in a tagged mixer",
        |v| set(v, "/blocks/attn/mixer/num_heads", json!(-4)),
        "blocks.attn.mixer.num_heads: invalid value: integer `-4`, expected usize at line 1 column 263",
    ),
    (
        "unknown mixer type",
        |v| set(v, "/blocks/attn/mixer/type", json!("mamba")),
        "blocks.attn.mixer.type: unknown variant `mamba`, expected `gated_deltanet` or `gated_attention` \
         at line 1 column 252",
    ),
    (
        "inline layer field type",
        |v| set(v, "/layers/1/ffn/width", json!(-1)),
        "layers[1].ffn.width: invalid value: integer `-1`, expected usize at line 1 column 713",
    ),
    (
        "segment field",
        |v| set(v, "/layers/0/times", json!(1)),
        "layers[0].times: unknown field `times`, expected `pattern` or `repeat` at line 1 column 563",
    ),
    (
        "layer entry of the wrong kind",
        |v| set(v, "/layers/0", json!(3)),
        "layers[0]: expected a block name, a layer object or a {\"pattern\", \"repeat\"} object at line 1 column 511",
    ),
];

/// (what, edit of the hybrid-3to1 config, the exact error text).
const CONFIG_CASES: &[(&str, Edit, &str)] = &[
    (
        "other model type",
        |v| set(v, "/model_type", json!("qwen2_moe")),
        "model_type: \"qwen2_moe\" is not supported; qgc imports only \"qwen3_next\"",
    ),
    ("no model type", |v| remove(v, "model_type"), "model_type: missing (expected \"qwen3_next\")"),
    ("missing kv heads", |v| remove(v, "num_key_value_heads"), "num_key_value_heads: missing"),
    ("wrong type", |v| set(v, "/hidden_size", json!("64")), "hidden_size: expected a non-negative integer, got \"64\""),
    (
        "layer_types length",
        |v| set(v, "/num_hidden_layers", json!(5)),
        "layer_types: has 4 entries but num_hidden_layers is 5",
    ),
    (
        "unknown layer type",
        |v| set(v, "/layer_types/1", json!("sliding_attention")),
        "layer_types[1]: expected \"linear_attention\" or \"full_attention\", got \"sliding_attention\"",
    ),
    (
        "zero interval",
        |v| {
            remove(v, "layer_types");
            v["full_attention_interval"] = json!(0);
        },
        "full_attention_interval: must be positive",
    ),
    (
        "zero sparse step",
        |v| set(v, "/decoder_sparse_step", json!(0)),
        "decoder_sparse_step: must be positive (layer i is moe when (i + 1) % decoder_sparse_step == 0)",
    ),
    (
        "yarn rope",
        |v| set(v, "/rope_parameters/rope_type", json!("yarn")),
        "rope_parameters.rope_type: \"yarn\" is not supported (only \"default\" rope is)",
    ),
    (
        "legacy yarn rope_scaling",
        |v| v["rope_scaling"] = json!({"type": "yarn", "factor": 4.0}),
        "rope_scaling.type: \"yarn\" is not supported (only \"default\" rope is)",
    ),
    ("gelu", |v| set(v, "/hidden_act", json!("gelu")), "hidden_act: \"gelu\" is not supported (expected \"silu\")"),
    (
        "attention bias",
        |v| set(v, "/attention_bias", json!(true)),
        "attention_bias: true is not supported (qgc's attention projections have no bias)",
    ),
    (
        "kv heads do not divide",
        |v| set(v, "/num_key_value_heads", json!(3)),
        "num_key_value_heads: 3 does not divide num_attention_heads 4",
    ),
    (
        "value heads not a multiple",
        |v| set(v, "/linear_num_value_heads", json!(3)),
        "linear_num_value_heads: 3 is not a multiple of linear_num_key_heads 2",
    ),
    (
        "top-k above experts",
        |v| set(v, "/num_experts_per_tok", json!(9)),
        "num_experts_per_tok: must be between 1 and num_experts 8, got 9",
    ),
    (
        "odd rotary dim from rope_parameters filling the head",
        |v| {
            set(v, "/head_dim", json!(5));
            set(v, "/rope_parameters/partial_rotary_factor", json!(1.0));
        },
        "rope_parameters.partial_rotary_factor: gives rotary dim int(head_dim 5 * 1) = 5, which rotates 6 dims \
         (rounded up to even, as HF does), more than head_dim 5",
    ),
    (
        "too many layers",
        |v| {
            remove(v, "layer_types");
            set(v, "/num_hidden_layers", json!(100_000));
        },
        "num_hidden_layers: 100000 is more than the supported 4096",
    ),
    ("zero layers", |v| set(v, "/num_hidden_layers", json!(0)), "num_hidden_layers: must be positive"),
    (
        "mlp_only_layers type",
        |v| set(v, "/mlp_only_layers", json!([0, "1"])),
        "mlp_only_layers[1]: expected a non-negative integer, got \"1\"",
    ),
    (
        "negative mtp layers",
        |v| v["num_nextn_predict_layers"] = json!(-1),
        "num_nextn_predict_layers: expected a non-negative integer, got -1",
    ),
    (
        "disagreeing mtp keys",
        |v| {
            v["num_nextn_predict_layers"] = json!(1);
            v["mtp_num_hidden_layers"] = json!(2);
        },
        "mtp_num_hidden_layers: 2 disagrees with num_nextn_predict_layers 1",
    ),
    ("eps as a string", |v| set(v, "/rms_norm_eps", json!("1e-6")), "rms_norm_eps: expected a number, got \"1e-6\""),
    (
        "tie as a number",
        |v| set(v, "/tie_word_embeddings", json!(1)),
        "tie_word_embeddings: expected true or false, got 1",
    ),
    ("zero eps", |v| set(v, "/rms_norm_eps", json!(0.0)), "rms_norm_eps: must be positive and finite, got 0"),
    ("zero conv kernel", |v| set(v, "/linear_conv_kernel_dim", json!(0)), "linear_conv_kernel_dim: must be positive"),
    ("not an object", |v| *v = json!([1, 2]), "config.json must be a JSON object, got [1,2]"),
];

#[test]
fn base_cases_are_valid() {
    assert_eq!(spec_errors(&base_spec().to_string()), "no error");
    assert_eq!(config_errors(&base_config().to_string()), "no error");
}

fn run_table(cases: &[(&str, Edit, &str)], base: fn() -> Value, errors: fn(&str) -> String) -> Vec<String> {
    let mut failures = Vec::new();
    for (what, edit, expected) in cases {
        let mut v = base();
        edit(&mut v);
        let text = v.to_string();
        match std::panic::catch_unwind(|| errors(&text)) {
            Ok(got) if got == *expected => {}
            Ok(got) => failures.push(format!("{what}:\n  expected: {expected:?}\n  got:      {got:?}")),
            Err(_) => failures.push(format!("{what}: panicked")),
        }
    }
    failures
}

#[test]
fn malformed_specs_give_exact_errors() {
    assert!(SPEC_CASES.len() >= 20);
    let failures = run_table(SPEC_CASES, base_spec, spec_errors);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn unparsable_specs_give_exact_errors() {
    let failures = run_table(PARSE_CASES, base_spec, spec_errors);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn malformed_configs_give_exact_errors() {
    assert!(CONFIG_CASES.len() >= 20);
    let failures = run_table(CONFIG_CASES, base_config, config_errors);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn not_json_at_all() {
    assert_eq!(config_errors("{"), "config.json is not valid JSON: EOF while parsing an object at line 1 column 1");
    assert_eq!(spec_errors("["), "EOF while parsing a list at line 1 column 1");
}

#[test]
fn one_spec_reports_every_error() {
    let mut v = base_spec();
    set(&mut v, "/name", json!(""));
    set(&mut v, "/rms_norm_eps", json!(0.0));
    set(&mut v, "/blocks/attn/mixer/num_kv_heads", json!(3));
    set(&mut v, "/blocks/gdn/mixer/num_value_heads", json!(5));
    set(&mut v, "/layers/0/pattern/2", json!("atn"));
    set(&mut v, "/layers/0/repeat", json!(0));
    set(&mut v, "/layers/1/ffn/width", json!(0));
    set(&mut v, "/mtp/layer", json!("gdn"));
    let expected = [
        "name: must not be empty",
        "rms_norm_eps: must be positive and finite, got 0",
        "blocks.attn.mixer.num_kv_heads: 3 does not divide num_heads 4",
        "blocks.gdn.mixer.num_value_heads: 5 is not a multiple of num_key_heads 2",
        "layers[0].repeat: must be at least 1, got 0",
        "layers[0].pattern[2]: unknown block \"atn\" (blocks: attn, gdn)",
        "layers[1].ffn.width: must be positive",
        "mtp.layer: block \"gdn\" uses gated_deltanet; the mtp layer must use gated_attention",
    ];
    let err = SpecFile::from_json(&v.to_string()).unwrap().resolve().unwrap_err();
    assert_eq!(err.0.len(), expected.len());
    assert_eq!(err.to_string(), expected.join("\n"));
}

#[test]
fn one_config_reports_every_error() {
    let mut v = base_config();
    remove(&mut v, "hidden_size");
    set(&mut v, "/num_key_value_heads", json!(3));
    set(&mut v, "/linear_num_value_heads", json!(5));
    set(&mut v, "/hidden_act", json!("relu"));
    set(&mut v, "/layer_types/0", json!("mamba"));
    set(&mut v, "/rope_parameters/rope_theta", json!(-1.0));
    let expected = [
        "hidden_size: missing",
        "layer_types[0]: expected \"linear_attention\" or \"full_attention\", got \"mamba\"",
        "hidden_act: \"relu\" is not supported (expected \"silu\")",
        "num_key_value_heads: 3 does not divide num_attention_heads 4",
        "rope_parameters.rope_theta: must be positive and finite, got -1",
        "linear_num_value_heads: 5 is not a multiple of linear_num_key_heads 2",
    ];
    assert_eq!(config_errors(&v.to_string()), expected.join("\n"));
}
