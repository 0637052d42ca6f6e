//! [`Wide`]: an 8-lane vector in portable code (`[f32; 8]`, lane-wise loops the compiler turns
//! into whatever SIMD the target has, SSE2 or NEON), for the GEMV at the scalar level.
//!
//! The GEMV sums every output in one order per level ([`GemvRows`](super::gemv)): one vector
//! accumulator over the row. At the one-lane [`Scalar`](super::simd) level that is a single
//! sequential sum, which no compiler may vectorise; with `Wide` the scalar level's order is eight
//! interleaved sums instead, as fast as the old four-accumulator loop and the same for every
//! number of token rows. No instruction set is assumed.

use super::simd::Simd;
use half::bf16;

/// Eight f32 lanes in portable code (see the module docs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wide;

type V8 = [f32; 8];

#[inline(always)]
fn map(a: V8, f: impl Fn(f32) -> f32) -> V8 {
    a.map(f)
}

#[inline(always)]
fn zip(a: V8, b: V8, f: impl Fn(f32, f32) -> f32) -> V8 {
    std::array::from_fn(|i| f(a[i], b[i]))
}

impl Simd for Wide {
    const LANES: usize = 8;
    const REGS: usize = 16;
    type V = V8;
    #[inline(always)]
    unsafe fn zero() -> V8 {
        [0.0; 8]
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> V8 {
        [x; 8]
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> V8 {
        std::ptr::read_unaligned(p as *const V8)
    }
    #[inline(always)]
    unsafe fn load_bf16(p: *const bf16) -> V8 {
        let h = std::ptr::read_unaligned(p as *const [u16; 8]);
        h.map(|b| f32::from_bits(u32::from(b) << 16))
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: V8) {
        std::ptr::write_unaligned(p as *mut V8, v)
    }
    #[inline(always)]
    unsafe fn add(a: V8, b: V8) -> V8 {
        zip(a, b, |x, y| x + y)
    }
    #[inline(always)]
    unsafe fn sub(a: V8, b: V8) -> V8 {
        zip(a, b, |x, y| x - y)
    }
    #[inline(always)]
    unsafe fn mul(a: V8, b: V8) -> V8 {
        zip(a, b, |x, y| x * y)
    }
    #[inline(always)]
    unsafe fn fma(a: V8, b: V8, c: V8) -> V8 {
        // Unfused, as the scalar level: no FMA instruction is assumed.
        std::array::from_fn(|i| a[i] * b[i] + c[i])
    }
    #[inline(always)]
    unsafe fn div(a: V8, b: V8) -> V8 {
        zip(a, b, |x, y| x / y)
    }
    #[inline(always)]
    unsafe fn transpose(v: &mut [V8]) {
        assert_eq!(v.len(), 8);
        let m: [V8; 8] = std::array::from_fn(|i| v[i]);
        for (i, row) in v.iter_mut().enumerate() {
            *row = std::array::from_fn(|j| m[j][i]);
        }
    }
    #[inline(always)]
    unsafe fn load_first(p: *const f32, n: usize) -> V8 {
        std::array::from_fn(|i| if i < n { *p.add(i) } else { 0.0 })
    }
    #[inline(always)]
    unsafe fn store_first(p: *mut f32, v: V8, n: usize) {
        for (i, &x) in v.iter().enumerate().take(n) {
            *p.add(i) = x;
        }
    }
    #[inline(always)]
    unsafe fn enter<R>(f: impl FnOnce() -> R) -> R {
        f()
    }
    #[inline(always)]
    unsafe fn max(a: V8, b: V8) -> V8 {
        zip(a, b, f32::max)
    }
    #[inline(always)]
    unsafe fn hsum(v: V8) -> f32 {
        // Halves, then quarters, then pairs (the order AVX2's `hsum` uses).
        let h: [f32; 4] = std::array::from_fn(|i| v[i] + v[i + 4]);
        let q = [h[0] + h[2], h[1] + h[3]];
        q[0] + q[1]
    }
    #[inline(always)]
    unsafe fn round(a: V8) -> V8 {
        map(a, f32::round_ties_even)
    }
    #[inline(always)]
    unsafe fn pow2i(n: V8) -> V8 {
        map(n, |x| f32::from_bits(((x as i32 + 127) as u32) << 23))
    }
    #[inline(always)]
    unsafe fn zero_below(v: V8, x: V8, lo: V8) -> V8 {
        std::array::from_fn(|i| if x[i] >= lo[i] { v[i] } else { 0.0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_transpose_and_partial_access() {
        let m: Vec<f32> = (0..64).map(|i| i as f32).collect();
        // SAFETY: every pointer covers 8 f32 (or bf16) and `Wide` needs no instruction set.
        unsafe {
            let mut v: Vec<V8> = (0..8).map(|i| Wide::load(m[i * 8..].as_ptr())).collect();
            Wide::transpose(&mut v);
            for (i, row) in v.iter().enumerate() {
                for (j, &x) in row.iter().enumerate() {
                    assert_eq!(x, m[j * 8 + i]);
                }
            }
            assert_eq!(Wide::hsum(Wide::load(m.as_ptr())), 28.0);
            let b: Vec<bf16> = m[..8].iter().map(|&x| bf16::from_f32(x)).collect();
            assert_eq!(Wide::load_bf16(b.as_ptr()), Wide::load(m.as_ptr()));
            let mut d = [-1.0f32; 8];
            Wide::store_first(d.as_mut_ptr(), Wide::load_first(m[1..].as_ptr(), 3), 5);
            assert_eq!(d, [1.0, 2.0, 3.0, 0.0, 0.0, -1.0, -1.0, -1.0]);
        }
    }
}
