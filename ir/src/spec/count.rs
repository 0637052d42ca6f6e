//! Parameter counts and per-sequence state sizes, derived from [`ModelSpec::tensors`].

use super::{MixerSpec, ModelSpec, TensorRole};

/// Parameter counts of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamCounts {
    /// All parameters of the main model (embedding, layers, final norm, lm_head), without MTP.
    pub total: u64,
    /// Parameters of the MTP block (0 without one).
    pub mtp: u64,
    /// Embedding plus lm_head (counted once when tied).
    pub embedding: u64,
    /// Non-embedding parameters one token touches: every dense weight, the router, the shared
    /// expert, and `top_k` of the routed experts.
    pub active_non_embedding: u64,
}

/// Bytes of decode state one sequence holds at a given context length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateBytes {
    /// Key + value cache of every attention layer, at `kv_elem_bytes` per element.
    pub kv_cache: u64,
    /// Conv state of every GDN layer (K-1 columns), at `kv_elem_bytes` per element.
    pub conv: u64,
    /// Recurrent state of every GDN layer, always f32.
    pub recurrent: u64,
}

impl StateBytes {
    /// Sum of all parts.
    pub fn total(&self) -> u64 {
        self.kv_cache + self.conv + self.recurrent
    }
}

impl ModelSpec {
    /// Parameter counts (see [`ParamCounts`]).
    pub fn param_counts(&self) -> ParamCounts {
        let mut c = ParamCounts { total: 0, mtp: 0, embedding: 0, active_non_embedding: 0 };
        let top_k_of = |name: &str| -> Option<(u64, u64)> {
            let layer = layer_of(self, name)?;
            match &layer.ffn {
                super::FfnSpec::Moe(m) => Some((m.top_k as u64, m.num_experts as u64)),
                super::FfnSpec::Dense(_) => None,
            }
        };
        for t in self.tensors() {
            let n = t.numel() as u64;
            if t.mtp {
                c.mtp += n;
                continue;
            }
            c.total += n;
            if t.name == "model.embed_tokens.weight" || t.name == "lm_head.weight" {
                c.embedding += n;
            } else if t.role == TensorRole::Plain {
                c.active_non_embedding += n;
            } else if let Some((k, e)) = top_k_of(&t.name) {
                c.active_non_embedding += n / e * k;
            }
        }
        c
    }

    /// Decode state of one sequence holding `context` tokens; KV and conv elements take
    /// `elem_bytes` bytes each (2 for bf16, 4 for f32); the recurrent state is f32.
    pub fn state_bytes(&self, context: u64, elem_bytes: u64) -> StateBytes {
        let mut s = StateBytes { kv_cache: 0, conv: 0, recurrent: 0 };
        for layer in &self.layers {
            match &layer.mixer {
                MixerSpec::GatedAttention(a) => {
                    s.kv_cache += 2 * (a.num_kv_heads * a.head_dim) as u64 * context * elem_bytes;
                }
                MixerSpec::GatedDeltanet(g) => {
                    s.conv += (g.conv_dim() * (g.conv_kernel - 1)) as u64 * elem_bytes;
                    s.recurrent += (g.num_value_heads * g.key_head_dim * g.value_head_dim) as u64 * 4;
                }
            }
        }
        s
    }
}

/// The layer a `model.layers.{i}.…` tensor belongs to.
fn layer_of<'a>(spec: &'a ModelSpec, name: &str) -> Option<&'a super::LayerSpec> {
    let rest = name.strip_prefix("model.layers.")?;
    let i: usize = rest.split('.').next()?.parse().ok()?;
    spec.layers.get(i)
}
