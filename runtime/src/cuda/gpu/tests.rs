//! Tests of the real-GPU device. On a machine without CUDA they check that opening fails with a
//! named error and never panics, plus the pure parts (GEMM argument checks, PTX target checks,
//! load-error messages, argument packing, range checks). Where a GPU opens, the same tests also
//! run memory, launch, GEMM and error paths on it.

use super::blas::gemm_call;
use super::*;
use crate::cuda::device::{GemmType, Transpose};
use cudarc::cublas::sys as cublas;
use std::panic::catch_unwind;

/// A hand-written PTX kernel (no NVRTC needed): `out[i] = v` for `i < n`.
const FILL_PTX: &str = "\
.version 8.0
.target sm_80
.address_size 64

.visible .entry fill_f32(
\t.param .u64 fill_f32_param_0,
\t.param .f32 fill_f32_param_1,
\t.param .u32 fill_f32_param_2
)
{
\t.reg .pred %p<2>;
\t.reg .b32 %r<6>;
\t.reg .f32 %f<2>;
\t.reg .b64 %rd<5>;

\tld.param.u64 %rd1, [fill_f32_param_0];
\tld.param.f32 %f1, [fill_f32_param_1];
\tld.param.u32 %r1, [fill_f32_param_2];
\tmov.u32 %r2, %ctaid.x;
\tmov.u32 %r3, %ntid.x;
\tmov.u32 %r4, %tid.x;
\tmad.lo.s32 %r5, %r2, %r3, %r4;
\tsetp.ge.u32 %p1, %r5, %r1;
\t@%p1 bra $L__done;
\tcvta.to.global.u64 %rd2, %rd1;
\tmul.wide.u32 %rd3, %r5, 4;
\tadd.s64 %rd4, %rd2, %rd3;
\tst.global.f32 [%rd4], %f1;
$L__done:
\tret;
}
";

/// The GPU, when this machine has one; `None` (said on stderr) otherwise.
fn gpu() -> Option<GpuDevice> {
    match GpuDevice::open(0) {
        Ok(dev) => Some(dev),
        Err(e) => {
            eprintln!("no GPU here ({e}); the on-device half of this test is a GPU-machine check");
            None
        }
    }
}

#[test]
fn open_without_a_gpu_is_a_named_error_never_a_panic() {
    let opened = catch_unwind(|| GpuDevice::open(0));
    let Ok(opened) = opened else { panic!("GpuDevice::open panicked") };
    match opened {
        Err(e @ CudaError::NoDriver) => assert!(e.to_string().contains("libcuda.so.1"), "{e}"),
        Err(CudaError::NoDevice(msg)) => assert!(driver_present(), "NoDevice without a driver: {msg}"),
        Err(e) => panic!("unexpected error opening the GPU: {e}"),
        Ok(dev) => assert!(dev.describe().contains("(sm_"), "{}", dev.describe()),
    }
    if !driver_present() {
        let Err(e) = catch_unwind(probe).expect("probe panicked") else { panic!("probe succeeded without a driver") };
        assert!(matches!(e, CudaError::NoDriver) && e.to_string().contains("libcuda.so.1"), "{e}");
    }
}

/// A GEMM description with the given types and shapes, column-major and tightly packed.
fn gemm(ta: Transpose, tb: Transpose, m: usize, n: usize, k: usize, ty: (GemmType, GemmType)) -> Gemm {
    let lda = if ta == Transpose::N { m } else { k };
    let ldb = if tb == Transpose::N { k } else { n };
    Gemm {
        trans_a: ta,
        trans_b: tb,
        m,
        n,
        k,
        alpha: 1.0,
        a: (DevPtr(0x1000), ty.0, lda, m * k),
        b: (DevPtr(0x2000), ty.1, ldb, k * n),
        beta: 0.0,
        c: (DevPtr(0x3000), m, m * n),
        batch: 2,
    }
}

#[test]
fn gemm_takes_f32_or_bf16_pairs_and_refuses_mixed_ones() {
    use GemmType::{Bf16, F32};
    let f32_call = gemm_call(&gemm(Transpose::T, Transpose::N, 3, 5, 7, (F32, F32))).unwrap().unwrap();
    assert_eq!(f32_call.ab_type, cublas::cudaDataType::CUDA_R_32F);
    assert_eq!((f32_call.m, f32_call.n, f32_call.k, f32_call.lda, f32_call.ldb, f32_call.ldc), (3, 5, 7, 7, 7, 3));
    assert_eq!((f32_call.stride_a, f32_call.stride_b, f32_call.stride_c, f32_call.batch), (21, 35, 15, 2));
    assert_eq!(f32_call.trans_a, cublas::cublasOperation_t::CUBLAS_OP_T);
    let bf16_call = gemm_call(&gemm(Transpose::N, Transpose::T, 3, 5, 7, (Bf16, Bf16))).unwrap().unwrap();
    assert_eq!(bf16_call.ab_type, cublas::cudaDataType::CUDA_R_16BF);
    for mixed in [(Bf16, F32), (F32, Bf16)] {
        let err = gemm_call(&gemm(Transpose::N, Transpose::N, 3, 5, 7, mixed)).unwrap_err();
        assert!(matches!(err, CudaError::Invalid(_)) && err.to_string().contains("one type for A and B"), "{err}");
    }
}

#[test]
fn gemm_checks_leading_dimensions_sizes_and_empty_work() {
    let ty = (GemmType::F32, GemmType::F32);
    let mut g = gemm(Transpose::N, Transpose::N, 4, 4, 4, ty);
    g.a.2 = 3;
    assert!(gemm_call(&g).unwrap_err().to_string().contains("lda = 3"));
    let mut g = gemm(Transpose::N, Transpose::N, 4, 4, 4, ty);
    g.c.1 = 2;
    assert!(gemm_call(&g).unwrap_err().to_string().contains("ldc = 2"));
    let mut g = gemm(Transpose::N, Transpose::N, 1 << 31, 1, 1, ty);
    g.c.1 = 1 << 31;
    assert!(gemm_call(&g).unwrap_err().to_string().contains("exceeds i32"));
    assert_eq!(gemm_call(&gemm(Transpose::N, Transpose::N, 0, 4, 4, ty)).unwrap(), None);
    let mut g = gemm(Transpose::N, Transpose::N, 4, 4, 4, ty);
    g.batch = 0;
    assert_eq!(gemm_call(&g).unwrap(), None);
}

#[test]
fn ptx_for_another_arch_is_refused_by_name() {
    assert!(check_target(FILL_PTX, 80).is_ok());
    assert!(check_target(FILL_PTX, 90).is_ok());
    let sm90 = FILL_PTX.replace(".target sm_80", ".target sm_90");
    let err = check_target(&sm90, 80).unwrap_err();
    assert!(err.contains("targets sm_90") && err.contains("GPU is sm_80"), "{err}");
    let sm90a = FILL_PTX.replace(".target sm_80", ".target sm_90a");
    assert!(check_target(&sm90a, 90).is_ok());
    assert!(check_target(&sm90a, 100).unwrap_err().contains("sm_90a"));
    assert!(check_target("no directives", 90).is_ok());
}

#[test]
fn ptx_newer_than_the_driver_is_said_plainly() {
    let ptx = FILL_PTX.replace(".version 8.0", ".version 9.5");
    let msg = explain_load(CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION, "", &ptx, 13000, 90);
    assert!(msg.starts_with("PTX .version 9.5 is newer than this driver (CUDA 13.0) supports"), "{msg}");
    let msg = explain_load(CUresult::CUDA_ERROR_NO_BINARY_FOR_GPU, "ptxas fatal", FILL_PTX, 12080, 90);
    assert!(msg.contains("sm_90") && msg.contains("sm_80") && msg.contains("JIT log: ptxas fatal"), "{msg}");
    assert_eq!(cuda_version(12080), "12.8");
    assert_eq!(directive(".version 9.0\n.target sm_90, debug\n", ".target"), Some("sm_90"));
}

#[test]
fn launch_arguments_are_packed_and_checked() {
    let args = [Arg::Ptr(DevPtr(0x1122_3344_5566_7788)), Arg::F32(1.5), Arg::I32(-2), Arg::U32(7), Arg::I64(-3)];
    let slots = pack_args(&args);
    assert_eq!(slots[0], 0x1122_3344_5566_7788);
    assert_eq!(slots[1] as u32, 1.5f32.to_bits());
    assert_eq!(slots[2] as u32 as i32, -2);
    assert_eq!(slots[4] as i64, -3);
    assert!(check_params(Some(&[8, 4, 4, 4, 8]), &args).is_ok());
    assert!(check_params(None, &args).is_ok());
    assert!(check_params(Some(&[8, 4]), &args).unwrap_err().contains("takes 2 parameters, the launch passes 5"));
    assert!(check_params(Some(&[8, 8, 4, 4, 8]), &args).unwrap_err().contains("parameter 1 is 8 bytes"));
    let bad = LaunchConfig { grid: (1, 1, 1), block: (1024, 2, 1), shared_bytes: 0 };
    assert!(check_config(&bad).unwrap_err().contains("2048 threads"));
    assert!(check_config(&LaunchConfig::linear(0, 32)).unwrap_err().contains("empty launch"));
}

#[test]
fn copies_must_stay_inside_one_allocation() {
    let allocs = BTreeMap::from([(0x1000u64, 256usize), (0x2000, 16)]);
    assert!(within(&allocs, 0x1000, 256));
    assert!(within(&allocs, 0x10f0, 16));
    assert!(!within(&allocs, 0x10f0, 17));
    assert!(!within(&allocs, 0x0fff, 1));
    assert!(!within(&allocs, 0x1800, 1));
    assert!(within(&allocs, 0x2004, 12));
    assert!(!within(&allocs, u64::MAX, 2));
}

#[test]
fn gpu_memory_round_trips_and_errors_are_named() {
    let Some(dev) = gpu() else { return };
    let (free, total) = dev.memory().unwrap();
    assert!(free <= total && total > 0);
    let a = dev.alloc(64).unwrap();
    let b = dev.alloc(64).unwrap();
    let src: Vec<u8> = (0..64u8).collect();
    dev.htod(&src, a).unwrap();
    dev.dtod(a.offset(16), b, 32).unwrap();
    dev.zero(b.offset(8), 8).unwrap();
    let mut out = vec![0xffu8; 32];
    dev.dtoh(b, &mut out).unwrap();
    let mut want: Vec<u8> = (16..48u8).collect();
    want[8..16].fill(0);
    assert_eq!(out, want);
    assert!(matches!(dev.htod(&src, a.offset(8)), Err(CudaError::Invalid(_))));
    let err = dev.alloc(total + (1 << 30)).unwrap_err();
    assert!(matches!(err, CudaError::OutOfMemory { .. }) && err.to_string().contains("needed"), "{err}");
    dev.free(a).unwrap();
    dev.free(b).unwrap();
    assert!(matches!(dev.free(a), Err(CudaError::Invalid(_))));
    assert!(probe().unwrap().contains("free"));
}

#[test]
fn gpu_launches_a_hand_written_kernel_and_names_failures() {
    let Some(mut dev) = gpu() else { return };
    dev.set_check_launches(true);
    let n = 1000usize;
    let m = dev.load_module("fill", FILL_PTX).unwrap();
    let out = dev.alloc(n * 4).unwrap();
    let args = [Arg::Ptr(out), Arg::F32(2.5), Arg::U32(n as u32)];
    dev.launch(m, "fill_f32", LaunchConfig::linear(n.div_ceil(256) as u32, 256), &args).unwrap();
    let mut bytes = vec![0u8; n * 4];
    dev.dtoh(out, &mut bytes).unwrap();
    assert!(bytes.chunks_exact(4).all(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) == 2.5));
    let err = dev.launch(m, "nope", LaunchConfig::linear(1, 1), &args).unwrap_err();
    assert!(err.to_string().contains("no kernel named nope"), "{err}");
    if param_info_available() {
        let err = dev.launch(m, "fill_f32", LaunchConfig::linear(1, 1), &args[..2]).unwrap_err();
        assert!(err.to_string().contains("takes 3 parameters"), "{err}");
    }
    let newer = FILL_PTX.replace(".version 8.0", ".version 99.9");
    let err = dev.load_module("newer", &newer).unwrap_err();
    assert!(err.to_string().contains("loading module newer"), "{err}");
    let err = dev.load_module("broken", "this is not PTX").unwrap_err();
    assert!(err.to_string().contains("loading module broken"), "{err}");
}

/// Column-major reference: `C_i = alpha op(A_i) op(B_i) + beta C_i`.
fn reference(g: &Gemm, a: &[f32], b: &[f32], c: &mut [f32]) {
    for i in 0..g.batch {
        for col in 0..g.n {
            for row in 0..g.m {
                let mut acc = 0.0f64;
                for p in 0..g.k {
                    let av = match g.trans_a {
                        Transpose::N => a[i * g.a.3 + row + p * g.a.2],
                        Transpose::T => a[i * g.a.3 + p + row * g.a.2],
                    };
                    let bv = match g.trans_b {
                        Transpose::N => b[i * g.b.3 + p + col * g.b.2],
                        Transpose::T => b[i * g.b.3 + col + p * g.b.2],
                    };
                    acc += av as f64 * bv as f64;
                }
                let at = i * g.c.2 + row + col * g.c.1;
                c[at] = g.alpha * acc as f32 + g.beta * c[at];
            }
        }
    }
}

#[test]
fn gpu_gemm_matches_a_column_major_reference() {
    let Some(dev) = gpu() else { return };
    for (ty, tol) in [(GemmType::F32, 1e-5f32), (GemmType::Bf16, 1e-4)] {
        for (ta, tb) in [(Transpose::N, Transpose::N), (Transpose::T, Transpose::N), (Transpose::N, Transpose::T)] {
            let mut g = gemm(ta, tb, 5, 3, 9, (ty, ty));
            (g.alpha, g.beta) = (0.5, 2.0);
            let val = |i: usize| half::bf16::from_f32(((i * 37 % 19) as f32 - 9.0) / 8.0).to_f32();
            let a: Vec<f32> = (0..g.batch * g.a.3).map(val).collect();
            let b: Vec<f32> = (0..g.batch * g.b.3).map(|i| val(i + 5)).collect();
            let mut c: Vec<f32> = (0..g.batch * g.c.2).map(|i| val(i + 11)).collect();
            let upload = |v: &[f32]| {
                let bytes: Vec<u8> = match ty {
                    GemmType::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    GemmType::Bf16 => v.iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes()).collect(),
                };
                let p = dev.alloc(bytes.len()).unwrap();
                dev.htod(&bytes, p).unwrap();
                p
            };
            (g.a.0, g.b.0, g.c.0) = (upload(&a), upload(&b), dev.alloc(c.len() * 4).unwrap());
            let c_bytes: Vec<u8> = c.iter().flat_map(|x| x.to_le_bytes()).collect();
            dev.htod(&c_bytes, g.c.0).unwrap();
            dev.gemm(&g).unwrap();
            let mut out = vec![0u8; c.len() * 4];
            dev.dtoh(g.c.0, &mut out).unwrap();
            reference(&g, &a, &b, &mut c);
            for (i, (o, want)) in out.chunks_exact(4).zip(&c).enumerate() {
                let got = f32::from_le_bytes([o[0], o[1], o[2], o[3]]);
                assert!((got - want).abs() <= tol * want.abs().max(1.0), "{ty:?} {ta:?}{tb:?} [{i}]: {got} vs {want}");
            }
            for p in [g.a.0, g.b.0, g.c.0] {
                dev.free(p).unwrap();
            }
        }
    }
}

#[test]
fn the_device_is_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    shared::<GpuDevice>();
    shared::<Box<dyn Device>>();
}
