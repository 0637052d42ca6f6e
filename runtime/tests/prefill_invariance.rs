//! Token invariance of prefill on the compiled CPU backend under
//! [`RowOrder::Invariant`](qgc_runtime::cpu::RowOrder): a token's logits are the same bits however
//! its sequence reached it — one prefill of the whole prompt, a prefill continued after any
//! split, a snapshot restored into a fresh session and continued, a ragged batch, or decoding
//! every token one by one. That is what makes a prefix cache exact: the second turn of a chat,
//! which restores the state after the first turn's reply (computed by decode) and prefills only
//! its new tokens, must give the logits a fresh prefill of the whole conversation gives.
//!
//! The reference is decode, token by token, from an empty state: no tolerance applies. A model
//! with gated DeltaNet and gated attention layers over MoE (the batch-invariance test's), f32 and
//! bf16 weights, prompts long enough to cross every threshold where the fast prefill changes
//! summation order (GEMM from 16 rows, the chunked delta rule, 32-key attention blocks).
//! The same checks run on the CUDA backend (on the PTX interpreter, shorter prompts: past the
//! 8-row GEMV chunk where f32 weights would go to cuBLAS and the 16-token chunked rule).
//! The last test checks the oracle can fail: under `RowOrder::Fastest` the same comparison
//! finds differing bits.

mod cpu_common;
use cpu_common::tokens;
use qgc_ir::interp::MapWeights;
use qgc_ir::{lower, LowerOptions, ModelSpec, Program, SpecFile};
use qgc_runtime::compiled::{CpuModel, CpuOptions};
use qgc_runtime::cpu::RowOrder;
use qgc_runtime::cuda::model::CudaModel;
use qgc_runtime::cuda::ptx::PtxDevice;
use qgc_runtime::weights::{Bf16Weights, RawWeights};
use qgc_runtime::{Backend, Session};
use std::sync::Arc;

const SPEC: &str = include_str!("cpu_common/hybrid_moe.json");
/// Prompt length: past the GEMM threshold, two chunked-rule chunks and three attention blocks.
const N: usize = 100;
/// Where a prompt is split (the first part prefilled, then the rest).
const SPLITS: [usize; 7] = [1, 5, 16, 31, 33, 64, 99];
/// The same on the PTX interpreter (slow): prompt length and splits, and a narrower model (one
/// GDN and one attention layer, hidden 96, vocabulary 64).
const CUDA_N: usize = 20;
const CUDA_SPLITS: [usize; 1] = [9];

fn spec() -> ModelSpec {
    let file: SpecFile = serde_json::from_str(SPEC).expect("spec JSON");
    file.resolve().expect("valid spec")
}

/// [`spec`] made small enough for the PTX interpreter.
fn cuda_spec() -> ModelSpec {
    let text = SPEC
        .replace(r#""vocab_size": 300"#, r#""vocab_size": 64"#)
        .replace(r#""hidden_size": 600"#, r#""hidden_size": 96"#)
        .replace(r#""head_dim": 76"#, r#""head_dim": 20"#)
        .replace(r#"["gdn_moe", "attn_moe", "gdn_all_experts", "attn_moe"]"#, r#"["gdn_moe", "attn_moe"]"#);
    let file: SpecFile = serde_json::from_str(&text).expect("spec JSON");
    let spec = file.resolve().expect("valid spec");
    assert_eq!((spec.vocab_size, spec.hidden_size), (64, 96), "the replacements above took");
    spec
}

fn session<'w>(program: &Program, backend: Backend<'w>, vocab: usize, batch: usize) -> Session<'w> {
    Session::with_backend(program.clone(), backend, vocab, usize::MAX, batch)
}

fn rows(t: &qgc_runtime::Tensor, vocab: usize) -> Vec<Vec<f32>> {
    t.as_f32().expect("f32 logits").chunks(vocab).map(<[f32]>::to_vec).collect()
}

/// The first row of `got` whose bits differ from `want`'s, described.
fn mismatch(what: &str, got: &[Vec<f32>], want: &[Vec<f32>]) -> Option<String> {
    assert_eq!(got.len(), want.len(), "{what}: rows");
    for (t, (g, w)) in got.iter().zip(want).enumerate() {
        let differ = g.iter().zip(w).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        if differ > 0 {
            let worst = g.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            return Some(format!("{what}: row {t}: {differ} of {} logits differ, largest by {worst:e}", g.len()));
        }
    }
    None
}

/// Every way of reaching the prompt's tokens against decoding them one by one; the mismatches.
fn mismatches(what: &str, program: &Program, w: &dyn RawWeights, vocab: usize, order: RowOrder) -> Vec<String> {
    let opts = CpuOptions { prefill: order, ..CpuOptions::default() };
    let model = CpuModel::compile(program, w, opts).expect("compile");
    ways(what, program, Backend::Cpu(&model), vocab, (N, &SPLITS))
}

/// [`mismatches`] on the CUDA backend on the PTX interpreter (memcheck and racecheck on).
fn cuda_mismatches(what: &str, program: &Program, w: &dyn RawWeights, vocab: usize, order: RowOrder) -> Vec<String> {
    let opts = CpuOptions { prefill: order, ..CpuOptions::default() };
    let cpu = CpuModel::compile(program, w, opts).expect("compile");
    let dev = Arc::new(PtxDevice::new(90, 1 << 30, qgc_ptx::Options::default()));
    let model = CudaModel::new(cpu, dev).expect("load onto the PTX interpreter");
    ways(what, program, Backend::Cuda(&model), vocab, (CUDA_N, &CUDA_SPLITS))
}

fn ways(what: &str, program: &Program, backend: Backend, vocab: usize, (n, splits): (usize, &[usize])) -> Vec<String> {
    let prompt = tokens(11, n, vocab);
    let other = tokens(12, n / 2 + 7, vocab);
    let decoded = |p: &[i32]| {
        let mut s = session(program, backend, vocab, 1);
        p.iter().flat_map(|&t| rows(&s.decode(&[t]).expect("decode"), vocab)).collect::<Vec<_>>()
    };
    let want = decoded(&prompt);
    let mut out = Vec::new();
    let mut check = |how: String, got: &[Vec<f32>], want: &[Vec<f32>]| {
        out.extend(mismatch(&format!("{what}, {how}"), got, want));
    };

    let mut s = session(program, backend, vocab, 1);
    check("one prefill".into(), &rows(&s.prefill(std::slice::from_ref(&prompt)).expect("prefill"), vocab), &want);

    let mut s = session(program, backend, vocab, 1);
    let last = s.prefill_last(std::slice::from_ref(&prompt)).expect("prefill_last");
    check("prefill_last".into(), &rows(&last[0], vocab), &want[n - 1..]);

    for &a in splits {
        let mut s = session(program, backend, vocab, 1);
        let first = rows(&s.prefill(&[prompt[..a].to_vec()]).expect("first part"), vocab);
        let rest = rows(&s.prefill(&[prompt[a..].to_vec()]).expect("the rest"), vocab);
        check(format!("split at {a}"), &[first, rest].concat(), &want);

        // A snapshot after the first part, restored into a fresh session: the prefix cache.
        let mut s = session(program, backend, vocab, 1);
        s.feed(&[prompt[..a].to_vec()]).expect("feed");
        let saved = s.saved().expect("snapshot");
        let mut r = session(program, backend, vocab, 1);
        r.restore(saved).expect("restore");
        let got = r.prefill_last(&[prompt[a..].to_vec()]).expect("continue");
        check(format!("restored at {a}"), &rows(&got[0], vocab), &want[n - 1..]);
    }

    // A ragged batch: each row's logits are its own sequence's.
    let mut s = session(program, backend, vocab, 2);
    let both = s.prefill_ragged(&[prompt.clone(), other.clone()]).expect("ragged prefill");
    check("row 0 of a ragged batch".into(), &rows(&both[0], vocab), &want);
    check("row 1 of a ragged batch".into(), &rows(&both[1], vocab), &decoded(&other));
    out
}

#[test]
fn invariant_prefill_equals_decode_bit_for_bit() {
    let spec = spec();
    let program = lower(&spec, &LowerOptions::default()).expect("lower");
    let v = spec.vocab_size;
    let inv = RowOrder::Invariant;
    let mut failures = mismatches("f32 weights", &program, &MapWeights::random(&spec, 5), v, inv);
    failures.extend(mismatches("bf16 weights", &program, &Bf16Weights::random(&spec, 6), v, inv));
    // One thread: the split of work over threads changes no bits either.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("pool");
    failures.extend(pool.install(|| mismatches("bf16, 1 thread", &program, &Bf16Weights::random(&spec, 6), v, inv)));
    assert!(failures.is_empty(), "prefill differs from decode:\n{}", failures.join("\n"));
}

#[test]
fn invariant_prefill_equals_decode_bit_for_bit_on_cuda() {
    let spec = cuda_spec();
    let program = lower(&spec, &LowerOptions::default()).expect("lower");
    let v = spec.vocab_size;
    let inv = RowOrder::Invariant;
    let mut failures = cuda_mismatches("cuda, f32 weights", &program, &MapWeights::random(&spec, 5), v, inv);
    failures.extend(cuda_mismatches("cuda, bf16 weights", &program, &Bf16Weights::random(&spec, 6), v, inv));
    assert!(failures.is_empty(), "prefill differs from decode:\n{}", failures.join("\n"));
}

#[test]
fn fastest_prefill_is_caught_differing() {
    // The comparison above can fail: the fast prefill (panel GEMM, chunked delta rule) rounds
    // differently from decode, and these checks see it.
    let spec = spec();
    let program = lower(&spec, &LowerOptions::default()).expect("lower");
    let w = Bf16Weights::random(&spec, 6);
    let failures = mismatches("bf16 weights", &program, &w, spec.vocab_size, RowOrder::Fastest);
    assert!(failures.iter().any(|f| f.contains("one prefill")), "no difference found: {failures:?}");
}
