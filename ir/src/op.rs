//! The op table: the single source of truth for every IR operation.
//!
//! Each variant documents its operands (with shapes) and results. [`Op::name`] drives the printer,
//! [`Op::infer`] the verifier, and `interp::eval_op` gives the reference semantics. Adding an op is
//! one variant here, one arm in `infer`, and one arm in the interpreter.
//!
//! Shape letters: `B` batch, `S` new tokens, `P` tokens already in the state, `H` hidden,
//! `V` vocab, `E` experts, `k` top-k.

use crate::types::{DType, Dim, Shape, TensorType};
use serde::{Deserialize, Serialize};

/// An IR operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    // ---- sources ---------------------------------------------------------------------------
    /// A graph input supplied by the caller (token ids, positions, state). No operands.
    Input { name: String, ty: TensorType },
    /// A checkpoint tensor, by logical name (see `spec::TensorDecl`), f32 in the IR. No operands.
    Weight { name: String, ty: TensorType },

    // ---- data movement ---------------------------------------------------------------------
    /// (table `[V,H]`, ids i32 `[B,S]`) -> `[B,S,H]`: row gather.
    Embed,
    /// (x) -> x with the same elements in row-major order and a new shape of equal size.
    Reshape { shape: Shape },
    /// (x) -> x[..., start..start+len, ...] along `axis`.
    Slice { axis: usize, start: usize, len: usize },
    /// (a, b, ...) -> concatenation along `axis`; all other dims equal.
    Concat { axis: usize },

    // ---- linear algebra --------------------------------------------------------------------
    /// (x `[..., K]`, w `[N, K]`) -> `[..., N]`: `y = x wᵀ` (row-major `[out, in]` weights).
    MatMul,

    // ---- elementwise (binary ops broadcast the second operand over leading dims) -------------
    /// (a, b) -> a + b; b's shape is a suffix of a's.
    Add,
    /// (a, b) -> a · b; b's shape is a suffix of a's, or b has a's shape with a trailing 1.
    Mul,
    /// (x) -> x·σ(x).
    Silu,
    /// (x) -> 1 / (1 + e^{-x}).
    Sigmoid,
    /// (x) -> ln(1 + e^x), or x where x > 20 (PyTorch's threshold).
    Softplus,
    /// (x) -> e^x.
    Exp,
    /// (x) -> -x.
    Neg,
    /// (x) -> x · by.
    Scale { by: f32 },
    /// (x `[B,S,...]`, positions i32 `[B,S]`) -> x with every padding slot zeroed: `x[b,s,...] = 0`
    /// where `positions[b,s] < 0` (HF `apply_mask_to_padding_states`), unchanged elsewhere.
    MaskPadding,

    // ---- normalisation ---------------------------------------------------------------------
    /// (x `[..., D]`, w `[D]`) -> x · rsqrt(mean(x²) + eps) · (1 + w if zero_centred else w).
    RmsNorm { eps: f32, zero_centred: bool },
    /// (x `[..., D]`, z `[..., D]`, w `[D]`) -> w · (x · rsqrt(mean(x²) + eps)) · silu(z).
    GatedRmsNorm { eps: f32 },
    /// (x `[..., D]`) -> x · rsqrt(Σ x² + eps)  (eps added to the sum).
    L2Norm { eps: f32 },

    // ---- model-level -----------------------------------------------------------------------
    /// (x `[B,S,N,D]`, positions i32 `[B,S]`) -> `[B,S,N,D]`: NeoX rotate-half RoPE, HF's default
    /// rope: `inv_freq[i] = 1/theta^(2i/rotary_dim)` for `i < ceil(rotary_dim/2)`, rotating the first
    /// `2·ceil(rotary_dim/2)` dims of each head (one more than `rotary_dim` when it is odd, as HF
    /// does); the rest pass.
    Rope { theta: f64, rotary_dim: usize },
    /// (cache `[B,N,P,D]`, new `[B,S,N,D]`) -> `[B,N,P+S,D]`: append along the sequence axis.
    KvAppend,
    /// (q `[B,S,Nq,D]`, k `[B,Nkv,P+S,D]`, v `[B,Nkv,P+S,Dv]`, positions i32 `[B,S]`) -> `[B,S,Nq,Dv]`:
    /// causal GQA softmax attention over left-padded rows. Query s of row b sits at cache index
    /// P+s with position `positions[b,s]`; each row's positions must be consecutive, so
    /// `pad_b = P+s − positions[b,s]` (≥ 0) is the same for all s, and cache index i holds
    /// position `i − pad_b` (negative: a padding slot). A query sees key i iff
    /// `0 ≤ i − pad_b ≤ positions[b,s]`; a query that sees no key (a padding slot) outputs 0.
    /// Head j uses kv head j / (Nq/Nkv); scores are scaled by `scale`. Unpadded rows
    /// (`positions = P..P+S`) see keys 0..=P+s.
    Attention { scale: f32 },
    /// (x `[B,S,C]`, w `[C,K]`, state `[B,C,K-1]`) -> (y `[B,S,C]`, state' `[B,C,K-1]`): depthwise causal
    /// conv, `y[t,c] = Σ_j w[c,j] · hist[t+j, c]` over `hist = state ++ x`; state' = last K-1
    /// columns of hist. No activation.
    CausalConv1d { kernel: usize },
    /// (q `[B,S,Hk,Dk]`, k `[B,S,Hk,Dk]`, v `[B,S,Hv,Dv]`, g `[B,S,Hv]`, beta `[B,S,Hv]`,
    ///  state `[B,Hv,Dk,Dv]`) -> (o `[B,S,Hv,Dv]`, state' `[B,Hv,Dk,Dv]`): the gated delta rule,
    /// value head h reads q/k head h / (Hv/Hk); per token: S ← e^g S; m = Sᵀk; S += k ⊗ β(v − m);
    /// o = Sᵀq. `chunk` = Some(C) evaluates the same function in the C-token chunked form.
    GatedDeltaRule { chunk: Option<usize> },
    /// (logits `[B,S,E]`) -> (weights f32 `[B,S,k]`, experts i32 `[B,S,k]`): softmax over E, top-k in
    /// descending order (ties: lower index first), renormalised to sum 1 when `renormalize`.
    /// Defined as the router primitives `Softmax`, `TopK`, `Renormalize` in sequence (lowering
    /// emits those; the `fuse-router` rule makes them this one kernel).
    MoeRoute { top_k: usize, renormalize: bool },
    /// (x `[B,S,H]`, weights `[B,S,k]`, experts i32 `[B,S,k]`, gate `[E,I,H]`, up `[E,I,H]`, down `[E,H,I]`)
    /// -> `[B,S,H]`: Σ_i weights_i · down_e (silu(gate_e x) ⊙ up_e x), e = experts_i.
    MoeExperts,

    // ---- router primitives (lowering emits these; rule `fuse-router` makes them `MoeRoute`) -----
    /// (x `[..., E]`) -> softmax over the last dim (f64, max subtracted).
    Softmax,
    /// (x `[..., E]`) -> (values f32 `[..., k]`, indices i32 `[..., k]`): the k largest in
    /// descending order (ties: lower index first).
    TopK { k: usize },
    /// (x `[..., k]`) -> x / Σ x over the last dim.
    Renormalize,

    // ---- fused ops: produced by `qgc-passes`; each is defined as a composition of the ops above
    // ---- (`interp/fused.rs`), so the interpreter stays obviously right.
    /// (x `[..., D]`, r `[..., D]`, w `[D]`) -> (sum = x + r, rms_norm(sum, w)): residual add + norm.
    AddRmsNorm { eps: f32, zero_centred: bool },
    /// (x `[B,S,N,D]`, w `[D]`, positions i32 `[B,S]`) -> rope(rms_norm(x, w), positions): the
    /// q/k norm with RoPE folded in.
    RmsNormRope { eps: f32, zero_centred: bool, theta: f64, rotary_dim: usize },
    /// (x `[..., K]`, w `[2N, K]`) -> `[..., N]`: silu(x w[..N]ᵀ) ⊙ (x w[N..]ᵀ), a matmul with a
    /// SwiGLU epilogue over the stacked gate/up weight.
    MatMulSwiGlu,
    /// (x `[..., K]`, w `[N, K]`, g) -> (x wᵀ) ⊙ σ(g), g broadcast as `Mul`'s second operand: a
    /// matmul with a sigmoid-gate epilogue.
    MatMulSigmoidGate,
    /// (x `[..., K]`, g, w `[N, K]`) -> (x ⊙ σ(g)) wᵀ, g broadcast as `Mul`'s second operand: a
    /// matmul with a sigmoid-gate prologue.
    SigmoidGateMatMul,
    /// (q, k `[B,S,Hk,Dk]`, a, b `[B,S,Hv]`, dt_bias, a_log `[Hv]`) -> (l2(q)·q_scale, l2(k),
    /// g = softplus(a + dt_bias) · -exp(a_log), beta = σ(b)): the GDN gate chain in one kernel
    /// (l2 norms with `eps`).
    GdnGates { eps: f32, q_scale: f32 },
}

/// Broad families of ops, for passes and summaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpClass {
    /// Inputs and weights.
    Source,
    /// Reshape/slice/concat/gather.
    Movement,
    /// Matrix products.
    Linear,
    /// Pointwise maps.
    Elementwise,
    /// Norms (reductions over the last dim).
    Norm,
    /// Model-level ops with their own kernels.
    Model,
    /// Kernels made by fusion passes (each defined as a composition of the other ops).
    Fused,
}

impl Op {
    /// The printer / kernel-table name (snake_case).
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Weight { .. } => "weight",
            Op::Embed => "embed",
            Op::Reshape { .. } => "reshape",
            Op::Slice { .. } => "slice",
            Op::Concat { .. } => "concat",
            Op::MatMul => "matmul",
            Op::Add => "add",
            Op::Mul => "mul",
            Op::Silu => "silu",
            Op::Sigmoid => "sigmoid",
            Op::Softplus => "softplus",
            Op::Exp => "exp",
            Op::Neg => "neg",
            Op::Scale { .. } => "scale",
            Op::MaskPadding => "mask_padding",
            Op::RmsNorm { .. } => "rms_norm",
            Op::GatedRmsNorm { .. } => "gated_rms_norm",
            Op::L2Norm { .. } => "l2_norm",
            Op::Rope { .. } => "rope",
            Op::KvAppend => "kv_append",
            Op::Attention { .. } => "attention",
            Op::CausalConv1d { .. } => "causal_conv1d",
            Op::GatedDeltaRule { .. } => "gated_delta_rule",
            Op::MoeRoute { .. } => "moe_route",
            Op::MoeExperts => "moe_experts",
            Op::Softmax => "softmax",
            Op::TopK { .. } => "top_k",
            Op::Renormalize => "renormalize",
            Op::AddRmsNorm { .. } => "add_rms_norm",
            Op::RmsNormRope { .. } => "rms_norm_rope",
            Op::MatMulSwiGlu => "matmul_swiglu",
            Op::MatMulSigmoidGate => "matmul_sigmoid_gate",
            Op::SigmoidGateMatMul => "sigmoid_gate_matmul",
            Op::GdnGates { .. } => "gdn_gates",
        }
    }

    /// The op's family.
    pub fn class(&self) -> OpClass {
        match self {
            Op::Input { .. } | Op::Weight { .. } => OpClass::Source,
            Op::Embed | Op::Reshape { .. } | Op::Slice { .. } | Op::Concat { .. } => OpClass::Movement,
            Op::MatMul => OpClass::Linear,
            Op::Add
            | Op::Mul
            | Op::Silu
            | Op::Sigmoid
            | Op::Softplus
            | Op::Exp
            | Op::Neg
            | Op::Scale { .. }
            | Op::MaskPadding => OpClass::Elementwise,
            Op::RmsNorm { .. } | Op::GatedRmsNorm { .. } | Op::L2Norm { .. } => OpClass::Norm,
            Op::Softmax | Op::Renormalize => OpClass::Norm,
            Op::AddRmsNorm { .. }
            | Op::RmsNormRope { .. }
            | Op::MatMulSwiGlu
            | Op::MatMulSigmoidGate
            | Op::SigmoidGateMatMul
            | Op::GdnGates { .. } => OpClass::Fused,
            _ => OpClass::Model,
        }
    }

    /// Number of operands, `None` for variadic ops.
    pub fn arity(&self) -> Option<usize> {
        Some(match self {
            Op::Input { .. } | Op::Weight { .. } => 0,
            Op::Reshape { .. } | Op::Slice { .. } | Op::Silu | Op::Sigmoid | Op::Softplus | Op::Exp | Op::Neg => 1,
            Op::Scale { .. } | Op::L2Norm { .. } | Op::MoeRoute { .. } => 1,
            Op::Softmax | Op::TopK { .. } | Op::Renormalize => 1,
            Op::MatMulSwiGlu => 2,
            Op::AddRmsNorm { .. } | Op::RmsNormRope { .. } | Op::MatMulSigmoidGate | Op::SigmoidGateMatMul => 3,
            Op::GdnGates { .. } => 6,
            Op::Concat { .. } => return None,
            Op::Embed | Op::MatMul | Op::Add | Op::Mul | Op::RmsNorm { .. } | Op::Rope { .. } | Op::KvAppend => 2,
            Op::MaskPadding => 2,
            Op::GatedRmsNorm { .. } | Op::CausalConv1d { .. } => 3,
            Op::Attention { .. } => 4,
            Op::GatedDeltaRule { .. } | Op::MoeExperts => 6,
        })
    }

    /// Attributes as printed after the name, e.g. `eps=1e-6 zero_centred`.
    pub fn attrs(&self) -> String {
        match self {
            Op::Input { name, .. } | Op::Weight { name, .. } => format!("{name:?}"),
            Op::Reshape { shape } => {
                let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
                format!("[{}]", dims.join(","))
            }
            Op::Slice { axis, start, len } => format!("axis={axis} start={start} len={len}"),
            Op::Concat { axis } => format!("axis={axis}"),
            Op::Scale { by } => format!("by={by:e}"),
            Op::RmsNorm { eps, zero_centred } => {
                format!("eps={eps:e}{}", if *zero_centred { " zero_centred" } else { "" })
            }
            Op::GatedRmsNorm { eps } | Op::L2Norm { eps } => format!("eps={eps:e}"),
            Op::Rope { theta, rotary_dim } => format!("theta={theta:e} rotary_dim={rotary_dim}"),
            Op::Attention { scale } => format!("scale={scale:e}"),
            Op::CausalConv1d { kernel } => format!("kernel={kernel}"),
            Op::GatedDeltaRule { chunk: Some(c) } => format!("chunk={c}"),
            Op::GatedDeltaRule { chunk: None } => "recurrent".into(),
            Op::MoeRoute { top_k, renormalize } => {
                format!("top_k={top_k}{}", if *renormalize { " renormalize" } else { "" })
            }
            Op::TopK { k } => format!("k={k}"),
            Op::AddRmsNorm { eps, zero_centred } => {
                format!("eps={eps:e}{}", if *zero_centred { " zero_centred" } else { "" })
            }
            Op::RmsNormRope { eps, zero_centred, theta, rotary_dim } => format!(
                "eps={eps:e}{} theta={theta:e} rotary_dim={rotary_dim}",
                if *zero_centred { " zero_centred" } else { "" }
            ),
            Op::GdnGates { eps, q_scale } => format!("eps={eps:e} q_scale={q_scale:e}"),
            _ => String::new(),
        }
    }

    /// Result types from operand types, or a message saying what does not fit.
    pub fn infer(&self, ins: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        if let Some(n) = self.arity() {
            if ins.len() != n {
                return Err(format!("{} takes {n} operands, got {}", self.name(), ins.len()));
            }
        }
        crate::infer::infer(self, ins)
    }
}

/// Product of dims, when it can be written as one [`Dim`].
pub(crate) fn numel(shape: &[Dim]) -> Option<Dim> {
    shape.iter().try_fold(Dim::c(1), |acc, d| acc.times(*d))
}

/// Shorthand used by shape inference.
pub(crate) fn f32_of(shape: Shape) -> TensorType {
    TensorType::new(shape, DType::F32)
}
