//! A small SIMD abstraction over f32 vectors, written once per kernel and instantiated for each
//! instruction-set level the machine supports.
//!
//! Kernels are generic over [`Simd`] (`#[inline(always)]` bodies) and are entered through
//! [`dispatch!`](crate::cpu::simd::dispatch), which picks the best [`Level`] at run time and runs
//! the body inside a `#[target_feature]` function, so the intrinsics inline with the right
//! features enabled. [`Scalar`] is the portable fallback (one lane, plain `a*b+c`), used on
//! non-x86 targets and x86 machines without AVX2/FMA.
//!
//! Weights arrive as f32 or bf16 ([`Elem`]); bf16 widens to f32 exactly by shifting its bits
//! into the high half of a 32-bit lane.

use half::bf16;
use std::sync::atomic::{AtomicU8, Ordering};

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Instruction-set levels, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Portable scalar code.
    Scalar = 1,
    /// x86-64 AVX2 + FMA (8 f32 lanes).
    Avx2 = 2,
    /// x86-64 AVX-512F/BW/VL + FMA (16 f32 lanes).
    Avx512 = 3,
}

impl Level {
    fn from_u8(v: u8) -> Option<Level> {
        match v {
            1 => Some(Level::Scalar),
            2 => Some(Level::Avx2),
            3 => Some(Level::Avx512),
            _ => None,
        }
    }
}

/// The highest level this machine supports.
pub fn detected_level() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        let avx512 = avx2
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl");
        if avx512 {
            return Level::Avx512;
        }
        if avx2 {
            return Level::Avx2;
        }
    }
    Level::Scalar
}

/// 0: not yet decided; otherwise a `Level` discriminant.
static LEVEL: AtomicU8 = AtomicU8::new(0);

/// The level kernels run at: [`detected_level`] unless lowered by [`set_level`].
pub fn level() -> Level {
    if let Some(l) = Level::from_u8(LEVEL.load(Ordering::Relaxed)) {
        return l;
    }
    let l = detected_level();
    LEVEL.store(l as u8, Ordering::Relaxed);
    l
}

/// Runs kernels at `want` or lower (capped at [`detected_level`]) from now on, process-wide;
/// returns the level now in effect. For tests and benchmarks that compare code paths.
pub fn set_level(want: Level) -> Level {
    let l = want.min(detected_level());
    LEVEL.store(l as u8, Ordering::Relaxed);
    l
}

/// An f32 vector type and its operations. All methods are `unsafe`: the caller guarantees the
/// instruction set is available (see [`dispatch!`]) and that pointers cover `LANES` elements.
pub(crate) trait Simd: Copy + 'static {
    /// f32 lanes per vector.
    const LANES: usize;
    /// The vector.
    type V: Copy;
    /// All lanes 0.
    unsafe fn zero() -> Self::V;
    /// All lanes `x`.
    unsafe fn splat(x: f32) -> Self::V;
    /// `LANES` f32 from `p` (unaligned).
    unsafe fn load(p: *const f32) -> Self::V;
    /// `LANES` bf16 from `p`, widened to f32.
    unsafe fn load_bf16(p: *const bf16) -> Self::V;
    /// Stores `LANES` f32 at `p` (unaligned).
    unsafe fn store(p: *mut f32, v: Self::V);
    /// Lane-wise `a + b`.
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise `a - b`.
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise `a · b`.
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise `a · b + c` (fused where the level has FMA).
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// Lane-wise `a / b`.
    unsafe fn div(a: Self::V, b: Self::V) -> Self::V;
    /// Transposes the `LANES × LANES` matrix whose row `i` is `v[i]` (`v.len() == LANES`).
    unsafe fn transpose(v: &mut [Self::V]);
    /// The first `n ≤ LANES` f32 from `p` (lanes past `n` are 0; nothing past `n` is read).
    unsafe fn load_first(p: *const f32, n: usize) -> Self::V;
    /// Stores the first `n ≤ LANES` lanes at `p` (nothing past `n` is written).
    unsafe fn store_first(p: *mut f32, v: Self::V, n: usize);
    /// Runs `f` inside a function compiled with this level's instruction set, so the
    /// `#[inline(always)]` kernels `f` calls inline with it (the way [`dispatch!`] does for a
    /// level chosen at run time). Pass an `#[inline(always)]` closure.
    unsafe fn enter<R>(f: impl FnOnce() -> R) -> R;
    /// Lane-wise maximum.
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    /// Sum of the lanes.
    unsafe fn hsum(v: Self::V) -> f32;
    /// Vector registers the level has (16 or 32; 1 for scalar), for choosing register blocks.
    const REGS: usize;
    /// Lane-wise round to the nearest integer (ties to even).
    unsafe fn round(a: Self::V) -> Self::V;
    /// Lane-wise `2^n` for integer-valued `n` in `[-126, 127]`.
    unsafe fn pow2i(n: Self::V) -> Self::V;
    /// Lane-wise `v` where `x ≥ lo`, else 0.
    unsafe fn zero_below(v: Self::V, x: Self::V, lo: Self::V) -> Self::V;
    /// Hints that the cache line at `p` will be read soon (no-op where unsupported).
    #[inline(always)]
    unsafe fn prefetch<T>(p: *const T) {
        let _ = p;
    }
    /// Hints that the cache line at `p` will be read later: fetch it into L2 (no-op where
    /// unsupported).
    #[inline(always)]
    unsafe fn prefetch_l2<T>(p: *const T) {
        let _ = p;
    }
}

/// One-lane portable fallback.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scalar;

impl Simd for Scalar {
    const LANES: usize = 1;
    const REGS: usize = 1;
    type V = f32;
    #[inline(always)]
    unsafe fn round(a: f32) -> f32 {
        a.round_ties_even()
    }
    #[inline(always)]
    unsafe fn pow2i(n: f32) -> f32 {
        f32::from_bits(((n as i32 + 127) as u32) << 23)
    }
    #[inline(always)]
    unsafe fn zero_below(v: f32, x: f32, lo: f32) -> f32 {
        if x >= lo {
            v
        } else {
            0.0
        }
    }
    #[inline(always)]
    unsafe fn zero() -> f32 {
        0.0
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> f32 {
        x
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> f32 {
        *p
    }
    #[inline(always)]
    unsafe fn load_bf16(p: *const bf16) -> f32 {
        // The bits shifted up, as the vector levels widen (NaN payloads kept as they are).
        f32::from_bits(u32::from((*p).to_bits()) << 16)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: f32) {
        *p = v
    }
    #[inline(always)]
    unsafe fn add(a: f32, b: f32) -> f32 {
        a + b
    }
    #[inline(always)]
    unsafe fn sub(a: f32, b: f32) -> f32 {
        a - b
    }
    #[inline(always)]
    unsafe fn mul(a: f32, b: f32) -> f32 {
        a * b
    }
    #[inline(always)]
    unsafe fn fma(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
    #[inline(always)]
    unsafe fn div(a: f32, b: f32) -> f32 {
        a / b
    }
    #[inline(always)]
    unsafe fn transpose(v: &mut [f32]) {
        debug_assert_eq!(v.len(), 1);
    }
    #[inline(always)]
    unsafe fn load_first(p: *const f32, n: usize) -> f32 {
        if n > 0 {
            *p
        } else {
            0.0
        }
    }
    #[inline(always)]
    unsafe fn store_first(p: *mut f32, v: f32, n: usize) {
        if n > 0 {
            *p = v
        }
    }
    #[inline(always)]
    unsafe fn enter<R>(f: impl FnOnce() -> R) -> R {
        f()
    }
    #[inline(always)]
    unsafe fn max(a: f32, b: f32) -> f32 {
        a.max(b)
    }
    #[inline(always)]
    unsafe fn hsum(v: f32) -> f32 {
        v
    }
}

/// AVX2 + FMA, 8 lanes.
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx2;

#[cfg(target_arch = "x86_64")]
impl Simd for Avx2 {
    const REGS: usize = 16;
    #[inline(always)]
    unsafe fn round(a: __m256) -> __m256 {
        _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a)
    }
    #[inline(always)]
    unsafe fn pow2i(n: __m256) -> __m256 {
        let e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
        _mm256_castsi256_ps(_mm256_slli_epi32::<23>(e))
    }
    #[inline(always)]
    unsafe fn zero_below(v: __m256, x: __m256, lo: __m256) -> __m256 {
        _mm256_and_ps(v, _mm256_cmp_ps::<_CMP_GE_OQ>(x, lo))
    }
    #[inline(always)]
    unsafe fn prefetch<T>(p: *const T) {
        _mm_prefetch::<_MM_HINT_T0>(p as *const i8)
    }
    #[inline(always)]
    unsafe fn prefetch_l2<T>(p: *const T) {
        _mm_prefetch::<_MM_HINT_T1>(p as *const i8)
    }
    const LANES: usize = 8;
    type V = __m256;
    #[inline(always)]
    unsafe fn zero() -> __m256 {
        _mm256_setzero_ps()
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m256 {
        _mm256_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        _mm256_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn load_bf16(p: *const bf16) -> __m256 {
        let h = _mm_loadu_si128(p as *const __m128i);
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        _mm256_storeu_ps(p, v)
    }
    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        _mm256_add_ps(a, b)
    }
    #[inline(always)]
    unsafe fn sub(a: __m256, b: __m256) -> __m256 {
        _mm256_sub_ps(a, b)
    }
    #[inline(always)]
    unsafe fn mul(a: __m256, b: __m256) -> __m256 {
        _mm256_mul_ps(a, b)
    }
    #[inline(always)]
    unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
        _mm256_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn div(a: __m256, b: __m256) -> __m256 {
        _mm256_div_ps(a, b)
    }
    #[inline(always)]
    unsafe fn transpose(v: &mut [__m256]) {
        // Plain loops over arrays (no closures), so everything inlines into the caller's
        // AVX2 context.
        let r: &mut [__m256; 8] = v.try_into().expect("8 rows");
        let mut t = [_mm256_setzero_ps(); 8];
        for i in (0..8).step_by(2) {
            t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
            t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
        }
        // s[4h + c]: columns c and c+4 of rows 4h..4h+4 (one per 128-bit half).
        let mut s = [_mm256_setzero_ps(); 8];
        for h in 0..2 {
            for j in 0..2 {
                let (a, b) = (t[4 * h + j], t[4 * h + 2 + j]);
                s[4 * h + 2 * j] = _mm256_shuffle_ps::<0x44>(a, b);
                s[4 * h + 2 * j + 1] = _mm256_shuffle_ps::<0xEE>(a, b);
            }
        }
        for c in 0..4 {
            r[c] = _mm256_permute2f128_ps::<0x20>(s[c], s[4 + c]);
            r[c + 4] = _mm256_permute2f128_ps::<0x31>(s[c], s[4 + c]);
        }
    }
    #[inline(always)]
    unsafe fn load_first(p: *const f32, n: usize) -> __m256 {
        _mm256_maskload_ps(p, avx2_mask(n))
    }
    #[inline(always)]
    unsafe fn store_first(p: *mut f32, v: __m256, n: usize) {
        _mm256_maskstore_ps(p, avx2_mask(n), v)
    }
    #[inline(always)]
    unsafe fn enter<R>(f: impl FnOnce() -> R) -> R {
        with_avx2(f)
    }
    #[inline(always)]
    unsafe fn max(a: __m256, b: __m256) -> __m256 {
        _mm256_max_ps(a, b)
    }
    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }
}

/// Lanes `< n` all ones (an AVX2 mask for the first `n ≤ 8` lanes).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn avx2_mask(n: usize) -> __m256i {
    _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
}

/// AVX-512 (F/BW/VL) + FMA, 16 lanes.
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx512;

#[cfg(target_arch = "x86_64")]
impl Simd for Avx512 {
    const REGS: usize = 32;
    #[inline(always)]
    unsafe fn round(a: __m512) -> __m512 {
        _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a)
    }
    #[inline(always)]
    unsafe fn pow2i(n: __m512) -> __m512 {
        let e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
        _mm512_castsi512_ps(_mm512_slli_epi32::<23>(e))
    }
    #[inline(always)]
    unsafe fn zero_below(v: __m512, x: __m512, lo: __m512) -> __m512 {
        _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, lo), v)
    }
    #[inline(always)]
    unsafe fn prefetch<T>(p: *const T) {
        _mm_prefetch::<_MM_HINT_T0>(p as *const i8)
    }
    #[inline(always)]
    unsafe fn prefetch_l2<T>(p: *const T) {
        _mm_prefetch::<_MM_HINT_T1>(p as *const i8)
    }
    const LANES: usize = 16;
    type V = __m512;
    #[inline(always)]
    unsafe fn zero() -> __m512 {
        _mm512_setzero_ps()
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        _mm512_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        _mm512_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn load_bf16(p: *const bf16) -> __m512 {
        let h = _mm256_loadu_si256(p as *const __m256i);
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        _mm512_storeu_ps(p, v)
    }
    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        _mm512_add_ps(a, b)
    }
    #[inline(always)]
    unsafe fn sub(a: __m512, b: __m512) -> __m512 {
        _mm512_sub_ps(a, b)
    }
    #[inline(always)]
    unsafe fn mul(a: __m512, b: __m512) -> __m512 {
        _mm512_mul_ps(a, b)
    }
    #[inline(always)]
    unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
        _mm512_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn div(a: __m512, b: __m512) -> __m512 {
        _mm512_div_ps(a, b)
    }
    #[inline(always)]
    unsafe fn transpose(v: &mut [__m512]) {
        // Plain loops over arrays (no closures), so everything inlines into the caller's
        // AVX-512 context.
        let r: &mut [__m512; 16] = v.try_into().expect("16 rows");
        let mut t = [_mm512_setzero_ps(); 16];
        for i in (0..16).step_by(2) {
            t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
            t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
        }
        // u[4h + c]: column 4q + c of rows 4h..4h+4, in 128-bit block q.
        let mut u = [_mm512_setzero_ps(); 16];
        for h in 0..4 {
            for j in 0..2 {
                let (a, b) = (_mm512_castps_pd(t[4 * h + j]), _mm512_castps_pd(t[4 * h + 2 + j]));
                u[4 * h + 2 * j] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
                u[4 * h + 2 * j + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
            }
        }
        // w[8g + 4s + c] (g: rows 0-7 or 8-15): columns c + 4s and c + 4s + 8 of those rows.
        let mut w = [_mm512_setzero_ps(); 16];
        for g in 0..2 {
            for c in 0..4 {
                let (a, b) = (u[8 * g + c], u[8 * g + 4 + c]);
                w[8 * g + c] = _mm512_shuffle_f32x4::<0x88>(a, b);
                w[8 * g + 4 + c] = _mm512_shuffle_f32x4::<0xDD>(a, b);
            }
        }
        for i in 0..8 {
            r[i] = _mm512_shuffle_f32x4::<0x88>(w[i], w[8 + i]);
            r[i + 8] = _mm512_shuffle_f32x4::<0xDD>(w[i], w[8 + i]);
        }
    }
    #[inline(always)]
    unsafe fn load_first(p: *const f32, n: usize) -> __m512 {
        _mm512_maskz_loadu_ps(((1u32 << n) - 1) as u16, p)
    }
    #[inline(always)]
    unsafe fn store_first(p: *mut f32, v: __m512, n: usize) {
        _mm512_mask_storeu_ps(p, ((1u32 << n) - 1) as u16, v)
    }
    #[inline(always)]
    unsafe fn enter<R>(f: impl FnOnce() -> R) -> R {
        with_avx512(f)
    }
    #[inline(always)]
    unsafe fn max(a: __m512, b: __m512) -> __m512 {
        _mm512_max_ps(a, b)
    }
    #[inline(always)]
    unsafe fn hsum(v: __m512) -> f32 {
        let s = _mm256_add_ps(
            _mm512_castps512_ps256(v),
            _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v))),
        );
        Avx2::hsum(s)
    }
}

/// Runs `f` with AVX2 and FMA enabled. Safety: the CPU must support both.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn with_avx2<R, F: FnOnce() -> R>(f: F) -> R {
    f()
}

/// Runs `f` with AVX-512F/BW/VL, AVX2 and FMA enabled. Safety: the CPU must support them.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
pub(crate) unsafe fn with_avx512<R, F: FnOnce() -> R>(f: F) -> R {
    f()
}

/// `dispatch!(S => expr)`: evaluates `expr` with the type alias `S` bound to the best [`Simd`]
/// implementation for [`level`], inside a function compiled for that level's features.
macro_rules! dispatch {
    ($s:ident => $body:expr) => {{
        #[cfg(target_arch = "x86_64")]
        {
            use $crate::cpu::simd::{level, with_avx2, with_avx512, Level};
            match level() {
                // SAFETY: `level()` never exceeds what the CPU reports.
                Level::Avx512 => unsafe {
                    with_avx512(
                        #[inline(always)]
                        || {
                            #[allow(dead_code)]
                            type $s = $crate::cpu::simd::Avx512;
                            $body
                        },
                    )
                },
                Level::Avx2 => unsafe {
                    with_avx2(
                        #[inline(always)]
                        || {
                            #[allow(dead_code)]
                            type $s = $crate::cpu::simd::Avx2;
                            $body
                        },
                    )
                },
                Level::Scalar => {
                    #[allow(dead_code)]
                    type $s = $crate::cpu::simd::Scalar;
                    $body
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            #[allow(dead_code)]
            type $s = $crate::cpu::simd::Scalar;
            $body
        }
    }};
}
pub(crate) use dispatch;

/// A weight element: f32 or bf16 (the checkpoint's raw bits).
pub(crate) trait Elem: Copy + Send + Sync + 'static {
    /// `S::LANES` elements from `p`, as f32.
    ///
    /// # Safety
    /// `p` must cover `S::LANES` elements and `S`'s instruction set must be available.
    unsafe fn load<S: Simd>(p: *const Self) -> S::V;
    /// This element as f32 (exact).
    fn to_f32(self) -> f32;
}

impl Elem for f32 {
    #[inline(always)]
    unsafe fn load<S: Simd>(p: *const f32) -> S::V {
        S::load(p)
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

impl Elem for bf16 {
    #[inline(always)]
    unsafe fn load<S: Simd>(p: *const bf16) -> S::V {
        S::load_bf16(p)
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f32::from_bits(u32::from(self.to_bits()) << 16)
    }
}

/// The most f32 lanes of any level (AVX-512).
pub(crate) const MAX_LANES: usize = 16;

/// `Σ a_i·b_i` over `a.len()` elements (`b` at least as long), 4 vector accumulators.
#[inline(always)]
pub(crate) fn dot<S: Simd, A: Elem>(a: &[A], b: &[f32]) -> f32 {
    let n = a.len();
    assert!(b.len() >= n);
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let l = S::LANES;
    let mut i = 0;
    // SAFETY: every load stays below n, and `b` has at least n elements.
    unsafe {
        let mut acc = [S::zero(); 4];
        while i + 4 * l <= n {
            for (u, a) in acc.iter_mut().enumerate() {
                *a = S::fma(A::load::<S>(pa.add(i + u * l)), S::load(pb.add(i + u * l)), *a);
            }
            i += 4 * l;
        }
        while i + l <= n {
            acc[0] = S::fma(A::load::<S>(pa.add(i)), S::load(pb.add(i)), acc[0]);
            i += l;
        }
        let mut s = S::hsum(S::add(S::add(acc[0], acc[1]), S::add(acc[2], acc[3])));
        while i < n {
            s += (*pa.add(i)).to_f32() * *pb.add(i);
            i += 1;
        }
        s
    }
}

/// `y_i += a·x_i` over `y.len()` elements (`x` at least as long).
#[inline(always)]
pub(crate) fn axpy<S: Simd>(y: &mut [f32], a: f32, x: &[f32]) {
    let n = y.len();
    assert!(x.len() >= n);
    let (py, px) = (y.as_mut_ptr(), x.as_ptr());
    let l = S::LANES;
    let mut i = 0;
    // SAFETY: every access stays below n ≤ len of both slices.
    unsafe {
        let va = S::splat(a);
        while i + l <= n {
            S::store(py.add(i), S::fma(S::load(px.add(i)), va, S::load(py.add(i))));
            i += l;
        }
        while i < n {
            *py.add(i) += a * *px.add(i);
            i += 1;
        }
    }
}

/// `Σ x_i²` over `x`.
#[inline(always)]
pub(crate) fn sum_sq<S: Simd>(x: &[f32]) -> f32 {
    dot::<S, f32>(x, x)
}

/// `x_i *= a` over `x`.
#[inline(always)]
pub(crate) fn scale<S: Simd>(x: &mut [f32], a: f32) {
    let n = x.len();
    let p = x.as_mut_ptr();
    let l = S::LANES;
    let mut i = 0;
    // SAFETY: every access stays below n.
    unsafe {
        let va = S::splat(a);
        while i + l <= n {
            S::store(p.add(i), S::mul(S::load(p.add(i)), va));
            i += l;
        }
        while i < n {
            *p.add(i) *= a;
            i += 1;
        }
    }
}

/// Lane-wise `e^x` (Cephes `expf`: range reduction by ln 2 in two parts, degree-5 polynomial;
/// within ~2 ulp of `f32::exp`). Inputs below −87.3 (including −∞) give exactly 0; inputs are
/// capped at 88.3.
#[inline(always)]
pub(crate) unsafe fn exp<S: Simd>(x: S::V) -> S::V {
    let lo = S::splat(-87.3);
    let xc = S::max(x, lo);
    let xc = S::sub(S::zero(), S::max(S::sub(S::zero(), xc), S::splat(-88.3)));
    let n = S::round(S::mul(xc, S::splat(std::f32::consts::LOG2_E)));
    let r = S::fma(n, S::splat(-0.693_359_4), xc);
    let r = S::fma(n, S::splat(2.121_944_4e-4), r);
    let mut p = S::splat(1.987_569_1e-4);
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5] {
        p = S::fma(p, r, S::splat(c));
    }
    let y = S::fma(S::mul(p, r), r, S::add(r, S::splat(1.0)));
    S::zero_below(S::mul(y, S::pow2i(n)), x, lo)
}

/// `e^x` for each element of `x`, in place. The elements past the last whole vector go through
/// the same vector code (padded), so an element's bits do not depend on where it sits in `x` or
/// on `x`'s length (attention's key blocks are shorter in decode than in prefill).
#[inline(always)]
pub(crate) fn exp_in_place<S: Simd>(x: &mut [f32]) {
    let (n, p, l) = (x.len(), x.as_mut_ptr(), S::LANES);
    let mut i = 0;
    // SAFETY: every access stays below n, or inside `tail` (MAX_LANES ≥ l).
    unsafe {
        while i + l <= n {
            S::store(p.add(i), exp::<S>(S::load(p.add(i))));
            i += l;
        }
        if i < n {
            let mut tail = [0.0f32; MAX_LANES];
            tail[..n - i].copy_from_slice(&x[i..]);
            S::store(tail.as_mut_ptr(), exp::<S>(S::load(tail.as_ptr())));
            x[i..].copy_from_slice(&tail[..n - i]);
        }
    }
}

/// Lane-wise `σ(x) = 1 / (1 + e^(−x))` (through [`exp`]).
#[inline(always)]
pub(crate) unsafe fn sigmoid<S: Simd>(x: S::V) -> S::V {
    let one = S::splat(1.0);
    S::div(one, S::add(one, exp::<S>(S::sub(S::zero(), x))))
}

/// Lane-wise `silu(x) = x · σ(x)`.
#[inline(always)]
pub(crate) unsafe fn silu<S: Simd>(x: S::V) -> S::V {
    S::div(x, S::add(S::splat(1.0), exp::<S>(S::sub(S::zero(), x))))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `transpose`, `load_first` and `store_first` at level `S`.
    fn check_level<S: Simd>() {
        let l = S::LANES;
        let m: Vec<f32> = (0..l * l).map(|i| i as f32).collect();
        let mut out = vec![0.0f32; l * l];
        // SAFETY: callers only run levels the CPU has; every pointer covers LANES f32.
        unsafe {
            S::enter(|| {
                let mut v: Vec<S::V> = (0..l).map(|i| S::load(m[i * l..].as_ptr())).collect();
                S::transpose(&mut v);
                v.iter().enumerate().for_each(|(i, &x)| S::store(out[i * l..].as_mut_ptr(), x));
            });
            for i in 0..l {
                for j in 0..l {
                    assert_eq!(out[i * l + j], m[j * l + i], "{} transpose at ({i}, {j})", l);
                }
            }
            for n in 0..=l {
                let mut dst = vec![-1.0f32; l + 1];
                S::enter(|| S::store_first(dst.as_mut_ptr(), S::load_first(m.as_ptr(), n), l));
                let want: Vec<f32> = (0..=l)
                    .map(|i| {
                        if i < n {
                            i as f32
                        } else if i < l {
                            0.0
                        } else {
                            -1.0
                        }
                    })
                    .collect();
                assert_eq!(dst, want, "load_first({n}) at {l} lanes");
                let mut dst = vec![-1.0f32; l];
                S::enter(|| S::store_first(dst.as_mut_ptr(), S::load(m.as_ptr()), n));
                let want: Vec<f32> = (0..l).map(|i| if i < n { i as f32 } else { -1.0 }).collect();
                assert_eq!(dst, want, "store_first({n}) at {l} lanes");
            }
        }
    }

    #[test]
    fn transpose_and_partial_access_every_level() {
        check_level::<Scalar>();
        #[cfg(target_arch = "x86_64")]
        {
            if detected_level() >= Level::Avx2 {
                check_level::<Avx2>();
            }
            if detected_level() >= Level::Avx512 {
                check_level::<Avx512>();
            }
        }
    }
}
