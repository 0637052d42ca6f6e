//! What the differential property tests share (`compiled_differential.rs`: the compiled CPU
//! backend, `cuda_differential.rs`: the CUDA backend on the PTX interpreter, each against the
//! reference interpreter): the error measures and tolerances with the interpreter's noise floor
//! ([`check`]), the random-graph generator ([`gen`], from `passes/tests/gen`) and its inputs,
//! the random model specs and scripts, and the [`trace`] of a script through `Session`s of any
//! [`Backend`].
#![allow(dead_code)]

#[path = "../../../passes/tests/gen/mod.rs"]
pub mod gen;

use proptest::prelude::*;
use qgc_ir::interp::{Rng, Tensor};
use qgc_ir::spec::{
    AttnSpec, DenseSpec, FfnSpec, GdnSpec, LayerItem, LayerSpec, MixerSpec, MoeSpec, MtpFile, SharedExpertSpec,
};
use qgc_ir::{Bindings, LowerOptions, Program, SpecFile};
use qgc_runtime::{Backend, Session};
use std::collections::BTreeMap;
use std::ops::RangeInclusive;

/// Logits and graph outputs: relative to the largest |value| of the interpreter's tensor.
pub const TOL: f64 = 1e-5;

/// State tensors (KV caches, conv and delta-rule state) carry every layer's rounding without
/// the final norm's averaging (as in `tests/backend.rs`).
pub const STATE_TOL: f64 = 1e-4;

/// How far beyond TOL/STATE_TOL an entry may go where the interpreter itself is that
/// sensitive: within NOISE_FACTOR times the largest change that perturbing the weights (and, for
/// graphs, the inputs) by f32 rounding noise ([`perturb`], NOISE_RUNS draws) makes to the
/// interpreter's own result, and never above NOISE_CAP. The floor is only measured for a case
/// with an entry above its tolerance (a few percent of model cases, fewer graphs).
///
/// Why: some draws are ill-conditioned, and there the compiled backend's f32 rounding (summation
/// order, f32 accumulation where the interpreter uses f64) is amplified like any other rounding.
/// - Graphs: an RMSNorm over a last dim of 1 (a 1-column matmul or slice) of a value near 0
///   amplifies the matmul's rounding by up to 1/sqrt(eps) = 1000 (measured: `rms_norm(m + m)`,
///   m a 1-column matmul, 1.15e-5; its floor 1.5e-5).
/// - Models, measured on a 3-layer GDN model (hidden 13, Dk 3..5): the last layer's first-token
///   delta-rule output has rms 1.5e-4, below sqrt(eps = 1e-6), so its gated RMSNorm multiplies
///   the rounding of that output (3.5e-8 absolute, 4e-7 of the tensor's max) by ~1000 and the
///   logits differ by 2.3e-5; perturbing the weights by 2^-24 (half an ulp) moved the
///   interpreter's own logits by 7e-7..1.9e-5 (by 2^-23: 3.8e-6..2.8e-5). Over ~8000 random
///   model cases, 3% had an entry above TOL (largest 2.4e-4, floor 1.6e-4); the error was at
///   most 6.2 times the floor of 3 draws (a 4-layer case: 5.5e-5 where 24 draws gave
///   1.5e-6..3.7e-5), hence 8 draws and a factor of 10.
///
/// Broken kernels miss by far more than any floor: see the module docs.
pub const NOISE_FACTOR: f64 = 10.0;
pub const NOISE_RUNS: u64 = 8;
pub const NOISE_CAP: f64 = 1e-3;

pub fn show() -> bool {
    std::env::var_os("QGC_SHOW").is_some()
}

/// max |a - b| / max |b| (0 when both are all zero).
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let scale = b.iter().fold(0f64, |m, v| m.max(f64::from(v.abs())));
    let diff = a.iter().zip(b).fold(0f64, |m, (x, y)| m.max(f64::from(*x - *y).abs()));
    if diff == 0.0 {
        0.0
    } else {
        diff / scale
    }
}

pub fn f32s(t: &Tensor) -> &[f32] {
    t.as_f32().expect("f32 tensor")
}

/// Named results of one backend (graph outputs; or logits and state by step, see [`trace`]).
pub type Trace = BTreeMap<String, Tensor>;

/// Per key of `want`: the relative error of `got` (i32 entries must be equal).
pub fn errors(got: &Trace, want: &Trace) -> Result<BTreeMap<String, f64>, String> {
    let mut out = BTreeMap::new();
    for (k, w) in want {
        let g = got.get(k).ok_or_else(|| format!("{k} missing"))?;
        if g.shape != w.shape {
            return Err(format!("{k}: shape {:?}, want {:?}", g.shape, w.shape));
        }
        let e = match (w.as_i32(), g.as_i32()) {
            (Some(a), Some(b)) if a == b => 0.0,
            (Some(a), Some(b)) => return Err(format!("{k}: {b:?}, want {a:?}")),
            _ => rel_err(f32s(g), f32s(w)),
        };
        out.insert(k.clone(), e);
    }
    Ok(out)
}

/// The tolerance of a trace entry.
pub fn tol(key: &str) -> f64 {
    if key.contains(" state.") {
        STATE_TOL
    } else {
        TOL
    }
}

/// `t` with every element scaled by `1 + u·2^-23`, u uniform in (-1, 1): one or two f32
/// roundings' worth of noise.
pub fn perturb(t: &Tensor, rng: &mut Rng) -> Tensor {
    let v = f32s(t).iter().map(|x| x * (1.0 + rng.uniform(-1.0, 1.0) / (1u32 << 23) as f32)).collect();
    Tensor::f32(t.shape.clone(), v)
}

/// What [`check`] found: the worst error of logits/outputs and of state, and the entries above
/// their tolerance that the interpreter's noise floor allowed (`(key, error, floor)`).
#[derive(Debug, Default)]
pub struct Outcome {
    pub worst: f64,
    pub worst_state: f64,
    pub noisy: Vec<(String, f64, f64)>,
}

/// `got` against `want`, entry by entry: within [`tol`], or, where the interpreter itself is
/// that sensitive, within the noise floor (see NOISE_FACTOR). `noise(k)` runs the interpreter on
/// the k-th perturbed input (only called when some entry is above its tolerance).
pub fn check(got: &Trace, want: &Trace, noise: impl Fn(u64) -> Trace) -> Result<Outcome, String> {
    if got.len() != want.len() {
        return Err(format!(
            "entries {:?}, want {:?}",
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>()
        ));
    }
    let errs = errors(got, want)?;
    let mut out = Outcome::default();
    for (k, e) in &errs {
        if k.contains(" state.") {
            out.worst_state = out.worst_state.max(*e);
        } else {
            out.worst = out.worst.max(*e);
        }
    }
    let over: Vec<(&String, &f64)> = errs.iter().filter(|(k, e)| **e > tol(k)).collect();
    if over.is_empty() {
        return Ok(out);
    }
    let mut floor: BTreeMap<String, f64> = BTreeMap::new();
    for k in 0..NOISE_RUNS {
        for (key, n) in errors(&noise(k), want)? {
            let f = floor.entry(key).or_default();
            *f = f.max(n);
        }
    }
    for (key, e) in over {
        let f = floor[key];
        if *e > (NOISE_FACTOR * f).min(NOISE_CAP) {
            return Err(format!("{key}: rel {e:.3e} > {:.0e} (interpreter noise floor {f:.3e})", tol(key)));
        }
        out.noisy.push((key.clone(), *e, f));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Random graphs
// ---------------------------------------------------------------------------------------------

/// Uniform ±1 inputs for every input of `g` (all f32 `[B,S,d]`) under `bind`.
pub fn graph_inputs(g: &qgc_ir::Graph, bind: &Bindings, seed: u64) -> Trace {
    let mut rng = Rng::new(seed);
    g.inputs().into_iter().map(|(name, ty)| (name.to_string(), rng.tensor(&ty.eval(bind), -1.0, 1.0))).collect()
}

// ---------------------------------------------------------------------------------------------
// Random model specs
// ---------------------------------------------------------------------------------------------

pub fn gdn() -> impl Strategy<Value = MixerSpec> {
    (1..=2usize, 1..=2usize, 2..=12usize, 2..=12usize, 2..=4usize).prop_map(|(hk, ratio, dk, dv, conv)| {
        MixerSpec::GatedDeltanet(GdnSpec {
            num_key_heads: hk,
            num_value_heads: hk * ratio,
            key_head_dim: dk,
            value_head_dim: dv,
            conv_kernel: conv,
        })
    })
}

/// Head dims and rotary factors include odd rotary dims (12·0.25 = 3, 10·0.5 = 5, 6·0.5 = 3,
/// 5·0.25 = 1, 12·0.75 = 9, which HF rotates as 4, 6, 4, 2, 10 dims).
pub fn attention() -> impl Strategy<Value = MixerSpec> {
    (
        1..=2usize,
        1..=2usize,
        prop::sample::select(vec![4usize, 5, 6, 8, 10, 12, 16]),
        prop::sample::select(vec![0.25f64, 0.5, 0.75, 1.0]),
        prop::sample::select(vec![100.0f64, 1e4, 1e6]),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(kv, ratio, head_dim, factor, theta, output_gate, qk_norm)| {
            MixerSpec::GatedAttention(AttnSpec {
                num_heads: kv * ratio,
                num_kv_heads: kv,
                head_dim,
                output_gate,
                qk_norm,
                rope_theta: theta,
                partial_rotary_factor: factor,
            })
        })
}

pub fn ffn() -> impl Strategy<Value = FfnSpec> {
    let dense = (2..=24usize).prop_map(|width| FfnSpec::Dense(DenseSpec { width }));
    let moe = (2..=8usize, 0..8usize, 2..=16usize, any::<bool>(), prop::option::of((2..=16usize, any::<bool>())))
        .prop_map(|(e, k, width, norm, shared)| {
            FfnSpec::Moe(MoeSpec {
                num_experts: e,
                top_k: 1 + k % e,
                expert_width: width,
                norm_topk_prob: norm,
                shared_expert: shared.map(|(width, sigmoid_gate)| SharedExpertSpec { width, sigmoid_gate }),
            })
        });
    prop_oneof![dense, moe]
}

pub fn layer() -> impl Strategy<Value = LayerSpec> {
    (prop_oneof![gdn(), attention()], ffn()).prop_map(|(mixer, ffn)| LayerSpec { mixer, ffn })
}

/// A random spec as a user would write it (validated by [`SpecFile::resolve`]): vocabulary,
/// hidden size and layer count drawn from the given ranges.
pub fn spec_file(
    vocab: RangeInclusive<usize>,
    hidden: RangeInclusive<usize>,
    layers: RangeInclusive<usize>,
) -> impl Strategy<Value = SpecFile> {
    (
        vocab,
        hidden,
        prop::collection::vec(layer(), layers),
        any::<bool>(),
        any::<bool>(),
        prop::sample::select(vec![1e-6f64, 1e-5]),
        prop::option::weighted(0.25, (attention(), ffn())),
    )
        .prop_map(|(vocab, hidden, layers, tied, zero_centred, eps, mtp)| SpecFile {
            name: "random".into(),
            description: None,
            vocab_size: vocab,
            hidden_size: hidden,
            rms_norm_eps: eps,
            zero_centred_norms: zero_centred,
            tie_word_embeddings: tied,
            max_position_embeddings: 4096,
            blocks: BTreeMap::new(),
            layers: layers.into_iter().map(LayerItem::Layer).collect(),
            mtp: mtp.map(|(mixer, ffn)| MtpFile { num_layers: 1, layer: LayerItem::Layer(LayerSpec { mixer, ffn }) }),
        })
}

/// GDN prefill lowering: per token, chunks of 4 (several chunks, a partial last one), default.
pub fn lower_options() -> impl Strategy<Value = LowerOptions> {
    prop::sample::select(vec![None, Some(4), Some(64)]).prop_map(|gdn_prefill_chunk| LowerOptions { gdn_prefill_chunk })
}

/// What one model case runs: tokens of the single-sequence prefill, of the two ragged prompts,
/// and of the decodes (three per session).
#[derive(Debug, Clone)]
pub struct Script {
    pub prefill: Vec<i32>,
    pub ragged: [Vec<i32>; 2],
    pub decodes: Vec<[i32; 2]>,
}

pub fn script(vocab: usize, seed: u64, lens: (usize, usize, usize)) -> Script {
    let mut rng = Rng::new(seed);
    let mut toks = |n: usize| (0..n).map(|_| rng.below(vocab) as i32).collect::<Vec<i32>>();
    let (n, r0, r1) = lens;
    // Different lengths: the shorter row is left-padded.
    let r1 = if r1 == r0 { r0 % 20 + 1 } else { r1 };
    Script {
        prefill: toks(n),
        ragged: [toks(r0), toks(r1)],
        decodes: (0..3).map(|_| [toks(1)[0], toks(1)[0]]).collect(),
    }
}

pub fn record_state(trace: &mut Trace, what: &str, s: &Session) {
    trace.insert(format!("{what} position"), Tensor::i32(vec![1], vec![s.position() as i32]));
    for (name, t) in s.state().unwrap().into_iter().chain(s.mtp_state().unwrap()) {
        trace.insert(format!("{what} {name}"), t.into());
    }
}

/// Runs `sc` through sessions of `backend`: one sequence (prefill, MTP draft, decodes), then a
/// ragged batch of two (prefill, decodes). With `last`, a third session starts the same batch
/// with `prefill_last` (prefill without logits, then a decode) and records it under the keys
/// of the ragged session (its last-token logits, decodes and state); without, those keys are
/// copied from the ragged session.
pub fn trace(program: &Program, backend: Backend, vocab: usize, sc: &Script, last: bool) -> Result<Trace, String> {
    let err = |what: &'static str| move |e: qgc_runtime::SessionError| format!("{what}: {e}");
    let mut t = Trace::new();
    let session = |batch| Session::with_backend(program.clone(), backend, vocab, usize::MAX, batch);

    let mut a = session(1);
    t.insert("1 prefill logits".into(), a.prefill(std::slice::from_ref(&sc.prefill)).map_err(err("prefill"))?.into());
    record_state(&mut t, "1 prefill", &a);
    if program.mtp.is_some() {
        // A draft over the prefill's hidden states and the tokens that follow them.
        let next = vec![sc.prefill[1..].iter().copied().chain([sc.decodes[0][0]]).collect::<Vec<i32>>()];
        let hidden = a.hidden().expect("hidden states with an MTP block").clone();
        let (logits, h) = a.mtp_draft(&hidden, &next).map_err(err("mtp draft"))?;
        t.insert("1 mtp logits".into(), logits.into());
        t.insert("1 mtp hidden".into(), h.into());
    }
    for (i, d) in sc.decodes.iter().enumerate() {
        t.insert(format!("1 decode {i} logits"), a.decode(&d[..1]).map_err(err("decode"))?.into());
    }
    record_state(&mut t, "1 decodes", &a);

    let mut b = session(2);
    let rows = b.prefill_ragged(&sc.ragged).map_err(err("ragged prefill"))?;
    t.insert("2 ragged padding".into(), Tensor::i32(vec![2], b.padding().iter().map(|&p| p as i32).collect()));
    for (r, x) in rows.into_iter().enumerate() {
        let x: Tensor = x.into();
        let v = *x.shape.last().expect("vocab dim");
        let d = f32s(&x);
        t.insert(format!("3 row {r} last logits"), Tensor::f32(vec![1, v], d[d.len() - v..].to_vec()));
        t.insert(format!("2 row {r} logits"), x);
    }
    record_state(&mut t, "2 ragged", &b);
    for (i, d) in sc.decodes.iter().enumerate() {
        let logits: Tensor = b.decode(d).map_err(err("ragged decode"))?.into();
        t.insert(format!("3 decode {i} logits"), logits.clone());
        t.insert(format!("2 decode {i} logits"), logits);
    }
    record_state(&mut t, "2 decodes", &b);
    record_state(&mut t, "3 decodes", &b);
    if last {
        let mut c = session(2);
        for (r, x) in c.prefill_last(&sc.ragged).map_err(err("prefill_last"))?.into_iter().enumerate() {
            t.insert(format!("3 row {r} last logits"), x.into());
        }
        for (i, d) in sc.decodes.iter().enumerate() {
            t.insert(format!("3 decode {i} logits"), c.decode(d).map_err(err("prefill_last decode"))?.into());
        }
        record_state(&mut t, "3 decodes", &c);
    }
    Ok(t)
}
