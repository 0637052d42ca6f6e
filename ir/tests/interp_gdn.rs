//! Gated DeltaNet ops in the interpreter: the chunked delta rule against the per-token
//! recurrence, both against an independent matrix-form reference written here, continuation of
//! the delta rule and the causal conv across calls, and hand-checkable cases.

use qgc_ir::interp::{eval_op, Rng, Tensor};
use qgc_ir::{Bindings, Op};

const BIND: Bindings = Bindings { b: 0, s: 0, p: 0 };

fn f32s(t: &Tensor) -> &[f32] {
    t.as_f32().expect("f32 tensor")
}

/// max|a − b| / max|b|.
fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num = a.iter().zip(b).map(|(&x, &y)| (f64::from(x) - f64::from(y)).abs()).fold(0.0, f64::max);
    let den = b.iter().map(|&y| f64::from(y).abs()).fold(0.0, f64::max);
    num / den.max(1e-30)
}

/// Inputs of one gated-delta-rule call, laid out as the op takes them.
#[derive(Clone)]
struct Gdr {
    b: usize,
    s: usize,
    hk: usize,
    hv: usize,
    dk: usize,
    dv: usize,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    g: Vec<f32>,
    beta: Vec<f32>,
    state: Vec<f32>,
}

/// Rows of `width` scaled to unit L2 norm, then by `scale`.
fn unit_rows(x: &mut [f32], width: usize, scale: f32) {
    for row in x.chunks_mut(width) {
        let n = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        row.iter_mut().for_each(|v| *v = *v / n * scale);
    }
}

impl Gdr {
    /// Random inputs shaped like the model's: l2-normalised keys, queries scaled by 1/√Dk,
    /// β ∈ (0, 1), log-decay g ~ U(g_lo, 0), and a nonzero initial state.
    fn random(rng: &mut Rng, dims: [usize; 6], g_lo: f32) -> Gdr {
        let [b, s, hk, hv, dk, dv] = dims;
        let mut q = rng.vec(b * s * hk * dk, -1.0, 1.0);
        let mut k = rng.vec(b * s * hk * dk, -1.0, 1.0);
        unit_rows(&mut q, dk, 1.0 / (dk as f32).sqrt());
        unit_rows(&mut k, dk, 1.0);
        let v = rng.vec(b * s * hv * dv, -1.0, 1.0);
        let g = rng.vec(b * s * hv, g_lo, 0.0);
        let beta = rng.vec(b * s * hv, 0.02, 0.98);
        let state = rng.vec(b * hv * dk * dv, -0.5, 0.5);
        Gdr { b, s, hk, hv, dk, dv, q, k, v, g, beta, state }
    }

    fn tensors(&self) -> [Tensor; 6] {
        let (b, s) = (self.b, self.s);
        [
            Tensor::f32(vec![b, s, self.hk, self.dk], self.q.clone()),
            Tensor::f32(vec![b, s, self.hk, self.dk], self.k.clone()),
            Tensor::f32(vec![b, s, self.hv, self.dv], self.v.clone()),
            Tensor::f32(vec![b, s, self.hv], self.g.clone()),
            Tensor::f32(vec![b, s, self.hv], self.beta.clone()),
            Tensor::f32(vec![b, self.hv, self.dk, self.dv], self.state.clone()),
        ]
    }

    /// Runs the op; returns (o, state').
    fn run(&self, chunk: Option<usize>) -> (Vec<f32>, Vec<f32>) {
        let ts = self.tensors();
        let ins: Vec<&Tensor> = ts.iter().collect();
        let mut out = eval_op(&Op::GatedDeltaRule { chunk }, &ins, &BIND).expect("gdr runs");
        assert_eq!(out[0].shape, vec![self.b, self.s, self.hv, self.dv]);
        let st = out.pop().unwrap();
        (f32s(&out[0]).to_vec(), f32s(&st).to_vec())
    }

    /// Tokens `from..to` of every sequence, starting from `state`.
    fn window(&self, from: usize, to: usize, state: Vec<f32>) -> Gdr {
        let cut = |x: &[f32], w: usize| -> Vec<f32> {
            (0..self.b).flat_map(|b| x[(b * self.s + from) * w..(b * self.s + to) * w].to_vec()).collect()
        };
        Gdr {
            s: to - from,
            q: cut(&self.q, self.hk * self.dk),
            k: cut(&self.k, self.hk * self.dk),
            v: cut(&self.v, self.hv * self.dv),
            g: cut(&self.g, self.hv),
            beta: cut(&self.beta, self.hv),
            state,
            ..self.clone()
        }
    }

    /// Independent reference in f64, written from the matrix form
    /// `S_t = e^{γ_t} (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ`, `o_t = S_tᵀ q_t`.
    fn reference(&self) -> (Vec<f32>, Vec<f32>) {
        let (s, hk, hv, dk, dv) = (self.s, self.hk, self.hv, self.dk, self.dv);
        let mut o = vec![0.0f32; self.v.len()];
        let mut st_out = vec![0.0f32; self.state.len()];
        for b in 0..self.b {
            for h in 0..hv {
                let kh = h * hk / hv;
                let base = (b * hv + h) * dk * dv;
                let mut st: Vec<Vec<f64>> =
                    (0..dk).map(|i| (0..dv).map(|j| f64::from(self.state[base + i * dv + j])).collect()).collect();
                for t in 0..s {
                    let qk = ((b * s + t) * hk + kh) * dk;
                    let k: Vec<f64> = (0..dk).map(|i| f64::from(self.k[qk + i])).collect();
                    let q: Vec<f64> = (0..dk).map(|i| f64::from(self.q[qk + i])).collect();
                    let vo = ((b * s + t) * hv + h) * dv;
                    let gi = (b * s + t) * hv + h;
                    let (beta, decay) = (f64::from(self.beta[gi]), f64::from(self.g[gi]).exp());
                    // (I − β k kᵀ) S: subtract β k (kᵀ S).
                    let kts: Vec<f64> = (0..dv).map(|j| (0..dk).map(|i| k[i] * st[i][j]).sum()).collect();
                    for i in 0..dk {
                        for j in 0..dv {
                            let proj = st[i][j] - beta * k[i] * kts[j];
                            st[i][j] = decay * proj + beta * k[i] * f64::from(self.v[vo + j]);
                        }
                    }
                    for j in 0..dv {
                        o[vo + j] = (0..dk).map(|i| st[i][j] * q[i]).sum::<f64>() as f32;
                    }
                }
                for i in 0..dk {
                    for j in 0..dv {
                        st_out[base + i * dv + j] = st[i][j] as f32;
                    }
                }
            }
        }
        (o, st_out)
    }
}

/// Checks recurrent and chunked (C = 64 and 16) against the reference; returns the largest
/// chunked-vs-recurrent relative error seen (outputs and state).
fn check_forms(g_lo: f32, seed: u64, tol_chunked: f64) -> f64 {
    let mut rng = Rng::new(seed);
    let gdr = Gdr::random(&mut rng, [2, 150, 2, 4, 16, 24], g_lo);
    let (ro, rs) = gdr.reference();
    let (o, st) = gdr.run(None);
    let (e_o, e_s) = (rel_err(&o, &ro), rel_err(&st, &rs));
    println!("g~U({g_lo},0): recurrent vs f64 reference: o {e_o:.2e}, state {e_s:.2e}");
    assert!(e_o < 1e-6 && e_s < 1e-6, "recurrent differs from the reference: {e_o:e} {e_s:e}");
    let mut worst = 0.0f64;
    for c in [64, 16] {
        let (co, cs) = gdr.run(Some(c));
        let (e_o, e_s) = (rel_err(&co, &o), rel_err(&cs, &st));
        println!("g~U({g_lo},0): chunked C={c} vs recurrent: o {e_o:.2e}, state {e_s:.2e}");
        assert!(e_o < tol_chunked && e_s < tol_chunked, "chunked C={c} differs: o {e_o:e}, state {e_s:e}");
        worst = worst.max(e_o).max(e_s);
    }
    worst
}

#[test]
fn chunked_matches_recurrent_mild_decay() {
    check_forms(-0.1, 1, 1e-6);
}

#[test]
fn chunked_matches_recurrent_moderate_decay() {
    check_forms(-2.0, 2, 1e-6);
}

#[test]
fn chunked_matches_recurrent_strong_decay() {
    check_forms(-10.0, 3, 1e-5);
}

#[test]
fn delta_rule_continuation_equals_one_call() {
    let mut rng = Rng::new(4);
    let full = Gdr::random(&mut rng, [2, 100, 1, 2, 8, 12], -2.0);
    for chunk in [None, Some(16), Some(64)] {
        let (o, st) = full.run(chunk);
        for split in [1, 2, 3, 15, 16, 17, 64, 99] {
            let (o1, st1) = full.window(0, split, full.state.clone()).run(chunk);
            let (o2, st2) = full.window(split, 100, st1).run(chunk);
            let rows = |x: &[f32], from: usize, to: usize| -> Vec<f32> {
                let w = full.hv * full.dv;
                (0..full.b).flat_map(|b| x[(b * 100 + from) * w..(b * 100 + to) * w].to_vec()).collect()
            };
            let e = rel_err(&o1, &rows(&o, 0, split)).max(rel_err(&o2, &rows(&o, split, 100)));
            assert!(e < 1e-5, "chunk {chunk:?} split {split}: outputs differ by {e:e}");
            assert!(rel_err(&st2, &st) < 1e-5, "chunk {chunk:?} split {split}: final states differ");
        }
    }
}

#[test]
fn delta_rule_one_token_from_zero_state_by_hand() {
    // S = β k vᵀ, so o = Sᵀ q = β (q·k) v.
    for chunk in [None, Some(4)] {
        let mut gdr = Gdr::random(&mut Rng::new(5), [1, 1, 1, 1, 3, 2], -1.0);
        gdr.q = vec![1.0, 2.0, 0.0];
        gdr.k = vec![0.6, 0.8, 0.0];
        gdr.v = vec![3.0, -1.0];
        gdr.beta = vec![0.5];
        gdr.g = vec![-0.7];
        gdr.state = vec![0.0; 6];
        let (o, st) = gdr.run(chunk);
        let qk = 0.6 + 1.6;
        assert!((o[0] - 0.5 * qk * 3.0).abs() < 1e-6 && (o[1] + 0.5 * qk).abs() < 1e-6, "{o:?}");
        let want = [0.9, -0.3, 1.2, -0.4, 0.0, 0.0];
        assert!(st.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6), "{st:?}");
    }
}

#[test]
fn delta_rule_zero_write_only_decays_the_state() {
    // β = 0: the state decays by e^γ per token and the output reads the decayed state.
    for chunk in [None, Some(2)] {
        let mut gdr = Gdr::random(&mut Rng::new(6), [1, 3, 1, 2, 2, 2], -1.0);
        gdr.beta = vec![0.0; 6];
        gdr.g = vec![-0.5, -1.0, -0.25, -0.1, -0.2, -0.3];
        let (_, st) = gdr.run(chunk);
        for h in 0..2 {
            let total: f32 = (0..3).map(|t| gdr.g[t * 2 + h]).sum();
            for i in 0..4 {
                let want = gdr.state[h * 4 + i] * total.exp();
                assert!((st[h * 4 + i] - want).abs() < 1e-6, "head {h}: {} vs {want}", st[h * 4 + i]);
            }
        }
    }
}

fn conv(x: &Tensor, w: &Tensor, state: &Tensor, kernel: usize) -> (Tensor, Tensor) {
    let mut out = eval_op(&Op::CausalConv1d { kernel }, &[x, w, state], &BIND).expect("conv runs");
    let st = out.pop().unwrap();
    (out.pop().unwrap(), st)
}

#[test]
fn conv_identity_kernel_returns_x_and_keeps_last_columns() {
    let (b, s, c, k) = (2, 5, 3, 4);
    let mut rng = Rng::new(7);
    let x = rng.tensor(&[b, s, c], -1.0, 1.0);
    let mut w = vec![0.0f32; c * k];
    (0..c).for_each(|ch| w[ch * k + k - 1] = 1.0);
    let w = Tensor::f32(vec![c, k], w);
    let state = rng.tensor(&[b, c, k - 1], -1.0, 1.0);
    let (y, st) = conv(&x, &w, &state, k);
    assert_eq!(y, x);
    for bi in 0..b {
        for ch in 0..c {
            for j in 0..k - 1 {
                let want = f32s(&x)[(bi * s + s - (k - 1) + j) * c + ch];
                assert_eq!(f32s(&st)[(bi * c + ch) * (k - 1) + j], want);
            }
        }
    }
}

#[test]
fn conv_short_input_shifts_the_state_by_hand() {
    // One channel, K = 4, state [1, 2, 3], x = [10]: y = w·[1,2,3,10], state' = [2, 3, 10].
    let x = Tensor::f32(vec![1, 1, 1], vec![10.0]);
    let w = Tensor::f32(vec![1, 4], vec![1.0, 0.1, 0.01, 0.001]);
    let state = Tensor::f32(vec![1, 1, 3], vec![1.0, 2.0, 3.0]);
    let (y, st) = conv(&x, &w, &state, 4);
    assert!((f32s(&y)[0] - (1.0 + 0.2 + 0.03 + 0.01)).abs() < 1e-6);
    assert_eq!(f32s(&st), &[2.0, 3.0, 10.0]);
    // Two tokens, fresh state: y_0 = w_3 x_0, y_1 = w_2 x_0 + w_3 x_1; state' = [0, x_0, x_1].
    let x = Tensor::f32(vec![1, 2, 1], vec![10.0, 20.0]);
    let (y, st) = conv(&x, &w, &Tensor::zeros(vec![1, 1, 3]), 4);
    assert!((f32s(&y)[0] - 0.01).abs() < 1e-6 && (f32s(&y)[1] - (0.1 + 0.02)).abs() < 1e-6, "{y:?}");
    assert_eq!(f32s(&st), &[0.0, 10.0, 20.0]);
}

#[test]
fn conv_continuation_equals_one_call() {
    let (b, s, c, k) = (2, 9, 5, 4);
    let mut rng = Rng::new(8);
    let x = rng.tensor(&[b, s, c], -1.0, 1.0);
    let w = rng.tensor(&[c, k], -1.0, 1.0);
    let state = rng.tensor(&[b, c, k - 1], -1.0, 1.0);
    let (y, st) = conv(&x, &w, &state, k);
    let cut = |from: usize, to: usize| -> Tensor {
        let d: Vec<f32> = (0..b).flat_map(|bi| f32s(&x)[(bi * s + from) * c..(bi * s + to) * c].to_vec()).collect();
        Tensor::f32(vec![b, to - from, c], d)
    };
    for split in [1, 2, 3, 4, 8] {
        let (y1, st1) = conv(&cut(0, split), &w, &state, k);
        // A second short piece (S < K-1) in the middle, then the rest.
        let mid = (split + 2).min(s);
        let (y2, st2) = conv(&cut(split, mid), &w, &st1, k);
        let (y3, st3) = conv(&cut(mid, s), &w, &st2, k);
        let joined: Vec<f32> = (0..b)
            .flat_map(|bi| {
                let piece = |t: &Tensor, n: usize| f32s(t)[bi * n * c..(bi + 1) * n * c].to_vec();
                [piece(&y1, split), piece(&y2, mid - split), piece(&y3, s - mid)].concat()
            })
            .collect();
        assert!(rel_err(&joined, f32s(&y)) < 1e-6, "split {split}: outputs differ");
        assert_eq!(st3, st, "split {split}: states differ");
    }
}
