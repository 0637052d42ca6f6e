//! GDN kernels against `CausalConv1d` (+`Silu`), the gate-chain ops, and `GatedDeltaRule`.

use super::*;
use qgc_runtime::cpu::gdn::{causal_conv1d, gated_delta_rule, gdn_gates, gdn_gates_grouped, GdnDims, GdnInputs};
use qgc_runtime::cpu::HeadLayout;

/// The conv with SiLU (and without) over `[b, s, c]` from a random state; checks y and state'.
pub fn conv_case(b: usize, s: usize, c: usize, k: usize, seed: u64, tol: f32) -> f32 {
    let mut rng = Rng::new(seed);
    let (x, w, st) = (
        rvec(&mut rng, b * s * c, -2.0, 2.0),
        rvec(&mut rng, c * k, -0.5, 0.5),
        rvec(&mut rng, b * c * (k - 1), -2.0, 2.0),
    );
    let r = eval(
        Op::CausalConv1d { kernel: k },
        &[&t(&[b, s, c], x.clone()), &t(&[c, k], w.clone()), &t(&[b, c, k - 1], st.clone())],
    );
    let mut err = 0.0f32;
    for act in [true, false] {
        let mut state = st.clone();
        let mut y = vec![f32::NAN; b * s * c];
        causal_conv1d(&x, &w, &mut state, b, s, c, k, act, &mut y);
        let want = if act { eval1(Op::Silu, &[&r[0]]) } else { r[0].clone() };
        err = err.max(check(&format!("causal_conv1d b={b} s={s} c={c} k={k} silu={act}"), &y, f(&want), tol));
        check("causal_conv1d state", &state, f(&r[1]), 0.0);
    }
    err
}

/// The gate chain on `[rows, hv]` (plain and grouped `in_proj_ba` layouts) against
/// Sigmoid / Add → Softplus, Exp → Neg, Mul.
pub fn gates_case(rows: usize, hk: usize, hv: usize, seed: u64, tol: f32) -> f32 {
    let mut rng = Rng::new(seed);
    let ba = rvec(&mut rng, rows * 2 * hv, -25.0, 25.0);
    let (a_log, dt) = (rvec(&mut rng, hv, -1.0, 2.8), rvec(&mut rng, hv, -1.0, 1.0));
    let r = hv / hk;
    let (mut a, mut b) = (vec![0.0; rows * hv], vec![0.0; rows * hv]);
    for tt in 0..rows {
        for h in 0..hv {
            let base = tt * 2 * hv + (h / r) * 2 * r + h % r;
            (b[tt * hv + h], a[tt * hv + h]) = (ba[base], ba[base + r]);
        }
    }
    let sp = eval1(Op::Softplus, &[&eval1(Op::Add, &[&t(&[rows, hv], a.clone()), &t(&[hv], dt.clone())])]);
    let na = eval1(Op::Neg, &[&eval1(Op::Exp, &[&t(&[hv], a_log.clone())])]);
    let want_g = eval1(Op::Mul, &[&sp, &na]);
    let want_b = eval1(Op::Sigmoid, &[&t(&[rows, hv], b.clone())]);
    let (mut g, mut beta) = (vec![0.0; rows * hv], vec![0.0; rows * hv]);
    gdn_gates(&a, &b, &a_log, &dt, rows, hv, &mut g, &mut beta);
    let e = check(&format!("gdn_gates g rows={rows} hv={hv}"), &g, f(&want_g), tol);
    let e = e.max(check("gdn_gates beta", &beta, f(&want_b), tol));
    gdn_gates_grouped(&ba, &a_log, &dt, rows, hk, hv, &mut g, &mut beta);
    let e = e.max(check(&format!("gdn_gates_grouped g rows={rows} hk={hk} hv={hv}"), &g, f(&want_g), tol));
    e.max(check("gdn_gates_grouped beta", &beta, f(&want_b), tol))
}

/// Shape and decay strength of a delta-rule case.
#[derive(Debug, Clone, Copy)]
pub struct RuleCase {
    pub b: usize,
    pub s: usize,
    pub hk: usize,
    pub hv: usize,
    pub dk: usize,
    pub dv: usize,
    /// Log-decays are drawn from `U(g_min, 0)`.
    pub g_min: f32,
}

/// Random l2-normalised inputs for a case, q/k/v placed inside one conv-output-like buffer
/// `[B·S, q | k | v]` (so the kernel reads them strided), with a random initial state.
pub struct RuleInputs {
    pub buf: Vec<f32>,
    pub ql: HeadLayout,
    pub kl: HeadLayout,
    pub vl: HeadLayout,
    pub g: Vec<f32>,
    pub beta: Vec<f32>,
    pub state: Vec<f32>,
}

impl RuleInputs {
    /// The kernel's view of every token of these inputs.
    pub fn whole(&self) -> GdnInputs<'_> {
        GdnInputs {
            q: &self.buf,
            ql: self.ql,
            k: &self.buf,
            kl: self.kl,
            v: &self.buf,
            vl: self.vl,
            g: &self.g,
            beta: &self.beta,
        }
    }
}

pub fn rule_inputs(c: RuleCase, seed: u64) -> RuleInputs {
    let mut rng = Rng::new(seed);
    let tok = c.b * c.s;
    let width = 2 * c.hk * c.dk + c.hv * c.dv;
    let mut buf = rvec(&mut rng, tok * width, -1.0, 1.0);
    let ql = HeadLayout { tokens: tok, heads: c.hk, d: c.dk, token_stride: width, head_stride: c.dk, offset: 0 };
    let kl = HeadLayout { offset: c.hk * c.dk, ..ql };
    let vl = HeadLayout {
        tokens: tok,
        heads: c.hv,
        d: c.dv,
        token_stride: width,
        head_stride: c.dv,
        offset: 2 * c.hk * c.dk,
    };
    let scale = 1.0 / (c.dk as f32).sqrt();
    qgc_runtime::cpu::norm::l2_norm_scale(&mut buf, ql, 1e-6, scale);
    qgc_runtime::cpu::norm::l2_norm_scale(&mut buf, kl, 1e-6, 1.0);
    let g = rvec(&mut rng, tok * c.hv, c.g_min, 0.0);
    let beta = rvec(&mut rng, tok * c.hv, 0.0, 1.0);
    let state = rvec(&mut rng, c.b * c.hv * c.dk * c.dv, -1.0, 1.0);
    RuleInputs { buf, ql, kl, vl, g, beta, state }
}

/// The recurrent kernel against `GatedDeltaRule` (recurrent form); checks output and state'.
pub fn rule_case(c: RuleCase, seed: u64, tol: f32) -> f32 {
    let inp = rule_inputs(c, seed);
    let RuleCase { b, s, hk, hv, dk, dv, .. } = c;
    let g = super::norm_cases::gather;
    let ins = [
        t(&[b, s, hk, dk], g(&inp.buf, inp.ql)),
        t(&[b, s, hk, dk], g(&inp.buf, inp.kl)),
        t(&[b, s, hv, dv], g(&inp.buf, inp.vl)),
        t(&[b, s, hv], inp.g.clone()),
        t(&[b, s, hv], inp.beta.clone()),
        t(&[b, hv, dk, dv], inp.state.clone()),
    ];
    let r = eval(Op::GatedDeltaRule { chunk: None }, &ins.iter().collect::<Vec<_>>());
    let mut state = inp.state.clone();
    let mut out = vec![f32::NAN; b * s * hv * dv];
    let gi = inp.whole();
    gated_delta_rule(gi, GdnDims { batch: b, s, hk, hv, dk, dv }, &mut state, &mut out);
    let what = format!("gated_delta_rule {c:?}");
    let e = check(&what, &out, f(&r[0]), tol);
    e.max(check(&format!("{what} state"), &state, f(&r[1]), tol))
}
