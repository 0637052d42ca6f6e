//! The kept `ptxas -v` report (`runtime/src/cuda/kernels/PTXAS.md`, written by
//! `scripts/ptxas-report`) lists every kernel of every source for sm_80 and sm_90, is exactly
//! what the script writes today (so it is kept up to date), and no kernel spills.
//! Needs NVRTC and ptxas (`scripts/cuda-tools`); without them this test fails and says so.

use qgc_runtime::cuda::{nvrtc, ptxas};
use std::path::PathBuf;

const MODEL: &str = "models/qwen3-next-tiny.json";

/// The line of the header naming the toolchain (compared before the whole file).
fn toolchain_line(md: &str) -> &str {
    md.lines().find(|l| l.contains("compiled by NVRTC")).unwrap_or("")
}

#[test]
fn the_kept_ptxas_report_is_current_covers_every_kernel_and_nothing_spills() {
    if let Err(e) = nvrtc::version().and_then(|_| ptxas::ptxas_path()) {
        panic!("this test compiles and assembles every kernel with NVRTC and ptxas: {e}");
    }
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let path = ptxas::report_path(&crate_dir);
    let kept = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/ptxas-report to write it", path.display()));
    for (source, kernel) in ptxas::source_kernels() {
        for arch in ptxas::ARCHS {
            let row = format!("| {source} | `{kernel}` | sm_{arch} |");
            assert!(
                kept.contains(&row),
                "PTXAS.md has no row for {kernel} ({source}, sm_{arch}); run scripts/ptxas-report"
            );
        }
    }

    let spec = std::fs::read_to_string(crate_dir.join("..").join(MODEL)).unwrap();
    let chains = ptxas::chains_of(&spec).unwrap_or_else(|e| panic!("{e}"));
    assert!(!chains.is_empty(), "{MODEL} has no elementwise chains");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ptxas");
    let report = ptxas::generate(&ptxas::ARCHS, chains, Some(MODEL.into()), &dir).unwrap_or_else(|e| panic!("{e}"));
    let spills: Vec<String> =
        report.spilling().iter().map(|s| format!("{} ({}, sm_{})", s.kernel, s.source, s.arch)).collect();
    assert!(spills.is_empty(), "kernels spill registers: {}", spills.join(", "));
    let fresh = report.markdown();
    if toolchain_line(&fresh) != toolchain_line(&kept) {
        // Another NVRTC/ptxas than the pinned one the file was written with (a system toolkit
        // found first): register counts may differ, so only coverage and spills are checked.
        eprintln!(
            "note: PTXAS.md was written with another toolchain; not compared.\n  kept:  {}\n  fresh: {}",
            toolchain_line(&kept),
            toolchain_line(&fresh)
        );
        return;
    }
    if fresh != kept {
        let diff: Vec<String> = (kept.lines().zip(fresh.lines()))
            .filter(|(a, b)| a != b)
            .take(8)
            .map(|(a, b)| format!("  kept:  {a}\n  fresh: {b}"))
            .collect();
        panic!(
            "runtime/src/cuda/kernels/PTXAS.md is out of date ({} vs {} lines); run scripts/ptxas-report and \
             commit it. First differences:\n{}",
            kept.lines().count(),
            fresh.lines().count(),
            diff.join("\n")
        );
    }
}
