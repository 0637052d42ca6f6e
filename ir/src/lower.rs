//! Lowering: a [`ModelSpec`] becomes a [`Program`] — two entry points, `prefill` over `S` tokens
//! and `decode` of one token, over the same explicit state (qwen3-next.md §3-4), plus a third,
//! `mtp`, when the spec has a multi-token-prediction block (qwen3-next.md §6; built in `lower/mtp.rs`).
//!
//! Inputs of `prefill`/`decode`: `tokens` i32 `[B,S]`, `positions` i32 `[B,S]` and every `state.*`
//! tensor; outputs: `logits` f32 `[B,S,V]`, with an MTP block also `hidden` f32 `[B,S,H]` (the
//! final hidden state after `model.norm`, which the MTP block consumes), and every `state.*`
//! tensor, advanced by the call's tokens.
//!
//! Ragged batches (qwen3-next.md §3.12) are left-padded. `positions[b,s]` counts row b's tokens
//! before slot s and is consecutive along the row, so padding slots (all at the front of a
//! sequence) have negative positions. Attention masks padding keys (and outputs 0 for padding
//! queries); GDN layers zero their input on padding slots (`l{i}.gdn.input`), which leaves zero
//! conv and recurrent state zero. Every real slot then computes what its sequence computes
//! alone; the outputs of padding slots (logits, hidden) are meaningless.

mod mtp;

use crate::graph::{Ffn, Graph, Layer, LayerKind, Mixer, Origin, Role, Value};
use crate::op::Op;
use crate::spec::{AttnSpec, FfnSpec, GdnSpec, LayerSpec, MixerSpec, ModelSpec, MoeSpec};
use crate::types::{const_shape, DType, Dim, Shape, Sym, TensorType};
use crate::IrError;
use serde::{Deserialize, Serialize};

/// Choices lowering makes that do not change the function computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LowerOptions {
    /// GDN prefill form: `Some(C)` chunked over C tokens (HF and FLA use 64), `None` per-token.
    pub gdn_prefill_chunk: Option<usize>,
}

impl Default for LowerOptions {
    fn default() -> Self {
        LowerOptions { gdn_prefill_chunk: Some(64) }
    }
}

/// One state tensor of a sequence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateDecl {
    /// `state.l{i}.{k,v,conv,ssm}` (main model) or `state.mtp{j}.{k,v}` (MTP block).
    pub name: String,
    /// Type before a call (`P` = tokens already held). Fresh state is all zeros with `P = 0`.
    pub ty: TensorType,
}

/// The lowered model: the entry points and the state they carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Program {
    /// Prefill (and chunked continuation) over `S` tokens.
    pub prefill: Graph,
    /// Decode of exactly one token.
    pub decode: Graph,
    /// The state layout of `prefill` and `decode`, in input order.
    pub state: Vec<StateDecl>,
    /// The MTP draft entry point over `S` positions, when the spec has an MTP block. Inputs:
    /// `tokens` i32 `[B,S]` (the next tokens x_{i+1}), `positions` i32 `[B,S]` (the target
    /// positions pos_i), `hidden` f32 `[B,S,H]` (the target's `hidden` output h_i) and the
    /// [`Program::mtp_state`] tensors; outputs: draft `logits` f32 `[B,S,V]`, `hidden` f32 `[B,S,H]`
    /// (after `mtp.norm`, for chaining drafts) and the advanced MTP state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtp: Option<Graph>,
    /// The state layout of `mtp` (its own KV caches, `state.mtp{j}.{k,v}`), in input order; empty
    /// without an MTP block.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mtp_state: Vec<StateDecl>,
}

/// Lowers `spec` into its entry points and verifies them.
pub fn lower(spec: &ModelSpec, opts: &LowerOptions) -> Result<Program, IrError> {
    let prefill = build(spec, "prefill", None, opts.gdn_prefill_chunk)?;
    let decode = build(spec, "decode", Some(1), None)?;
    crate::verify(&prefill)?;
    crate::verify(&decode)?;
    let mtp = spec.mtp.as_ref().map(|m| mtp::build(spec, m)).transpose()?;
    if let Some(g) = &mtp {
        crate::verify(g)?;
    }
    let mtp_state = mtp.as_ref().map(state_decls).unwrap_or_default();
    Ok(Program { state: state_decls(&prefill), prefill, decode, mtp, mtp_state })
}

/// The `state.*` inputs of `g`, in input order.
fn state_decls(g: &Graph) -> Vec<StateDecl> {
    g.inputs()
        .into_iter()
        .filter(|(n, _)| n.starts_with("state."))
        .map(|(n, t)| StateDecl { name: n.to_string(), ty: t.clone() })
        .collect()
}

/// Graph-building context for one entry point.
struct Ctx<'a> {
    g: Graph,
    spec: &'a ModelSpec,
    b: Dim,
    s: Dim,
    positions: Value,
    gdn_chunk: Option<usize>,
    /// The origin of the nodes being built (layer, its kind, role).
    at: Origin,
}

fn build(spec: &ModelSpec, name: &str, fixed_seq: Option<usize>, gdn_chunk: Option<usize>) -> Result<Graph, IrError> {
    let (mut cx, tokens) = Ctx::start(spec, name, fixed_seq, gdn_chunk)?;
    cx.at = Origin::role(Role::Embed);
    let table = cx.weight("model.embed_tokens.weight", &[spec.vocab_size, spec.hidden_size])?;
    let mut x = cx.op("embed", Op::Embed, &[table, tokens])?;
    for (i, layer) in spec.layers.iter().enumerate() {
        x = cx.layer(Layer::Main(i), &format!("model.layers.{i}"), layer, x)?;
    }
    cx.at = Origin::role(Role::Head);
    let h = cx.norm("final_norm", x, "model.norm.weight")?;
    let logits = cx.lm_head("logits", h)?;
    cx.g.outputs.insert(0, ("logits".into(), logits));
    if spec.mtp.is_some() {
        cx.g.outputs.insert(1, ("hidden".into(), h));
    }
    Ok(cx.g)
}

impl<'a> Ctx<'a> {
    /// A fresh graph `name` with its `tokens` and `positions` inputs; returns the context and
    /// the `tokens` value.
    fn start(
        spec: &'a ModelSpec,
        name: &str,
        fixed_seq: Option<usize>,
        gdn_chunk: Option<usize>,
    ) -> Result<(Self, Value), IrError> {
        let mut g = Graph::new(name);
        g.fixed_seq = fixed_seq;
        let (b, s) = (Dim::sym(Sym::B), g.seq_dim());
        let ids = TensorType::new(vec![b, s], DType::I32);
        let input = Origin::role(Role::Input);
        let tokens = g.add_at(input, "tokens", Op::Input { name: "tokens".into(), ty: ids.clone() }, &[])?[0];
        let positions = g.add_at(input, "positions", Op::Input { name: "positions".into(), ty: ids }, &[])?[0];
        Ok((Ctx { g, spec, b, s, positions, gdn_chunk, at: Origin::default() }, tokens))
    }

    /// One decoder layer on the residual stream `x` `[B,S,H]` (qwen3-next.md §3.1): node names
    /// under `layer`'s prefix (`l7`, `mtp0`), weights under `p` (`model.layers.7`, `mtp.layers.0`).
    fn layer(&mut self, layer: Layer, p: &str, spec: &LayerSpec, x: Value) -> Result<Value, IrError> {
        let l = &layer.prefix();
        let kind = LayerKind {
            mixer: match spec.mixer {
                MixerSpec::GatedDeltanet(_) => Mixer::GatedDeltaNet,
                MixerSpec::GatedAttention(_) => Mixer::GatedAttention,
            },
            ffn: match spec.ffn {
                FfnSpec::Moe(_) => Ffn::Moe,
                FfnSpec::Dense(_) => Ffn::Dense,
            },
        };
        let role = |r| Origin::layer(layer, kind, r);
        self.at = role(Role::Norm);
        let h = self.norm(&format!("{l}.input_norm"), x, &format!("{p}.input_layernorm.weight"))?;
        self.at = role(Role::Mixer);
        let m = match &spec.mixer {
            MixerSpec::GatedDeltanet(gdn) => self.gdn(l, p, gdn, h)?,
            MixerSpec::GatedAttention(at) => self.attention(l, p, at, h)?,
        };
        self.at = role(Role::MixerResidual);
        let x = self.op(format!("{l}.mixer_residual"), Op::Add, &[x, m])?;
        self.at = role(Role::Norm);
        let h = self.norm(&format!("{l}.post_norm"), x, &format!("{p}.post_attention_layernorm.weight"))?;
        self.at = role(Role::Ffn);
        let f = match &spec.ffn {
            FfnSpec::Moe(moe) => self.moe(l, p, moe, h)?,
            FfnSpec::Dense(d) => self.swiglu(&format!("{l}.mlp"), &format!("{p}.mlp"), d.width, h)?,
        };
        self.at = role(Role::LayerOutput);
        let out = self.op(format!("{l}.ffn_residual"), Op::Add, &[x, f]);
        self.at = Origin::default();
        out
    }

    /// `h · lm_headᵀ` (the embedding when tied): `[B,S,H]` -> `[B,S,V]`.
    fn lm_head(&mut self, name: &str, h: Value) -> Result<Value, IrError> {
        let head = if self.spec.tie_word_embeddings { "model.embed_tokens.weight" } else { "lm_head.weight" };
        let w = self.weight(head, &[self.spec.vocab_size, self.spec.hidden_size])?;
        self.op(name, Op::MatMul, &[h, w])
    }

    fn op(&mut self, name: impl Into<String>, op: Op, ins: &[Value]) -> Result<Value, IrError> {
        Ok(self.multi(name, op, ins)?[0])
    }

    /// A node with several results, at the current origin.
    fn multi(&mut self, name: impl Into<String>, op: Op, ins: &[Value]) -> Result<Vec<Value>, IrError> {
        self.g.add_at(self.at, name, op, ins)
    }

    /// A weight node, created once per graph and reused (tied embeddings).
    fn weight(&mut self, name: &str, dims: &[usize]) -> Result<Value, IrError> {
        if let Some(i) = self.g.nodes.iter().position(|n| n.name == name) {
            return Ok(Value { node: i, index: 0 });
        }
        let ty = TensorType::f32(const_shape(dims));
        let at = Origin { role: Role::Weight, ..self.at };
        Ok(self.g.add_at(at, name, Op::Weight { name: name.into(), ty }, &[])?[0])
    }

    /// A state input `state.{l}.{what}` and its matching output (registered by the caller).
    fn state(&mut self, l: &str, what: &str, shape: Shape) -> Result<Value, IrError> {
        let name = format!("state.{l}.{what}");
        let at = Origin { role: Role::Input, ..self.at };
        Ok(self.g.add_at(at, name.clone(), Op::Input { name, ty: TensorType::f32(shape) }, &[])?[0])
    }

    fn ret_state(&mut self, l: &str, what: &str, v: Value) {
        self.g.outputs.push((format!("state.{l}.{what}"), v));
    }

    fn reshape(&mut self, name: impl Into<String>, x: Value, dims: &[usize]) -> Result<Value, IrError> {
        let mut shape = vec![self.b, self.s];
        shape.extend(dims.iter().map(|&d| Dim::c(d)));
        self.op(name, Op::Reshape { shape }, &[x])
    }

    fn slice(
        &mut self,
        name: impl Into<String>,
        x: Value,
        axis: usize,
        start: usize,
        len: usize,
    ) -> Result<Value, IrError> {
        self.op(name, Op::Slice { axis, start, len }, &[x])
    }

    fn linear(&mut self, name: impl Into<String>, x: Value, w: &str, out: usize, inp: usize) -> Result<Value, IrError> {
        let w = self.weight(w, &[out, inp])?;
        self.op(name, Op::MatMul, &[x, w])
    }

    /// Model RMSNorm over the last dim (`1 + w` when the spec's norms are zero-centred).
    fn norm(&mut self, name: &str, x: Value, w: &str) -> Result<Value, IrError> {
        let d = self.g.ty(x).shape.last().and_then(|d| d.as_const()).unwrap_or(0);
        let w = self.weight(w, &[d])?;
        let op = Op::RmsNorm { eps: self.spec.rms_norm_eps as f32, zero_centred: self.spec.zero_centred_norms };
        self.op(name, op, &[x, w])
    }

    /// Gated DeltaNet mixer (qwen3-next.md §3.6-3.7) on `h` `[B,S,H]`.
    fn gdn(&mut self, l: &str, p: &str, c: &GdnSpec, h: Value) -> Result<Value, IrError> {
        let (hid, a) = (self.spec.hidden_size, format!("{p}.linear_attn"));
        let (hk, hv, dk, dv, r) =
            (c.num_key_heads, c.num_value_heads, c.key_head_dim, c.value_head_dim, c.num_value_heads / c.num_key_heads);
        let group = 2 * dk + 2 * r * dv;
        // Left-padding slots feed zeros, so they leave the conv and recurrent state untouched.
        let h = self.op(format!("{l}.gdn.input"), Op::MaskPadding, &[h, self.positions])?;
        let qkvz = self.linear(format!("{l}.gdn.qkvz"), h, &format!("{a}.in_proj_qkvz.weight"), hk * group, hid)?;
        let ba = self.linear(format!("{l}.gdn.ba"), h, &format!("{a}.in_proj_ba.weight"), 2 * hv, hid)?;
        // (a) de-interleave the per-key-head groups [q | k | v(r heads) | z(r heads)].
        let grouped = self.reshape(format!("{l}.gdn.qkvz_groups"), qkvz, &[hk, group])?;
        let q = self.slice(format!("{l}.gdn.q_grouped"), grouped, 3, 0, dk)?;
        let q = self.reshape(format!("{l}.gdn.q"), q, &[hk * dk])?;
        let k = self.slice(format!("{l}.gdn.k_grouped"), grouped, 3, dk, dk)?;
        let k = self.reshape(format!("{l}.gdn.k"), k, &[hk * dk])?;
        let v = self.slice(format!("{l}.gdn.v_grouped"), grouped, 3, 2 * dk, r * dv)?;
        let v = self.reshape(format!("{l}.gdn.v"), v, &[hv * dv])?;
        let z = self.slice(format!("{l}.gdn.z_grouped"), grouped, 3, 2 * dk + r * dv, r * dv)?;
        let z = self.reshape(format!("{l}.gdn.z"), z, &[hv, dv])?;
        // (b) [b(r) | a(r)] per key head.
        let ba = self.reshape(format!("{l}.gdn.ba_groups"), ba, &[hk, 2 * r])?;
        let b = self.slice(format!("{l}.gdn.b_grouped"), ba, 3, 0, r)?;
        let b = self.reshape(format!("{l}.gdn.b"), b, &[hv])?;
        let av = self.slice(format!("{l}.gdn.a_grouped"), ba, 3, r, r)?;
        let av = self.reshape(format!("{l}.gdn.a"), av, &[hv])?;
        // (c)-(e) causal conv over [q | k | v], SiLU, split.
        let mixed = self.op(format!("{l}.gdn.mixed"), Op::Concat { axis: 2 }, &[q, k, v])?;
        let cw = self.weight(&format!("{a}.conv1d.weight"), &[c.conv_dim(), 1, c.conv_kernel])?;
        let cw = self.op(
            format!("{l}.gdn.conv_weight"),
            Op::Reshape { shape: const_shape(&[c.conv_dim(), c.conv_kernel]) },
            &[cw],
        )?;
        let cs = self.state(l, "conv", vec![self.b, Dim::c(c.conv_dim()), Dim::c(c.conv_kernel - 1)])?;
        let conv = self.multi(format!("{l}.gdn.conv"), Op::CausalConv1d { kernel: c.conv_kernel }, &[mixed, cw, cs])?;
        self.ret_state(l, "conv", conv[1]);
        let u = self.op(format!("{l}.gdn.conv_act"), Op::Silu, &[conv[0]])?;
        let qc = self.slice(format!("{l}.gdn.conv_q"), u, 2, 0, hk * dk)?;
        let qc = self.reshape(format!("{l}.gdn.conv_q_heads"), qc, &[hk, dk])?;
        let kc = self.slice(format!("{l}.gdn.conv_k"), u, 2, hk * dk, hk * dk)?;
        let kc = self.reshape(format!("{l}.gdn.conv_k_heads"), kc, &[hk, dk])?;
        let vc = self.slice(format!("{l}.gdn.conv_v"), u, 2, 2 * hk * dk, hv * dv)?;
        let vc = self.reshape(format!("{l}.gdn.conv_v_heads"), vc, &[hv, dv])?;
        // (f) gates: beta = σ(b); g = -exp(A_log) · softplus(a + dt_bias).
        let beta = self.op(format!("{l}.gdn.beta"), Op::Sigmoid, &[b])?;
        let dt_bias = self.weight(&format!("{a}.dt_bias"), &[hv])?;
        let a_log = self.weight(&format!("{a}.A_log"), &[hv])?;
        let adt = self.op(format!("{l}.gdn.a_dt"), Op::Add, &[av, dt_bias])?;
        let sp = self.op(format!("{l}.gdn.softplus"), Op::Softplus, &[adt])?;
        let ea = self.op(format!("{l}.gdn.a_exp"), Op::Exp, &[a_log])?;
        let na = self.op(format!("{l}.gdn.a_neg"), Op::Neg, &[ea])?;
        let gate = self.op(format!("{l}.gdn.g"), Op::Mul, &[sp, na])?;
        // (h) l2norm q and k, scale q.
        let qn = self.op(format!("{l}.gdn.q_l2"), Op::L2Norm { eps: 1e-6 }, &[qc])?;
        let qs = self.op(format!("{l}.gdn.q_scaled"), Op::Scale { by: 1.0 / (dk as f32).sqrt() }, &[qn])?;
        let kn = self.op(format!("{l}.gdn.k_l2"), Op::L2Norm { eps: 1e-6 }, &[kc])?;
        // (i) the gated delta rule over the recurrent state.
        let ss = self.state(l, "ssm", vec![self.b, Dim::c(hv), Dim::c(dk), Dim::c(dv)])?;
        let chunk = self.gdn_chunk;
        let o =
            self.multi(format!("{l}.gdn.delta_rule"), Op::GatedDeltaRule { chunk }, &[qs, kn, vc, gate, beta, ss])?;
        self.ret_state(l, "ssm", o[1]);
        // (j) gated norm, flatten, out_proj.
        let wn = self.weight(&format!("{a}.norm.weight"), &[dv])?;
        let y = self.op(
            format!("{l}.gdn.gated_norm"),
            Op::GatedRmsNorm { eps: self.spec.rms_norm_eps as f32 },
            &[o[0], z, wn],
        )?;
        let y = self.reshape(format!("{l}.gdn.y"), y, &[hv * dv])?;
        self.linear(format!("{l}.gdn.out_proj"), y, &format!("{a}.out_proj.weight"), hid, hv * dv)
    }

    /// Gated full attention (qwen3-next.md §3.4-3.5) on `h` `[B,S,H]`.
    fn attention(&mut self, l: &str, p: &str, c: &AttnSpec, h: Value) -> Result<Value, IrError> {
        let (hid, a) = (self.spec.hidden_size, format!("{p}.self_attn"));
        let (nq, nkv, d) = (c.num_heads, c.num_kv_heads, c.head_dim);
        let per_head = if c.output_gate { 2 * d } else { d };
        let qg = self.linear(format!("{l}.attn.q_proj"), h, &format!("{a}.q_proj.weight"), nq * per_head, hid)?;
        let qg = self.reshape(format!("{l}.attn.q_heads"), qg, &[nq, per_head])?;
        let (mut q, gate) = if c.output_gate {
            let q = self.slice(format!("{l}.attn.q"), qg, 3, 0, d)?;
            let g = self.slice(format!("{l}.attn.gate_heads"), qg, 3, d, d)?;
            (q, Some(self.reshape(format!("{l}.attn.gate"), g, &[nq * d])?))
        } else {
            (qg, None)
        };
        let k = self.linear(format!("{l}.attn.k_proj"), h, &format!("{a}.k_proj.weight"), nkv * d, hid)?;
        let mut k = self.reshape(format!("{l}.attn.k"), k, &[nkv, d])?;
        let v = self.linear(format!("{l}.attn.v_proj"), h, &format!("{a}.v_proj.weight"), nkv * d, hid)?;
        let v = self.reshape(format!("{l}.attn.v"), v, &[nkv, d])?;
        if c.qk_norm {
            q = self.norm(&format!("{l}.attn.q_norm"), q, &format!("{a}.q_norm.weight"))?;
            k = self.norm(&format!("{l}.attn.k_norm"), k, &format!("{a}.k_norm.weight"))?;
        }
        if c.rotary_dim() > 0 {
            let rope = Op::Rope { theta: c.rope_theta, rotary_dim: c.rotary_dim() };
            let pos = self.positions;
            q = self.op(format!("{l}.attn.q_rope"), rope.clone(), &[q, pos])?;
            k = self.op(format!("{l}.attn.k_rope"), rope, &[k, pos])?;
        }
        let cache = vec![self.b, Dim::c(nkv), Dim::sym(Sym::P), Dim::c(d)];
        let kc = self.state(l, "k", cache.clone())?;
        let vc = self.state(l, "v", cache)?;
        let kc = self.op(format!("{l}.attn.k_cache"), Op::KvAppend, &[kc, k])?;
        let vc = self.op(format!("{l}.attn.v_cache"), Op::KvAppend, &[vc, v])?;
        self.ret_state(l, "k", kc);
        self.ret_state(l, "v", vc);
        let scale = 1.0 / (d as f32).sqrt();
        let pos = self.positions;
        let o = self.op(format!("{l}.attn.sdpa"), Op::Attention { scale }, &[q, kc, vc, pos])?;
        let mut o = self.reshape(format!("{l}.attn.o"), o, &[nq * d])?;
        if let Some(gate) = gate {
            let sg = self.op(format!("{l}.attn.gate_sigmoid"), Op::Sigmoid, &[gate])?;
            o = self.op(format!("{l}.attn.gated"), Op::Mul, &[o, sg])?;
        }
        self.linear(format!("{l}.attn.o_proj"), o, &format!("{a}.o_proj.weight"), hid, nq * d)
    }

    /// `down(silu(gate x) ⊙ up x)` with weights under `p` (`….mlp` or `….mlp.shared_expert`).
    fn swiglu(&mut self, l: &str, p: &str, width: usize, h: Value) -> Result<Value, IrError> {
        let hid = self.spec.hidden_size;
        let g = self.linear(format!("{l}.gate_proj"), h, &format!("{p}.gate_proj.weight"), width, hid)?;
        let u = self.linear(format!("{l}.up_proj"), h, &format!("{p}.up_proj.weight"), width, hid)?;
        let g = self.op(format!("{l}.act"), Op::Silu, &[g])?;
        let m = self.op(format!("{l}.swiglu"), Op::Mul, &[g, u])?;
        self.linear(format!("{l}.down_proj"), m, &format!("{p}.down_proj.weight"), hid, width)
    }

    /// Sparse MoE with optional sigmoid-gated shared expert (qwen3-next.md §3.9).
    fn moe(&mut self, l: &str, p: &str, c: &MoeSpec, h: Value) -> Result<Value, IrError> {
        let (hid, m) = (self.spec.hidden_size, format!("{p}.mlp"));
        let (e, w) = (c.num_experts, c.expert_width);
        let logits = self.linear(format!("{l}.moe.router"), h, &format!("{m}.gate.weight"), e, hid)?;
        // Router as primitives (softmax, top-k, renormalise), so that the `fuse-router` rule is
        // what makes them one `moe_route` kernel.
        let probs = self.op(format!("{l}.moe.router_probs"), Op::Softmax, &[logits])?;
        let top = self.multi(format!("{l}.moe.top_k"), Op::TopK { k: c.top_k }, &[probs])?;
        let weights =
            if c.norm_topk_prob { self.op(format!("{l}.moe.route"), Op::Renormalize, &[top[0]])? } else { top[0] };
        let gate = self.weight(&format!("{m}.experts.gate_proj"), &[e, w, hid])?;
        let up = self.weight(&format!("{m}.experts.up_proj"), &[e, w, hid])?;
        let down = self.weight(&format!("{m}.experts.down_proj"), &[e, hid, w])?;
        let routed = self.op(format!("{l}.moe.experts"), Op::MoeExperts, &[h, weights, top[1], gate, up, down])?;
        let Some(shared) = &c.shared_expert else { return Ok(routed) };
        let mut s = self.swiglu(&format!("{l}.moe.shared"), &format!("{m}.shared_expert"), shared.width, h)?;
        if shared.sigmoid_gate {
            let sg =
                self.linear(format!("{l}.moe.shared_gate"), h, &format!("{m}.shared_expert_gate.weight"), 1, hid)?;
            let sg = self.op(format!("{l}.moe.shared_gate_sigmoid"), Op::Sigmoid, &[sg])?;
            s = self.op(format!("{l}.moe.shared_gated"), Op::Mul, &[s, sg])?;
        }
        self.op(format!("{l}.moe.out"), Op::Add, &[routed, s])
    }
}
