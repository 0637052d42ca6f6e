//! The CUDA backend runs an entry point through Cranelift host code, not a Rust walk of the
//! schedule: every entry point of a `CudaModel` has device host code compiled from the CPU
//! model's schedule, a call makes one shim call per kernel, chain and copy step, its results
//! equal the CPU backend's, and a kernel's error comes back through the host code as an error
//! naming the node. On the PTX interpreter with memcheck and racecheck; needs NVRTC
//! (`scripts/cuda-tools`), without it the test fails and says so.

use qgc_ir::interp::{MapWeights, Rng};
use qgc_ir::types::const_shape;
use qgc_ir::{Bindings, DType, Dim, Graph, Op, Sym, TensorType};
use qgc_runtime::compiled::{CpuModel, CpuOptions, Entry};
use qgc_runtime::cuda::model::CudaModel;
use qgc_runtime::cuda::ptx::PtxDevice;
use qgc_runtime::cuda::{nvrtc, Device};
use qgc_runtime::Tensor;
use std::collections::BTreeMap;
use std::sync::Arc;

const VOCAB: usize = 10;

/// tokens → embed → (+ w, silu, ·0.5: one chain) → matmul; outputs: the matmul, a reshape of
/// it (a view: copied), the embedding (written in place by its kernel).
fn graph() -> Graph {
    let (b, s) = (Dim::sym(Sym::B), Dim::sym(Sym::S));
    let mut g = Graph::new("host");
    let ty = TensorType::new(vec![b, s], DType::I32);
    let tokens = g.add1("tokens", Op::Input { name: "tokens".into(), ty }, &[]).unwrap();
    let weight =
        |name: &str, shape: &[usize]| Op::Weight { name: name.into(), ty: TensorType::f32(const_shape(shape)) };
    let table = g.add1("table", weight("table", &[VOCAB, 8]), &[]).unwrap();
    let w = g.add1("w", weight("w", &[8]), &[]).unwrap();
    let m = g.add1("m", weight("m", &[6, 8]), &[]).unwrap();
    let h = g.add1("h", Op::Embed, &[table, tokens]).unwrap();
    let a = g.add1("a", Op::Add, &[h, w]).unwrap();
    let si = g.add1("si", Op::Silu, &[a]).unwrap();
    let sc = g.add1("sc", Op::Scale { by: 0.5 }, &[si]).unwrap();
    let y = g.add1("y", Op::MatMul, &[sc, m]).unwrap();
    let r = g.add1("r", Op::Reshape { shape: vec![b, s, Dim::c(2), Dim::c(3)] }, &[y]).unwrap();
    g.outputs = vec![("y".into(), y), ("r".into(), r), ("h".into(), h)];
    qgc_ir::verify(&g).expect("the graph verifies");
    g
}

fn weights() -> MapWeights {
    let mut rng = Rng::new(3);
    let mut w = MapWeights::new();
    w.insert("table", rng.tensor(&[VOCAB, 8], -1.0, 1.0));
    w.insert("w", rng.tensor(&[8], -1.0, 1.0));
    w.insert("m", rng.tensor(&[6, 8], -1.0, 1.0));
    w
}

fn tokens(bind: &Bindings, bad: bool) -> BTreeMap<String, Tensor> {
    let n = bind.b * bind.s;
    let mut ids: Vec<i32> = (0..n).map(|i| ((i * 7 + 3) % VOCAB) as i32).collect();
    if bad {
        ids[n - 1] = VOCAB as i32 + 5;
    }
    BTreeMap::from([("tokens".to_string(), Tensor::i32(vec![bind.b, bind.s], ids))])
}

#[test]
fn cuda_runs_entry_points_through_device_host_code() {
    if let Err(e) = nvrtc::version() {
        panic!("this test compiles every kernel with NVRTC: {e}");
    }
    let (g, w) = (graph(), weights());
    let cpu = CpuModel::from_graphs(vec![(Entry::Prefill, g.clone())], &w, CpuOptions::default()).unwrap();
    let opts =
        qgc_ptx::Options { order: qgc_ptx::Order::Random(7), memcheck: true, racecheck: true, ..Default::default() };
    let dev: Arc<dyn Device> = Arc::new(PtxDevice::new(90, 1 << 28, opts));
    let cuda =
        CudaModel::new(CpuModel::from_graphs(vec![(Entry::Prefill, g)], &w, CpuOptions::default()).unwrap(), dev)
            .unwrap();
    assert!(cuda.host(Entry::Decode).is_none(), "only the entry points the model has");
    let host = cuda.host(Entry::Prefill).expect("prefill has device host code");
    assert_eq!(&host.schedule, cuda.cpu().schedule(Entry::Prefill).unwrap(), "the CPU model's schedule");
    let c = host.counts();
    assert!(c.kernels >= 2 && c.chains >= 1 && c.copies >= 1, "{:?}", host.schedule.steps);
    let steps = c.kernels + c.chains + c.copies;
    for bind in [Bindings { b: 1, s: 3, p: 0 }, Bindings { b: 2, s: 5, p: 0 }] {
        let ins = tokens(&bind, false);
        let want = cpu.run(Entry::Prefill, &bind, &ins, &mut BTreeMap::new()).unwrap();
        let got = cuda.run(Entry::Prefill, &bind, &ins, &mut BTreeMap::new()).unwrap();
        assert_eq!(cuda.shim_calls(), steps, "one shim call per kernel, chain and copy step at {bind:?}");
        assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
        for (k, t) in &want {
            let (a, b) = (got[k].as_f32().unwrap(), t.as_f32().unwrap());
            assert_eq!(a.len(), b.len(), "{k}");
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() <= 1e-5 * y.abs().max(1.0), "{k} at {bind:?}: {x} vs {y}");
            }
        }
    }
    // A kernel's error stops the host code at that step and comes back naming the node.
    let bind = Bindings { b: 1, s: 2, p: 0 };
    let err = cuda.run(Entry::Prefill, &bind, &tokens(&bind, true), &mut BTreeMap::new()).unwrap_err();
    assert!(err.to_string().contains("outside the vocabulary") && err.to_string().contains("(h)"), "{err}");
    assert!(cuda.shim_calls() < steps, "the schedule stops at the embedding: {}", cuda.shim_calls());
}
