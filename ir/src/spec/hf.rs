//! Import of an HF `Qwen3NextConfig` config.json into a spec.
//!
//! The result is a compact [`SpecFile`]: one entry of `blocks` per distinct layer kind (`gdn_moe`,
//! `attn_moe`, `gdn_dense`, `attn_dense`) and `layers` compressed into `{pattern, repeat}` segments
//! (see [`compress_layers`]). It is validated before it is returned, and every error names the
//! config key it comes from (`num_key_value_heads: 3 does not divide num_attention_heads 16`).
//!
//! Policy:
//! - unknown keys are ignored; keys that are used must have the right JSON type;
//! - `vocab_size`, `hidden_size`, `num_hidden_layers`, `num_attention_heads` and
//!   `num_key_value_heads` are required: HF would default them to the 80B's sizes, and a config
//!   without them is far more likely broken than meant to be the 80B. Every other key takes its HF
//!   default (qwen3-next.md §1.1); `null` counts as absent for keys that have a default;
//! - layer kinds follow HF: `layer_types`, else `full_attention_interval` (default 4); layer `i` is
//!   MoE iff `i ∉ mlp_only_layers`, `num_experts > 0` and `(i+1) % decoder_sparse_step == 0`;
//! - RoPE: `rope_parameters` (flat, or per layer type with a `full_attention` entry) wins over the
//!   legacy top-level `rope_theta` / `partial_rotary_factor`; only `rope_type` "default" is
//!   supported, in `rope_parameters` and in a legacy `rope_scaling`;
//! - MTP: `num_nextn_predict_layers` (or Qwen3.5's `mtp_num_hidden_layers`) when set, 0 meaning
//!   none; when neither is set, one MTP layer per `mtp.layers.{i}` index found in the checkpoint
//!   (at least one if any `mtp.*` tensor exists). The MTP layer is gated attention with the model's
//!   MoE (dense `intermediate_size` when `num_experts` is 0).

use super::validate::{self, Naming, MAX_LAYERS};
use super::{
    AttnSpec, DenseSpec, FfnSpec, GdnSpec, LayerItem, LayerSpec, MixerSpec, MoeSpec, MtpFile, RepeatItem,
    SharedExpertSpec, SpecError, SpecErrors, SpecFile,
};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Spec name when the config has no `_name_or_path`.
pub const DEFAULT_NAME: &str = "qwen3-next-imported";

/// Imports config.json text. `checkpoint_names` are the checkpoint's tensor names when known; they
/// only decide whether an MTP block exists when the config does not say.
pub fn import_config(json: &str, checkpoint_names: Option<&[String]>) -> Result<SpecFile, SpecErrors> {
    let value: Value =
        serde_json::from_str(json).map_err(|e| SpecErrors::one("", format!("config.json is not valid JSON: {e}")))?;
    import_config_value(&value, checkpoint_names)
}

/// Imports an already parsed config.json (see [`import_config`]).
pub fn import_config_value(config: &Value, checkpoint_names: Option<&[String]>) -> Result<SpecFile, SpecErrors> {
    let Some(map) = config.as_object() else {
        return Err(SpecErrors::one("", format!("config.json must be a JSON object, got {}", show(config))));
    };
    match map.get("model_type") {
        Some(Value::String(t)) if t == "qwen3_next" => {}
        Some(Value::String(t)) => {
            let msg = format!("{t:?} is not supported; qgc imports only \"qwen3_next\"");
            return Err(SpecErrors::one("model_type", msg));
        }
        None => return Err(SpecErrors::one("model_type", "missing (expected \"qwen3_next\")")),
        Some(v) => return Err(SpecErrors::one("model_type", format!("expected a string, got {}", show(v)))),
    }
    let mut r = Reader { map, errors: Vec::new() };
    let cfg = Config::read(&mut r, checkpoint_names);
    let spec = cfg.to_spec();
    let failed: BTreeSet<String> = r.errors.iter().map(|e| e.path.clone()).collect();
    let mut errors = r.errors;
    for e in validate::check_named(&spec, &cfg.keys) {
        if !failed.contains(&e.path) && !errors.contains(&e) {
            errors.push(e);
        }
    }
    if errors.is_empty() {
        Ok(spec)
    } else {
        Err(SpecErrors(errors))
    }
}

/// Compresses a layer sequence of block names into the fewest entries: plain names and
/// `{"pattern": [...], "repeat": r}` segments (r >= 2, flat patterns). A segment costs its pattern
/// length + 2, a name 1. Ties go to fewer segments, then to plain names as late as possible. So
/// `A A A B` stays as written, `(A A A B) x 12` becomes one segment, `D D (A B) x 10` keeps `D D`
/// as a prefix and `(A A A B) x 11 A A A D` keeps the broken period as a suffix.
pub fn compress_layers<S: AsRef<str>>(names: &[S]) -> Vec<LayerItem> {
    let s: Vec<&str> = names.iter().map(AsRef::as_ref).collect();
    let n = s.len();
    // cost[i]: (entries, segments, sum of n - j over plain names at j) for s[i..], compared in
    // that order; choice[i]: (period, repeats), (1, 1) for a plain name.
    let mut cost = vec![(0usize, 0usize, 0usize); n + 1];
    let mut choice = vec![(1usize, 1usize); n];
    // run[p]: how many k >= i in a row have s[k] == s[k + p] (for the current i).
    let mut run = vec![0usize; n + 1];
    for i in (0..n).rev() {
        let next = cost[i + 1];
        cost[i] = (next.0 + 1, next.1, next.2 + (n - i));
        for p in 1..n - i {
            run[p] = if s[i] == s[i + p] { run[p] + 1 } else { 0 };
            for reps in 2..=1 + run[p] / p {
                let rest = cost[i + p * reps];
                let c = (rest.0 + p + 2, rest.1 + 1, rest.2);
                if c < cost[i] {
                    cost[i] = c;
                    choice[i] = (p, reps);
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        let (p, reps) = choice[i];
        if reps == 1 {
            out.push(LayerItem::Block(s[i].to_string()));
        } else {
            let pattern = s[i..i + p].iter().map(|b| LayerItem::Block(b.to_string())).collect();
            out.push(LayerItem::Repeat(RepeatItem { pattern, repeat: reps }));
        }
        i += p * reps;
    }
    out
}

/// Everything the spec needs, read from the config.
struct Config {
    name: String,
    vocab_size: usize,
    hidden_size: usize,
    rms_norm_eps: f64,
    max_position_embeddings: usize,
    tie_word_embeddings: bool,
    /// Per layer: (full attention, MoE).
    kinds: Vec<(bool, bool)>,
    gdn: GdnSpec,
    attn: AttnSpec,
    moe: MoeSpec,
    dense: DenseSpec,
    mtp_layers: usize,
    keys: HfKeys,
}

impl Config {
    fn read(r: &mut Reader, checkpoint_names: Option<&[String]>) -> Config {
        let name = match r.get("_name_or_path") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            _ => DEFAULT_NAME.to_string(),
        };
        let vocab_size = r.usize_required("vocab_size");
        let hidden_size = r.usize_required("hidden_size");
        let mut num_layers = r.usize_required("num_hidden_layers");
        if num_layers as u64 > MAX_LAYERS {
            r.fail("num_hidden_layers", format!("{num_layers} is more than the supported {MAX_LAYERS}"));
            num_layers = 0;
        } else if num_layers == 0 && !r.failed("num_hidden_layers") {
            r.fail("num_hidden_layers", "must be positive".into());
        }
        let attn_layers = read_layer_types(r, num_layers);
        let (attn, theta_key, factor_key) = read_attention(r);
        let gdn = read_gdn(r);
        let moe = read_moe(r);
        let moe_layers = read_moe_layers(r, num_layers, moe.num_experts);
        let dense = DenseSpec { width: r.usize_or("intermediate_size", 5632) };
        let rms_norm_eps = r.f64_or("rms_norm_eps", 1e-6);
        let max_position_embeddings = r.usize_or("max_position_embeddings", 32768);
        let tie_word_embeddings = r.bool_or("tie_word_embeddings", false);
        if let Some(act) = r.str_opt("hidden_act") {
            if act != "silu" {
                r.fail("hidden_act", format!("{act:?} is not supported (expected \"silu\")"));
            }
        }
        if r.bool_or("attention_bias", false) {
            r.fail("attention_bias", "true is not supported (qgc's attention projections have no bias)".into());
        }
        let (mtp_layers, mtp_key) = read_mtp(r, checkpoint_names);
        let kinds = attn_layers.into_iter().zip(moe_layers).collect();
        let keys = HfKeys { theta: theta_key, factor: factor_key, mtp: mtp_key };
        Config {
            name,
            vocab_size,
            hidden_size,
            rms_norm_eps,
            max_position_embeddings,
            tie_word_embeddings,
            kinds,
            gdn,
            attn,
            moe,
            dense,
            mtp_layers,
            keys,
        }
    }

    fn layer(&self, attn: bool, moe: bool) -> LayerSpec {
        LayerSpec {
            mixer: if attn {
                MixerSpec::GatedAttention(self.attn.clone())
            } else {
                MixerSpec::GatedDeltanet(self.gdn.clone())
            },
            ffn: if moe { FfnSpec::Moe(self.moe.clone()) } else { FfnSpec::Dense(self.dense.clone()) },
        }
    }

    fn to_spec(&self) -> SpecFile {
        let mut blocks = BTreeMap::new();
        let mut names = Vec::with_capacity(self.kinds.len());
        for &(attn, moe) in &self.kinds {
            let name = block_name(attn, moe);
            blocks.entry(name.to_string()).or_insert_with(|| self.layer(attn, moe));
            names.push(name);
        }
        let mtp = (self.mtp_layers > 0).then(|| {
            let moe = self.moe.num_experts > 0;
            let name = block_name(true, moe);
            blocks.entry(name.to_string()).or_insert_with(|| self.layer(true, moe));
            MtpFile { num_layers: self.mtp_layers, layer: LayerItem::Block(name.to_string()) }
        });
        let n_attn = self.kinds.iter().filter(|k| k.0).count();
        let n_moe = self.kinds.iter().filter(|k| k.1).count();
        let description = format!(
            "imported from an HF Qwen3NextConfig: {} layers ({n_attn} gated attention, {} gated DeltaNet; {n_moe} MoE, {} dense){}",
            self.kinds.len(),
            self.kinds.len() - n_attn,
            self.kinds.len() - n_moe,
            if self.mtp_layers > 0 { format!(", {} MTP layer(s)", self.mtp_layers) } else { String::new() }
        );
        SpecFile {
            name: self.name.clone(),
            description: Some(description),
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            rms_norm_eps: self.rms_norm_eps,
            zero_centred_norms: true,
            tie_word_embeddings: self.tie_word_embeddings,
            max_position_embeddings: self.max_position_embeddings,
            blocks,
            layers: compress_layers(&names),
            mtp,
        }
    }
}

/// The gated DeltaNet shape (`linear_*` keys, HF defaults).
fn read_gdn(r: &mut Reader) -> GdnSpec {
    GdnSpec {
        num_key_heads: r.usize_or("linear_num_key_heads", 16),
        num_value_heads: r.usize_or("linear_num_value_heads", 32),
        key_head_dim: r.usize_or("linear_key_head_dim", 128),
        value_head_dim: r.usize_or("linear_value_head_dim", 128),
        conv_kernel: r.usize_or("linear_conv_kernel_dim", 4),
    }
}

/// The MoE shape (HF defaults); `shared_expert_intermediate_size` 0 means no shared expert.
fn read_moe(r: &mut Reader) -> MoeSpec {
    let shared = r.usize_or("shared_expert_intermediate_size", 512);
    MoeSpec {
        num_experts: r.usize_or("num_experts", 512),
        top_k: r.usize_or("num_experts_per_tok", 10),
        expert_width: r.usize_or("moe_intermediate_size", 512),
        norm_topk_prob: r.bool_or("norm_topk_prob", true),
        shared_expert: (shared > 0).then_some(SharedExpertSpec { width: shared, sigmoid_gate: true }),
    }
}

fn block_name(attn: bool, moe: bool) -> &'static str {
    match (attn, moe) {
        (false, true) => "gdn_moe",
        (true, true) => "attn_moe",
        (false, false) => "gdn_dense",
        (true, false) => "attn_dense",
    }
}

/// Per layer: full attention? From `layer_types`, else `full_attention_interval`.
fn read_layer_types(r: &mut Reader, n: usize) -> Vec<bool> {
    match r.get("layer_types") {
        None => {
            let interval = r.usize_or("full_attention_interval", 4);
            if interval == 0 {
                if !r.failed("full_attention_interval") {
                    r.fail("full_attention_interval", "must be positive".into());
                }
                return vec![false; n];
            }
            (0..n).map(|i| (i + 1) % interval == 0).collect()
        }
        Some(Value::Array(items)) => {
            if items.len() != n && !r.failed("num_hidden_layers") {
                let msg = format!("has {} entries but num_hidden_layers is {n}", items.len());
                r.fail("layer_types", msg);
            }
            let mut out = vec![false; n];
            for (i, v) in items.iter().enumerate() {
                let attn = match v.as_str() {
                    Some("full_attention") => true,
                    Some("linear_attention") => false,
                    _ => {
                        let msg = format!("expected \"linear_attention\" or \"full_attention\", got {}", show(v));
                        r.fail(&format!("layer_types[{i}]"), msg);
                        false
                    }
                };
                if let Some(slot) = out.get_mut(i) {
                    *slot = attn;
                }
            }
            out
        }
        Some(v) => {
            let msg = format!("expected a list of layer types, got {}", show(v));
            r.fail("layer_types", msg);
            vec![false; n]
        }
    }
}

/// Per layer: MoE? From `mlp_only_layers` and `decoder_sparse_step` (HF's rule).
fn read_moe_layers(r: &mut Reader, n: usize, num_experts: usize) -> Vec<bool> {
    let mut dense_only = BTreeSet::new();
    match r.get("mlp_only_layers") {
        None => {}
        Some(Value::Array(items)) => {
            for (i, v) in items.iter().enumerate() {
                if let Some(l) = r.as_usize(&format!("mlp_only_layers[{i}]"), v) {
                    dense_only.insert(l);
                }
            }
        }
        Some(v) => {
            let msg = format!("expected a list of layer indices, got {}", show(v));
            r.fail("mlp_only_layers", msg);
        }
    }
    let step = r.usize_or("decoder_sparse_step", 1);
    if step == 0 && !r.failed("decoder_sparse_step") {
        let msg = "must be positive (layer i is moe when (i + 1) % decoder_sparse_step == 0)".into();
        r.fail("decoder_sparse_step", msg);
    }
    (0..n).map(|i| !dense_only.contains(&i) && num_experts > 0 && step > 0 && (i + 1) % step == 0).collect()
}

/// The attention shape and the keys its RoPE values came from.
fn read_attention(r: &mut Reader) -> (AttnSpec, String, String) {
    let num_heads = r.usize_required("num_attention_heads");
    let num_kv_heads = r.usize_required("num_key_value_heads");
    let head_dim = r.usize_or("head_dim", 256);
    match r.get("rope_scaling") {
        None => {}
        Some(Value::Object(m)) => {
            let key = if m.contains_key("rope_type") { "rope_type" } else { "type" };
            check_rope_type(r, "rope_scaling", key, m.get(key));
        }
        Some(v) => r.fail("rope_scaling", format!("expected an object or null, got {}", show(v))),
    }
    let mut theta = (r.f64_or("rope_theta", 10000.0), "rope_theta".to_string());
    let mut factor = (r.f64_or("partial_rotary_factor", 0.25), "partial_rotary_factor".to_string());
    match r.get("rope_parameters") {
        None => {}
        Some(Value::Object(m)) => {
            // HF 5 may key the parameters by layer type; Qwen3-Next ropes only full attention.
            let (m, base) = match m.get("full_attention") {
                Some(Value::Object(inner)) => (inner, "rope_parameters.full_attention"),
                _ => (m, "rope_parameters"),
            };
            check_rope_type(r, base, "rope_type", m.get("rope_type"));
            for (key, slot) in [("rope_theta", &mut theta), ("partial_rotary_factor", &mut factor)] {
                let path = format!("{base}.{key}");
                if let Some(x) = m.get(key).filter(|v| !v.is_null()).and_then(|v| r.as_f64(&path, v)) {
                    *slot = (x, path);
                }
            }
        }
        Some(v) => r.fail("rope_parameters", format!("expected an object or null, got {}", show(v))),
    }
    let attn = AttnSpec {
        num_heads,
        num_kv_heads,
        head_dim,
        output_gate: true,
        qk_norm: true,
        rope_theta: theta.0,
        partial_rotary_factor: factor.0,
    };
    (attn, theta.1, factor.1)
}

fn check_rope_type(r: &mut Reader, base: &str, key: &str, v: Option<&Value>) {
    let path = format!("{base}.{key}");
    match v {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if t == "default" => {}
        Some(Value::String(t)) => {
            r.fail(&path, format!("{t:?} is not supported (only \"default\" rope is)"));
        }
        Some(v) => r.fail(&path, format!("expected a string, got {}", show(v))),
    }
}

/// MTP layer count and the key it came from.
fn read_mtp(r: &mut Reader, checkpoint_names: Option<&[String]>) -> (usize, String) {
    let nextn = r.get("num_nextn_predict_layers").is_some().then(|| r.usize_or("num_nextn_predict_layers", 0));
    let qwen35 = r.get("mtp_num_hidden_layers").is_some().then(|| r.usize_or("mtp_num_hidden_layers", 0));
    match (nextn, qwen35) {
        (Some(a), Some(b)) => {
            if a != b {
                r.fail("mtp_num_hidden_layers", format!("{b} disagrees with num_nextn_predict_layers {a}"));
            }
            (a, "num_nextn_predict_layers".into())
        }
        (Some(a), None) => (a, "num_nextn_predict_layers".into()),
        (None, Some(b)) => (b, "mtp_num_hidden_layers".into()),
        (None, None) => {
            let names = checkpoint_names.unwrap_or(&[]);
            let n = if names.iter().any(|n| n.starts_with("mtp.")) {
                let layer = |n: &String| n.strip_prefix("mtp.layers.")?.split('.').next()?.parse::<usize>().ok();
                names.iter().filter_map(layer).map(|i| i.saturating_add(1)).max().unwrap_or(1)
            } else {
                0
            };
            (n, "num_nextn_predict_layers".into())
        }
    }
}

/// Names spec fields by the config keys they come from.
struct HfKeys {
    theta: String,
    factor: String,
    mtp: String,
}

impl HfKeys {
    fn key(&self, field: &str) -> String {
        let key = match field {
            "name" => "_name_or_path",
            "layers" => "num_hidden_layers",
            "mtp.num_layers" => &self.mtp,
            "mixer.num_key_heads" => "linear_num_key_heads",
            "mixer.num_value_heads" => "linear_num_value_heads",
            "mixer.key_head_dim" => "linear_key_head_dim",
            "mixer.value_head_dim" => "linear_value_head_dim",
            "mixer.conv_kernel" => "linear_conv_kernel_dim",
            "mixer.num_heads" => "num_attention_heads",
            "mixer.num_kv_heads" => "num_key_value_heads",
            "mixer.head_dim" => "head_dim",
            "mixer.rope_theta" => &self.theta,
            "mixer.partial_rotary_factor" => &self.factor,
            "ffn.num_experts" => "num_experts",
            "ffn.top_k" => "num_experts_per_tok",
            "ffn.expert_width" => "moe_intermediate_size",
            "ffn.shared_expert.width" => "shared_expert_intermediate_size",
            "ffn.width" => "intermediate_size",
            other => other,
        };
        key.to_string()
    }
}

impl Naming for HfKeys {
    fn path(&self, _base: &str, field: &str) -> String {
        self.key(field)
    }
    fn name(&self, field: &str) -> String {
        self.key(field)
    }
}

/// Typed access to the config's keys; problems are collected, not returned.
struct Reader<'a> {
    map: &'a Map<String, Value>,
    errors: Vec<SpecError>,
}

impl<'a> Reader<'a> {
    /// The value of `key`, `None` when absent or null.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn fail(&mut self, path: &str, message: String) {
        self.errors.push(SpecError { path: path.to_string(), message });
    }

    fn failed(&self, path: &str) -> bool {
        self.errors.iter().any(|e| e.path == path)
    }

    fn as_usize(&mut self, path: &str, v: &Value) -> Option<usize> {
        let n = v.as_u64().and_then(|n| usize::try_from(n).ok());
        if n.is_none() {
            self.fail(path, format!("expected a non-negative integer, got {}", show(v)));
        }
        n
    }

    fn as_f64(&mut self, path: &str, v: &Value) -> Option<f64> {
        let x = v.as_f64();
        if x.is_none() {
            self.fail(path, format!("expected a number, got {}", show(v)));
        }
        x
    }

    /// A required integer; 0 (with an error recorded) when missing or mistyped.
    fn usize_required(&mut self, key: &str) -> usize {
        match self.map.get(key) {
            None => {
                self.fail(key, "missing".into());
                0
            }
            Some(v) => self.as_usize(key, v).unwrap_or(0),
        }
    }

    fn usize_or(&mut self, key: &str, default: usize) -> usize {
        self.get(key).map_or(Some(default), |v| self.as_usize(key, v)).unwrap_or(default)
    }

    fn f64_or(&mut self, key: &str, default: f64) -> f64 {
        self.get(key).map_or(Some(default), |v| self.as_f64(key, v)).unwrap_or(default)
    }

    fn bool_or(&mut self, key: &str, default: bool) -> bool {
        match self.get(key) {
            None => default,
            Some(Value::Bool(b)) => *b,
            Some(v) => {
                self.fail(key, format!("expected true or false, got {}", show(v)));
                default
            }
        }
    }

    fn str_opt(&mut self, key: &str) -> Option<&'a str> {
        match self.get(key) {
            None => None,
            Some(Value::String(s)) => Some(s),
            Some(v) => {
                self.fail(key, format!("expected a string, got {}", show(v)));
                None
            }
        }
    }
}

/// A JSON value for a message, shortened to about 40 characters.
fn show(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() <= 40 {
        s
    } else {
        format!("{}...", s.chars().take(37).collect::<String>())
    }
}
