//! The shipped model specs: each parses, resolves and has the shape its description claims.

use qgc_ir::spec::{FfnSpec, LayerSpec, MixerSpec, ModelSpec, SpecFile};

const MODELS: &[(&str, &str)] = &[
    ("qwen3-next.json", include_str!("../../models/qwen3-next.json")),
    ("qwen3-next-tiny.json", include_str!("../../models/qwen3-next-tiny.json")),
    ("qwen3-next-5to1-dense-head.json", include_str!("../../models/qwen3-next-5to1-dense-head.json")),
    ("qwen3-next-attn-first.json", include_str!("../../models/qwen3-next-attn-first.json")),
];

fn model(file: &str) -> ModelSpec {
    let text = MODELS.iter().find(|m| m.0 == file).expect("known model").1;
    ModelSpec::from_json(text).unwrap_or_else(|e| panic!("{file}:\n{e}"))
}

/// `"g"`/`"a"` for the mixer, `"m"`/`"d"` for the FFN, per layer: `ga` style strings.
fn kinds(layers: &[LayerSpec]) -> Vec<&'static str> {
    layers
        .iter()
        .map(|l| match (&l.mixer, &l.ffn) {
            (MixerSpec::GatedDeltanet(_), FfnSpec::Moe(_)) => "gm",
            (MixerSpec::GatedDeltanet(_), FfnSpec::Dense(_)) => "gd",
            (MixerSpec::GatedAttention(_), FfnSpec::Moe(_)) => "am",
            (MixerSpec::GatedAttention(_), FfnSpec::Dense(_)) => "ad",
        })
        .collect()
}

#[test]
fn every_model_parses_resolves_and_round_trips() {
    let mut seen = std::collections::BTreeSet::new();
    for (file, text) in MODELS {
        let f = SpecFile::from_json(text).unwrap_or_else(|e| panic!("{file}:\n{e}"));
        let spec = f.resolve().unwrap_or_else(|e| panic!("{file}:\n{e}"));
        assert!(seen.insert(spec.name.clone()), "{file}: duplicate name {}", spec.name);
        assert!(f.description.as_deref().is_some_and(|d| !d.is_empty()), "{file}: no description");
        // The shipped files are exactly what serialising them writes (2-space pretty JSON, the
        // struct's field order, a final newline), so `qgc import` output looks the same.
        let pretty = serde_json::to_string_pretty(&f).unwrap() + "\n";
        assert_eq!(pretty, *text, "{file}: not in canonical form");
        assert_eq!(SpecFile::from_json(&pretty).unwrap(), f, "{file}");
        // Every declared tensor has a non-empty shape.
        for t in spec.tensors() {
            assert!(t.numel() > 0, "{file}: {} has shape {:?}", t.name, t.shape);
        }
    }
}

#[test]
fn flagship_80b_layout_and_param_counts() {
    let spec = model("qwen3-next.json");
    let expect: Vec<&str> = (0..48).map(|i| if (i + 1) % 4 == 0 { "am" } else { "gm" }).collect();
    assert_eq!(kinds(&spec.layers), expect);
    assert_eq!((spec.vocab_size, spec.hidden_size, spec.max_position_embeddings), (151936, 2048, 262144));
    assert!(!spec.tie_word_embeddings && spec.zero_centred_norms && spec.rms_norm_eps == 1e-6);
    let MixerSpec::GatedAttention(a) = &spec.layers[3].mixer else { panic!("layer 3 is attention") };
    assert_eq!((a.num_heads, a.num_kv_heads, a.head_dim, a.rotary_dim()), (16, 2, 256, 64));
    assert!(a.output_gate && a.qk_norm && a.rope_theta == 1e7);
    let MixerSpec::GatedDeltanet(g) = &spec.layers[0].mixer else { panic!("layer 0 is GDN") };
    assert_eq!((g.num_key_heads, g.num_value_heads, g.key_head_dim, g.value_head_dim), (16, 32, 128, 128));
    assert_eq!((g.conv_kernel, g.conv_dim()), (4, 8192));
    let FfnSpec::Moe(m) = &spec.layers[0].ffn else { panic!("MoE") };
    assert_eq!((m.num_experts, m.top_k, m.expert_width, m.norm_topk_prob), (512, 10, 512, true));
    let shared = m.shared_expert.as_ref().expect("shared expert");
    assert_eq!((shared.width, shared.sigmoid_gate), (512, true));
    let mtp = spec.mtp.as_ref().expect("mtp");
    assert_eq!(mtp.num_layers, 1);
    assert_eq!(mtp.layer, spec.layers[3]);

    let c = spec.param_counts();
    assert_eq!(c.total, 79_674_391_296);
    assert_eq!(c.embedding, 2 * 151_936 * 2048);
    assert_eq!(c.active_non_embedding, 3_252_599_552);
    assert!((c.active_non_embedding as f64 - 3.25e9).abs() < 0.01e9);
    // One full-attention MoE layer plus fc [2048, 4096] and three norms.
    let attn_layer = 8192 * 2048 + 2 * 512 * 2048 + 2048 * 4096 + 2 * 256 + 2 * 2048;
    let moe = 512 * 2048 + 3 * 512 * 512 * 2048 + 3 * 512 * 2048 + 2048;
    assert_eq!(c.mtp, attn_layer + moe + 2048 * 4096 + 3 * 2048);
}

#[test]
fn tiny_model_shape() {
    let spec = model("qwen3-next-tiny.json");
    assert_eq!(kinds(&spec.layers), ["gm", "gm", "gm", "am"]);
    assert_eq!((spec.vocab_size, spec.hidden_size, spec.max_position_embeddings), (151936, 64, 4096));
    assert!(spec.mtp.is_none() && !spec.tie_word_embeddings);
    let MixerSpec::GatedAttention(a) = &spec.layers[3].mixer else { panic!() };
    assert_eq!((a.num_heads, a.num_kv_heads, a.head_dim), (4, 2, 16));
    let MixerSpec::GatedDeltanet(g) = &spec.layers[0].mixer else { panic!() };
    assert_eq!(
        (g.num_key_heads, g.num_value_heads, g.key_head_dim, g.value_head_dim, g.conv_kernel),
        (2, 4, 16, 16, 4)
    );
    let FfnSpec::Moe(m) = &spec.layers[3].ffn else { panic!() };
    assert_eq!((m.num_experts, m.top_k, m.expert_width), (8, 2, 32));
    assert_eq!(m.shared_expert.as_ref().map(|s| s.width), Some(32));
}

#[test]
fn authored_variants_shape_and_size() {
    let spec = model("qwen3-next-5to1-dense-head.json");
    let period = ["gm", "gm", "gm", "gm", "gm", "am"];
    let expect: Vec<&str> = ["gd", "ad"].into_iter().chain(period.iter().copied().cycle().take(24)).collect();
    assert_eq!(kinds(&spec.layers), expect);
    let total = spec.param_counts().total;
    assert!((1e9..3e9).contains(&(total as f64)), "5to1 has {total} parameters");

    let spec = model("qwen3-next-attn-first.json");
    let expect: Vec<&str> = ["am", "gm", "gm", "gm"].into_iter().cycle().take(24).collect();
    assert_eq!(kinds(&spec.layers), expect);
    let MixerSpec::GatedDeltanet(g) = &spec.layers[1].mixer else { panic!() };
    assert_eq!(g.num_value_heads / g.num_key_heads, 4);
    assert_ne!(g.key_head_dim, g.value_head_dim);
    let MixerSpec::GatedAttention(a) = &spec.layers[0].mixer else { panic!() };
    assert_eq!((a.num_heads, a.num_kv_heads, a.head_dim), (8, 1, 128));
    assert!(spec.tie_word_embeddings && spec.mtp.is_some());
    let total = spec.param_counts().total;
    assert!((1e9..3e9).contains(&(total as f64)), "attn-first has {total} parameters");
}
