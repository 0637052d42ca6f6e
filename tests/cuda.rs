//! The whole model through the CUDA backend, run on the PTX interpreter (the same kernels,
//! launches and schedule a GPU runs; memcheck and racecheck on, threads in random order): every
//! fixture's logits within 1e-4 of HF's largest logit (prefill then decode, and all-decode),
//! a ragged batch whose rows match each sequence alone, greedy ids equal to the CPU backend's
//! and to HF's `generate`, and the CLI's `--backend cuda --device ptx`. Needs NVRTC
//! (`scripts/cuda-tools`): without it these tests fail and say so.

mod common;

use common::{fixture, fixtures, qgc, reference, rel_err, temp_dir};
use qgc_ir::LowerOptions;
use qgc_runtime::compiled::{CpuModel, CpuOptions};
use qgc_runtime::cuda::model::CudaModel;
use qgc_runtime::cuda::ptx::PtxDevice;
use qgc_runtime::cuda::{nvrtc, Device};
use qgc_runtime::session::Backend;
use qgc_runtime::weights::{self, Checkpoint, Weights};
use qgc_runtime::{open_model, Model, Session};
use std::path::Path;
use std::sync::Arc;

const TOL: f64 = 1e-4;

/// The PTX interpreter, or GPU 0 when `QGC_TEST_DEVICE=gpu` (the GPU check, `scripts/gpu-check`).
fn device(seed: u64) -> Arc<dyn Device> {
    if std::env::var("QGC_TEST_DEVICE").as_deref() == Ok("gpu") {
        return Arc::new(
            qgc_runtime::cuda::gpu::GpuDevice::open(0).unwrap_or_else(|e| panic!("QGC_TEST_DEVICE=gpu: {e}")),
        );
    }
    if let Err(e) = nvrtc::version() {
        panic!("the CUDA path compiles its kernels with NVRTC: {e}");
    }
    let opts = qgc_ptx::Options { order: qgc_ptx::Order::Random(seed), ..Default::default() };
    Arc::new(PtxDevice::new(90, 4 << 30, opts))
}

fn open(dir: &Path) -> (Model, Weights) {
    let m = open_model(dir, &LowerOptions::default()).unwrap();
    let ckpt = Checkpoint::open(dir).unwrap();
    weights::check(&m.spec, &ckpt).unwrap();
    (m, Weights::new(ckpt))
}

fn cuda<'w>(m: &Model, w: &'w Weights, seed: u64) -> CudaModel<'w> {
    let cpu = CpuModel::compile(&m.program, w, CpuOptions::default()).unwrap();
    CudaModel::new(cpu, device(seed)).unwrap_or_else(|e| panic!("{e}"))
}

/// Prefill of the first `prefill` tokens, then one decode per remaining token: [T, V].
fn logits(s: &mut Session, tokens: &[i32], prefill: usize) -> Vec<f32> {
    let mut out = Vec::new();
    if prefill > 0 {
        out.extend_from_slice(s.prefill(&[tokens[..prefill].to_vec()]).unwrap().as_f32().unwrap());
    }
    for &t in &tokens[prefill..] {
        out.extend_from_slice(s.decode(&[t]).unwrap().as_f32().unwrap());
    }
    out
}

#[test]
fn hf_parity_through_the_cuda_path_on_every_fixture() {
    for (i, dir) in fixtures().into_iter().enumerate() {
        let r = reference(&dir);
        let (m, w) = open(&dir);
        let c = cuda(&m, &w, i as u64);
        let mut s = Session::with_backend(m.program.clone(), Backend::Cuda(&c), m.spec.vocab_size, usize::MAX, 1);
        let ours = logits(&mut s, &r.tokens, r.prefill);
        let e = rel_err(&ours, &r.logits);
        eprintln!(
            "{}: cuda (ptx) prefill {} + decode {}: rel {e:.2e}",
            dir.display(),
            r.prefill,
            r.tokens.len() - r.prefill
        );
        assert!(e <= TOL, "{}: rel error {e:.3e} > {TOL:e}", dir.display());
        // Every token through the decode entry point, from an empty state.
        s.reset();
        let n = r.tokens.len().min(12);
        let ours = logits(&mut s, &r.tokens[..n], 0);
        let e = rel_err(&ours, &r.logits_full[..n * r.vocab]);
        assert!(e <= TOL, "{}: all-decode rel error {e:.3e} > {TOL:e}", dir.display());
    }
}

#[test]
fn greedy_ids_equal_the_cpu_backend_and_hf() {
    for dir in fixtures() {
        let r = reference(&dir);
        let (m, w) = open(&dir);
        let c = cuda(&m, &w, 3);
        let cpu = CpuModel::compile(&m.program, &w, CpuOptions::default()).unwrap();
        let vocab = m.spec.vocab_size;
        let greedy = |b: Backend| -> Vec<i32> {
            let mut s = Session::with_backend(m.program.clone(), b, vocab, usize::MAX, 1);
            let l = s.prefill_last(std::slice::from_ref(&r.gen_prompt)).unwrap().remove(0);
            let mut next = qgc_runtime::sampling::argmax(l.as_f32().unwrap()) as i32;
            let mut ids = vec![next];
            while ids.len() < r.gen_ids.len() {
                // On the CUDA backend the argmax runs on the device (only the id comes back).
                next = s.decode_argmax(&[next]).unwrap()[0];
                ids.push(next);
            }
            ids
        };
        let on_cuda = greedy(Backend::Cuda(&c));
        assert_eq!(on_cuda, greedy(Backend::Cpu(&cpu)), "{}", dir.display());
        assert_eq!(on_cuda, r.gen_ids, "{}: HF generate", dir.display());
    }
}

#[test]
fn a_ragged_batch_matches_each_sequence_alone() {
    let dir = fixture("hybrid-3to1");
    let r = reference(&dir);
    let (m, w) = open(&dir);
    let c = cuda(&m, &w, 5);
    let vocab = m.spec.vocab_size;
    let (a, b) = (r.tokens[..7].to_vec(), r.tokens[3..6].to_vec());
    let mut s = Session::with_backend(m.program.clone(), Backend::Cuda(&c), vocab, usize::MAX, 2);
    let rows = s.prefill_ragged(&[a.clone(), b.clone()]).unwrap();
    let d = s.decode(&[r.tokens[7], r.tokens[8]]).unwrap();
    for (k, seq) in [a, b].iter().enumerate() {
        let mut alone = Session::with_backend(m.program.clone(), Backend::Cuda(&c), vocab, usize::MAX, 1);
        let p = alone.prefill(std::slice::from_ref(seq)).unwrap();
        let e = rel_err(rows[k].as_f32().unwrap(), p.as_f32().unwrap());
        assert!(e <= 1e-5, "row {k} prefill: rel {e:.3e}");
        let one = alone.decode(&[r.tokens[7 + k]]).unwrap();
        let e = rel_err(&d.as_f32().unwrap()[k * vocab..(k + 1) * vocab], one.as_f32().unwrap());
        assert!(e <= 1e-5, "row {k} decode: rel {e:.3e}");
    }
}

#[test]
fn the_cli_runs_the_cuda_path_on_the_interpreter() {
    let tmp = temp_dir("cuda-cli");
    let dir = fixture("hybrid-3to1");
    let d = dir.to_str().unwrap();
    let run = |backend: &[&str]| {
        let mut args = vec!["run", d, "--tokens", "5,17,3,99", "-n", "4", "--temp", "0", "--json"];
        args.extend_from_slice(backend);
        let (code, out, err) = qgc(&args, &tmp);
        assert_eq!(code, 0, "{err}");
        out
    };
    let device = if std::env::var("QGC_TEST_DEVICE").as_deref() == Ok("gpu") { "gpu" } else { "ptx" };
    let on_ptx = run(&["--backend", "cuda", "--device", device]);
    let on_cpu = run(&[]);
    let ids = |s: &str| -> serde_json::Value {
        serde_json::from_str::<serde_json::Value>(s.lines().last().unwrap()).unwrap()["ids"].clone()
    };
    assert_eq!(ids(&on_ptx), ids(&on_cpu), "{on_ptx}\n{on_cpu}");
    // logits through the CLI, against HF's prefill rows.
    let out = tmp.join("l.safetensors");
    let (code, _, err) = qgc(
        &[
            "logits",
            d,
            "--tokens",
            "5,17,3,99,7",
            "--prefill",
            "3",
            "--backend",
            "cuda",
            "--device",
            "ptx",
            "--out",
            out.to_str().unwrap(),
        ],
        &tmp,
    );
    assert_eq!(code, 0, "{err}");
    // Without a GPU, --device gpu is a named error, not a panic.
    let (code, _, err) = qgc(&["run", d, "--tokens", "5", "-n", "1", "--backend", "cuda"], &tmp);
    if !Path::new("/dev/nvidia0").exists() {
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("no CUDA driver: libcuda.so.1 not found") || err.contains("no CUDA device"), "{err}");
    }
}

#[test]
fn state_stays_on_the_device_and_reads_back_equal_to_the_cpu_backend() {
    // Enough decode steps that the KV caches grow past their first capacity (re-laid out on
    // the device), then the state read back from the device against the CPU backend's.
    let dir = fixture("sharded-fused-mtp");
    let r = reference(&dir);
    let (m, w) = open(&dir);
    let c = cuda(&m, &w, 9);
    let cpu = CpuModel::compile(&m.program, &w, CpuOptions::default()).unwrap();
    let vocab = m.spec.vocab_size;
    let mut a = Session::with_backend(m.program.clone(), Backend::Cuda(&c), vocab, usize::MAX, 1);
    let mut b = Session::with_backend(m.program.clone(), Backend::Cpu(&cpu), vocab, usize::MAX, 1);
    let prompt = r.tokens[..5].to_vec();
    a.prefill(std::slice::from_ref(&prompt)).unwrap();
    b.prefill(std::slice::from_ref(&prompt)).unwrap();
    for &t in &r.tokens[5..r.tokens.len().min(45)] {
        let (x, y) = (a.decode(&[t]).unwrap(), b.decode(&[t]).unwrap());
        assert!(rel_err(x.as_f32().unwrap(), y.as_f32().unwrap()) <= 1e-5);
    }
    let (sa, sb) = (a.state().unwrap(), b.state().unwrap());
    assert_eq!(sa.keys().collect::<Vec<_>>(), sb.keys().collect::<Vec<_>>());
    for (name, t) in &sb {
        assert_eq!(sa[name].shape, t.shape, "{name}");
        let e = rel_err(sa[name].as_f32().unwrap(), t.as_f32().unwrap());
        assert!(e <= 1e-4, "{name}: rel {e:.3e}");
    }
    // A reset drops the device copy: the next call starts from zero state again.
    a.reset();
    b.reset();
    let (x, y) = (a.prefill(std::slice::from_ref(&prompt)).unwrap(), b.prefill(std::slice::from_ref(&prompt)).unwrap());
    assert!(rel_err(x.as_f32().unwrap(), y.as_f32().unwrap()) <= 1e-5);
}
