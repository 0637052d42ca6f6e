//! `qgc compile --target cuda[:sm_XX]`: the artifact carries the PTX of every kernel the program
//! launches, so `--backend cuda` runs it with no NVRTC on the machine — proven here by running
//! it on the PTX interpreter with NVRTC made unavailable (`QGC_NO_NVRTC=1`, and every folder the
//! finder looks in pointed at an empty one), with the CPU backend's greedy ids. A CPU artifact
//! under the same conditions fails with the command that installs NVRTC; PTX for another arch is
//! a named error; the bytes are stable across fresh NVRTC compiles. Compiling needs NVRTC
//! (`scripts/cuda-tools`): without it these tests fail and say so.

mod common;

use common::{fixture, qgc, qgc_bin, root, temp_dir};
use std::path::Path;

/// As `common::qgc`, with NVRTC unavailable to the child when `no_nvrtc`, and the environment
/// overrides `env` (`None`: removed).
fn qgc_with(args: &[&str], tmp: &Path, no_nvrtc: bool, env: &[(&str, Option<&Path>)]) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(qgc_bin());
    cmd.args(args).current_dir(root());
    if no_nvrtc {
        let empty = tmp.join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        cmd.env("QGC_NO_NVRTC", "1");
        for var in ["QGC_CUDA_TOOLS", "XDG_CACHE_HOME", "HOME", "CUDA_PATH"] {
            cmd.env(var, &empty);
        }
    }
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out = cmd.output().unwrap();
    let norm = |b: &[u8]| {
        let s = String::from_utf8_lossy(b).replace(&tmp.display().to_string(), "$TMP");
        s.replace(&root().display().to_string(), "$ROOT")
    };
    (out.status.code().unwrap_or(-1), norm(&out.stdout), norm(&out.stderr))
}

fn compile(model: &str, out: &Path, target: &str, tmp: &Path) -> String {
    let (code, stdout, err) = qgc(&["compile", model, "-o", out.to_str().unwrap(), "--target", target], tmp);
    assert_eq!(code, 0, "qgc compile --target {target} (needs NVRTC: run scripts/cuda-tools):\n{err}");
    stdout
}

/// The `cuda` summary line: `cuda       sm_90, 10 kernel families + 2 chains, 381.4 KiB of PTX
/// (NVRTC 13.0)`.
fn cuda_line(out: &str) -> &str {
    out.lines().find(|l| l.starts_with("cuda ")).unwrap_or_else(|| panic!("no cuda line:\n{out}"))
}

fn run_ids(args: &[&str], tmp: &Path, no_nvrtc: bool) -> serde_json::Value {
    let (code, out, err) = qgc_with(args, tmp, no_nvrtc, &[]);
    assert_eq!(code, 0, "{args:?}:\n{err}");
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(v["generated_ids"].as_array().map(|a| a.len()), Some(4), "{v}");
    v["generated_ids"].clone()
}

#[test]
fn a_cuda_artifact_runs_on_the_interpreter_without_nvrtc() {
    let tmp = temp_dir("cuda-artifact");
    let dir = fixture("hybrid-3to1");
    let d = dir.to_str().unwrap();
    let art = tmp.join("m.qgc");
    let out = compile(d, &art, "cuda", &tmp);
    let line = cuda_line(&out);
    let sources = qgc_runtime::cuda::kernels::SOURCES.len();
    assert!(line.starts_with(&format!("cuda       sm_90, {sources} kernel families + ")), "{line}");
    assert!(line.contains(" chains, ") && line.contains(" of PTX (NVRTC "), "{line}");
    let a = art.to_str().unwrap();

    // inspect shows the same line, and --json the numbers.
    let (code, inspected, err) = qgc(&["inspect", a], &tmp);
    assert_eq!(code, 0, "{err}");
    assert_eq!(cuda_line(&inspected), line);
    let (code, json, err) = qgc(&["inspect", a, "--json"], &tmp);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let c = &v["cuda"];
    assert_eq!(c["arch"], "sm_90", "{v}");
    assert_eq!(c["families"], sources as u64, "{v}");
    let chains = c["chains"].as_u64().unwrap();
    assert!(chains >= 1, "{v}");
    assert!(line.contains(&format!(" + {chains} chains, ")), "{line}");
    assert!(c["ptx_bytes"].as_u64().unwrap() > 10_000, "{v}");
    // A CPU artifact has none.
    let (code, json, err) = qgc(&["inspect", d, "--json"], &tmp);
    assert_eq!(code, 0, "{err}");
    assert!(serde_json::from_str::<serde_json::Value>(&json).unwrap()["cuda"].is_null(), "{json}");

    // The run: the CUDA path on the interpreter, no NVRTC anywhere, the CPU backend's ids.
    let args = ["run", a, "--weights", d, "--tokens", "5,17,3,99", "-n", "4", "--temp", "0", "--json"];
    let on_cpu = run_ids(&args, &tmp, false);
    let on_ptx = run_ids(&[&args[..], &["--backend", "cuda", "--device", "ptx"]].concat(), &tmp, true);
    assert_eq!(on_ptx, on_cpu);

    // The same model compiled without --target cuda needs NVRTC, and says how to get it.
    let cpu_art = tmp.join("cpu.qgc");
    let (code, out, err) = qgc(&["compile", d, "-o", cpu_art.to_str().unwrap()], &tmp);
    assert_eq!(code, 0, "{err}");
    assert!(!out.lines().any(|l| l.starts_with("cuda ")), "{out}");
    let c = cpu_art.to_str().unwrap();
    let (code, _, err) = qgc_with(
        &["run", c, "--weights", d, "--tokens", "5", "-n", "1", "--backend", "cuda", "--device", "ptx"],
        &tmp,
        true,
        &[],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("NVRTC not found") && err.contains("run scripts/cuda-tools"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    // PTX for another arch than the device's is a named error.
    let s80 = tmp.join("s80.qgc");
    let out = compile(d, &s80, "cuda:sm_80", &tmp);
    assert!(cuda_line(&out).starts_with("cuda       sm_80, "), "{out}");
    let (code, _, err) = qgc_with(
        &[
            "run",
            s80.to_str().unwrap(),
            "--weights",
            d,
            "--tokens",
            "5",
            "-n",
            "1",
            "--backend",
            "cuda",
            "--device",
            "ptx",
        ],
        &tmp,
        true,
        &[],
    );
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        err.trim_end(),
        "error: loading the program and its embedded sm_80 PTX onto PTX interpreter (sm_90): loading module the \
         artifact's kernels: compiled for sm_80, this device is sm_90; recompile with --target cuda:sm_90"
    );
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn compile_target_cuda_is_byte_stable_and_all_or_nothing() {
    let tmp = temp_dir("cuda-artifact-stable");
    // Two compiles, each with an empty PTX cache (fresh NVRTC runs), give the same bytes.
    let tools = qgc_runtime::cuda::nvrtc::tools()
        .unwrap_or_else(|e| panic!("qgc compile --target cuda compiles with NVRTC: {e}"));
    let toolkit = tools.nvrtc.parent().and_then(Path::parent).unwrap().to_path_buf();
    let mut files = Vec::new();
    for n in 0..2 {
        let cache = tmp.join(format!("cache{n}"));
        std::fs::create_dir_all(&cache).unwrap();
        let f = tmp.join(format!("m{n}.qgc"));
        let env = [
            ("QGC_CUDA_TOOLS", None),
            ("XDG_CACHE_HOME", Some(cache.as_path())),
            ("HOME", Some(cache.as_path())),
            ("CUDA_PATH", Some(toolkit.as_path())),
        ];
        let args = ["compile", "models/qwen3-next-tiny.json", "-o", f.to_str().unwrap(), "--target", "cuda"];
        let (code, out, err) = qgc_with(&args, &tmp, false, &env);
        assert_eq!(code, 0, "{err}");
        assert!(cuda_line(&out).starts_with("cuda       sm_90, "), "{out}");
        assert!(cache.join("qgc/ptx").is_dir(), "the compile did not go through a fresh PTX cache");
        files.push(std::fs::read(&f).unwrap());
    }
    assert!(files[0] == files[1], "two compiles with --target cuda differ");

    // No NVRTC: a named error, and no artifact (not even a temporary file).
    let f = tmp.join("none.qgc");
    let (code, out, err) = qgc_with(
        &["compile", "models/qwen3-next-tiny.json", "-o", f.to_str().unwrap(), "--target", "cuda"],
        &tmp,
        true,
        &[],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.starts_with("error: --target cuda:sm_90: compiling the CUDA kernels: NVRTC not found")
            && err.contains("run scripts/cuda-tools"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(!f.exists() && !left.iter().any(|n| n.to_string_lossy().contains("none.qgc")), "{left:?}");

    // A bad --target is a usage error naming the accepted forms.
    for bad in ["gpu", "cuda:90", "cuda:sm_", "cuda:sm_9x", "cuda:sm_20", "cuda:sm_1000"] {
        let (code, _, err) = qgc(&["compile", "models/qwen3-next-tiny.json", "-o", "x.qgc", "--target", bad], &tmp);
        assert_eq!(code, 2, "{bad}: {err}");
        assert!(err.contains("expected cpu, cuda (= cuda:sm_90) or cuda:sm_XX, e.g. cuda:sm_80"), "{bad}: {err}");
    }
    assert!(!root().join("x.qgc").exists());
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn an_artifact_whose_ptx_lacks_a_kernel_family_is_refused_on_open() {
    use qgc_codegen::cuda::{launched_chains, CudaKernels};
    use qgc_ir::LowerOptions;
    let tmp = temp_dir("cuda-artifact-families");
    let m = qgc_runtime::open_model(&root().join("models/qwen3-next-tiny.json"), &LowerOptions::default()).unwrap();
    let (compiled, _) = qgc_codegen::compile::compile_program(&m.program, &mut |_, _| {}).unwrap();
    // PTX-shaped text is enough: opening checks presence and arch, loading parses it.
    let ptx = ".version 9.0\n.target sm_90\n.address_size 64\n".to_string();
    let names = launched_chains(&compiled)
        .into_keys()
        .chain(qgc_runtime::cuda::kernels::SOURCES.iter().map(|s| s.name.to_string()));
    let modules = names.map(|n| (n, ptx.clone())).collect();
    let mut art = qgc_codegen::Artifact::new(m.spec, m.options, m.program, compiled);
    art.cuda = Some(CudaKernels { arch: 90, nvrtc: "13.0".into(), modules });
    let f = tmp.join("m.qgc");
    art.write(&f).unwrap();
    let opened = qgc_runtime::open_model(&f, &LowerOptions::default()).unwrap();
    assert_eq!(opened.cuda.as_ref(), art.cuda.as_ref());
    art.cuda.as_mut().unwrap().modules.remove("attention");
    art.write(&f).unwrap();
    let err = qgc_runtime::open_model(&f, &LowerOptions::default()).unwrap_err().to_string();
    assert_eq!(
        err.replace(&tmp.display().to_string(), "$TMP"),
        "$TMP/m.qgc: its CUDA kernels lack the kernel family attention (written by another qgc?); recompile with \
         --target cuda:sm_90"
    );
    let _ = std::fs::remove_dir_all(&tmp);
}
