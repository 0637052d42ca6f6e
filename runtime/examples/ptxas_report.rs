//! Writes `runtime/src/cuda/kernels/PTXAS.md`: `ptxas -v` (registers, static shared memory,
//! stack frame, spills) for every shipped kernel — the kernel sources and the chain kernels of
//! `models/qwen3-next-tiny.json`'s schedules — for sm_80 and sm_90 (`qgc_runtime::cuda::ptxas`).
//! PTX and cubins go to `target/ptxas/`. Exits non-zero, naming them, when any kernel spills
//! (every shipped kernel counts as on the decode path). Run through `scripts/ptxas-report`.

use qgc_runtime::cuda::ptxas;
use std::path::PathBuf;
use std::process::ExitCode;

const MODEL: &str = "models/qwen3-next-tiny.json";

fn main() -> ExitCode {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = crate_dir.join("..");
    let spec = match std::fs::read_to_string(root.join(MODEL)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ptxas_report: reading {MODEL}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let chains = match ptxas::chains_of(&spec) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ptxas_report: the chains of {MODEL}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let report = match ptxas::generate(&ptxas::ARCHS, chains, Some(MODEL.into()), &target.join("ptxas")) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ptxas_report: {e}");
            return ExitCode::FAILURE;
        }
    };
    let out = ptxas::report_path(&crate_dir);
    if let Err(e) = std::fs::write(&out, report.markdown()) {
        eprintln!("ptxas_report: writing {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    println!("wrote runtime/src/cuda/kernels/PTXAS.md: {}", report.summary());
    let spills = report.spilling();
    if !spills.is_empty() {
        for s in spills {
            eprintln!(
                "ptxas_report: {} `{}` spills on sm_{}: {} bytes stored, {} bytes loaded ({} registers, {} bytes stack)",
                s.source, s.kernel, s.arch, s.spill_stores, s.spill_loads, s.registers, s.stack
            );
        }
        eprintln!("ptxas_report: kernels on the decode path must not spill");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
