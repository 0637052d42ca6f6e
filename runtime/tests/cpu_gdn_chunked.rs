//! `cpu::gdn_chunked` (the chunked gated delta rule) against the interpreter's `GatedDeltaRule`
//! on odd shapes with realistic gates, at every SIMD level and in 1- and 3-thread pools; against
//! itself across thread counts and split runs; and against the recurrent kernel.

mod cpu_common;

use cpu_common::*;
use qgc_runtime::cpu::gdn::{gated_delta_rule, GdnDims, GdnInputs};
use qgc_runtime::cpu::gdn_chunked::{
    gated_delta_rule_auto, gated_delta_rule_chunked, use_chunked, CHUNKED_MIN_TOKENS, DEFAULT_CHUNK,
};
use qgc_runtime::cpu::{detected_level, set_level, HeadLayout, Level};

const TOL: f32 = 1e-5;

/// One case: shape, chunk length, and how strong the decay gates are.
#[derive(Debug, Clone, Copy)]
struct Case {
    b: usize,
    s: usize,
    hk: usize,
    hv: usize,
    dk: usize,
    dv: usize,
    chunk: usize,
    /// `A_log` is drawn from `U(-1, a_log_max)`; 1.5 gives log-decays down to about −5.
    a_log_max: f32,
}

/// Inputs as the model makes them: q, k, v inside one conv-output-like buffer `[B·S, q|k|v]`
/// (read strided), q and k l2-normalised (q scaled by `Dk^-½`), `g = −exp(A_log)·softplus(a +
/// dt_bias)`, `β = σ(b)`, and a random non-zero initial state.
struct Inputs {
    buf: Vec<f32>,
    ql: HeadLayout,
    kl: HeadLayout,
    vl: HeadLayout,
    g: Vec<f32>,
    beta: Vec<f32>,
    state: Vec<f32>,
}

impl Inputs {
    fn new(c: Case, seed: u64) -> Inputs {
        let mut rng = Rng::new(seed);
        let tok = c.b * c.s;
        let width = 2 * c.hk * c.dk + c.hv * c.dv;
        let mut buf = rvec(&mut rng, tok * width, -1.0, 1.0);
        let ql = HeadLayout { tokens: tok, heads: c.hk, d: c.dk, token_stride: width, head_stride: c.dk, offset: 0 };
        let kl = HeadLayout { offset: c.hk * c.dk, ..ql };
        let vl = HeadLayout { heads: c.hv, d: c.dv, head_stride: c.dv, offset: 2 * c.hk * c.dk, ..ql };
        qgc_runtime::cpu::norm::l2_norm_scale(&mut buf, ql, 1e-6, 1.0 / (c.dk as f32).sqrt());
        qgc_runtime::cpu::norm::l2_norm_scale(&mut buf, kl, 1e-6, 1.0);
        let a_log = rvec(&mut rng, c.hv, -1.0, c.a_log_max);
        let dt_bias = rvec(&mut rng, c.hv, -1.0, 1.0);
        let (a, bl) = (rvec(&mut rng, tok * c.hv, -3.0, 1.0), rvec(&mut rng, tok * c.hv, -4.0, 4.0));
        let (mut g, mut beta) = (vec![0.0; tok * c.hv], vec![0.0; tok * c.hv]);
        qgc_runtime::cpu::gdn::gdn_gates(&a, &bl, &a_log, &dt_bias, tok, c.hv, &mut g, &mut beta);
        let state = rvec(&mut rng, c.b * c.hv * c.dk * c.dv, -1.0, 1.0);
        Inputs { buf, ql, kl, vl, g, beta, state }
    }

    /// The kernel's view of tokens `t0..t0+n` of every row (`t0 = 0`, `n = S` for all of them;
    /// a part of a single-row call otherwise).
    fn view(&self, hv: usize, t0: usize, n: usize) -> GdnInputs<'_> {
        let w = self.ql.token_stride;
        let part = |l: HeadLayout| HeadLayout { tokens: n, ..l };
        GdnInputs {
            q: &self.buf[t0 * w..],
            ql: part(self.ql),
            k: &self.buf[t0 * w..],
            kl: part(self.kl),
            v: &self.buf[t0 * w..],
            vl: part(self.vl),
            g: &self.g[t0 * hv..],
            beta: &self.beta[t0 * hv..],
        }
    }
}

/// The chunked kernel against `GatedDeltaRule` (the interpreter's f64 recurrence); checks the
/// output and the new state; returns the larger error.
fn case(c: Case, seed: u64) -> f32 {
    let inp = Inputs::new(c, seed);
    let Case { b, s, hk, hv, dk, dv, chunk, .. } = c;
    let gather = |l: HeadLayout| -> Vec<f32> {
        (0..l.tokens)
            .flat_map(|t| (0..l.heads).flat_map(move |h| (0..l.d).map(move |d| (t, h, d))))
            .map(|(t, h, d)| inp.buf[l.at(t, h) + d])
            .collect()
    };
    let ins = [
        t(&[b, s, hk, dk], gather(inp.ql)),
        t(&[b, s, hk, dk], gather(inp.kl)),
        t(&[b, s, hv, dv], gather(inp.vl)),
        t(&[b, s, hv], inp.g.clone()),
        t(&[b, s, hv], inp.beta.clone()),
        t(&[b, hv, dk, dv], inp.state.clone()),
    ];
    let r = eval(Op::GatedDeltaRule { chunk: None }, &ins.iter().collect::<Vec<_>>());
    let (mut state, mut out) = (inp.state.clone(), vec![f32::NAN; b * s * hv * dv]);
    gated_delta_rule_chunked(
        inp.view(hv, 0, b * s),
        GdnDims { batch: b, s, hk, hv, dk, dv },
        chunk,
        &mut state,
        &mut out,
    );
    let what = format!("gated_delta_rule_chunked {c:?}");
    let e = check(&what, &out, f(&r[0]), TOL);
    e.max(check(&format!("{what} state"), &state, f(&r[1]), TOL))
}

fn shape(b: usize, s: usize, hk: usize, hv: usize, dk: usize, dv: usize, chunk: usize) -> Case {
    Case { b, s, hk, hv, dk, dv, chunk, a_log_max: 1.5 }
}

/// Odd sizes: S below, at, and not a multiple of the chunk; Hv/Hk = 1, 2, 4; Dk ≠ Dv, neither a
/// multiple of 64; batch 2; chunk lengths that are not multiples of a vector.
fn odd_cases() -> Vec<Case> {
    vec![
        shape(1, 1, 1, 1, 5, 3, 64),
        shape(1, 20, 1, 1, 16, 24, 64),
        shape(2, 150, 2, 4, 32, 48, 64),
        shape(1, 100, 2, 2, 40, 24, 32),
        shape(2, 70, 1, 4, 24, 17, 32),
        shape(1, 64, 1, 2, 9, 33, 64),
        shape(2, 45, 2, 4, 19, 21, 16),
        shape(1, 61, 1, 1, 33, 9, 7),
        shape(1, 13, 1, 2, 8, 8, 1),
        shape(1, 90, 1, 1, 20, 70, 100),
    ]
}

#[test]
fn chunked_matches_the_interpreter_at_odd_sizes_on_every_level() {
    for want in [Level::Scalar, Level::Avx2, Level::Avx512] {
        if want > detected_level() {
            eprintln!("skipping {want:?}: not supported by this CPU");
            continue;
        }
        assert_eq!(set_level(want), want);
        eprintln!("level {want:?}");
        for (i, c) in odd_cases().into_iter().enumerate() {
            case(c, 100 + i as u64);
        }
    }
    set_level(detected_level());
}

#[test]
fn chunked_matches_the_interpreter_at_model_head_sizes() {
    in_pools(|_| {
        // Qwen3-Next head dims with fewer heads and tokens: partial last chunks, r = 2.
        case(shape(1, 150, 2, 4, 128, 128, 64), 7);
        case(shape(1, 150, 2, 4, 128, 128, DEFAULT_CHUNK), 17);
        // Batch 2, Dk ≠ Dv, r = 4, and strong decay (log-decays down to about −35).
        case(Case { a_log_max: 2.8, ..shape(2, 100, 1, 4, 128, 64, 64) }, 8);
        case(shape(1, 40, 2, 2, 128, 128, 16), 9);
    });
}

#[test]
fn chunked_results_do_not_depend_on_the_thread_count() {
    // One thread runs each key head's value heads in one task (sharing K Kᵀ, Q Kᵀ); five
    // threads split them. Both must give the same bits.
    for c in [shape(1, 77, 2, 4, 64, 48, 32), shape(2, 50, 1, 2, 19, 21, 16)] {
        let inp = Inputs::new(c, 21);
        let dims = GdnDims { batch: c.b, s: c.s, hk: c.hk, hv: c.hv, dk: c.dk, dv: c.dv };
        let mut runs = vec![];
        for threads in [1usize, 5] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
            let (mut st, mut out) = (inp.state.clone(), vec![f32::NAN; c.b * c.s * c.hv * c.dv]);
            pool.install(|| gated_delta_rule_chunked(inp.view(c.hv, 0, c.b * c.s), dims, c.chunk, &mut st, &mut out));
            runs.push((st, out));
        }
        check(&format!("{c:?} 1 vs 5 threads"), &runs[0].1, &runs[1].1, 0.0);
        check(&format!("{c:?} 1 vs 5 threads state"), &runs[0].0, &runs[1].0, 0.0);
    }
}

#[test]
fn chunked_continues_split_runs_and_matches_the_recurrent_kernel() {
    // 150 tokens in one call equal 70 then 80 through the carried state, and the recurrence.
    let c = shape(1, 150, 2, 4, 64, 32, DEFAULT_CHUNK);
    let inp = Inputs::new(c, 11);
    let dims = |s| GdnDims { batch: 1, s, hk: c.hk, hv: c.hv, dk: c.dk, dv: c.dv };
    let n_out = 150 * c.hv * c.dv;
    let (mut st_all, mut out_all) = (inp.state.clone(), vec![0.0; n_out]);
    gated_delta_rule_chunked(inp.view(c.hv, 0, 150), dims(150), c.chunk, &mut st_all, &mut out_all);
    let (mut st, mut out) = (inp.state.clone(), vec![0.0; n_out]);
    for (t0, n) in [(0usize, 70usize), (70, 80)] {
        let o = &mut out[t0 * c.hv * c.dv..];
        gated_delta_rule_chunked(inp.view(c.hv, t0, n), dims(n), c.chunk, &mut st, o);
    }
    check("chunked 70+80 vs 150", &out, &out_all, TOL);
    check("chunked 70+80 vs 150 state", &st, &st_all, TOL);
    let (mut st_r, mut out_r) = (inp.state.clone(), vec![0.0; n_out]);
    gated_delta_rule(inp.view(c.hv, 0, 150), dims(150), &mut st_r, &mut out_r);
    check("chunked vs recurrent kernel", &out_all, &out_r, TOL);
    check("chunked vs recurrent kernel state", &st_all, &st_r, TOL);
}

#[test]
fn auto_picks_by_length_and_keeps_decode_recurrent() {
    assert!(!use_chunked(1) && !use_chunked(CHUNKED_MIN_TOKENS - 1));
    assert!(use_chunked(CHUNKED_MIN_TOKENS) && use_chunked(512) && use_chunked(4096));
    for s in [1, 4, CHUNKED_MIN_TOKENS, 45] {
        let c = shape(1, s, 1, 2, 32, 16, DEFAULT_CHUNK);
        let inp = Inputs::new(c, 31 + s as u64);
        let dims = GdnDims { batch: 1, s, hk: c.hk, hv: c.hv, dk: c.dk, dv: c.dv };
        let (mut st, mut out) = (inp.state.clone(), vec![f32::NAN; s * c.hv * c.dv]);
        gated_delta_rule_auto(inp.view(c.hv, 0, s), dims, &mut st, &mut out);
        let (mut st_r, mut out_r) = (inp.state.clone(), vec![f32::NAN; s * c.hv * c.dv]);
        gated_delta_rule(inp.view(c.hv, 0, s), dims, &mut st_r, &mut out_r);
        check(&format!("auto vs recurrent S={s}"), &out, &out_r, TOL);
        check(&format!("auto vs recurrent S={s} state"), &st, &st_r, TOL);
    }
}
