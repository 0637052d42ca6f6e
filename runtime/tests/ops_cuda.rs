//! The per-op backend table (`op_table/mod.rs`) on the CUDA backend running on the PTX
//! interpreter: every case of every op, both weight dtypes, through the same schedule as the
//! CPU backend, with every kernel compiled by NVRTC and executed with memcheck and racecheck on
//! and threads in random order. Needs NVRTC (`scripts/cuda-tools`); without it the test fails
//! and says so. `QGC_SHOW=1` (with `--nocapture`) prints every row.

mod op_table;

use op_table::{run_table, OpBackend};
use qgc_ir::{Bindings, Graph};
use qgc_runtime::compiled::{CpuModel, CpuOptions, Entry};
use qgc_runtime::cuda::model::CudaModel;
use qgc_runtime::cuda::ptx::PtxDevice;
use qgc_runtime::cuda::{nvrtc, Device};
use qgc_runtime::error_chain as chain;
use qgc_runtime::weights::RawWeights;
use qgc_runtime::{StateTensor, Tensor};
use std::collections::BTreeMap;
use std::sync::Arc;

struct Cuda {
    dev: Arc<dyn Device>,
}

impl OpBackend for Cuda {
    type Compiled<'w> = CudaModel<'w>;

    fn name(&self) -> &'static str {
        "cuda (ptx interpreter)"
    }

    fn compile<'w>(&self, g: &Graph, w: &'w dyn RawWeights) -> Result<CudaModel<'w>, String> {
        let cpu = CpuModel::from_graphs(vec![(Entry::Prefill, g.clone())], w, CpuOptions::default())
            .map_err(|e| chain(&e))?;
        CudaModel::new(cpu, self.dev.clone()).map_err(|e| chain(&e))
    }

    fn fallback(&self, c: &CudaModel<'_>, node: &str) -> bool {
        c.cpu().fallbacks(Entry::Prefill).iter().any(|n| n == node)
    }

    fn in_place(&self, c: &CudaModel<'_>, node: &str) -> usize {
        let (Some(s), Some(g)) = (c.cpu().schedule(Entry::Prefill), c.cpu().graph(Entry::Prefill)) else { return 0 };
        s.in_place.iter().filter(|(r, _)| g.nodes[r.node].name == node).count()
    }

    fn run(
        &self,
        c: &CudaModel<'_>,
        bind: &Bindings,
        inputs: &BTreeMap<String, Tensor>,
        state: &mut BTreeMap<String, StateTensor>,
    ) -> Result<BTreeMap<String, Tensor>, String> {
        c.run(Entry::Prefill, bind, inputs, state).map_err(|e| chain(&e))
    }
}

#[test]
fn every_op_on_the_cuda_backend_through_the_ptx_interpreter() {
    if let Err(e) = nvrtc::version() {
        panic!("this test compiles every kernel with NVRTC: {e}");
    }
    let opts = qgc_ptx::Options { order: qgc_ptx::Order::Random(11), ..Default::default() };
    // GPU 0 instead when QGC_TEST_DEVICE=gpu (the GPU check, scripts/gpu-check).
    let dev: Arc<dyn Device> = match std::env::var("QGC_TEST_DEVICE").as_deref() {
        Ok("gpu") => {
            Arc::new(qgc_runtime::cuda::gpu::GpuDevice::open(0).unwrap_or_else(|e| panic!("QGC_TEST_DEVICE=gpu: {e}")))
        }
        _ => Arc::new(PtxDevice::new(90, 8 << 30, opts)),
    };
    let (rows, failures) = run_table(&Cuda { dev });
    if std::env::var_os("QGC_SHOW").is_some() {
        for r in &rows {
            eprintln!("{:<80} {:.2e} (tol {:.0e})", r.what, r.worst, r.tol);
        }
    }
    assert!(rows.len() >= 200, "{} rows", rows.len());
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
