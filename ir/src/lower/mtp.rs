//! Lowering of the multi-token-prediction block (qwen3-next.md §6.1) into the `mtp` entry point.
//!
//! For target position i, with h_i the target's final hidden state (after `model.norm`, the
//! `hidden` output of `prefill`/`decode`) and x_{i+1} the next token, at the target position pos_i:
//!
//! ```text
//! e  = RMSNorm0(E[x_{i+1}]; mtp.pre_fc_norm_embedding)     # E = the shared model.embed_tokens
//! hn = RMSNorm0(h_i; mtp.pre_fc_norm_hidden)
//! u  = mtp.fc · concat(e, hn)                             # embedding first
//! u  = DecoderLayer(u; mtp.layers.j.*)  for j in 0..num_layers, each with its own KV cache
//! d  = RMSNorm0(u; mtp.norm)                              # output `hidden`
//! draft logits = d · lm_headᵀ                             # shared head; predicts x_{i+2}
//! ```
//!
//! With more than one MTP layer they are applied in sequence. Qwen3-Next has one; vLLM instead
//! uses layer `step % num_layers` for the step-th chained draft, which only differs when
//! `num_layers > 1`.

use super::Ctx;
use crate::graph::{Graph, Layer, Origin, Role};
use crate::op::Op;
use crate::spec::{ModelSpec, MtpSpec};
use crate::types::{DType, Dim, TensorType};
use crate::IrError;

/// Builds the `mtp` graph over `S` positions: inputs `tokens`, `positions`, `hidden`
/// f32 `[B,S,H]` and `state.mtp{j}.{k,v}`; outputs `logits`, `hidden` and the state.
pub(super) fn build(spec: &ModelSpec, mtp: &MtpSpec) -> Result<Graph, IrError> {
    let (mut cx, tokens) = Ctx::start(spec, "mtp", None, None)?;
    let (h, v) = (spec.hidden_size, spec.vocab_size);
    let ty = TensorType::new(vec![cx.b, cx.s, Dim::c(h)], DType::F32);
    cx.at = Origin::role(Role::Input);
    let hidden = cx.op("hidden", Op::Input { name: "hidden".into(), ty }, &[])?;
    cx.at = Origin::role(Role::Embed);
    let table = cx.weight("model.embed_tokens.weight", &[v, h])?;
    let e = cx.op("mtp.embed", Op::Embed, &[table, tokens])?;
    let e = cx.norm("mtp.embed_norm", e, "mtp.pre_fc_norm_embedding.weight")?;
    let hn = cx.norm("mtp.hidden_norm", hidden, "mtp.pre_fc_norm_hidden.weight")?;
    let cat = cx.op("mtp.fc_input", Op::Concat { axis: 2 }, &[e, hn])?;
    let mut x = cx.linear("mtp.fc", cat, "mtp.fc.weight", h, 2 * h)?;
    for j in 0..mtp.num_layers {
        x = cx.layer(Layer::Mtp(j), &format!("mtp.layers.{j}"), &mtp.layer, x)?;
    }
    cx.at = Origin::role(Role::Head);
    let d = cx.norm("mtp.final_norm", x, "mtp.norm.weight")?;
    let logits = cx.lm_head("logits", d)?;
    cx.g.outputs.insert(0, ("logits".into(), logits));
    cx.g.outputs.insert(1, ("hidden".into(), d));
    Ok(cx.g)
}
