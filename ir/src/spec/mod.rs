//! The model spec: the JSON a user writes (`models/*.json`), its validation and its expansion into
//! a flat per-layer [`ModelSpec`] that lowering consumes.
//!
//! Two forms exist on purpose:
//! - [`SpecFile`] mirrors the JSON exactly (named `blocks`, `pattern` × `repeat` segments), so every
//!   error can name the JSON path the user wrote;
//! - [`ModelSpec`] is the expanded, validated model: one [`LayerSpec`] per decoder layer.

mod count;
pub mod hf;
mod tensors;
mod validate;

pub use count::{ParamCounts, StateBytes};
pub use tensors::{TensorDecl, TensorRole};

use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// One spec problem, located by the JSON path the user wrote (`layers[3].mixer.num_kv_heads`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// JSON path, e.g. `blocks.attn.mixer.head_dim` or `layers[1].pattern[0]`.
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one spec, reported together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl SpecErrors {
    /// One error at `path`.
    pub fn one(path: impl Into<String>, message: impl Into<String>) -> Self {
        SpecErrors(vec![SpecError { path: path.into(), message: message.into() }])
    }
}

fn default_eps() -> f64 {
    1e-6
}
fn default_true() -> bool {
    true
}
fn default_one() -> usize {
    1
}

/// The JSON file as written. Unknown fields are rejected everywhere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecFile {
    /// Model name, free text (shown in summaries).
    pub name: String,
    /// Optional free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Token vocabulary size (rows of the embedding and of lm_head).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Epsilon of every RMSNorm (added to the mean of squares).
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// Norm weights are stored zero-centred and applied as `1 + w` (Qwen3-Next: true).
    #[serde(default = "default_true")]
    pub zero_centred_norms: bool,
    /// lm_head shares the embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Longest sequence the model supports (prompt + generated).
    pub max_position_embeddings: usize,
    /// Named layer definitions that `layers` entries may refer to by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub blocks: BTreeMap<String, LayerSpec>,
    /// The decoder layers, in order: block names, inline layers, or `{pattern, repeat}` segments.
    pub layers: Vec<LayerItem>,
    /// Optional multi-token-prediction block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtp: Option<MtpFile>,
}

/// One entry of `layers` (or of a `pattern`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum LayerItem {
    /// The name of an entry of `blocks`.
    Block(String),
    /// `{"pattern": [...], "repeat": n}`: the pattern n times.
    Repeat(RepeatItem),
    /// A layer written out in place.
    Layer(LayerSpec),
}

/// `{"pattern": [...], "repeat": n}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepeatItem {
    /// The layers of one period.
    pub pattern: Vec<LayerItem>,
    /// How many times the period is laid down.
    pub repeat: usize,
}

/// Marks a nested JSON path inside an error message, so [`SpecFile::from_json`] can join it to
/// the outer path: `\u{1}inner.path\u{1}message`.
const PATH_MARK: char = '\u{1}';

/// Deserialises `v` as `T`, keeping the path of any error inside `v` (see [`PATH_MARK`]).
fn nested<T: serde::de::DeserializeOwned, E: serde::de::Error>(v: serde_json::Value) -> Result<T, E> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        E::custom(format!("{PATH_MARK}{path}{PATH_MARK}{}", e.inner()))
    })
}

/// Splits a `{"type": ..., fields}` object into its tag and the remaining fields.
fn tagged<E: serde::de::Error>(
    v: serde_json::Value,
    variants: &'static [&'static str],
) -> Result<(String, serde_json::Value), E> {
    let serde_json::Value::Object(mut m) = v else {
        return Err(E::custom("expected an object with a \"type\" field"));
    };
    match m.remove("type") {
        Some(serde_json::Value::String(t)) if variants.contains(&t.as_str()) => Ok((t, serde_json::Value::Object(m))),
        Some(serde_json::Value::String(t)) => Err(E::custom(format!(
            "{PATH_MARK}type{PATH_MARK}unknown variant `{t}`, expected {}",
            variants.iter().map(|v| format!("`{v}`")).collect::<Vec<_>>().join(" or ")
        ))),
        Some(_) => Err(E::custom(format!("{PATH_MARK}type{PATH_MARK}expected a string"))),
        None => Err(E::missing_field("type")),
    }
}

impl<'de> Deserialize<'de> for LayerItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Decide by shape first so that errors inside an object keep their own message and path.
        let v = serde_json::Value::deserialize(d)?;
        match &v {
            serde_json::Value::String(s) => Ok(LayerItem::Block(s.clone())),
            serde_json::Value::Object(m) if m.contains_key("pattern") || m.contains_key("repeat") => {
                nested(v).map(LayerItem::Repeat)
            }
            serde_json::Value::Object(_) => nested(v).map(LayerItem::Layer),
            _ => Err(serde::de::Error::custom(
                "expected a block name, a layer object or a {\"pattern\", \"repeat\"} object",
            )),
        }
    }
}

impl<'de> Deserialize<'de> for MixerSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (t, rest) = tagged(serde_json::Value::deserialize(d)?, &["gated_deltanet", "gated_attention"])?;
        match t.as_str() {
            "gated_deltanet" => nested(rest).map(MixerSpec::GatedDeltanet),
            _ => nested(rest).map(MixerSpec::GatedAttention),
        }
    }
}

impl<'de> Deserialize<'de> for FfnSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (t, rest) = tagged(serde_json::Value::deserialize(d)?, &["moe", "dense"])?;
        match t.as_str() {
            "moe" => nested(rest).map(FfnSpec::Moe),
            _ => nested(rest).map(FfnSpec::Dense),
        }
    }
}

/// Joins an outer JSON path and the nested paths carried in `message` (see [`PATH_MARK`]).
fn join_nested(mut path: String, mut message: &str) -> (String, String) {
    while let Some(rest) = message.strip_prefix(PATH_MARK) {
        let Some((inner, tail)) = rest.split_once(PATH_MARK) else { break };
        if !inner.is_empty() && inner != "." {
            if !path.is_empty() && !inner.starts_with('[') {
                path.push('.');
            }
            path.push_str(inner);
        }
        message = tail;
    }
    (path, message.to_string())
}

/// The multi-token-prediction block as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MtpFile {
    /// Number of MTP layers (Qwen3-Next: 1).
    #[serde(default = "default_one")]
    pub num_layers: usize,
    /// The MTP decoder layer: a block name or an inline layer (must use gated attention).
    pub layer: LayerItem,
}

/// One decoder layer: a token mixer and a feed-forward block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerSpec {
    /// The token mixer.
    pub mixer: MixerSpec,
    /// The feed-forward block.
    pub ffn: FfnSpec,
}

/// A token mixer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MixerSpec {
    /// Gated DeltaNet (linear attention), HF `linear_attention`.
    GatedDeltanet(GdnSpec),
    /// Gated full attention, HF `full_attention`.
    GatedAttention(AttnSpec),
}

/// Gated DeltaNet shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GdnSpec {
    /// Hk: query/key heads.
    pub num_key_heads: usize,
    /// Hv: value heads (a multiple of Hk).
    pub num_value_heads: usize,
    /// Dk.
    pub key_head_dim: usize,
    /// Dv.
    pub value_head_dim: usize,
    /// Depthwise causal conv kernel width (Qwen3-Next: 4).
    pub conv_kernel: usize,
}

/// Gated full attention shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttnSpec {
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (GQA); divides `num_heads`.
    pub num_kv_heads: usize,
    /// Per-head dimension.
    pub head_dim: usize,
    /// q_proj also produces a per-dimension sigmoid output gate (Qwen3-Next: true).
    #[serde(default = "default_true")]
    pub output_gate: bool,
    /// RMSNorm on each q and k head before RoPE (Qwen3-Next: true).
    #[serde(default = "default_true")]
    pub qk_norm: bool,
    /// RoPE base.
    pub rope_theta: f64,
    /// Fraction of `head_dim` that is rotated (NeoX layout over the first dims).
    pub partial_rotary_factor: f64,
}

/// A feed-forward block.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FfnSpec {
    /// Sparse mixture of experts.
    Moe(MoeSpec),
    /// Dense SwiGLU MLP.
    Dense(DenseSpec),
}

/// Sparse MoE shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoeSpec {
    /// Routed experts.
    pub num_experts: usize,
    /// Experts per token.
    pub top_k: usize,
    /// Width of each routed expert's SwiGLU.
    pub expert_width: usize,
    /// Renormalise the top-k probabilities to sum to one.
    pub norm_topk_prob: bool,
    /// Optional always-on expert with a scalar sigmoid gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_expert: Option<SharedExpertSpec>,
}

/// The shared expert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedExpertSpec {
    /// Width of its SwiGLU.
    pub width: usize,
    /// Scale its output by `sigmoid(w_sg · x)` (Qwen3-Next: true).
    #[serde(default = "default_true")]
    pub sigmoid_gate: bool,
}

/// Dense SwiGLU MLP shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenseSpec {
    /// Intermediate width.
    pub width: usize,
}

/// The validated, expanded model: what lowering and the weight loader consume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Model name.
    pub name: String,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Residual width.
    pub hidden_size: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// Norm weights applied as `1 + w`.
    pub zero_centred_norms: bool,
    /// lm_head = embedding.
    pub tie_word_embeddings: bool,
    /// Longest supported sequence.
    pub max_position_embeddings: usize,
    /// One entry per decoder layer.
    pub layers: Vec<LayerSpec>,
    /// Multi-token prediction, when present.
    pub mtp: Option<MtpSpec>,
}

/// The expanded MTP block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MtpSpec {
    /// Number of MTP layers.
    pub num_layers: usize,
    /// Their (shared) layer shape.
    pub layer: LayerSpec,
}

impl SpecFile {
    /// Parse JSON text; type errors carry their JSON path.
    pub fn from_json(text: &str) -> Result<SpecFile, SpecErrors> {
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            let (path, message) = join_nested(path, &e.inner().to_string());
            SpecErrors::one(path, message)
        })
    }

    /// Validate every constraint (all errors at once) and expand into a [`ModelSpec`].
    pub fn resolve(&self) -> Result<ModelSpec, SpecErrors> {
        let errors = validate::check(self);
        if !errors.is_empty() {
            return Err(SpecErrors(errors));
        }
        let mut layers = Vec::new();
        for item in &self.layers {
            self.expand(item, &mut layers);
        }
        let mtp = self.mtp.as_ref().map(|m| {
            let mut one = Vec::new();
            self.expand(&m.layer, &mut one);
            MtpSpec { num_layers: m.num_layers, layer: one.remove(0) }
        });
        Ok(ModelSpec {
            name: self.name.clone(),
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            rms_norm_eps: self.rms_norm_eps,
            zero_centred_norms: self.zero_centred_norms,
            tie_word_embeddings: self.tie_word_embeddings,
            max_position_embeddings: self.max_position_embeddings,
            layers,
            mtp,
        })
    }

    /// Appends the layers `item` stands for (after validation, so references resolve).
    fn expand(&self, item: &LayerItem, out: &mut Vec<LayerSpec>) {
        match item {
            LayerItem::Block(name) => out.push(self.blocks[name].clone()),
            LayerItem::Layer(l) => out.push(l.clone()),
            LayerItem::Repeat(r) => {
                for _ in 0..r.repeat {
                    for p in &r.pattern {
                        self.expand(p, out);
                    }
                }
            }
        }
    }
}

impl ModelSpec {
    /// Parse, validate and expand a spec JSON text.
    pub fn from_json(text: &str) -> Result<ModelSpec, SpecErrors> {
        SpecFile::from_json(text)?.resolve()
    }

    /// Number of decoder layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }
}

impl MixerSpec {
    /// Short kind name used in summaries: `gated_deltanet` / `gated_attention`.
    pub fn kind(&self) -> &'static str {
        match self {
            MixerSpec::GatedDeltanet(_) => "gated_deltanet",
            MixerSpec::GatedAttention(_) => "gated_attention",
        }
    }
}

impl FfnSpec {
    /// Short kind name used in summaries: `moe` / `dense`.
    pub fn kind(&self) -> &'static str {
        match self {
            FfnSpec::Moe(_) => "moe",
            FfnSpec::Dense(_) => "dense",
        }
    }
}

impl AttnSpec {
    /// HF's rotary dim: `int(head_dim * partial_rotary_factor)`, the denominator of the RoPE
    /// frequency exponents.
    pub fn rotary_dim(&self) -> usize {
        (self.head_dim as f64 * self.partial_rotary_factor) as usize
    }

    /// Dims actually rotated per head: `rotary_dim` rounded up to even (HF builds
    /// `ceil(rotary_dim/2)` frequencies and rotates twice that many dims).
    pub fn rotated_dims(&self) -> usize {
        2 * self.rotary_dim().div_ceil(2)
    }
}

impl GdnSpec {
    /// Channels through the causal conv: `2·Hk·Dk + Hv·Dv`.
    pub fn conv_dim(&self) -> usize {
        2 * self.num_key_heads * self.key_head_dim + self.num_value_heads * self.value_head_dim
    }
}
