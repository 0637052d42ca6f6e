//! The per-op backend table (`op_table/mod.rs`) on the compiled CPU backend: every op's cases,
//! both weight dtypes, through the kernel binding, the JIT host code and the shims, in place and
//! not. `QGC_SHOW=1` (with `--nocapture`) prints every row.

mod op_table;

use op_table::{run_table, OpBackend};
use qgc_ir::{Bindings, Graph};
use qgc_runtime::compiled::{CpuModel, CpuOptions, Entry};
use qgc_runtime::error_chain as chain;
use qgc_runtime::weights::RawWeights;
use qgc_runtime::{StateTensor, Tensor};
use std::collections::BTreeMap;

struct Cpu;

impl OpBackend for Cpu {
    type Compiled<'w> = CpuModel<'w>;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn compile<'w>(&self, g: &Graph, w: &'w dyn RawWeights) -> Result<CpuModel<'w>, String> {
        CpuModel::from_graphs(vec![(Entry::Prefill, g.clone())], w, CpuOptions::default()).map_err(|e| chain(&e))
    }

    fn fallback(&self, c: &CpuModel<'_>, node: &str) -> bool {
        c.fallbacks(Entry::Prefill).iter().any(|n| n == node)
    }

    fn in_place(&self, c: &CpuModel<'_>, node: &str) -> usize {
        let (Some(s), Some(g)) = (c.schedule(Entry::Prefill), c.graph(Entry::Prefill)) else { return 0 };
        s.in_place.iter().filter(|(r, _)| g.nodes[r.node].name == node).count()
    }

    fn run(
        &self,
        c: &CpuModel<'_>,
        bind: &Bindings,
        inputs: &BTreeMap<String, Tensor>,
        state: &mut BTreeMap<String, StateTensor>,
    ) -> Result<BTreeMap<String, Tensor>, String> {
        c.run(Entry::Prefill, bind, inputs, state).map_err(|e| chain(&e))
    }
}

#[test]
fn every_op_on_the_cpu_backend() {
    let (rows, failures) = run_table(&Cpu);
    if std::env::var_os("QGC_SHOW").is_some() {
        for r in &rows {
            eprintln!("{:<80} {:.2e} (tol {:.0e})", r.what, r.worst, r.tol);
        }
    }
    assert!(rows.len() >= 200, "{} rows", rows.len());
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
