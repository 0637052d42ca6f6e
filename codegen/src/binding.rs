//! One kernel binding: per node, the typed description of the kernel call that computes it
//! ([`Kernel`]), derived once ([`bind`]) from the op and its symbolic shapes. Every backend
//! matches on it exhaustively and differs only in the kernels it calls: the CPU shims
//! (`qgc_runtime::compiled`) decode the host ABI, evaluate the symbolic counts at the call's
//! bindings and call `runtime::cpu`; the CUDA launchers will take the same descriptions.
//!
//! Counts that depend on the call (rows `B·S`, cache lengths `P+S`) are [`Poly`]s over `B, S, P`
//! ([`Poly::eval`] at the call's bindings); everything else is a constant. Operands are named by
//! position as in the op table (`Op` docs); weights are operands bound at load in their stored
//! dtype (the op table's `weights`), so one description serves f32 and bf16 weights.
//!
//! The interpreter fallback is an explicit choice per op ([`Kernel::Interp`]): the router
//! primitives `softmax`, `top_k` and `renormalize` (fusion makes them `moe_route` in every
//! lowered model), and pointwise ops that no compiled loop takes. [`fallbacks`] counts them
//! for `qgc inspect`.

use qgc_ir::{Graph, Op, Poly, TensorType};
use serde::{Deserialize, Serialize};
use std::fmt;

/// How a broadcast gate operand `g` is indexed over an `[rows, n]` result (as `Mul`'s second
/// operand).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Gate {
    /// One value per element: `g[r, j]`.
    Full,
    /// One value per row: `g[r]`.
    Row,
    /// A trailing suffix of the row: `g[(r·n + j) mod len]`.
    Suffix(usize),
}

/// A matmul's fused epilogue or prologue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Epilogue {
    /// `y = x wᵀ`.
    Plain,
    /// `y = silu(x w[..n]ᵀ) ⊙ (x w[n..]ᵀ)` over the stacked `[2n, k]` weight.
    SwiGlu,
    /// `y = (x wᵀ) ⊙ σ(g)`, `g` operand `gate`.
    SigmoidGate {
        /// Operand index of `g`.
        gate: usize,
        /// Its indexing over `y`.
        how: Gate,
    },
    /// `y = (x ⊙ σ(g)) wᵀ`, `g` operand `gate` indexed over `x`.
    SigmoidGatePrologue {
        /// Operand index of `g`.
        gate: usize,
        /// Its indexing over `x` (`[rows, k]`).
        how: Gate,
    },
}

/// `y [rows, n] = x [rows, k] · w [n, k]ᵀ` (operand 0 is `x`, operand `weight` is `w`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatMul {
    /// Rows (`B·S`).
    pub rows: Poly,
    /// Inner dim.
    pub k: usize,
    /// Output columns (`n`; the weight has `2n` rows for [`Epilogue::SwiGlu`]).
    pub n: usize,
    /// Operand index of the weight.
    pub weight: usize,
    /// Fused epilogue.
    pub epilogue: Epilogue,
}

/// The RMS-norm family over rows of `d`: `rms_norm` (x, w), `add_rms_norm` (x, r, w) ->
/// (x + r, norm), `gated_rms_norm` (x, z, w), `l2_norm` (x).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NormKind {
    /// `x · rsqrt(mean(x²) + eps) · w` (`1 + w` when zero-centred).
    Rms {
        /// `1 + w`.
        zero_centred: bool,
    },
    /// The residual add, then [`NormKind::Rms`] of the sum (results: sum, norm).
    AddRms {
        /// `1 + w`.
        zero_centred: bool,
    },
    /// `w · rmsnorm(x) · silu(z)`.
    Gated,
    /// `x · rsqrt(Σ x² + eps)`, no weight.
    L2,
}

/// A row-wise norm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Norm {
    /// Which.
    pub kind: NormKind,
    /// Rows.
    pub rows: Poly,
    /// Row length.
    pub d: usize,
    /// Epsilon.
    pub eps: f32,
}

/// NeoX RoPE over `x [tokens, heads, d]` (operand 0; positions are the last operand), optionally
/// after a per-head RMS norm with weight operand 1 (`rms_norm_rope`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rope {
    /// Tokens (`B·S`).
    pub tokens: Poly,
    /// Heads.
    pub heads: usize,
    /// Head dim.
    pub d: usize,
    /// Base.
    pub theta: f64,
    /// Rotated dims (HF's rule for odd values, see `Op::Rope`).
    pub rotary_dim: usize,
    /// The q/k norm first: `(eps, zero_centred)`.
    pub norm: Option<(f32, bool)>,
}

/// KV append: cache operand 0 `[B, heads, P, d]` grows by new operand 1 `[B, S, heads, d]` into
/// result 0 `[B, heads, P+S, d]` (caches may be stored with spare capacity along the length).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KvAppend {
    /// Batch rows.
    pub batch: Poly,
    /// Entries before (`P`).
    pub past: Poly,
    /// New entries (`S`).
    pub new: Poly,
    /// KV heads.
    pub heads: usize,
    /// Head dim.
    pub d: usize,
}

/// Causal GQA attention: q `[B, S, q_heads, d]`, caches `[B, kv_heads, len, d | dv]`, positions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attention {
    /// Batch rows.
    pub batch: Poly,
    /// Queries per row (`S`).
    pub s: Poly,
    /// Cache entries (`P+S`, the queries' own included).
    pub len: Poly,
    /// Query heads.
    pub q_heads: usize,
    /// KV heads.
    pub kv_heads: usize,
    /// q/k head dim.
    pub d: usize,
    /// v head dim.
    pub dv: usize,
    /// Score scale.
    pub scale: f32,
}

/// Depthwise causal conv: x `[B, S, channels]`, weight `[channels, kernel]`, state
/// `[B, channels, kernel-1]` -> (y, state').
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conv {
    /// Batch rows.
    pub batch: Poly,
    /// Tokens per row.
    pub s: Poly,
    /// Channels.
    pub channels: usize,
    /// Kernel width.
    pub kernel: usize,
}

/// The GDN gate chain: (q, k `[rows, hk, dk]`, a, b `[rows, hv]`, dt_bias, a_log `[hv]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GdnGates {
    /// Rows (`B·S`).
    pub rows: Poly,
    /// Key heads.
    pub hk: usize,
    /// Key head dim.
    pub dk: usize,
    /// Value heads.
    pub hv: usize,
    /// l2-norm epsilon.
    pub eps: f32,
    /// Factor on q.
    pub q_scale: f32,
}

/// The gated delta rule over `[B, S]` tokens with state `[B, hv, dk, dv]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeltaRule {
    /// Batch rows.
    pub batch: Poly,
    /// Tokens per row.
    pub s: Poly,
    /// Key heads.
    pub hk: usize,
    /// Value heads.
    pub hv: usize,
    /// Key head dim.
    pub dk: usize,
    /// Value head dim.
    pub dv: usize,
}

/// Router: softmax over `experts`, top-k, optional renormalisation, per row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    /// Rows.
    pub rows: Poly,
    /// Experts.
    pub experts: usize,
    /// Chosen per row.
    pub top_k: usize,
    /// Renormalise the chosen weights.
    pub renormalize: bool,
}

/// Routed experts: x `[rows, hidden]`, weights/experts `[rows, top_k]`, gate/up
/// `[experts, inter, hidden]`, down `[experts, hidden, inter]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Experts {
    /// Rows.
    pub rows: Poly,
    /// Experts.
    pub experts: usize,
    /// Hidden size.
    pub hidden: usize,
    /// Expert width.
    pub inter: usize,
    /// Chosen per row.
    pub top_k: usize,
}

/// A strided copy of `len` of the `dim` entries from `start` along one axis, `outer` times,
/// `inner` elements per entry (a slice that is not a view).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slice {
    /// Product of the dims before the axis.
    pub outer: Poly,
    /// The axis length.
    pub dim: usize,
    /// First entry.
    pub start: usize,
    /// Entries taken.
    pub len: usize,
    /// Product of the dims after the axis.
    pub inner: Poly,
}

/// A concatenation: `outer` times, each part's `inner` elements in turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Concat {
    /// Product of the dims before the axis.
    pub outer: Poly,
    /// Per part: product of its dims from the axis on.
    pub parts: Vec<Poly>,
}

/// The kernel call that computes one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Kernel {
    /// No call: an input or weight (an io pointer).
    Source,
    /// No call: operand 0's bytes (`Graph::view_offset`).
    View,
    /// Evaluated inside a compiled elementwise loop.
    Pointwise,
    /// The reference interpreter on host copies of the operands: the explicit fallback, with
    /// the reason.
    Interp {
        /// Why this node has no kernel.
        why: String,
    },
    /// Row gather from the embedding table (operand 0) by token ids (operand 1).
    Embed {
        /// Token count (`B·S`).
        tokens: Poly,
        /// Table rows.
        vocab: usize,
        /// Row length.
        hidden: usize,
    },
    /// The matmul family.
    MatMul(MatMul),
    /// The norm family.
    Norm(Norm),
    /// RoPE and norm + RoPE.
    Rope(Rope),
    /// Zero the rows of padding slots: x `[rows, inner]`, positions `[rows]`.
    MaskPadding {
        /// Rows (`B·S`).
        rows: Poly,
        /// Elements per row.
        inner: usize,
    },
    /// KV cache append.
    KvAppend(KvAppend),
    /// Attention over the cache.
    Attention(Attention),
    /// Causal conv with state.
    Conv(Conv),
    /// GDN gates.
    GdnGates(GdnGates),
    /// Gated delta rule.
    DeltaRule(DeltaRule),
    /// MoE router.
    Route(Route),
    /// Routed experts.
    Experts(Experts),
    /// Strided copy (4-byte elements).
    Slice(Slice),
    /// Concatenation (4-byte elements).
    Concat(Concat),
}

impl Kernel {
    /// The host-code symbol of the shim that runs it (`qgc_matmul`, ...); `None` for nodes that
    /// are not calls.
    pub fn symbol(&self) -> Option<&'static str> {
        Some(match self {
            Kernel::Source | Kernel::View | Kernel::Pointwise => return None,
            Kernel::Interp { .. } => "qgc_interp",
            Kernel::Embed { .. } => "qgc_embed",
            Kernel::MatMul(_) => "qgc_matmul",
            Kernel::Norm(_) => "qgc_norm",
            Kernel::Rope(_) => "qgc_rope",
            Kernel::MaskPadding { .. } => "qgc_mask_padding",
            Kernel::KvAppend(_) => "qgc_kv_append",
            Kernel::Attention(_) => "qgc_attention",
            Kernel::Conv(_) => "qgc_causal_conv1d",
            Kernel::GdnGates(_) => "qgc_gdn_gates",
            Kernel::DeltaRule(_) => "qgc_gated_delta_rule",
            Kernel::Route(_) => "qgc_moe_route",
            Kernel::Experts(_) => "qgc_moe_experts",
            Kernel::Slice(_) => "qgc_slice",
            Kernel::Concat(_) => "qgc_concat",
        })
    }

    /// Whether this is the interpreter fallback.
    pub fn is_fallback(&self) -> bool {
        matches!(self, Kernel::Interp { .. })
    }
}

/// A node the binding cannot describe (a shape no kernel takes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node {node}: no kernel for {op}: {message}")]
pub struct BindError {
    /// Node name.
    pub node: String,
    /// Op name.
    pub op: &'static str,
    /// What does not fit.
    pub message: String,
}

/// Shapes of one node's values, for deriving its binding.
struct Shapes<'g> {
    g: &'g Graph,
    node: usize,
}

impl Shapes<'_> {
    fn ty(&self, k: usize) -> &TensorType {
        self.g.ty(self.g.nodes[self.node].inputs[k])
    }
    fn out(&self, r: usize) -> &TensorType {
        &self.g.nodes[self.node].outputs[r]
    }
    /// Constant dim `d` of operand `k` (negative: from the end).
    fn dim(&self, k: usize, d: isize) -> Result<usize, String> {
        let t = self.ty(k);
        let i = if d < 0 { t.rank() as isize + d } else { d };
        let dim = usize::try_from(i).ok().and_then(|i| t.shape.get(i)).ok_or_else(|| format!("{t} has no dim {d}"))?;
        dim.as_const().ok_or_else(|| format!("dim {d} of operand {k} ({t}) is not constant"))
    }
    /// The symbolic element count of dims `range` of operand `k`.
    fn count(&self, k: usize, range: std::ops::Range<usize>) -> Result<Poly, String> {
        let t = self.ty(k);
        let dims = t.shape.get(range.clone()).ok_or_else(|| format!("{t} has no dims {range:?}"))?;
        match Poly::numel(dims) {
            (p, true) => Ok(p),
            _ => Err(format!("dims {range:?} of {t} are not a count")),
        }
    }
    /// Rows of operand `k`: every dim but the last.
    fn rows(&self, k: usize) -> Result<Poly, String> {
        let r = self.ty(k).rank();
        self.count(k, 0..r.saturating_sub(1))
    }
}

/// How gate operand `gate` of type `g` broadcasts over `y` (`Mul`'s second-operand rule).
fn gate_of(g: &TensorType, y: &TensorType) -> Result<Gate, String> {
    if g.shape == y.shape {
        return Ok(Gate::Full);
    }
    let (rg, ry) = (g.rank(), y.rank());
    if rg == ry && rg > 0 && g.shape[..rg - 1] == y.shape[..ry - 1] && g.shape[rg - 1].as_const() == Some(1) {
        return Ok(Gate::Row);
    }
    if rg <= ry && y.shape[ry - rg..] == g.shape[..] {
        let len = g.shape.iter().try_fold(1usize, |n, d| Some(n * d.as_const()?));
        return len.map(Gate::Suffix).ok_or_else(|| format!("gate {g} is a symbolic suffix of {y}"));
    }
    Err(format!("gate {g} does not broadcast over {y}"))
}

/// The kernel binding of node `node` of `g` (a verified graph).
pub fn bind(g: &Graph, node: usize) -> Result<Kernel, BindError> {
    let n = &g.nodes[node];
    let s = Shapes { g, node };
    let err = |message: String| BindError { node: n.name.clone(), op: n.op.name(), message };
    let interp = |why: &str| Ok(Kernel::Interp { why: why.to_string() });
    let k = (|| -> Result<Kernel, String> {
        match &n.op {
            Op::Input { .. } | Op::Weight { .. } => Ok(Kernel::Source),
            Op::Reshape { .. } => Ok(Kernel::View),
            Op::Slice { axis, start, len } => match g.view_offset(node) {
                Some(_) => Ok(Kernel::View),
                None => Ok(Kernel::Slice(Slice {
                    outer: s.count(0, 0..*axis)?,
                    dim: s.dim(0, *axis as isize)?,
                    start: *start,
                    len: *len,
                    inner: s.count(0, axis + 1..s.ty(0).rank())?,
                })),
            },
            Op::Concat { axis } => {
                let parts = (0..n.inputs.len()).map(|k| s.count(k, *axis..s.ty(k).rank())).collect::<Result<_, _>>()?;
                Ok(Kernel::Concat(Concat { outer: s.count(0, 0..*axis)?, parts }))
            }
            Op::Embed => {
                Ok(Kernel::Embed { tokens: s.count(1, 0..s.ty(1).rank())?, vocab: s.dim(0, 0)?, hidden: s.dim(0, 1)? })
            }
            Op::MatMul | Op::MatMulSwiGlu | Op::MatMulSigmoidGate | Op::SigmoidGateMatMul => matmul(&s, &n.op),
            Op::Add | Op::Mul | Op::Silu | Op::Sigmoid | Op::Softplus | Op::Exp | Op::Neg | Op::Scale { .. } => {
                Ok(Kernel::Pointwise)
            }
            Op::MaskPadding => {
                let t = s.ty(0);
                let inner = t.shape[2..].iter().try_fold(1usize, |n, d| Some(n * d.as_const()?));
                let inner = inner.ok_or_else(|| format!("{t} has symbolic dims after [B,S]"))?;
                Ok(Kernel::MaskPadding { rows: s.count(0, 0..2)?, inner })
            }
            Op::RmsNorm { eps, zero_centred } => norm(&s, NormKind::Rms { zero_centred: *zero_centred }, *eps),
            Op::AddRmsNorm { eps, zero_centred } => norm(&s, NormKind::AddRms { zero_centred: *zero_centred }, *eps),
            Op::GatedRmsNorm { eps } => norm(&s, NormKind::Gated, *eps),
            Op::L2Norm { eps } => norm(&s, NormKind::L2, *eps),
            Op::Rope { theta, rotary_dim } => rope(&s, *theta, *rotary_dim, None),
            Op::RmsNormRope { eps, zero_centred, theta, rotary_dim } => {
                rope(&s, *theta, *rotary_dim, Some((*eps, *zero_centred)))
            }
            Op::KvAppend => Ok(Kernel::KvAppend(KvAppend {
                batch: s.count(0, 0..1)?,
                past: s.count(0, 2..3)?,
                new: s.count(1, 1..2)?,
                heads: s.dim(0, 1)?,
                d: s.dim(0, 3)?,
            })),
            Op::Attention { scale } => Ok(Kernel::Attention(Attention {
                batch: s.count(0, 0..1)?,
                s: s.count(0, 1..2)?,
                len: s.count(1, 2..3)?,
                q_heads: s.dim(0, 2)?,
                kv_heads: s.dim(1, 1)?,
                d: s.dim(0, 3)?,
                dv: s.dim(2, 3)?,
                scale: *scale,
            })),
            Op::CausalConv1d { kernel } => Ok(Kernel::Conv(Conv {
                batch: s.count(0, 0..1)?,
                s: s.count(0, 1..2)?,
                channels: s.dim(0, 2)?,
                kernel: *kernel,
            })),
            Op::GdnGates { eps, q_scale } => Ok(Kernel::GdnGates(GdnGates {
                rows: s.count(0, 0..2)?,
                hk: s.dim(0, 2)?,
                dk: s.dim(0, 3)?,
                hv: s.dim(2, 2)?,
                eps: *eps,
                q_scale: *q_scale,
            })),
            Op::GatedDeltaRule { .. } => Ok(Kernel::DeltaRule(DeltaRule {
                batch: s.count(0, 0..1)?,
                s: s.count(0, 1..2)?,
                hk: s.dim(0, 2)?,
                hv: s.dim(2, 2)?,
                dk: s.dim(0, 3)?,
                dv: s.dim(2, 3)?,
            })),
            Op::MoeRoute { top_k, renormalize } => Ok(Kernel::Route(Route {
                rows: s.rows(0)?,
                experts: s.dim(0, -1)?,
                top_k: *top_k,
                renormalize: *renormalize,
            })),
            Op::MoeExperts => Ok(Kernel::Experts(Experts {
                rows: s.rows(0)?,
                experts: s.dim(3, 0)?,
                hidden: s.dim(3, 2)?,
                inter: s.dim(3, 1)?,
                top_k: s.dim(1, -1)?,
            })),
            Op::Softmax | Op::TopK { .. } | Op::Renormalize => {
                interp("router primitive (the fuse-router rule makes it moe_route)")
            }
        }
    })();
    k.map_err(err)
}

fn matmul(s: &Shapes, op: &Op) -> Result<Kernel, String> {
    let (weight, epilogue) = match op {
        Op::MatMul => (1, Epilogue::Plain),
        Op::MatMulSwiGlu => (1, Epilogue::SwiGlu),
        Op::MatMulSigmoidGate => (1, Epilogue::SigmoidGate { gate: 2, how: gate_of(s.ty(2), s.out(0))? }),
        Op::SigmoidGateMatMul => (2, Epilogue::SigmoidGatePrologue { gate: 1, how: gate_of(s.ty(1), s.ty(0))? }),
        _ => unreachable!("matmul family"),
    };
    let (k, n) = (s.dim(0, -1)?, s.dim(weight, 0)?);
    let n = if epilogue == Epilogue::SwiGlu { n / 2 } else { n };
    Ok(Kernel::MatMul(MatMul { rows: s.rows(0)?, k, n, weight, epilogue }))
}

fn norm(s: &Shapes, kind: NormKind, eps: f32) -> Result<Kernel, String> {
    Ok(Kernel::Norm(Norm { kind, rows: s.rows(0)?, d: s.dim(0, -1)?, eps }))
}

fn rope(s: &Shapes, theta: f64, rotary_dim: usize, norm: Option<(f32, bool)>) -> Result<Kernel, String> {
    Ok(Kernel::Rope(Rope { tokens: s.count(0, 0..2)?, heads: s.dim(0, 2)?, d: s.dim(0, 3)?, theta, rotary_dim, norm }))
}

/// Per node of `g`, its binding (sources, views and pointwise ops included).
pub fn bind_all(g: &Graph) -> Result<Vec<Kernel>, BindError> {
    (0..g.nodes.len()).map(|i| bind(g, i)).collect()
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kernel::Interp { why } => write!(f, "interpreter fallback ({why})"),
            k => write!(f, "{}", k.symbol().unwrap_or("free")),
        }
    }
}
