//! Shared helpers for the whole-pipeline tests.
#![allow(dead_code)]

use safetensors::SafeTensors;
use std::path::{Path, PathBuf};

/// The repository root (`QGC_ROOT` overrides it: test binaries carried to another machine, as
/// `scripts/gpu-check` does, find the tree there).
pub fn root() -> PathBuf {
    std::env::var_os("QGC_ROOT").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The qgc binary under test (`QGC_BIN` overrides it, as `QGC_ROOT`).
pub fn qgc_bin() -> PathBuf {
    std::env::var_os("QGC_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_qgc")))
}

/// `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures").join(name)
}

/// Every HF fixture directory (those with a reference.safetensors).
pub fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("tests/fixtures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("reference.safetensors").is_file())
        .collect();
    v.sort();
    assert!(v.len() >= 3, "fixtures missing: {v:?}");
    v
}

/// HF reference outputs of one fixture.
pub struct Reference {
    pub tokens: Vec<i32>,
    pub prefill: usize,
    /// [T, V] prefill P then decode.
    pub logits: Vec<f32>,
    /// [T, V] one prefill over all.
    pub logits_full: Vec<f32>,
    pub vocab: usize,
    pub gen_prompt: Vec<i32>,
    pub gen_ids: Vec<i32>,
}

fn i64s(st: &SafeTensors, name: &str) -> Vec<i32> {
    let t = st.tensor(name).unwrap();
    t.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as i32).collect()
}

fn f32s(st: &SafeTensors, name: &str) -> (Vec<f32>, Vec<usize>) {
    let t = st.tensor(name).unwrap();
    let v = t.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    (v, t.shape().to_vec())
}

/// Reads `<dir>/reference.safetensors`.
pub fn reference(dir: &Path) -> Reference {
    let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (logits, shape) = f32s(&st, "logits");
    let (logits_full, _) = f32s(&st, "logits_full");
    Reference {
        tokens: i64s(&st, "tokens"),
        prefill: i64s(&st, "prefill")[0] as usize,
        logits,
        logits_full,
        vocab: shape[1],
        gen_prompt: i64s(&st, "gen_prompt"),
        gen_ids: i64s(&st, "gen_ids"),
    }
}

/// max |a - b| / max |b|.
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
    let diff = a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((*x as f64 - *y as f64).abs()));
    diff / scale
}

/// A fresh empty directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "qgc-test-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Copies a fixture checkpoint into a fresh temp dir (to damage it).
pub fn copy_fixture(name: &str) -> PathBuf {
    let d = temp_dir(name);
    for e in std::fs::read_dir(fixture(name)).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, d.join(p.file_name().unwrap())).unwrap();
    }
    d
}

/// Asserts that `text` equals `tests/golden/<golden>`, naming the first differing line; with
/// `QGC_BLESS` set, writes `text` there first (golden files are updated only on purpose).
pub fn assert_golden(text: &str, golden: &str) {
    let path = root().join("tests/golden").join(golden);
    if std::env::var_os("QGC_BLESS").is_some() {
        std::fs::write(&path, text).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    if text != want {
        let line = text.lines().zip(want.lines()).position(|(a, b)| a != b).unwrap_or(0);
        panic!(
            "IR differs from {golden} at line {}:\n  now:    {}\n  golden: {}\n(QGC_BLESS=1 to accept)",
            line + 1,
            text.lines().nth(line).unwrap_or("<end>"),
            want.lines().nth(line).unwrap_or("<end>")
        );
    }
}

/// Runs the qgc binary with `args` in the repo root; returns (exit code, stdout, stderr), with
/// `tmp` written as `$TMP` and the repo root as `$ROOT` so expected texts need no machine paths.
pub fn qgc(args: &[&str], tmp: &Path) -> (i32, String, String) {
    let out = std::process::Command::new(qgc_bin()).args(args).current_dir(root()).output().unwrap();
    let norm = |b: &[u8]| {
        let s = String::from_utf8_lossy(b).replace(&tmp.display().to_string(), "$TMP");
        s.replace(&root().display().to_string(), "$ROOT")
    };
    (out.status.code().unwrap_or(-1), norm(&out.stdout), norm(&out.stderr))
}
