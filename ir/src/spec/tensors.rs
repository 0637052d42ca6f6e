//! The checkpoint tensors a spec implies: one list, used by lowering (weight nodes), the weight
//! loader (what must be present, with which shape) and the parameter counts.

use super::{FfnSpec, LayerSpec, MixerSpec, ModelSpec};

/// How a logical tensor is found in a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorRole {
    /// Stored under exactly this name.
    Plain,
    /// Routed experts' gate projections `[E, I, H]`: stored per expert as
    /// `{prefix}.{e}.gate_proj.weight`, or as rows `[0:I]` of the fused `{prefix}.gate_up_proj`.
    ExpertsGate,
    /// Routed experts' up projections `[E, I, H]`: `{prefix}.{e}.up_proj.weight`, or rows `[I:2I]`
    /// of `{prefix}.gate_up_proj`.
    ExpertsUp,
    /// Routed experts' down projections `[E, H, I]`: `{prefix}.{e}.down_proj.weight`, or the fused
    /// `{prefix}.down_proj`.
    ExpertsDown,
}

/// One logical weight tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorDecl {
    /// Logical name. For `Plain`, the checkpoint name; for experts, `{prefix}.{gate,up,down}_proj`
    /// where `prefix` is e.g. `model.layers.3.mlp.experts`.
    pub name: String,
    /// Logical shape (row-major `[out, in]` for linear weights).
    pub shape: Vec<usize>,
    /// How it is stored.
    pub role: TensorRole,
    /// Whether it belongs to the MTP block (`mtp.*`).
    pub mtp: bool,
}

impl TensorDecl {
    fn plain(name: String, shape: Vec<usize>) -> Self {
        TensorDecl { name, shape, role: TensorRole::Plain, mtp: false }
    }

    /// Number of elements (saturating: a spec may state sizes no machine holds; the memory
    /// budget refuses those before anything is allocated).
    pub fn numel(&self) -> usize {
        self.shape.iter().fold(1usize, |a, &d| a.saturating_mul(d))
    }

    /// For expert tensors, the `…experts` prefix they live under.
    pub fn experts_prefix(&self) -> Option<&str> {
        match self.role {
            TensorRole::Plain => None,
            _ => self.name.rsplit_once('.').map(|(p, _)| p),
        }
    }
}

impl ModelSpec {
    /// Every logical weight tensor, in a stable order (embedding, layers, final norm, lm_head, MTP).
    pub fn tensors(&self) -> Vec<TensorDecl> {
        let h = self.hidden_size;
        let mut out = vec![TensorDecl::plain("model.embed_tokens.weight".into(), vec![self.vocab_size, h])];
        for (i, layer) in self.layers.iter().enumerate() {
            layer_tensors(&format!("model.layers.{i}"), layer, h, &mut out);
        }
        out.push(TensorDecl::plain("model.norm.weight".into(), vec![h]));
        if !self.tie_word_embeddings {
            out.push(TensorDecl::plain("lm_head.weight".into(), vec![self.vocab_size, h]));
        }
        if let Some(mtp) = &self.mtp {
            let start = out.len();
            for name in ["mtp.pre_fc_norm_embedding.weight", "mtp.pre_fc_norm_hidden.weight", "mtp.norm.weight"] {
                out.push(TensorDecl::plain(name.into(), vec![h]));
            }
            out.push(TensorDecl::plain("mtp.fc.weight".into(), vec![h, 2 * h]));
            for i in 0..mtp.num_layers {
                layer_tensors(&format!("mtp.layers.{i}"), &mtp.layer, h, &mut out);
            }
            for t in &mut out[start..] {
                t.mtp = true;
            }
        }
        out
    }
}

/// The tensors of one decoder layer under `p` (`model.layers.7`).
pub(crate) fn layer_tensors(p: &str, layer: &LayerSpec, h: usize, out: &mut Vec<TensorDecl>) {
    let mut plain = |name: String, shape: Vec<usize>| out.push(TensorDecl::plain(name, shape));
    plain(format!("{p}.input_layernorm.weight"), vec![h]);
    match &layer.mixer {
        MixerSpec::GatedDeltanet(g) => {
            let a = format!("{p}.linear_attn");
            let (hk, hv, dk, dv) = (g.num_key_heads, g.num_value_heads, g.key_head_dim, g.value_head_dim);
            plain(format!("{a}.in_proj_qkvz.weight"), vec![2 * hk * dk + 2 * hv * dv, h]);
            plain(format!("{a}.in_proj_ba.weight"), vec![2 * hv, h]);
            plain(format!("{a}.conv1d.weight"), vec![g.conv_dim(), 1, g.conv_kernel]);
            plain(format!("{a}.dt_bias"), vec![hv]);
            plain(format!("{a}.A_log"), vec![hv]);
            plain(format!("{a}.norm.weight"), vec![dv]);
            plain(format!("{a}.out_proj.weight"), vec![h, hv * dv]);
        }
        MixerSpec::GatedAttention(at) => {
            let a = format!("{p}.self_attn");
            let q_rows = at.num_heads * at.head_dim * if at.output_gate { 2 } else { 1 };
            plain(format!("{a}.q_proj.weight"), vec![q_rows, h]);
            plain(format!("{a}.k_proj.weight"), vec![at.num_kv_heads * at.head_dim, h]);
            plain(format!("{a}.v_proj.weight"), vec![at.num_kv_heads * at.head_dim, h]);
            plain(format!("{a}.o_proj.weight"), vec![h, at.num_heads * at.head_dim]);
            if at.qk_norm {
                plain(format!("{a}.q_norm.weight"), vec![at.head_dim]);
                plain(format!("{a}.k_norm.weight"), vec![at.head_dim]);
            }
        }
    }
    plain(format!("{p}.post_attention_layernorm.weight"), vec![h]);
    let m = format!("{p}.mlp");
    match &layer.ffn {
        FfnSpec::Dense(d) => {
            plain(format!("{m}.gate_proj.weight"), vec![d.width, h]);
            plain(format!("{m}.up_proj.weight"), vec![d.width, h]);
            plain(format!("{m}.down_proj.weight"), vec![h, d.width]);
        }
        FfnSpec::Moe(moe) => {
            let (e, w) = (moe.num_experts, moe.expert_width);
            plain(format!("{m}.gate.weight"), vec![e, h]);
            if let Some(s) = &moe.shared_expert {
                plain(format!("{m}.shared_expert.gate_proj.weight"), vec![s.width, h]);
                plain(format!("{m}.shared_expert.up_proj.weight"), vec![s.width, h]);
                plain(format!("{m}.shared_expert.down_proj.weight"), vec![h, s.width]);
                if s.sigmoid_gate {
                    plain(format!("{m}.shared_expert_gate.weight"), vec![1, h]);
                }
            }
            let ex = |name: &str, shape: Vec<usize>, role| TensorDecl {
                name: format!("{m}.experts.{name}"),
                shape,
                role,
                mtp: false,
            };
            out.push(ex("gate_proj", vec![e, w, h], TensorRole::ExpertsGate));
            out.push(ex("up_proj", vec![e, w, h], TensorRole::ExpertsUp));
            out.push(ex("down_proj", vec![e, h, w], TensorRole::ExpertsDown));
        }
    }
}
