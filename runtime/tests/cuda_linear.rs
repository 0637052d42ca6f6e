//! The matmul launcher (`cuda::kernels::linear::matmul`) on the PTX interpreter around the
//! GEMV/GEMM switch: rows 1, 7, 8, 9 and 20, f32 and bf16 weights, every epilogue and gate
//! indexing (Suffix lengths that divide `n`, equal it and span several rows, so chunk
//! boundaries inside a gate period are covered), `k` on and off the vector path. The device
//! refuses a GEMM whose A and B types differ, as cuBLAS does on a GPU (`gpu/blas.rs`), so bf16
//! weights above 8 rows must not reach `Device::gemm`. Reference: f64 from the same
//! (bf16-rounded) values; tolerance 1e-5 of the largest |y|.
//! Needs NVRTC (`scripts/cuda-tools`); without it the test fails and says so.

use qgc_codegen::binding::{Epilogue, Gate, MatMul};
use qgc_ir::{DType, Poly};
use qgc_runtime::cuda::kernels::linear::{matmul, matmul_scratch_bytes};
use qgc_runtime::cuda::kernels::Loaded;
use qgc_runtime::cuda::model::load_kernels;
use qgc_runtime::cuda::ptx::PtxDevice;
use qgc_runtime::cuda::{nvrtc, Arg, CudaError, DevPtr, Device, Gemm, LaunchConfig, ModuleId};

/// The interpreter, refusing mixed-type GEMMs as cuBLAS does.
struct StrictGemm(PtxDevice);

impl Device for StrictGemm {
    fn describe(&self) -> String {
        self.0.describe()
    }
    fn arch(&self) -> u32 {
        self.0.arch()
    }
    fn memory(&self) -> Result<(usize, usize), CudaError> {
        self.0.memory()
    }
    fn alloc(&self, bytes: usize) -> Result<DevPtr, CudaError> {
        self.0.alloc(bytes)
    }
    fn free(&self, ptr: DevPtr) -> Result<(), CudaError> {
        self.0.free(ptr)
    }
    fn htod(&self, src: &[u8], dst: DevPtr) -> Result<(), CudaError> {
        self.0.htod(src, dst)
    }
    fn dtoh(&self, src: DevPtr, dst: &mut [u8]) -> Result<(), CudaError> {
        self.0.dtoh(src, dst)
    }
    fn dtod(&self, src: DevPtr, dst: DevPtr, bytes: usize) -> Result<(), CudaError> {
        self.0.dtod(src, dst, bytes)
    }
    fn zero(&self, dst: DevPtr, bytes: usize) -> Result<(), CudaError> {
        self.0.zero(dst, bytes)
    }
    fn load_module(&self, name: &str, ptx: &str) -> Result<ModuleId, CudaError> {
        self.0.load_module(name, ptx)
    }
    fn launch(&self, module: ModuleId, kernel: &str, cfg: LaunchConfig, args: &[Arg]) -> Result<(), CudaError> {
        self.0.launch(module, kernel, cfg, args)
    }
    fn gemm(&self, g: &Gemm) -> Result<(), CudaError> {
        if g.a.1 != g.b.1 {
            return Err(CudaError::Invalid(format!("GEMM with A {:?} and B {:?}: cuBLAS refuses it", g.a.1, g.b.1)));
        }
        self.0.gemm(g)
    }
    fn synchronize(&self) -> Result<(), CudaError> {
        self.0.synchronize()
    }
}

/// A small deterministic generator (uniform in ±1).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// `g`'s index for row `r`, column `j` of an `[rows, n]` tensor.
fn gate_index(how: Gate, r: usize, j: usize, n: usize) -> usize {
    match how {
        Gate::Full => r * n + j,
        Gate::Row => r,
        Gate::Suffix(len) => (r * n + j) % len,
    }
}

/// Elements of a gate indexed as `how` over `[rows, n]`.
fn gate_len(how: Gate, rows: usize, n: usize) -> usize {
    match how {
        Gate::Full => rows * n,
        Gate::Row => rows,
        Gate::Suffix(len) => len,
    }
}

/// The f64 reference of `y = x·wᵀ` with `e` (`w` already as the device holds it).
fn reference(e: Epilogue, rows: usize, k: usize, n: usize, x: &[f32], w: &[f32], g: &[f32]) -> Vec<f64> {
    let x: Vec<f64> = match e {
        Epilogue::SigmoidGatePrologue { how, .. } => {
            (0..rows * k).map(|i| f64::from(x[i]) * sigmoid(f64::from(g[gate_index(how, i / k, i % k, k)]))).collect()
        }
        _ => x.iter().map(|&v| f64::from(v)).collect(),
    };
    let dot = |r: usize, j: usize| (0..k).map(|i| x[r * k + i] * f64::from(w[j * k + i])).sum::<f64>();
    let mut y = vec![0.0; rows * n];
    for r in 0..rows {
        for j in 0..n {
            y[r * n + j] = match e {
                Epilogue::Plain | Epilogue::SigmoidGatePrologue { .. } => dot(r, j),
                Epilogue::SwiGlu => {
                    let a = dot(r, j);
                    a * sigmoid(a) * dot(r, n + j)
                }
                Epilogue::SigmoidGate { how, .. } => dot(r, j) * sigmoid(f64::from(g[gate_index(how, r, j, n)])),
            };
        }
    }
    y
}

fn upload(dev: &dyn Device, v: &[f32]) -> DevPtr {
    let p = dev.alloc((v.len() * 4).max(4)).unwrap();
    dev.htod(&v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(), p).unwrap();
    p
}

#[allow(clippy::too_many_arguments)]
fn run_one(
    dev: &dyn Device,
    loaded: &Loaded,
    e: Epilogue,
    rows: usize,
    k: usize,
    n: usize,
    dtype: DType,
    rng: &mut Rng,
) -> Result<f64, String> {
    let wrows = if e == Epilogue::SwiGlu { 2 * n } else { n };
    let x = rng.vec(rows * k, 1.0);
    let mut w = rng.vec(wrows * k, (3.0 / k as f32).sqrt());
    let g = match e {
        Epilogue::SigmoidGate { how, .. } => rng.vec(gate_len(how, rows, n), 2.0),
        Epilogue::SigmoidGatePrologue { how, .. } => rng.vec(gate_len(how, rows, k), 2.0),
        _ => Vec::new(),
    };
    let wp = if dtype == DType::BF16 {
        let bits: Vec<half::bf16> = w.iter().map(|&v| half::bf16::from_f32(v)).collect();
        w = bits.iter().map(|b| b.to_f32()).collect();
        let p = dev.alloc(bits.len() * 2).unwrap();
        dev.htod(&bits.iter().flat_map(|b| b.to_bits().to_le_bytes()).collect::<Vec<u8>>(), p).unwrap();
        p
    } else {
        upload(dev, &w)
    };
    let xp = upload(dev, &x);
    let gp = (!g.is_empty()).then(|| upload(dev, &g));
    let out = dev.alloc(rows * n * 4).unwrap();
    let m = MatMul { rows: Poly::constant(rows as u64), k, n, weight: 1, epilogue: e };
    let sb = matmul_scratch_bytes(&m, rows);
    let scratch = (sb > 0).then(|| dev.alloc(sb).unwrap());
    matmul(dev, loaded, &m, rows, xp, wp, dtype, gp, out, scratch).map_err(|err| err.to_string())?;
    let mut bytes = vec![0u8; rows * n * 4];
    dev.dtoh(out, &mut bytes).unwrap();
    let got: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let want = reference(e, rows, k, n, &x, &w, &g);
    let scale = want.iter().fold(0.0f64, |a, v| a.max(v.abs())).max(1e-30);
    let worst = got.iter().zip(&want).fold(0.0f64, |a, (&g, &w)| a.max((f64::from(g) - w).abs()));
    for p in [Some(xp), Some(wp), gp, Some(out), scratch].into_iter().flatten() {
        dev.free(p).unwrap();
    }
    Ok(worst / scale)
}

#[test]
fn matmul_around_the_gemv_rows_with_f32_and_bf16_weights_and_every_epilogue() {
    if let Err(e) = nvrtc::version() {
        panic!("this test compiles the linear kernels with NVRTC: {e}");
    }
    let opts = qgc_ptx::Options { order: qgc_ptx::Order::Random(5), ..Default::default() };
    let dev = StrictGemm(PtxDevice::new(90, 1 << 30, opts));
    let loaded = load_kernels(&dev).unwrap_or_else(|e| panic!("{e}"));
    let n = 12;
    let mut rng = Rng(7);
    let mut failures = Vec::new();
    let mut cases = 0;
    for k in [40, 13] {
        let mut epilogues = vec![Epilogue::Plain, Epilogue::SwiGlu];
        // Suffix 4 divides n; 12 is n; 36 spans three rows, so a chunk starting at row 8 starts
        // inside a gate period (8·12 mod 36 = 24).
        for how in [Gate::Full, Gate::Row, Gate::Suffix(4), Gate::Suffix(n), Gate::Suffix(3 * n)] {
            epilogues.push(Epilogue::SigmoidGate { gate: 2, how });
        }
        for how in [Gate::Full, Gate::Row, Gate::Suffix(k), Gate::Suffix(3 * k)] {
            epilogues.push(Epilogue::SigmoidGatePrologue { gate: 2, how });
        }
        for e in epilogues {
            for dtype in [DType::F32, DType::BF16] {
                for rows in [1, 7, 8, 9, 20] {
                    cases += 1;
                    let what = format!("{e:?} rows={rows} k={k} n={n} w={dtype:?}");
                    match run_one(&dev, &loaded, e, rows, k, n, dtype, &mut rng) {
                        Ok(err) if err <= 1e-5 => {}
                        Ok(err) => failures.push(format!("{what}: relative error {err:.2e} > 1e-5")),
                        Err(msg) => failures.push(format!("{what}: {msg}")),
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of {cases} cases failed:\n{}", failures.len(), failures.join("\n"));
}
