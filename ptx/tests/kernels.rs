//! The interpreter on NVRTC's own PTX (`kernels/checks.cu` → `kernels/checks.ptx`): results of
//! collectives, precise math and bf16 against values worked out here, and the three defects
//! it must report — an out-of-bounds write (memcheck), a missing `__syncthreads` (racecheck)
//! and a divergent shuffle — plus a deadlock, each named with kernel, block, thread and PC.

use qgc_ptx::{Interp, ModuleHandle, Options, Order, PtxError};

const PTX: &str = include_str!("kernels/checks.ptx");
const ORDERS: [Order; 3] = [Order::Forward, Order::Reverse, Order::Random(7)];

fn setup(order: Order) -> (Interp, ModuleHandle) {
    let mut d = Interp::new(Options { order, ..Options::default() });
    let m = d.load("checks", PTX).expect("NVRTC's PTX parses");
    (d, m)
}

fn f32s(d: &mut Interp, v: &[f32]) -> u64 {
    let a = d.alloc(v.len() * 4);
    d.write(a, &v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>()).unwrap();
    a
}

fn read_f32(d: &Interp, a: u64, n: usize) -> Vec<f32> {
    let mut b = vec![0u8; 4 * n];
    d.read(a, &mut b).unwrap();
    b.chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn read_u32(d: &Interp, a: u64, n: usize) -> Vec<u32> {
    read_f32(d, a, n).into_iter().map(f32::to_bits).collect()
}

fn p(a: u64) -> Vec<u8> {
    a.to_le_bytes().to_vec()
}

fn i(v: i32) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

#[test]
fn every_kernel_of_the_fixture_loads() {
    let (d, m) = setup(Order::Forward);
    let k = d.kernels(m);
    for name in ["oob_write", "block_sum", "warp_ops", "divergent_shfl", "deadlock", "math", "bf16_ops", "int_ops"] {
        assert!(k.iter().any(|x| x == name), "{name} missing from {k:?}");
    }
}

#[test]
fn memcheck_names_an_out_of_bounds_write() {
    for order in ORDERS {
        let (mut d, m) = setup(order);
        let out = d.alloc(4 * 50);
        // In bounds: n = 49 writes 0..=49.
        d.launch(m, "oob_write", (2, 1, 1), (32, 1, 1), 0, &[p(out), i(49)]).unwrap();
        assert_eq!(read_f32(&d, out, 50), vec![1.0; 50]);
        // One past the end.
        let e = d.launch(m, "oob_write", (2, 1, 1), (32, 1, 1), 0, &[p(out), i(50)]).unwrap_err();
        let s = e.to_string();
        assert!(s.contains("kernel oob_write: block (1,0,0) thread (18,0,0)"), "{s}");
        assert!(s.contains("memcheck: invalid global write of 4 bytes"), "{s}");
        assert!(s.contains("0 bytes past the end of allocation #") && s.contains("(200 bytes)"), "{s}");
        assert!(s.contains(" pc ") && s.contains("`st.global.u32 [%rd"), "{s}");
    }
}

#[test]
fn racecheck_catches_a_missing_syncthreads() {
    for order in ORDERS {
        let (mut d, m) = setup(order);
        let xs: Vec<f32> = (0..64).map(|k| k as f32).collect();
        let (x, out) = (f32s(&mut d, &xs), d.alloc(4));
        d.launch(m, "block_sum", (1, 1, 1), (64, 1, 1), 0, &[p(x), p(out), i(1)]).unwrap();
        assert_eq!(read_f32(&d, out, 1), vec![2016.0]);
        let s = d.launch(m, "block_sum", (1, 1, 1), (64, 1, 1), 0, &[p(x), p(out), i(0)]).unwrap_err().to_string();
        assert!(s.contains("racecheck: shared") && s.contains("no barrier between them"), "{order}: {s}");
        assert!(s.contains("kernel block_sum: block (0,0,0) thread ("), "{s}");
    }
}

#[test]
fn racecheck_off_lets_the_racy_kernel_run() {
    let mut d = Interp::new(Options { racecheck: false, ..Options::default() });
    let m = d.load("checks", PTX).unwrap();
    let xs: Vec<f32> = (0..64).map(|k| k as f32).collect();
    let (x, out) = (f32s(&mut d, &xs), d.alloc(4));
    // Forward order runs thread 0 first: it sums before the others have stored (zeros).
    d.launch(m, "block_sum", (1, 1, 1), (64, 1, 1), 0, &[p(x), p(out), i(0)]).unwrap();
    assert_eq!(read_f32(&d, out, 1), vec![0.0]);
}

#[test]
fn warp_collectives() {
    for order in ORDERS {
        let (mut d, m) = setup(order);
        let xs: Vec<f32> = (0..32).map(|k| if k % 3 == 0 { -(k as f32) - 1.0 } else { k as f32 }).collect();
        let x = f32s(&mut d, &xs);
        let (sum, down, bcast, ballot) = (d.alloc(128), d.alloc(128), d.alloc(128), d.alloc(128));
        d.launch(m, "warp_ops", (1, 1, 1), (32, 1, 1), 0, &[p(x), p(sum), p(down), p(bcast), p(ballot)]).unwrap();
        let total: f32 = xs.iter().sum();
        assert_eq!(read_f32(&d, sum, 32), vec![total; 32], "{order}");
        // shfl.down by 3: lanes 29..31 keep their own value.
        let want: Vec<f32> = (0..32).map(|l| if l + 3 < 32 { xs[l + 3] } else { xs[l] }).collect();
        assert_eq!(read_f32(&d, down, 32), want);
        assert_eq!(read_f32(&d, bcast, 32), vec![xs[5]; 32]);
        let ball = (0..32).filter(|&l| xs[l] > 0.0).fold(0u32, |m, l| m | 1 << l);
        assert_eq!(read_u32(&d, ballot, 32), vec![ball; 32]);
    }
}

#[test]
fn a_divergent_shuffle_is_reported() {
    let (mut d, m) = setup(Order::Forward);
    let x = f32s(&mut d, &[1.0; 32]);
    let s = d.launch(m, "divergent_shfl", (1, 1, 1), (32, 1, 1), 0, &[p(x)]).unwrap_err().to_string();
    assert!(s.contains("divergent shfl") && s.contains("membermask 0xffffffff has exited"), "{s}");
    assert!(s.contains("kernel divergent_shfl: block (0,0,0) thread ("), "{s}");
}

#[test]
fn a_deadlock_is_reported() {
    let (mut d, m) = setup(Order::Forward);
    let x = f32s(&mut d, &[1.0; 32]);
    let e = d.launch(m, "deadlock", (1, 1, 1), (32, 1, 1), 0, &[p(x)]).unwrap_err();
    let s = e.to_string();
    assert!(s.contains("kernel deadlock: block (0,0,0): deadlock: 32 threads wait and none can run"), "{s}");
    assert!(s.contains("16 threads (16,0,0)..(31,0,0) at pc") && s.contains("(bar.sync)"), "{s}");
    assert!(s.contains("16 threads (0,0,0)..(15,0,0) at pc") && s.contains("(shfl idx mask 0xffffffff)"), "{s}");
    assert!(matches!(e, PtxError::Exec { .. }));
}

/// Relative error in units of the last place of `want` (f32).
fn ulps(got: f32, want: f64) -> f64 {
    let w = want as f32;
    let ulp = (w.next_up() - w).abs() as f64;
    ((got as f64 - want) / ulp).abs()
}

#[test]
fn precise_math_through_approximate_instructions() {
    let (mut d, m) = setup(Order::Random(3));
    let xs: Vec<f32> = (0..77).map(|k| (k as f32 - 38.0) * 0.37 + 0.013).collect();
    let n = xs.len();
    let x = f32s(&mut d, &xs);
    let outs: Vec<u64> = (0..5).map(|_| d.alloc(4 * n)).collect();
    let mut args = vec![p(x)];
    args.extend(outs.iter().map(|&a| p(a)));
    args.push(i(n as i32));
    d.launch(m, "math", (3, 1, 1), (32, 1, 1), 0, &args).unwrap();
    let [e, l, t, s, r] = [0, 1, 2, 3, 4].map(|k| read_f32(&d, outs[k], n));
    for (k, &v) in xs.iter().enumerate() {
        let v64 = v as f64;
        let a1 = (v.abs() + 1.0) as f64; // as the kernel rounds it
                                         // CUDA's documented maximum errors: expf 2 ulp, logf 1, tanhf 2, sinf 2, rsqrtf 2.
        assert!(ulps(e[k], v64.exp()) <= 2.0, "expf({v}) = {} vs {}", e[k], v64.exp());
        assert!(ulps(l[k], a1.ln()) <= 1.0, "logf at {v}: {}", l[k]);
        assert!(ulps(t[k], v64.tanh()) <= 2.0 || (t[k] as f64 - v64.tanh()).abs() < 1e-7, "tanhf({v}) = {}", t[k]);
        assert!(
            ulps(s[k], v64.sin()) <= 2.0 || (s[k] as f64 - v64.sin()).abs() < 1e-7,
            "sinf({v}) = {} vs {}",
            s[k],
            v64.sin()
        );
        assert!(ulps(r[k], 1.0 / a1.sqrt()) <= 2.0, "rsqrtf at {v}: {}", r[k]);
    }
}

#[test]
fn bf16_rounding_and_packing_order() {
    let (mut d, m) = setup(Order::Reverse);
    // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: even → 1.0 (0x3f80); 1 + 3·2^-8 rounds up to
    // 1 + 2^-6 (0x3f82); -2.5 is exact (0xc020); NaN stays NaN.
    let xs = [1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0, -2.5, f32::NAN];
    let n = xs.len();
    let x = f32s(&mut d, &xs);
    let (b, back, packed) = (d.alloc(2 * n), d.alloc(4 * n), d.alloc(4 * n));
    d.launch(m, "bf16_ops", (1, 1, 1), (32, 1, 1), 0, &[p(x), p(b), p(back), p(packed), i(n as i32)]).unwrap();
    let mut bb = vec![0u8; 2 * n];
    d.read(b, &mut bb).unwrap();
    let bits: Vec<u16> = bb.chunks(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    assert_eq!(&bits[..3], &[0x3f80, 0x3f82, 0xc020]);
    assert!(bits[3] & 0x7f80 == 0x7f80 && bits[3] & 0x7f != 0, "NaN stays NaN: {:#x}", bits[3]);
    assert_eq!(&read_f32(&d, back, n)[..3], &[1.0, 1.0 + 2.0 / 128.0, -2.5]);
    // __floats2bfloat162_rn(a, b): a in the low half (.x), b in the high half.
    let pk = read_u32(&d, packed, n);
    assert_eq!(pk[2], (0x4020u32 << 16) | 0xc020);
    assert_eq!(pk[0], (0xbf80u32 << 16) | 0x3f80);
}

#[test]
fn integer_and_conversion_corner_cases() {
    let (mut d, m) = setup(Order::Forward);
    let a: Vec<i32> = vec![-7, 7, i32::MIN, 5, -1, 0x00f0_0000, 123_456_789, -5];
    let b: Vec<i32> = vec![2, -2, -1, 0, 3, 16, -1000, 7];
    let n = a.len();
    let bytes = |v: &[i32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let (pa, pb, po) = (d.alloc(4 * n), d.alloc(4 * n), d.alloc(32 * n));
    d.write(pa, &bytes(&a)).unwrap();
    d.write(pb, &bytes(&b)).unwrap();
    d.launch(m, "int_ops", (1, 1, 1), (32, 1, 1), 0, &[p(pa), p(pb), p(po), i(n as i32)]).unwrap();
    let o: Vec<i32> = read_u32(&d, po, 8 * n).into_iter().map(|u| u as i32).collect();
    for k in 0..n {
        let (x, y) = (a[k], b[k]);
        let y1 = if y == 0 { 1 } else { y };
        let want = [
            x.wrapping_div(y1),
            x.wrapping_rem(y1),
            x >> 3,
            ((x as u32) >> 3) as i32,
            ((x as i64 * y as i64) >> 32) as i32,
            // round half to even of x / 2
            {
                let h = x as f32 / 2.0;
                let f = h.floor();
                (if h - f > 0.5 || (h - f == 0.5 && f % 2.0 != 0.0) { f + 1.0 } else { f }) as i32
            },
            (x.count_ones() + x.leading_zeros()) as i32,
            x.min(y).wrapping_mul(3).wrapping_add(x.max(y)),
        ];
        assert_eq!(&o[8 * k..8 * k + 8], &want, "a = {x}, b = {y}");
    }
}
