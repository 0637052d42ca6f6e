//! Expert layouts (per-expert vs fused), dtype conversion and caching, on tiny checkpoints written
//! here with `safetensors::serialize`.

use qgc_ir::interp::{InterpError, WeightSource};
use qgc_runtime::weights::{Checkpoint, Weights};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A fresh empty directory under the system temp dir.
fn tmp(tag: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("qgc-weights-layout-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// (name, dtype, shape, little-endian bytes)
type Raw = (String, Dtype, Vec<usize>, Vec<u8>);

fn f32s(name: &str, shape: &[usize], v: &[f32]) -> Raw {
    (name.to_string(), Dtype::F32, shape.to_vec(), v.iter().flat_map(|x| x.to_le_bytes()).collect())
}

fn u16s(name: &str, dtype: Dtype, shape: &[usize], bits: &[u16]) -> Raw {
    (name.to_string(), dtype, shape.to_vec(), bits.iter().flat_map(|x| x.to_le_bytes()).collect())
}

fn write(file: &Path, tensors: &[Raw]) {
    let views: Vec<(String, TensorView)> =
        tensors.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    std::fs::write(file, safetensors::serialize(views, None).unwrap()).unwrap();
}

const E: usize = 3;
const I: usize = 2;
const H: usize = 4;
const P: &str = "model.layers.0.mlp.experts";

/// Element (e, r, c) of the gate, up and down stacks: distinct, exactly representable numbers.
fn gate(e: usize, r: usize, c: usize) -> f32 {
    (100 * e + 10 * r + c) as f32
}
fn up(e: usize, r: usize, c: usize) -> f32 {
    1000.0 + gate(e, r, c)
}
fn down(e: usize, r: usize, c: usize) -> f32 {
    -(2000.0 + gate(e, r, c))
}

/// The `[rows, cols]` matrix of expert `e` under `f`.
fn matrix(f: fn(usize, usize, usize) -> f32, e: usize, rows: usize, cols: usize) -> Vec<f32> {
    (0..rows).flat_map(|r| (0..cols).map(move |c| f(e, r, c))).collect()
}

fn per_expert_checkpoint() -> PathBuf {
    let dir = tmp("per-expert");
    let mut ts = Vec::new();
    for e in 0..E {
        ts.push(f32s(&format!("{P}.{e}.gate_proj.weight"), &[I, H], &matrix(gate, e, I, H)));
        ts.push(f32s(&format!("{P}.{e}.up_proj.weight"), &[I, H], &matrix(up, e, I, H)));
        ts.push(f32s(&format!("{P}.{e}.down_proj.weight"), &[H, I], &matrix(down, e, H, I)));
    }
    write(&dir.join("model.safetensors"), &ts);
    dir
}

fn fused_checkpoint() -> PathBuf {
    let dir = tmp("fused");
    let mut gate_up = Vec::new();
    let mut downs = Vec::new();
    for e in 0..E {
        gate_up.extend(matrix(gate, e, I, H));
        gate_up.extend(matrix(up, e, I, H));
        downs.extend(matrix(down, e, H, I));
    }
    let ts = [
        f32s(&format!("{P}.gate_up_proj"), &[E, 2 * I, H], &gate_up),
        f32s(&format!("{P}.down_proj"), &[E, H, I], &downs),
    ];
    write(&dir.join("model.safetensors"), &ts);
    dir
}

fn load(w: &Weights, name: &str, shape: &[usize]) -> Vec<f32> {
    w.weight(name, shape).unwrap_or_else(|e| panic!("{e}")).as_f32().unwrap().to_vec()
}

#[test]
fn per_expert_and_fused_layouts_give_the_same_stacks() {
    let (a, b) = (per_expert_checkpoint(), fused_checkpoint());
    let per = Weights::new(Checkpoint::open(&a).unwrap());
    let fused = Weights::new(Checkpoint::open(&b).unwrap());
    let stacks = [
        ("gate_proj", [E, I, H], gate as fn(_, _, _) -> _),
        ("up_proj", [E, I, H], up),
        ("down_proj", [E, H, I], down),
    ];
    for (leaf, shape, f) in stacks {
        let want: Vec<f32> = (0..E).flat_map(|e| matrix(f, e, shape[1], shape[2])).collect();
        let name = format!("{P}.{leaf}");
        assert_eq!(load(&per, &name, &shape), want, "per-expert {leaf}");
        assert_eq!(load(&fused, &name, &shape), want, "fused {leaf}");
        assert_eq!(per.weight(&name, &shape).unwrap().shape, shape.to_vec());
    }
    let _ = (std::fs::remove_dir_all(a), std::fs::remove_dir_all(b));
}

#[test]
fn bf16_and_f16_convert_exactly() {
    let dir = tmp("dtypes");
    // bf16 bits -> value: 1, -2, 1.5, -0.75, 3.140625, +inf, smallest subnormal 2^-133, -0.
    let bf16 = [0x3F80, 0xC000, 0x3FC0, 0xBF40, 0x4049, 0x7F80, 0x0001, 0x8000];
    let bf16_want = [1.0, -2.0, 1.5, -0.75, 3.140625, f32::INFINITY, 2f64.powi(-133) as f32, -0.0];
    // f16 bits -> value: 1, -2, 65504 (max), 2^-24 (smallest subnormal), 1365.0 / 4096.0, -inf.
    let f16 = [0x3C00, 0xC000, 0x7BFF, 0x0001, 0x3555, 0xFC00];
    let f16_want = [1.0, -2.0, 65504.0, 2f64.powi(-24) as f32, 1365.0 / 4096.0, f32::NEG_INFINITY];
    write(&dir.join("model.safetensors"), &[u16s("b", Dtype::BF16, &[2, 4], &bf16), u16s("h", Dtype::F16, &[6], &f16)]);
    let w = Weights::new(Checkpoint::open(&dir).unwrap());
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&load(&w, "b", &[2, 4])), bits(&bf16_want));
    assert_eq!(bits(&load(&w, "h", &[6])), bits(&f16_want));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bf16_fused_experts_convert_per_slice() {
    // gate_up_proj [E=2, 2I=2, H=2] in bf16: gate rows then up rows per expert.
    let dir = tmp("bf16-fused");
    let bits = [0x3F80, 0x4000, 0x4040, 0x4080, 0x40A0, 0x40C0, 0x40E0, 0x4100]; // 1..8
    write(&dir.join("x.safetensors"), &[u16s("experts.gate_up_proj", Dtype::BF16, &[2, 2, 2], &bits)]);
    let w = Weights::new(Checkpoint::open(&dir).unwrap());
    assert_eq!(load(&w, "experts.gate_proj", &[2, 1, 2]), [1.0, 2.0, 5.0, 6.0]);
    assert_eq!(load(&w, "experts.up_proj", &[2, 1, 2]), [3.0, 4.0, 7.0, 8.0]);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn each_tensor_is_converted_once() {
    let dir = fused_checkpoint();
    let w = Weights::new(Checkpoint::open(&dir).unwrap());
    let a = w.weight(&format!("{P}.gate_proj"), &[E, I, H]).unwrap();
    let b = w.weight(&format!("{P}.gate_proj"), &[E, I, H]).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(w.cached(), 1);
    w.weight(&format!("{P}.up_proj"), &[E, I, H]).unwrap();
    assert_eq!(w.cached(), 2);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn weight_errors_name_the_tensor_and_the_shapes() {
    let dir = tmp("errors");
    let mut ts = vec![f32s("model.norm.weight", &[H], &[1.0; H]), u16s("ids", Dtype::I16, &[2], &[1, 2])];
    for e in [0, 2] {
        ts.push(f32s(&format!("{P}.{e}.gate_proj.weight"), &[I, H], &matrix(gate, e, I, H)));
    }
    ts.push(f32s(&format!("{P}.1.gate_proj.weight"), &[I, H + 1], &[0.0; I * (H + 1)]));
    write(&dir.join("model.safetensors"), &ts);
    let w = Weights::new(Checkpoint::open(&dir).unwrap());
    let d = dir.display();
    let err = |name: &str, shape: &[usize]| w.weight(name, shape).unwrap_err();
    let cases: [(InterpError, String); 5] = [
        (err("model.norm.weight", &[5]), "\"model.norm.weight\": mis-shaped: expected [5], found [4]".into()),
        (err("nope", &[1]), "\"nope\": missing: expected [1]".into()),
        (err("ids", &[2]), "\"ids\": unsupported dtype: found I16 [2], supported F32, BF16, F16".into()),
        (
            err(&format!("{P}.gate_proj"), &[E, I, H]),
            format!("\"{P}.gate_proj\": {P}.1.gate_proj.weight: mis-shaped: expected [2, 4], found [2, 5]"),
        ),
        (
            err(&format!("{P}.up_proj"), &[E, I, H]),
            format!(
                "\"{P}.up_proj\": missing: expected [3, 2, 4] (per expert {P}.{{0..2}}.up_proj.weight [2, 4], \
                 or fused {P}.gate_up_proj [3, 4, 4])"
            ),
        ),
    ];
    for (got, want) in cases {
        assert_eq!(got.to_string(), format!("weight {want} (in checkpoint {d})"));
    }
    let _ = std::fs::remove_dir_all(dir);
}
