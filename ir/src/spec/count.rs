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
    /// Sum of all parts (saturating).
    pub fn total(&self) -> u64 {
        self.kv_cache.saturating_add(self.conv).saturating_add(self.recurrent)
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
            // Saturating throughout: counts of a model too big for any machine stay ordered
            // and printable; the memory budget is what refuses it.
            if t.mtp {
                c.mtp = c.mtp.saturating_add(n);
                continue;
            }
            c.total = c.total.saturating_add(n);
            if t.name == "model.embed_tokens.weight" || t.name == "lm_head.weight" {
                c.embedding = c.embedding.saturating_add(n);
            } else if t.role == TensorRole::Plain {
                c.active_non_embedding = c.active_non_embedding.saturating_add(n);
            } else if let Some((k, e)) = top_k_of(&t.name) {
                c.active_non_embedding = c.active_non_embedding.saturating_add((n / e.max(1)).saturating_mul(k));
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
                // Saturating, as for parameter counts.
                MixerSpec::GatedAttention(a) => {
                    let per_token = [2, a.num_kv_heads as u64, a.head_dim as u64, elem_bytes];
                    s.kv_cache = s.kv_cache.saturating_add(product(&per_token).saturating_mul(context));
                }
                MixerSpec::GatedDeltanet(g) => {
                    let conv = [g.conv_dim() as u64, g.conv_kernel.saturating_sub(1) as u64, elem_bytes];
                    s.conv = s.conv.saturating_add(product(&conv));
                    let rec = [g.num_value_heads as u64, g.key_head_dim as u64, g.value_head_dim as u64, 4];
                    s.recurrent = s.recurrent.saturating_add(product(&rec));
                }
            }
        }
        s
    }
}

fn product(xs: &[u64]) -> u64 {
    xs.iter().fold(1u64, |a, &x| a.saturating_mul(x))
}

/// The layer a `model.layers.{i}.…` tensor belongs to.
fn layer_of<'a>(spec: &'a ModelSpec, name: &str) -> Option<&'a super::LayerSpec> {
    let rest = name.strip_prefix("model.layers.")?;
    let i: usize = rest.split('.').next()?.parse().ok()?;
    spec.layers.get(i)
}
