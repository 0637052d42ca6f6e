//! Differential property tests of the CUDA backend on the PTX interpreter against the reference
//! interpreter: the random programs of `compiled_differential.rs` (shared in `differential/`),
//! with tiny shapes, compiled by the CPU pipeline (passes, schedule, memory plan) and then
//! driven on a [`PtxDevice`] by [`CudaModel`]: every kernel compiled by NVRTC and executed with
//! memcheck and racecheck on, threads in a random order whose seed varies per case.
//!
//! - `cuda_graphs_match_interpreter`: random small graphs (`passes/tests/gen`: elementwise
//!   chains rendered as CUDA C, norms, matmuls with their epilogues, slice, concat), optimised
//!   and as drawn, at two random bindings (B in 1..=2, S in 1..=5).
//! - `cuda_models_match_interpreter`: random small model specs (vocab 40..=96, hidden 8..=24,
//!   1..=2 layers of GDN or attention with dense or MoE FFNs, MTP in a quarter of the draws),
//!   f32 or bf16-stored weights, through `Session`s with `Backend::Cuda`: prefill, MTP draft,
//!   three decodes, a ragged batch of two with decodes, and `prefill_last`; logits and state.
//!
//! Tolerances are the CPU differential's (`differential::TOL` 1e-5 for outputs and logits,
//! `STATE_TOL` 1e-4 for state, relative to the interpreter tensor's largest |value|, with the
//! same interpreter-noise-floor allowance): the kernels accumulate in f32 where the
//! interpreter uses f64, as the CPU kernels do, and measured errors stay well inside (see
//! `QGC_SHOW=1`). Needs NVRTC (`scripts/cuda-tools`); without it both tests fail and say so.
//!
//! Each test fails on a broken kernel (checked by hand in `kernels/norm/kernel.cu`, then
//! reverted): gated RMSNorm with eps doubled (models: rel 3.2e-4, noise floor 3.1e-7), the
//! zero-centred `1 + w` read as `w` (graphs: 1.03, models: 0.97), the second pass of the row
//! loop running to `j <= d` (both: memcheck names `qgc_rms_norm`, block, thread, PC and the
//! read past the allocation).
//!
//! Time (2 cores, both tests): 31 s on an idle machine, 42 s at load 2.5.

mod differential;

use differential::gen;
use differential::{check, graph_inputs, lower_options, perturb, script, show, spec_file, trace, Trace};
use proptest::prelude::*;
use qgc_ir::interp::{self, MapWeights, Rng};
use qgc_ir::{lower, Bindings, ModelSpec};
use qgc_passes::{optimise, Options};
use qgc_runtime::compiled::{CpuModel, CpuOptions, Entry};
use qgc_runtime::cuda::model::CudaModel;
use qgc_runtime::cuda::ptx::PtxDevice;
use qgc_runtime::cuda::{nvrtc, Device};
use qgc_runtime::error_chain as chain;
use qgc_runtime::weights::{Bf16Weights, RawWeights};
use qgc_runtime::Backend;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Panics (never skips) when NVRTC is missing, with the command that installs it.
fn need_nvrtc() {
    if let Err(e) = nvrtc::version() {
        panic!("this test compiles every kernel with NVRTC: {e}");
    }
}

/// A fresh interpreter device: memcheck and racecheck on, threads in random order from `seed`.
fn device(seed: u64) -> Arc<dyn Device> {
    let opts =
        qgc_ptx::Options { order: qgc_ptx::Order::Random(seed), memcheck: true, racecheck: true, ..Default::default() };
    Arc::new(PtxDevice::new(90, 1 << 30, opts))
}

#[test]
fn cuda_graphs_match_interpreter() {
    need_nvrtc();
    let config = ProptestConfig { cases: 64, ..ProptestConfig::default() };
    proptest!(config, |(
        steps in gen::steps(2..16),
        pick in any::<usize>(),
        binds in [(1..=2usize, 1..=5usize), (1..=2usize, 1..=5usize)],
        seed in any::<u64>(),
    )| {
        let gen = gen::build(&steps, pick);
        let (opt, _) = optimise(&gen.g, &Options::default(), &mut |_, _| {}).unwrap();
        let dev = device(seed);
        for (what, g) in [("optimised", &opt), ("as drawn", &gen.g)] {
            let cpu = CpuModel::from_graphs(vec![(Entry::Prefill, g.clone())], &gen.w, CpuOptions::default())
                .unwrap_or_else(|e| panic!("{what}: {e}\n{}", qgc_ir::print(g)));
            let model = CudaModel::new(cpu, dev.clone()).unwrap_or_else(|e| panic!("{what}: {}", chain(&e)));
            for (k, &(b, s)) in binds.iter().enumerate() {
                let bind = Bindings { b, s, p: 0 };
                let ins = graph_inputs(&gen.g, &bind, seed.wrapping_add(k as u64));
                let want = interp::run(&gen.g, &bind, &ins, &gen.w).unwrap();
                let rt: BTreeMap<String, qgc_runtime::Tensor> =
                    ins.iter().map(|(n, t)| (n.clone(), t.clone().into())).collect();
                let case = || format!("{what}, B={b} S={s}, thread order seed {seed}");
                let got = model
                    .run(Entry::Prefill, &bind, &rt, &mut BTreeMap::new())
                    .map_err(|e| TestCaseError::fail(format!("{}: {}\n{}", case(), chain(&e), qgc_ir::print(g))))?;
                let got: Trace = got.into_iter().map(|(n, t)| (n, t.into())).collect();
                let noise = |k: u64| {
                    let mut rng = Rng::new(seed ^ k);
                    let mut w = MapWeights::new();
                    for (name, t) in &gen.w.tensors {
                        w.insert(name.clone(), perturb(t, &mut rng));
                    }
                    let ins: Trace = ins.iter().map(|(n, t)| (n.clone(), perturb(t, &mut rng))).collect();
                    interp::run(&gen.g, &bind, &ins, &w).unwrap()
                };
                let r = check(&got, &want, noise);
                if show() {
                    eprintln!("{} ({} nodes): {r:?}", case(), g.nodes.len());
                }
                if let Err(e) = r {
                    let msg = format!("{}: {e}\n{}\n{}", case(), qgc_ir::print(&gen.g), qgc_ir::print(g));
                    return Err(TestCaseError::fail(msg));
                }
            }
        }
    });
}

#[test]
fn cuda_models_match_interpreter() {
    need_nvrtc();
    let config = ProptestConfig { cases: 16, ..ProptestConfig::default() };
    proptest!(config, |(
        file in spec_file(40..=96, 8..=24, 1..=2),
        lopts in lower_options(),
        bf16 in any::<bool>(),
        seed in any::<u64>(),
        lens in (1..=6usize, 1..=6usize, 1..=6usize),
    )| {
        // Head dim 5 with rotary factor 0.75 or 1 is invalid (as in compiled_differential.rs).
        let spec = file.resolve();
        prop_assume!(spec.is_ok(), "invalid spec: {:?}", spec);
        let spec: ModelSpec = spec.unwrap();
        let program = lower(&spec, &lopts).unwrap();
        let (fw, bw);
        let w: &dyn RawWeights = if bf16 {
            bw = Bf16Weights::random(&spec, seed);
            &bw
        } else {
            fw = MapWeights::random(&spec, seed);
            &fw
        };
        let cpu = CpuModel::compile(&program, w, CpuOptions::default()).unwrap();
        let model = CudaModel::new(cpu, device(seed)).unwrap_or_else(|e| panic!("{}", chain(&e)));
        let sc = script(spec.vocab_size, seed ^ 0x5eed, lens);
        let v = spec.vocab_size;
        let case = || {
            let spec = serde_json::to_string(&file).unwrap();
            format!("bf16 {bf16}, seed {seed} (thread order too), {lopts:?}, {sc:?}\nspec {spec}")
        };
        let want = trace(&program, Backend::Interp(w.source()), v, &sc, false).unwrap();
        let got = trace(&program, Backend::Cuda(&model), v, &sc, true)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{}", case())))?;
        let noise = |k: u64| {
            let mut rng = Rng::new(seed ^ k);
            let mut p = MapWeights::new();
            for decl in spec.tensors() {
                let t = w.source().weight(&decl.name, &decl.shape).expect("every declared weight");
                p.insert(decl.name.clone(), perturb(&t, &mut rng));
            }
            trace(&program, Backend::Interp(&p), v, &sc, false).unwrap()
        };
        let r = check(&got, &want, noise).map_err(|e| TestCaseError::fail(format!("{e}\n{}", case())))?;
        if show() {
            let mtp = if spec.mtp.is_some() { " + mtp" } else { "" };
            eprintln!("{} layers{mtp}, bf16 {bf16}, {lopts:?}: {r:?}", spec.num_layers());
            if !r.noisy.is_empty() {
                eprintln!("  case: {}", case().replace('\n', " "));
            }
        }
    });
}
