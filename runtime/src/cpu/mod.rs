//! Fast CPU kernels for the compiled CPU backend: plain functions over slices.
//!
//! Every kernel computes what one (possibly fused) IR op means in `qgc_ir::interp` and is tested
//! against `interp::eval_op` (`runtime/tests/cpu_*.rs`). The compiled host code calls them as
//! shims over a planned arena, so they follow one convention:
//!
//! - explicit output slices (`&mut [f32]`), shapes as plain `usize` arguments, row-major
//!   layouts documented on every function (`x: [M, K]`);
//! - no allocation in the hot path: scratch comes from the caller ([`moe::MoeScratch`]) or from a
//!   reusable per-thread buffer;
//! - threads from the current rayon pool (`ThreadPool::install` chooses it), split over output
//!   rows/heads/channels so results do not depend on the thread count except where noted;
//! - **batch invariance** for decode: what a kernel computes for one token row (one sequence)
//!   never depends on the other rows of the call — their number, their padding, their routing —
//!   nor on the thread count, when called as decode does ([`RowOrder::Invariant`] for the
//!   matmul family; attention, norms, RoPE, the delta rule and the router always are);
//! - **token invariance** for prefill under [`RowOrder::Invariant`]: a prompt token computes what
//!   decode computes for it, bit for bit, however its sequence is split into calls (the matmul
//!   family on the GEMV path, the recurrent delta rule, attention's key blocks aligned to the
//!   sequence start, vector code for every element of a tail);
//! - SIMD chosen at run time ([`Level`]: AVX-512, AVX2+FMA, or portable scalar code), each
//!   kernel written once over a small vector trait and compiled per level;
//! - shape mismatches are broken internal invariants and panic; values a user can influence
//!   (token ids, expert indices, positions, cache capacity) are checked and reported as
//!   [`CpuError`].
//!
//! Families: [`linear`] (panel GEMM / GEMV with f32 or bf16 weights and fused
//! epilogues), [`norm`], [`rope`], [`attention`] (KV cache + causal GQA), [`gdn`] (conv, gates,
//! delta rule), [`moe`] (routing + routed experts), [`embed`], [`elementwise`], [`bandwidth`].

pub mod attention;
pub mod bandwidth;
pub mod elementwise;
pub mod embed;
pub mod gdn;
pub mod gdn_chunked;
mod gemv;
pub mod linear;
pub mod moe;
pub mod norm;
pub mod rope;
mod simd;
mod wide;

use half::bf16;

pub use simd::{detected_level, level, set_level, Level};

/// A weight matrix as stored: f32, or bf16 kept as the checkpoint's raw bits (never converted
/// up front; kernels widen it in registers or in small tiles).
#[derive(Debug, Clone, Copy)]
pub enum WeightRef<'a> {
    /// f32 elements.
    F32(&'a [f32]),
    /// bf16 elements.
    Bf16(&'a [bf16]),
}

impl<'a> WeightRef<'a> {
    /// bf16 weights from raw bits (`u16` per element, as a safetensors BF16 tensor holds them).
    pub fn bf16_bits(bits: &'a [u16]) -> WeightRef<'a> {
        // SAFETY: `bf16` is `repr(transparent)` over `u16`.
        WeightRef::Bf16(unsafe { std::slice::from_raw_parts(bits.as_ptr() as *const bf16, bits.len()) })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            WeightRef::F32(w) => w.len(),
            WeightRef::Bf16(w) => w.len(),
        }
    }

    /// No elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Elements `start..start+len`. Panics when out of range.
    pub fn slice(&self, start: usize, len: usize) -> WeightRef<'a> {
        match *self {
            WeightRef::F32(w) => WeightRef::F32(&w[start..start + len]),
            WeightRef::Bf16(w) => WeightRef::Bf16(&w[start..start + len]),
        }
    }

    /// Bytes per element (4 or 2).
    pub fn elem_bytes(&self) -> usize {
        match self {
            WeightRef::F32(_) => 4,
            WeightRef::Bf16(_) => 2,
        }
    }
}

/// How a matmul-family kernel may sum each output ([`linear::linear_invariant`],
/// [`moe::moe_experts_ordered`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RowOrder {
    /// The fastest path for the call's number of token rows: from a threshold on (prefill
    /// sizes) a GEMM whose summation order differs from the small-`M` path, so a row's bits may
    /// depend on how many rows the call has.
    #[default]
    Fastest,
    /// Every token row in one fixed summation order whatever the number of rows and threads:
    /// a row has the same bits as the call on that row alone. For decode, where the rows are the
    /// sequences of a batch that changes from step to step.
    Invariant,
}

/// Where the heads of a `[tokens, heads, d]` view live inside a larger buffer: head `h` of
/// token `t` is `buf[offset + t·token_stride + h·head_stride ..][..d]`. Lets kernels read q/k/v
/// straight out of a fused projection's output (e.g. q inside `[T, Nq, q|gate]`) without copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLayout {
    /// Tokens (all batch rows flattened, `B·S`).
    pub tokens: usize,
    /// Heads per token.
    pub heads: usize,
    /// Elements per head.
    pub d: usize,
    /// Distance between consecutive tokens.
    pub token_stride: usize,
    /// Distance between consecutive heads of one token.
    pub head_stride: usize,
    /// Start of head 0 of token 0.
    pub offset: usize,
}

impl HeadLayout {
    /// A dense `[tokens, heads, d]` tensor.
    pub fn dense(tokens: usize, heads: usize, d: usize) -> HeadLayout {
        HeadLayout { tokens, heads, d, token_stride: heads * d, head_stride: d, offset: 0 }
    }

    /// Start of head `h` of token `t`.
    #[inline]
    pub fn at(&self, t: usize, h: usize) -> usize {
        self.offset + t * self.token_stride + h * self.head_stride
    }

    /// Buffer length the layout needs (0 when empty).
    pub fn min_len(&self) -> usize {
        if self.tokens == 0 || self.heads == 0 || self.d == 0 {
            return 0;
        }
        self.at(self.tokens - 1, self.heads - 1) + self.d
    }

    /// Panics unless `len` covers the layout and heads do not overlap within a token.
    pub(crate) fn check(&self, len: usize, what: &str) {
        assert!(len >= self.min_len(), "{what}: buffer of {len} is shorter than its layout {self:?}");
        assert!(self.heads <= 1 || self.head_stride >= self.d, "{what}: overlapping heads in {self:?}");
        let row = self.heads.saturating_sub(1) * self.head_stride + self.d;
        assert!(self.tokens <= 1 || self.token_stride >= row, "{what}: overlapping tokens in {self:?}");
    }
}

/// Run-time failures of kernels on values a user can supply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpuError {
    /// A token id outside the vocabulary.
    #[error("token id {id} (flat index {index}) is outside the vocabulary 0..{vocab}")]
    TokenId {
        /// The id.
        id: i32,
        /// Its flat index in the ids.
        index: usize,
        /// Vocabulary size.
        vocab: usize,
    },
    /// An expert index outside `0..E`.
    #[error("expert index {id} (token {token}) is outside 0..{experts}")]
    ExpertIndex {
        /// The index.
        id: i32,
        /// The token it was routed for.
        token: usize,
        /// Number of experts.
        experts: usize,
    },
    /// Appending would overflow a KV cache.
    #[error("KV cache holds {len} of {capacity} positions and cannot take {new} more")]
    CacheFull {
        /// Positions already held.
        len: usize,
        /// Capacity.
        capacity: usize,
        /// Positions to append.
        new: usize,
    },
    /// Positions of a batch row that attention cannot use.
    #[error("attention positions of row {row}: {message}")]
    Positions {
        /// Batch row.
        row: usize,
        /// What is wrong.
        message: String,
    },
}

/// A raw pointer to an output buffer shared by rayon tasks that write disjoint elements.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SharedMut(*mut f32, usize);

// SAFETY: tasks only write disjoint index sets (each user documents its partition).
unsafe impl Send for SharedMut {}
// SAFETY: as above.
unsafe impl Sync for SharedMut {}

impl SharedMut {
    pub(crate) fn new(s: &mut [f32]) -> SharedMut {
        SharedMut(s.as_mut_ptr(), s.len())
    }

    /// `len` elements from `start`.
    ///
    /// # Safety
    /// No other live slice from this buffer may overlap the range.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice(&self, start: usize, len: usize) -> &mut [f32] {
        assert!(start + len <= self.1, "SharedMut range {start}+{len} past {}", self.1);
        std::slice::from_raw_parts_mut(self.0.add(start), len)
    }

    /// The element pointer at `start` (≤ len), for writers that store through raw pointers
    /// (prefetches, packed panels).
    pub(crate) fn ptr(&self, start: usize) -> *mut f32 {
        assert!(start <= self.1);
        // SAFETY: within the allocation (checked above).
        unsafe { self.0.add(start) }
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on a per-thread scratch buffer of `len` f32 (contents unspecified), reused across
/// calls so the hot path does not allocate after warm-up. A nested call on the same thread gets a
/// fresh allocation instead.
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|c| match c.try_borrow_mut() {
        Ok(mut v) => {
            if v.len() < len {
                v.resize(len, 0.0);
            }
            f(&mut v[..len])
        }
        Err(_) => f(&mut vec![0.0; len]),
    })
}

/// Work (in multiply-adds) below which a kernel stays on the calling thread.
pub(crate) const PAR_MIN_WORK: usize = 1 << 15;

/// Splits `n` items into contiguous tasks of at least `min` items, about `4×threads` tasks.
pub(crate) fn task_size(n: usize, min: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    n.div_ceil(4 * threads).max(min).max(1)
}

/// Runs `f(start, end)` over `0..n` split into tasks of `chunk` items, in parallel when `par`.
pub(crate) fn for_ranges(n: usize, chunk: usize, par: bool, f: impl Fn(usize, usize) + Sync + Send) {
    use rayon::prelude::*;
    let tasks = n.div_ceil(chunk.max(1));
    if par && tasks > 1 {
        (0..tasks).into_par_iter().for_each(|t| f(t * chunk, ((t + 1) * chunk).min(n)));
    } else {
        (0..tasks).for_each(|t| f(t * chunk, ((t + 1) * chunk).min(n)));
    }
}

/// σ(x) in f32.
#[inline(always)]
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// x·σ(x) in f32.
#[inline(always)]
pub(crate) fn silu(x: f32) -> f32 {
    x * sigmoid(x)
}
