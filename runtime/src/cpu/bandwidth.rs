//! A memory-bandwidth probe: the DRAM floor that decode is measured against (`qgc bench`
//! reports decode time as a ratio to "bytes of weights / read bandwidth").

use super::simd::{dispatch, Simd};
use rayon::prelude::*;
use std::time::Instant;

/// Measured bandwidths, in GB/s (10⁹ bytes per second), each the median of the runs (and the
/// best run, which is the better estimate on a shared, noisy machine).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bandwidth {
    /// `copy`: bytes read plus bytes written per second (2× the buffer per pass).
    pub copy_gbs: f64,
    /// Read-only streaming (a vector sum over the buffer), the floor for GEMV-bound decode.
    pub read_gbs: f64,
    /// Best copy run.
    pub copy_best_gbs: f64,
    /// Best read run.
    pub read_best_gbs: f64,
    /// Buffer size used, in bytes.
    pub bytes: usize,
    /// Threads used (the current rayon pool).
    pub threads: usize,
}

/// Probes bandwidth with two buffers of `bytes` each (use several × the last-level cache, e.g.
/// 256 MiB) over `runs` timed passes (median), on the current rayon pool. The buffers are
/// touched once before timing so page faults are not measured.
pub fn probe(bytes: usize, runs: usize) -> Bandwidth {
    let n = (bytes / 4).max(1024);
    let src: Vec<f32> = (0..n).into_par_iter().map(|i| (i % 7) as f32).collect();
    let mut dst = vec![0.0f32; n];
    dst.par_chunks_mut(1 << 16).for_each(|c| c.fill(1.0));
    let chunk = (n / (4 * rayon::current_num_threads().max(1))).max(1 << 14);
    let mut copy = Vec::with_capacity(runs);
    let mut read = Vec::with_capacity(runs);
    let mut sink = 0.0f32;
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        dst.par_chunks_mut(chunk).zip(src.par_chunks(chunk)).for_each(|(d, s)| d.copy_from_slice(s));
        copy.push(2.0 * (n * 4) as f64 / t.elapsed().as_secs_f64() / 1e9);
        let t = Instant::now();
        sink += src.par_chunks(chunk).map(|c| dispatch!(S => sum::<S>(c))).sum::<f32>();
        read.push((n * 4) as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    std::hint::black_box((sink, &dst));
    Bandwidth {
        copy_gbs: median(&mut copy),
        read_gbs: median(&mut read),
        copy_best_gbs: copy.iter().copied().fold(0.0, f64::max),
        read_best_gbs: read.iter().copied().fold(0.0, f64::max),
        bytes: n * 4,
        threads: rayon::current_num_threads(),
    }
}

/// One read pass over `bytes` on the current rayon pool (a vector sum of its 4-byte words,
/// returned so the pass cannot be optimised away): times the DRAM floor for exactly the bytes a
/// kernel streams, e.g. a weight matrix.
pub fn read_pass(bytes: &[u8]) -> f32 {
    // SAFETY: any 4 bytes are a valid f32 bit pattern; the prefix/suffix are skipped.
    let (_, words, _) = unsafe { bytes.align_to::<f32>() };
    let chunk = (words.len() / (4 * rayon::current_num_threads().max(1))).max(1 << 14);
    words.par_chunks(chunk).map(|c| dispatch!(S => sum::<S>(c))).sum()
}

/// The median of `v` (the upper one for an even length), sorting `v`.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Sum of `x` with 4 vector accumulators.
#[inline(always)]
fn sum<S: Simd>(x: &[f32]) -> f32 {
    let (n, p, l) = (x.len(), x.as_ptr(), S::LANES);
    let mut i = 0;
    // SAFETY: every load stays below n.
    unsafe {
        let mut acc = [S::zero(); 4];
        while i + 4 * l <= n {
            for (u, a) in acc.iter_mut().enumerate() {
                *a = S::add(*a, S::load(p.add(i + u * l)));
            }
            i += 4 * l;
        }
        let mut s = S::hsum(S::add(S::add(acc[0], acc[1]), S::add(acc[2], acc[3])));
        s += x[i..].iter().sum::<f32>();
        s
    }
}
