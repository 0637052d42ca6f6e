//! Every kernel source compiles with NVRTC for sm_80 and sm_90, defines exactly the kernels its
//! `Source` lists, and loads on the PTX interpreter (so every instruction NVRTC wrote for it is
//! one the interpreter executes); a source NVRTC rejects is a named error with NVRTC's log.
//! Needs NVRTC (`scripts/cuda-tools`); without it these tests fail and say so.

use qgc_runtime::cuda::kernels::SOURCES;
use qgc_runtime::cuda::{nvrtc, CudaError};

fn need_nvrtc() {
    if let Err(e) = nvrtc::version() {
        panic!("these tests compile kernels with NVRTC: {e}");
    }
}

#[test]
fn every_kernel_compiles_for_sm80_and_sm90_and_loads_on_the_interpreter() {
    need_nvrtc();
    assert!(SOURCES.len() >= 10);
    for s in SOURCES {
        for arch in [80, 90] {
            let ptx = nvrtc::compile(s, arch).unwrap_or_else(|e| panic!("{e}"));
            assert!(ptx.contains(&format!(".target sm_{arch}")), "{}: {arch}", s.name);
            let entries: Vec<&str> = ptx
                .lines()
                .filter_map(|l| l.trim().strip_prefix(".visible .entry "))
                .map(|l| l.split('(').next().unwrap_or("").trim())
                .collect();
            let mut want: Vec<&str> = s.kernels.to_vec();
            let mut got = entries.clone();
            want.sort();
            got.sort();
            assert_eq!(got, want, "{} (sm_{arch}): kernels in the PTX vs the Source list", s.name);
            assert!(!ptx.contains(".func"), "{}: device functions are not inlined", s.name);
            let mut interp = qgc_ptx::Interp::new(qgc_ptx::Options::default());
            let m = interp.load(s.name, &ptx).unwrap_or_else(|e| panic!("{} (sm_{arch}): {e}", s.name));
            assert_eq!(interp.kernels(m).len(), s.kernels.len());
        }
    }
}

#[test]
fn an_nvrtc_error_names_the_source_and_carries_the_log() {
    need_nvrtc();
    let e = nvrtc::compile_text("broken", "extern \"C\" __global__ void k(float* x) { x[0] = undefined_name; }", 90)
        .unwrap_err();
    match &e {
        CudaError::Compile { kernel, arch, log } => {
            assert_eq!((kernel.as_str(), arch.as_str()), ("broken", "sm_90"));
            assert!(log.contains("undefined_name"), "{log}");
        }
        other => panic!("expected a compile error, got {other:?}"),
    }
    assert!(e.to_string().starts_with("NVRTC failed to compile broken for sm_90:"), "{e}");
}
