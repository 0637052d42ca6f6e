//! Left padding in the interpreter (qwen3-next.md §3.12): `mask_padding` by hand; `attention`
//! masking padding keys, zeroing padding queries and rejecting positions that are not a
//! left-padded row; and the GDN ops (causal conv and both delta-rule forms) leaving a
//! zero-padded sequence exactly where it would be alone, conv state included.

use qgc_ir::interp::{eval_op, Rng, Tensor};
use qgc_ir::{Bindings, DType, Dim, Op, TensorType};

const BIND: Bindings = Bindings { b: 0, s: 0, p: 0 };

fn f32s(t: &Tensor) -> &[f32] {
    t.as_f32().expect("f32 tensor")
}

fn eval(op: Op, ins: &[&Tensor]) -> Vec<Tensor> {
    eval_op(&op, ins, &BIND).expect("op runs")
}

/// max|a − b| / max|b|.
fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num = a.iter().zip(b).map(|(&x, &y)| (f64::from(x) - f64::from(y)).abs()).fold(0.0, f64::max);
    let den = b.iter().map(|&y| f64::from(y).abs()).fold(0.0, f64::max);
    num / den.max(1e-30)
}

/// Row `bi` of a `[B,S,...]` tensor, slots `from..to`, as `[1, to-from, ...]`.
fn slots(t: &Tensor, bi: usize, from: usize, to: usize) -> Tensor {
    let s = t.shape[1];
    let w: usize = t.shape[2..].iter().product();
    let mut shape = t.shape.clone();
    shape[0] = 1;
    shape[1] = to - from;
    Tensor::f32(shape, f32s(t)[(bi * s + from) * w..(bi * s + to) * w].to_vec())
}

/// `pad` zero slots in front of every row of a `[B,S,...]` tensor.
fn left_pad(t: &Tensor, pad: usize) -> Tensor {
    let (b, s) = (t.shape[0], t.shape[1]);
    let w: usize = t.shape[2..].iter().product();
    let mut out = Vec::with_capacity(b * (s + pad) * w);
    for bi in 0..b {
        out.extend(std::iter::repeat_n(0.0, pad * w));
        out.extend_from_slice(&f32s(t)[bi * s * w..(bi + 1) * s * w]);
    }
    let mut shape = t.shape.clone();
    shape[1] += pad;
    Tensor::f32(shape, out)
}

/// Positions `[B,S]` of rows with `pads[b]` padding slots after `past` cached slots.
fn positions(pads: &[usize], past: usize, s: usize) -> Tensor {
    let pos = pads.iter().flat_map(|&p| (0..s).map(move |t| (past + t) as i32 - p as i32)).collect();
    Tensor::i32(vec![pads.len(), s], pos)
}

#[test]
fn mask_padding_zeroes_slots_with_negative_positions() {
    let x = Tensor::f32(vec![2, 3, 2], (1..=12).map(|v| v as f32).collect());
    let pos = Tensor::i32(vec![2, 3], vec![-2, -1, 0, 4, 5, 6]);
    let y = eval(Op::MaskPadding, &[&x, &pos]).remove(0);
    assert_eq!(f32s(&y), &[0.0, 0.0, 0.0, 0.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0]);
    let bad = Tensor::i32(vec![2, 2], vec![0; 4]);
    assert!(eval_op(&Op::MaskPadding, &[&x, &bad], &BIND).is_err());
    // Shape inference: positions must be i32 [B,S] of the input.
    let xt = TensorType::f32(vec![Dim::sym(qgc_ir::Sym::B), Dim::sym(qgc_ir::Sym::S), Dim::c(4)]);
    let pt = TensorType::new(xt.shape[..2].to_vec(), DType::I32);
    assert_eq!(Op::MaskPadding.infer(&[&xt, &pt]).unwrap(), vec![xt.clone()]);
    let wrong = Op::MaskPadding.infer(&[&xt, &TensorType::new(pt.shape.clone(), DType::F32)]);
    assert_eq!(wrong.unwrap_err(), "positions must be i32, got f32[B,S]");
}

#[test]
fn attention_ignores_padding_keys_and_zeroes_padding_queries() {
    // Row 0: a padding slot then one real token; the padding key would dominate the softmax
    // (score 100) if it were seen. Row 1: two real tokens.
    let q = Tensor::f32(vec![2, 2, 1, 1], vec![1.0, 1.0, 1.0, 1.0]);
    let k = Tensor::f32(vec![2, 1, 2, 1], vec![100.0, 0.0, 0.0, 0.0]);
    let v = Tensor::f32(vec![2, 1, 2, 1], vec![-9.0, 3.0, 2.0, 4.0]);
    let pos = Tensor::i32(vec![2, 2], vec![-1, 0, 0, 1]);
    let o = eval(Op::Attention { scale: 1.0 }, &[&q, &k, &v, &pos]).remove(0);
    assert_eq!(f32s(&o), &[0.0, 3.0, 2.0, 3.0]);
}

#[test]
fn attention_rejects_rows_that_are_not_left_padded() {
    let q = Tensor::zeros(vec![1, 3, 1, 2]);
    let kv = Tensor::zeros(vec![1, 1, 5, 2]);
    let run =
        |pos: Vec<i32>| eval_op(&Op::Attention { scale: 1.0 }, &[&q, &kv, &kv, &Tensor::i32(vec![1, 3], pos)], &BIND);
    assert!(run(vec![2, 3, 4]).is_ok());
    assert!(run(vec![-7, -6, -5]).is_ok(), "a row of padding only is fine");
    assert_eq!(run(vec![0, 1, 3]).unwrap_err(), "positions [0, 1, 3] of row 0 are not consecutive");
    assert_eq!(run(vec![3, 4, 5]).unwrap_err(), "position 3 of row 0 is past the 2 cached slots before it");
    let f = Tensor::zeros(vec![1, 3]);
    assert!(eval_op(&Op::Attention { scale: 1.0 }, &[&q, &kv, &kv, &f], &BIND).is_err());
}

/// RoPE, KV append and attention over `pads`-padded rows: prefill then two decode steps.
/// Returns the outputs `[B, S+2, Nq, Dv]` slot by slot.
fn attention_run(q: &Tensor, k: &Tensor, v: &Tensor, pads: &[usize]) -> Vec<Tensor> {
    let [b, s, nkv, d, dv] = [q.shape[0], q.shape[1] - 2, k.shape[2], k.shape[3], v.shape[3]];
    let mut kc = Tensor::zeros(vec![b, nkv, 0, d]);
    let mut vc = Tensor::zeros(vec![b, nkv, 0, dv]);
    let mut outs = Vec::new();
    for (from, to) in [(0, s), (s, s + 1), (s + 1, s + 2)] {
        let pos = positions(pads, from, to - from);
        let part = |t: &Tensor| {
            let rows: Vec<Tensor> = (0..b).map(|bi| slots(t, bi, from, to)).collect();
            let data: Vec<f32> = rows.iter().flat_map(|r| f32s(r).to_vec()).collect();
            let mut shape = t.shape.clone();
            shape[1] = to - from;
            Tensor::f32(shape, data)
        };
        let rope = Op::Rope { theta: 1e4, rotary_dim: 4 };
        let qr = eval(rope.clone(), &[&part(q), &pos]).remove(0);
        let kr = eval(rope, &[&part(k), &pos]).remove(0);
        kc = eval(Op::KvAppend, &[&kc, &kr]).remove(0);
        vc = eval(Op::KvAppend, &[&vc, &part(v)]).remove(0);
        outs.push(eval(Op::Attention { scale: 0.4 }, &[&qr, &kc, &vc, &pos]).remove(0));
    }
    outs
}

#[test]
fn left_padded_attention_rows_equal_their_rows_alone() {
    let (nq, nkv, d, dv) = (4, 2, 6, 5);
    let lens = [7, 3, 1];
    let s = 7;
    let mut rng = Rng::new(21);
    let mut alone = Vec::new();
    let (mut qs, mut ks, mut vs) = (Vec::new(), Vec::new(), Vec::new());
    for &n in &lens {
        let q = rng.tensor(&[1, n + 2, nq, d], -1.0, 1.0);
        let k = rng.tensor(&[1, n + 2, nkv, d], -1.0, 1.0);
        let v = rng.tensor(&[1, n + 2, nkv, dv], -1.0, 1.0);
        let out = attention_run(&q, &k, &v, &[0]);
        alone.push(out);
        // Padding slots get garbage inputs: they must not matter.
        let junk = |t: &Tensor, rng: &mut Rng| {
            let mut p = left_pad(t, s - n);
            let w: usize = t.shape[2..].iter().product();
            let noise = rng.vec((s - n) * w, -50.0, 50.0);
            if let qgc_ir::interp::Data::F32(x) = &mut p.data {
                x[..noise.len()].copy_from_slice(&noise);
            }
            p
        };
        qs.push(junk(&q, &mut rng));
        ks.push(junk(&k, &mut rng));
        vs.push(junk(&v, &mut rng));
    }
    let cat = |ts: &[Tensor]| eval(Op::Concat { axis: 0 }, &ts.iter().collect::<Vec<_>>()).remove(0);
    let pads: Vec<usize> = lens.iter().map(|n| s - n).collect();
    let batch = attention_run(&cat(&qs), &cat(&ks), &cat(&vs), &pads);
    for (bi, &n) in lens.iter().enumerate() {
        let pad = s - n;
        let prefill = slots(&batch[0], bi, pad, s);
        assert_eq!(f32s(&prefill), f32s(&alone[bi][0]), "row {bi}: prefill");
        let padding = slots(&batch[0], bi, 0, pad);
        assert!(f32s(&padding).iter().all(|&x| x == 0.0), "row {bi}: padding queries output 0");
        for step in 1..3 {
            let got = slots(&batch[step], bi, 0, 1);
            assert_eq!(f32s(&got), f32s(&alone[bi][step]), "row {bi}: decode step {step}");
        }
    }
}

/// The GDN core of one head on `mixed: [B,S,3D]` (channels q | k | v, Dk = Dv = D): causal conv
/// from a zero state, SiLU, l2norm of q and k, the delta rule from a zero state.
/// Returns (o, conv state', ssm state').
fn gdn_core(mixed: &Tensor, w: &Tensor, g: &Tensor, beta: &Tensor, kernel: usize, chunk: Option<usize>) -> [Tensor; 3] {
    let [b, s, c] = [mixed.shape[0], mixed.shape[1], mixed.shape[2]];
    let (dk, dv) = (c / 3, c / 3);
    let state = Tensor::zeros(vec![b, c, kernel - 1]);
    let mut conv = eval(Op::CausalConv1d { kernel }, &[mixed, w, &state]);
    let u = eval(Op::Silu, &[&conv[0]]).remove(0);
    let split = |i: usize| {
        let x = eval(Op::Slice { axis: 2, start: i * dk, len: dk }, &[&u]).remove(0);
        eval(Op::Reshape { shape: qgc_ir::types::const_shape(&[b, s, 1, dk]) }, &[&x]).remove(0)
    };
    let q = eval(Op::L2Norm { eps: 1e-6 }, &[&split(0)]).remove(0);
    let k = eval(Op::L2Norm { eps: 1e-6 }, &[&split(1)]).remove(0);
    let v = split(2);
    let ssm = Tensor::zeros(vec![b, 1, dk, dv]);
    let mut o = eval(Op::GatedDeltaRule { chunk }, &[&q, &k, &v, g, beta, &ssm]);
    let conv_state = conv.remove(1);
    let ssm_state = o.remove(1);
    [o.remove(0), conv_state, ssm_state]
}

#[test]
fn zero_padded_gdn_sequence_ends_in_the_state_it_has_alone() {
    // Padding slots carry zero input but the decay and β they would get from a zero projection
    // (nonzero: g = −e^{A}·softplus(dt_bias), β = σ(0)); the zero state must stay zero.
    let (dk, kernel) = (5, 4);
    let mut rng = Rng::new(33);
    let w = rng.tensor(&[3 * dk, kernel], -1.0, 1.0);
    for (n, pad) in [(1, 2), (2, 9), (5, 1), (9, 60), (40, 37), (70, 3)] {
        let mixed = rng.tensor(&[1, n, 3 * dk], -2.0, 2.0);
        let g = rng.tensor(&[1, n, 1], -3.0, 0.0);
        let beta = rng.tensor(&[1, n, 1], 0.05, 0.95);
        let pad_gate = |t: &Tensor, fill: f32| {
            let mut p = left_pad(t, pad);
            if let qgc_ir::interp::Data::F32(x) = &mut p.data {
                x[..pad].iter_mut().for_each(|v| *v = fill);
            }
            p
        };
        for chunk in [None, Some(64), Some(4), Some(3)] {
            let alone = gdn_core(&mixed, &w, &g, &beta, kernel, chunk);
            let padded =
                gdn_core(&left_pad(&mixed, pad), &w, &pad_gate(&g, -1.7), &pad_gate(&beta, 0.5), kernel, chunk);
            let real = slots(&padded[0], 0, pad, pad + n);
            let e = rel_err(f32s(&real), f32s(&alone[0]));
            assert!(e < 1e-6, "n {n} pad {pad} chunk {chunk:?}: outputs differ by {e:e}");
            assert!(f32s(&slots(&padded[0], 0, 0, pad)).iter().all(|&x| x == 0.0), "padding outputs are 0");
            assert_eq!(padded[1], alone[1], "n {n} pad {pad}: conv state");
            let e = rel_err(f32s(&padded[2]), f32s(&alone[2]));
            assert!(e < 1e-6, "n {n} pad {pad} chunk {chunk:?}: recurrent state differs by {e:e}");
            if chunk.is_none() {
                assert_eq!(padded[2], alone[2], "the per-token recurrence is exact");
            }
        }
    }
}
