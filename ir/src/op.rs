//! The op table: every per-op fact stated once.
//!
//! [`op_table!`] below is the single source of truth for every IR operation. One row per op
//! gives the variant and its attributes, the printer / kernel-table name, and an [`OpInfo`]
//! with every fact the rest of the compiler reads: arity, result count, [`OpClass`], whether it
//! is a pointwise map ([`Pointwise`]), a view ([`View`]), which operands are checkpoint weights,
//! which results may share bytes with an operand ([`InPlace`]), and its shape-inference function.
//! The macro generates the enum, [`Op::name`], [`Op::info`], [`Op::infer`] and the generic
//! attribute access ([`Op::attrs`], [`Op::from_attrs`]) that the text form, the e-graph language
//! (`qgc_passes::lang`) and the artifact use. Every fact is a required field of the row: a row
//! that forgets one does not compile. What is not a fact of the table is an exhaustive `match`
//! elsewhere with no catch-all arm (the interpreter's `eval_op`, codegen's kernel binding).
//!
//! Adding an op: one row here (with its `infer` function in `infer.rs`), one arm in
//! `interp::eval_op`, one arm in `qgc_codegen::binding`, and its kernel.
//!
//! Shape letters: `B` batch, `S` new tokens, `P` tokens already in the state, `H` hidden,
//! `V` vocab, `E` experts, `k` top-k.

use crate::attr::{AttrType, AttrValue};
use crate::infer;
use crate::types::{DType, Dim, Shape, TensorType};
use serde::{Deserialize, Serialize};

/// Broad families of ops, for passes and summaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpClass {
    /// Inputs and weights.
    Source,
    /// Reshape/slice/concat/gather.
    Movement,
    /// Matrix products.
    Linear,
    /// Pointwise maps.
    Elementwise,
    /// Norms and other reductions over the last dim.
    Norm,
    /// Model-level ops with their own kernels.
    Model,
    /// Kernels made by fusion passes (each defined as a composition of the other ops).
    Fused,
}

/// Whether an op is a pointwise map that a compiled elementwise loop can evaluate per element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pointwise {
    /// Not a pointwise map (or one no loop evaluates, like `mask_padding`).
    No,
    /// `y[i] = f(x[i])`.
    Unary,
    /// `y[i] = f(a[i], b[j(i)])`, `b` broadcast (see `Add`, `Mul`).
    Binary,
}

/// Whether an op's result is its operand's bytes, seen differently (no kernel, no copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum View {
    /// The result has bytes of its own.
    No,
    /// Always a view of operand 0 at offset 0 (row-major reshape).
    Always,
    /// A view of operand 0 when it is contiguous there: every dim before the slice axis is 1
    /// (see [`crate::Graph::view_offset`]); otherwise a strided copy.
    Contiguous,
}

/// How a result may take an operand's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sharing {
    /// The kernel may write the result over the operand when the two have the same type: it
    /// reads every element (or row) of the operand before it writes the same element (or row) of
    /// the result.
    Alias,
    /// The result is the operand updated (recurrent state): a kernel that gets separate buffers
    /// copies the operand into the result first, so sharing saves that copy.
    Update,
    /// The result is the operand with entries appended along `axis` (the KV cache): with the
    /// operand stored with spare capacity along that axis, the kernel writes only the new
    /// entries; otherwise it copies the old ones first.
    Append {
        /// The growing axis.
        axis: usize,
    },
}

/// One result/operand pair that may share bytes ([`OpInfo::in_place`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InPlace {
    /// The result.
    pub result: usize,
    /// The operand whose bytes it may take.
    pub operand: usize,
    /// How.
    pub sharing: Sharing,
}

impl InPlace {
    /// Result `result` may be written over operand `operand` ([`Sharing::Alias`]).
    pub const fn alias(result: usize, operand: usize) -> InPlace {
        InPlace { result, operand, sharing: Sharing::Alias }
    }
    /// Result `result` is operand `operand` updated ([`Sharing::Update`]).
    pub const fn update(result: usize, operand: usize) -> InPlace {
        InPlace { result, operand, sharing: Sharing::Update }
    }
    /// Result `result` is operand `operand` grown along `axis` ([`Sharing::Append`]).
    pub const fn append(result: usize, operand: usize, axis: usize) -> InPlace {
        InPlace { result, operand, sharing: Sharing::Append { axis } }
    }
}

/// Operand count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arity {
    /// Exactly this many.
    Fixed(usize),
    /// Any number, at least one (`concat`).
    Variadic,
}

/// Every fact of one op (a row of the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpInfo {
    /// The printer / kernel-table / e-graph name (snake_case).
    pub name: &'static str,
    /// Operand count.
    pub arity: Arity,
    /// Result count.
    pub results: usize,
    /// Family.
    pub class: OpClass,
    /// Pointwise map evaluated by compiled loops.
    pub pointwise: Pointwise,
    /// A view of its operand.
    pub view: View,
    /// Operands that are checkpoint weights in every lowered model (read-only; kernels take them
    /// in their stored dtype and widen bf16 themselves).
    pub weights: &'static [usize],
    /// Result/operand pairs that may share bytes.
    pub in_place: &'static [InPlace],
}

impl OpInfo {
    /// Whether the op carries state from call to call (an operand it returns updated).
    pub fn has_state(&self) -> bool {
        self.in_place.iter().any(|p| !matches!(p.sharing, Sharing::Alias))
    }
}

macro_rules! op_table {
    ($(
        $(#[doc = $doc:literal])*
        $var:ident $({ $($field:ident : $fty:ty),* $(,)? })? = $name:literal {
            arity: $arity:expr,
            results: $results:expr,
            class: $class:ident,
            pointwise: $pw:ident,
            view: $view:ident,
            weights: [$($w:expr),* $(,)?],
            in_place: [$($ip:expr),* $(,)?],
            infer: $infer:path $(,)?
        }
    ),* $(,)?) => {
        /// An IR operation (see the module doc: one row of the op table per variant).
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub enum Op {
            $(
                $(#[doc = $doc])*
                $var $({ $(#[allow(missing_docs)] $field: $fty),* })?,
            )*
        }

        /// Every op's facts, in table order.
        pub static OP_INFOS: &[OpInfo] = &[$(
            OpInfo {
                name: $name,
                arity: $arity,
                results: $results,
                class: OpClass::$class,
                pointwise: Pointwise::$pw,
                view: View::$view,
                weights: &[$($w),*],
                in_place: &[$($ip),*],
            },
        )*];

        impl Op {
            /// Every op name, in table order.
            pub const NAMES: &'static [&'static str] = &[$($name),*];

            /// The row of this op in [`OP_INFOS`].
            pub fn index(&self) -> usize {
                /// One discriminant per row, in table order.
                #[allow(dead_code)]
                enum Row { $($var),* }
                match self {
                    $(Op::$var { .. } => Row::$var as usize,)*
                }
            }

            /// Named attribute values, in declaration order.
            pub fn attrs(&self) -> Vec<(&'static str, AttrValue)> {
                match self {
                    $(
                        Op::$var $({ $($field),* })? => vec![$($((stringify!($field), AttrType::to_attr($field))),*)?],
                    )*
                }
            }

            /// The op named `name` with attribute values `vals` (declaration order), `None` when
            /// the name is unknown or the values do not fit.
            pub fn from_attrs(name: &str, vals: &[AttrValue]) -> Option<Op> {
                #[allow(unused_mut, unused_variables)]
                let mut it = vals.iter();
                let op = match name {
                    $(
                        $name => Op::$var $({ $($field: <$fty as AttrType>::from_attr(it.next()?)?),* })?,
                    )*
                    _ => return None,
                };
                it.next().is_none().then_some(op)
            }

            /// The attribute names and kinds of op `name`, in declaration order.
            pub fn attr_names(name: &str) -> Option<&'static [(&'static str, crate::attr::AttrKind)]> {
                Some(match name {
                    $(
                        $name => &[$($((stringify!($field), <$fty as AttrType>::KIND)),*)?],
                    )*
                    _ => return None,
                })
            }

            /// Result types from operand types (arity already checked), or what does not fit.
            fn infer_results(&self, ins: &[&TensorType]) -> Result<Vec<TensorType>, String> {
                match self {
                    $(
                        Op::$var $({ $($field),* })? => $infer(ins $($(, $field)*)?),
                    )*
                }
            }
        }
    };
}

op_table! {
    // ---- sources ---------------------------------------------------------------------------
    /// A graph input supplied by the caller (token ids, positions, state). No operands.
    Input { name: String, ty: TensorType } = "input" {
        arity: Arity::Fixed(0), results: 1, class: Source, pointwise: No, view: No,
        weights: [], in_place: [], infer: infer::source,
    },
    /// A checkpoint tensor, by logical name (see `spec::TensorDecl`), f32 in the IR. No operands.
    Weight { name: String, ty: TensorType } = "weight" {
        arity: Arity::Fixed(0), results: 1, class: Source, pointwise: No, view: No,
        weights: [], in_place: [], infer: infer::source,
    },

    // ---- data movement ---------------------------------------------------------------------
    /// (table `[V,H]`, ids i32 `[B,S]`) -> `[B,S,H]`: row gather.
    Embed = "embed" {
        arity: Arity::Fixed(2), results: 1, class: Movement, pointwise: No, view: No,
        weights: [0], in_place: [], infer: infer::embed,
    },
    /// (x) -> x with the same elements in row-major order and a new shape of equal size.
    Reshape { shape: Shape } = "reshape" {
        arity: Arity::Fixed(1), results: 1, class: Movement, pointwise: No, view: Always,
        weights: [], in_place: [], infer: infer::reshape,
    },
    /// (x) -> x[..., start..start+len, ...] along `axis`.
    Slice { axis: usize, start: usize, len: usize } = "slice" {
        arity: Arity::Fixed(1), results: 1, class: Movement, pointwise: No, view: Contiguous,
        weights: [], in_place: [], infer: infer::slice,
    },
    /// (a, b, ...) -> concatenation along `axis`; all other dims equal.
    Concat { axis: usize } = "concat" {
        arity: Arity::Variadic, results: 1, class: Movement, pointwise: No, view: No,
        weights: [], in_place: [], infer: infer::concat,
    },

    // ---- linear algebra --------------------------------------------------------------------
    /// (x `[..., K]`, w `[N, K]`) -> `[..., N]`: `y = x wᵀ` (row-major `[out, in]` weights).
    MatMul = "matmul" {
        arity: Arity::Fixed(2), results: 1, class: Linear, pointwise: No, view: No,
        weights: [1], in_place: [], infer: infer::matmul,
    },

    // ---- elementwise (binary ops broadcast the second operand over leading dims) -------------
    /// (a, b) -> a + b; b's shape is a suffix of a's.
    Add = "add" {
        arity: Arity::Fixed(2), results: 1, class: Elementwise, pointwise: Binary, view: No,
        weights: [], in_place: [InPlace::alias(0, 0), InPlace::alias(0, 1)], infer: infer::add,
    },
    /// (a, b) -> a · b; b's shape is a suffix of a's, or b has a's shape with a trailing 1.
    Mul = "mul" {
        arity: Arity::Fixed(2), results: 1, class: Elementwise, pointwise: Binary, view: No,
        weights: [], in_place: [InPlace::alias(0, 0), InPlace::alias(0, 1)], infer: infer::mul,
    },
    /// (x) -> x·σ(x).
    Silu = "silu" {
        arity: Arity::Fixed(1), results: 1, class: Elementwise, pointwise: Unary, view: No,
        weights: [], in_place: [InPlace::alias(0, 0)], infer: infer::unary,
    },
    /// (x) -> 1 / (1 + e^{-x}).
    Sigmoid = "sigmoid" {
        arity: Arity::Fixed(1), results: 1, class: Elementwise, pointwise: Unary, view: No,
        weights: [], in_place: [InPlace::alias(0, 0)], infer: infer::unary,
    },
    /// (x) -> ln(1 + e^x), or x where x > 20 (PyTorch's threshold).
    Softplus = "softplus" {
        arity: Arity::Fixed(1), results: 1, class: Elementwise, pointwise: Unary, view: No,
        weights: [], in_place: [InPlace::alias(0, 0)], infer: infer::unary,
    },
    /// (x) -> e^x.
    Exp = "exp" {
        arity: Arity::Fixed(1), results: 1, class: Elementwise, pointwise: Unary, view: No,
        weights: [], in_place: [InPlace::alias(0, 0)], infer: infer::unary,
    },
    /// (x) -> -x.
    Neg = "neg" {
        arity: Arity::Fixed(1), results: 1, class: Elementwise, pointwise: Unary, view: No,
        weights: [], in_place: [InPlace::alias(0, 0)], infer: infer::unary,
    },
    /// (x) -> x · by.
    Scale { by: f32 } = "scale" {
        arity: Arity::Fixed(1), results: 1, class: Elementwise, pointwise: Unary, view: No,
        weights: [], in_place: [InPlace::alias(0, 0)], infer: infer::scale,
    },
    /// (x `[B,S,...]`, positions i32 `[B,S]`) -> x with every padding slot zeroed: `x[b,s,...] = 0`
    /// where `positions[b,s] < 0` (HF `apply_mask_to_padding_states`), unchanged elsewhere.
    MaskPadding = "mask_padding" {
        arity: Arity::Fixed(2), results: 1, class: Elementwise, pointwise: No, view: No,
        weights: [], in_place: [InPlace::alias(0, 0)], infer: infer::mask_padding,
    },

    // ---- normalisation ---------------------------------------------------------------------
    /// (x `[..., D]`, w `[D]`) -> x · rsqrt(mean(x²) + eps) · (1 + w if zero_centred else w).
    RmsNorm { eps: f32, zero_centred: bool } = "rms_norm" {
        arity: Arity::Fixed(2), results: 1, class: Norm, pointwise: No, view: No,
        weights: [1], in_place: [], infer: infer::rms_norm,
    },
    /// (x `[..., D]`, z `[..., D]`, w `[D]`) -> w · (x · rsqrt(mean(x²) + eps)) · silu(z).
    GatedRmsNorm { eps: f32 } = "gated_rms_norm" {
        arity: Arity::Fixed(3), results: 1, class: Norm, pointwise: No, view: No,
        weights: [2], in_place: [], infer: infer::gated_rms_norm,
    },
    /// (x `[..., D]`) -> x · rsqrt(Σ x² + eps)  (eps added to the sum).
    L2Norm { eps: f32 } = "l2_norm" {
        arity: Arity::Fixed(1), results: 1, class: Norm, pointwise: No, view: No,
        weights: [], in_place: [InPlace::alias(0, 0)], infer: infer::l2_norm,
    },

    // ---- model-level -----------------------------------------------------------------------
    /// (x `[B,S,N,D]`, positions i32 `[B,S]`) -> `[B,S,N,D]`: NeoX rotate-half RoPE, HF's default
    /// rope: `inv_freq[i] = 1/theta^(2i/rotary_dim)` for `i < ceil(rotary_dim/2)`, rotating the first
    /// `2·ceil(rotary_dim/2)` dims of each head (one more than `rotary_dim` when it is odd, as HF
    /// does); the rest pass.
    Rope { theta: f64, rotary_dim: usize } = "rope" {
        arity: Arity::Fixed(2), results: 1, class: Model, pointwise: No, view: No,
        weights: [], in_place: [InPlace::alias(0, 0)], infer: infer::rope,
    },
    /// (cache `[B,N,P,D]`, new `[B,S,N,D]`) -> `[B,N,P+S,D]`: append along the sequence axis.
    KvAppend = "kv_append" {
        arity: Arity::Fixed(2), results: 1, class: Model, pointwise: No, view: No,
        weights: [], in_place: [InPlace::append(0, 0, 2)], infer: infer::kv_append,
    },
    /// (q `[B,S,Nq,D]`, k `[B,Nkv,P+S,D]`, v `[B,Nkv,P+S,Dv]`, positions i32 `[B,S]`) -> `[B,S,Nq,Dv]`:
    /// causal GQA softmax attention over left-padded rows. Query s of row b sits at cache index
    /// P+s with position `positions[b,s]`; each row's positions must be consecutive, so
    /// `pad_b = P+s − positions[b,s]` (≥ 0) is the same for all s, and cache index i holds
    /// position `i − pad_b` (negative: a padding slot). A query sees key i iff
    /// `0 ≤ i − pad_b ≤ positions[b,s]`; a query that sees no key (a padding slot) outputs 0.
    /// Head j uses kv head j / (Nq/Nkv); scores are scaled by `scale`. Unpadded rows
    /// (`positions = P..P+S`) see keys 0..=P+s.
    Attention { scale: f32 } = "attention" {
        arity: Arity::Fixed(4), results: 1, class: Model, pointwise: No, view: No,
        weights: [], in_place: [], infer: infer::attention,
    },
    /// (x `[B,S,C]`, w `[C,K]`, state `[B,C,K-1]`) -> (y `[B,S,C]`, state' `[B,C,K-1]`): depthwise causal
    /// conv, `y[t,c] = Σ_j w[c,j] · hist[t+j, c]` over `hist = state ++ x`; state' = last K-1
    /// columns of hist. No activation.
    CausalConv1d { kernel: usize } = "causal_conv1d" {
        arity: Arity::Fixed(3), results: 2, class: Model, pointwise: No, view: No,
        weights: [1], in_place: [InPlace::update(1, 2)], infer: infer::causal_conv1d,
    },
    /// (q `[B,S,Hk,Dk]`, k `[B,S,Hk,Dk]`, v `[B,S,Hv,Dv]`, g `[B,S,Hv]`, beta `[B,S,Hv]`,
    ///  state `[B,Hv,Dk,Dv]`) -> (o `[B,S,Hv,Dv]`, state' `[B,Hv,Dk,Dv]`): the gated delta rule,
    /// value head h reads q/k head h / (Hv/Hk); per token: S ← e^g S; m = Sᵀk; S += k ⊗ β(v − m);
    /// o = Sᵀq. `chunk` = Some(C) evaluates the same function in the C-token chunked form.
    GatedDeltaRule { chunk: Option<usize> } = "gated_delta_rule" {
        arity: Arity::Fixed(6), results: 2, class: Model, pointwise: No, view: No,
        weights: [], in_place: [InPlace::update(1, 5)], infer: infer::gated_delta_rule,
    },
    /// (logits `[B,S,E]`) -> (weights f32 `[B,S,k]`, experts i32 `[B,S,k]`): softmax over E, top-k in
    /// descending order (ties: lower index first), renormalised to sum 1 when `renormalize`.
    /// Defined as the router primitives `Softmax`, `TopK`, `Renormalize` in sequence (lowering
    /// emits those; the `fuse-router` rule makes them this one kernel).
    MoeRoute { top_k: usize, renormalize: bool } = "moe_route" {
        arity: Arity::Fixed(1), results: 2, class: Model, pointwise: No, view: No,
        weights: [], in_place: [], infer: infer::moe_route,
    },
    /// (x `[B,S,H]`, weights `[B,S,k]`, experts i32 `[B,S,k]`, gate `[E,I,H]`, up `[E,I,H]`, down `[E,H,I]`)
    /// -> `[B,S,H]`: Σ_i weights_i · down_e (silu(gate_e x) ⊙ up_e x), e = experts_i.
    MoeExperts = "moe_experts" {
        arity: Arity::Fixed(6), results: 1, class: Model, pointwise: No, view: No,
        weights: [3, 4, 5], in_place: [], infer: infer::moe_experts,
    },

    // ---- router primitives (lowering emits these; rule `fuse-router` makes them `MoeRoute`) -----
    /// (x `[..., E]`) -> softmax over the last dim (f64, max subtracted).
    Softmax = "softmax" {
        arity: Arity::Fixed(1), results: 1, class: Norm, pointwise: No, view: No,
        weights: [], in_place: [], infer: infer::row_norm,
    },
    /// (x `[..., E]`) -> (values f32 `[..., k]`, indices i32 `[..., k]`): the k largest in
    /// descending order (ties: lower index first).
    TopK { k: usize } = "top_k" {
        arity: Arity::Fixed(1), results: 2, class: Norm, pointwise: No, view: No,
        weights: [], in_place: [], infer: infer::top_k,
    },
    /// (x `[..., k]`) -> x / Σ x over the last dim.
    Renormalize = "renormalize" {
        arity: Arity::Fixed(1), results: 1, class: Norm, pointwise: No, view: No,
        weights: [], in_place: [], infer: infer::row_norm,
    },

    // ---- fused ops: produced by `qgc-passes`; each is defined as a composition of the ops above
    // ---- (`interp/fused.rs`), so the interpreter stays obviously right.
    /// (x `[..., D]`, r `[..., D]`, w `[D]`) -> (sum = x + r, rms_norm(sum, w)): residual add + norm.
    AddRmsNorm { eps: f32, zero_centred: bool } = "add_rms_norm" {
        arity: Arity::Fixed(3), results: 2, class: Fused, pointwise: No, view: No,
        weights: [2], in_place: [InPlace::alias(0, 0), InPlace::alias(0, 1)], infer: infer::add_rms_norm,
    },
    /// (x `[B,S,N,D]`, w `[D]`, positions i32 `[B,S]`) -> rope(rms_norm(x, w), positions): the
    /// q/k norm with RoPE folded in.
    RmsNormRope { eps: f32, zero_centred: bool, theta: f64, rotary_dim: usize } = "rms_norm_rope" {
        arity: Arity::Fixed(3), results: 1, class: Fused, pointwise: No, view: No,
        weights: [1], in_place: [InPlace::alias(0, 0)], infer: infer::rms_norm_rope,
    },
    /// (x `[..., K]`, w `[2N, K]`) -> `[..., N]`: silu(x w[..N]ᵀ) ⊙ (x w[N..]ᵀ), a matmul with a
    /// SwiGLU epilogue over the stacked gate/up weight.
    MatMulSwiGlu = "matmul_swiglu" {
        arity: Arity::Fixed(2), results: 1, class: Fused, pointwise: No, view: No,
        weights: [1], in_place: [], infer: infer::matmul_swiglu,
    },
    /// (x `[..., K]`, w `[N, K]`, g) -> (x wᵀ) ⊙ σ(g), g broadcast as `Mul`'s second operand: a
    /// matmul with a sigmoid-gate epilogue.
    MatMulSigmoidGate = "matmul_sigmoid_gate" {
        arity: Arity::Fixed(3), results: 1, class: Fused, pointwise: No, view: No,
        weights: [1], in_place: [], infer: infer::matmul_sigmoid_gate,
    },
    /// (x `[..., K]`, g, w `[N, K]`) -> (x ⊙ σ(g)) wᵀ, g broadcast as `Mul`'s second operand: a
    /// matmul with a sigmoid-gate prologue.
    SigmoidGateMatMul = "sigmoid_gate_matmul" {
        arity: Arity::Fixed(3), results: 1, class: Fused, pointwise: No, view: No,
        weights: [2], in_place: [], infer: infer::sigmoid_gate_matmul,
    },
    /// (q, k `[B,S,Hk,Dk]`, a, b `[B,S,Hv]`, dt_bias, a_log `[Hv]`) -> (l2(q)·q_scale, l2(k),
    /// g = softplus(a + dt_bias) · -exp(a_log), beta = σ(b)): the GDN gate chain in one kernel
    /// (l2 norms with `eps`).
    GdnGates { eps: f32, q_scale: f32 } = "gdn_gates" {
        arity: Arity::Fixed(6), results: 4, class: Fused, pointwise: No, view: No,
        weights: [4, 5], in_place: [InPlace::alias(0, 0), InPlace::alias(1, 1)], infer: infer::gdn_gates,
    },
}

impl Op {
    /// The printer / kernel-table name (snake_case).
    pub fn name(&self) -> &'static str {
        self.info().name
    }

    /// Every fact of this op.
    pub fn info(&self) -> &'static OpInfo {
        &OP_INFOS[self.index()]
    }

    /// The facts of the op named `name`.
    pub fn info_by_name(name: &str) -> Option<&'static OpInfo> {
        OP_INFOS.iter().find(|i| i.name == name)
    }

    /// The op's family.
    pub fn class(&self) -> OpClass {
        self.info().class
    }

    /// Number of operands, `None` for variadic ops.
    pub fn arity(&self) -> Option<usize> {
        match self.info().arity {
            Arity::Fixed(n) => Some(n),
            Arity::Variadic => None,
        }
    }

    /// Result types from operand types, or a message saying what does not fit.
    pub fn infer(&self, ins: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        match self.info().arity {
            Arity::Fixed(n) if ins.len() != n => {
                return Err(format!("{} takes {n} operands, got {}", self.name(), ins.len()));
            }
            Arity::Variadic if ins.is_empty() => return Err(format!("{} of nothing", self.name())),
            _ => {}
        }
        let out = self.infer_results(ins)?;
        debug_assert_eq!(out.len(), self.info().results, "{}: result count differs from the table", self.name());
        Ok(out)
    }

    /// Attributes as printed after the name, e.g. `eps=1e-6 zero_centred` (see
    /// [`crate::attr`] for the text form; [`Op::parse`] reads it back).
    pub fn attr_text(&self) -> String {
        crate::attr::to_text(&self.attrs())
    }

    /// Parses `name attrs` as printed ([`Op::name`], then [`Op::attr_text`]); `results` are the
    /// node's result types (sources take their type from there).
    pub fn parse(text: &str, results: &[TensorType]) -> Result<Op, String> {
        let text = text.trim();
        let (name, rest) = text.split_once(' ').unwrap_or((text, ""));
        let kinds = Op::attr_names(name).ok_or_else(|| format!("unknown op {name:?}"))?;
        let vals = crate::attr::from_text(name, kinds, rest, results)?;
        Op::from_attrs(name, &vals).ok_or_else(|| format!("{name}: attributes do not fit"))
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
