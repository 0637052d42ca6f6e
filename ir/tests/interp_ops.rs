//! Hand-checkable cases for the interpreter's ops, and `run`'s input/weight/range checking.
//! Expected values come from algebra, not from the interpreter.

use qgc_ir::interp::{eval_op, run, InterpError, MapWeights, Rng, Tensor};
use qgc_ir::types::const_shape;
use qgc_ir::{Bindings, DType, Dim, Graph, Op, Sym, TensorType};
use std::collections::BTreeMap;

const BIND: Bindings = Bindings { b: 0, s: 0, p: 0 };

fn f32s(t: &Tensor) -> &[f32] {
    t.as_f32().expect("f32 tensor")
}

fn eval1(op: Op, ins: &[&Tensor]) -> Tensor {
    eval_op(&op, ins, &BIND).expect("op runs").remove(0)
}

fn close(a: &[f32], b: &[f32], tol: f32) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol * (1.0 + y.abs()))
}

#[test]
fn attention_with_one_key_returns_its_value() {
    // One cached position, one query: softmax over a single score is 1.
    let q = Tensor::f32(vec![1, 1, 2, 3], vec![1.0, -2.0, 0.5, 3.0, 0.0, 1.0]);
    let k = Tensor::f32(vec![1, 1, 1, 3], vec![0.3, 0.1, -0.7]);
    let v = Tensor::f32(vec![1, 1, 1, 2], vec![4.0, -5.0]);
    let pos = Tensor::i32(vec![1, 1], vec![0]);
    let o = eval1(Op::Attention { scale: 0.5 }, &[&q, &k, &v, &pos]);
    assert_eq!(o.shape, vec![1, 1, 2, 2]);
    assert!(close(f32s(&o), &[4.0, -5.0, 4.0, -5.0], 1e-6), "{o:?}");
}

#[test]
fn attention_is_causal_and_uses_grouped_kv_heads() {
    // 4 query heads, 2 kv heads: heads 0,1 read kv 0, heads 2,3 read kv 1. Two cached
    // positions before two new queries (P = 2, S = 2); all-zero queries give uniform weights.
    let (nq, nkv, total, d) = (4, 2, 4, 2);
    let q = Tensor::zeros(vec![1, 2, nq, d]);
    let k = Rng::new(1).tensor(&[1, nkv, total, d], -1.0, 1.0);
    let vals: Vec<f32> = (0..nkv * total).map(|i| i as f32).collect();
    let v = Tensor::f32(vec![1, nkv, total, 1], vals);
    let pos = Tensor::i32(vec![1, 2], vec![2, 3]);
    let o = eval1(Op::Attention { scale: 1.0 }, &[&q, &k, &v, &pos]);
    // Query 0 sits at index 2 (mean of kv rows 0..=2), query 1 at index 3 (rows 0..=3).
    let want = [1.0, 1.0, 5.0, 5.0, 1.5, 1.5, 5.5, 5.5];
    assert!(close(f32s(&o), &want, 1e-6), "{o:?}");
}

#[test]
fn attention_softmax_weights_by_hand() {
    // Two keys with scores 0 and ln 3 (after scale): weights 1/4 and 3/4.
    let q = Tensor::f32(vec![1, 1, 1, 1], vec![1.0]);
    let k = Tensor::f32(vec![1, 1, 2, 1], vec![0.0, 2.0 * 3f32.ln()]);
    let v = Tensor::f32(vec![1, 1, 2, 1], vec![8.0, 4.0]);
    let pos = Tensor::i32(vec![1, 1], vec![1]);
    let o = eval1(Op::Attention { scale: 0.5 }, &[&q, &k, &v, &pos]);
    assert!(close(f32s(&o), &[8.0 / 4.0 + 4.0 * 3.0 / 4.0], 1e-6), "{o:?}");
}

#[test]
fn kv_append_puts_new_entries_after_the_cache() {
    let cache = Tensor::f32(vec![1, 2, 1, 2], vec![1.0, 2.0, 3.0, 4.0]);
    let new = Tensor::f32(vec![1, 1, 2, 2], vec![5.0, 6.0, 7.0, 8.0]);
    let out = eval1(Op::KvAppend, &[&cache, &new]);
    assert_eq!(out.shape, vec![1, 2, 2, 2]);
    assert_eq!(f32s(&out), &[1.0, 2.0, 5.0, 6.0, 3.0, 4.0, 7.0, 8.0]);
}

fn rope(x: &Tensor, pos: Vec<i32>, rotary_dim: usize) -> Tensor {
    let p = Tensor::i32(x.shape[..2].to_vec(), pos);
    eval1(Op::Rope { theta: 1e7, rotary_dim }, &[x, &p])
}

#[test]
fn rope_at_position_zero_is_identity() {
    let x = Rng::new(2).tensor(&[2, 3, 2, 8], -1.0, 1.0);
    assert_eq!(rope(&x, vec![0; 6], 4), x);
}

#[test]
fn rope_preserves_norms_and_passes_unrotated_dims() {
    let (d, rot) = (8, 4);
    let x = Rng::new(3).tensor(&[1, 3, 2, d], -1.0, 1.0);
    let y = rope(&x, vec![1, 17, 4000], rot);
    for (hx, hy) in f32s(&x).chunks(d).zip(f32s(&y).chunks(d)) {
        let n = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>();
        // Each (i, i + rot/2) pair is rotated, so its norm is kept; dims ≥ rot are untouched.
        for i in 0..rot / 2 {
            let (a, b) = (n(&[hx[i], hx[i + rot / 2]]), n(&[hy[i], hy[i + rot / 2]]));
            assert!((a - b).abs() < 1e-5, "pair {i}: {a} vs {b}");
        }
        assert_eq!(&hx[rot..], &hy[rot..]);
    }
}

#[test]
fn rope_rotates_rotate_half_pairs_by_position_times_frequency() {
    // rotary_dim 4, theta 1e7: inv_freq = [1, 1e7^-0.5]. Position 2, x = e_0 + 2 e_3.
    let x = Tensor::f32(vec![1, 1, 1, 4], vec![1.0, 0.0, 0.0, 2.0]);
    let y = rope(&x, vec![2], 4);
    let f1 = 2.0 / 1e7f64.sqrt();
    let want = [2f64.cos(), -2.0 * f1.sin(), 2f64.sin(), 2.0 * f1.cos()].map(|v| v as f32);
    assert!(close(f32s(&y), &want, 1e-6), "{y:?} vs {want:?}");
}

#[test]
fn rope_at_a_negative_position_rotates_backwards() {
    // Padding slots have negative positions: rope(-p) undoes rope(p).
    let x = Rng::new(4).tensor(&[1, 3, 2, 8], -1.0, 1.0);
    let y = rope(&rope(&x, vec![3, 40, 7], 6), vec![-3, -40, -7], 6);
    assert!(close(f32s(&y), f32s(&x), 1e-5), "{y:?} vs {x:?}");
    // The positions must still be i32 and match the input's [B,S].
    let bad = Tensor::f32(vec![1, 3], vec![0.0; 3]);
    assert!(eval_op(&Op::Rope { theta: 1e4, rotary_dim: 4 }, &[&x, &bad], &BIND).is_err());
    let short = Tensor::i32(vec![1, 2], vec![0, 1]);
    assert!(eval_op(&Op::Rope { theta: 1e4, rotary_dim: 4 }, &[&x, &short], &BIND).is_err());
}

#[test]
fn rms_norm_of_a_constant_vector() {
    // mean(c²) = c², so x / rms = c / sqrt(c² + eps) per element, times (1 + w) or w.
    let (c, eps) = (3.0f32, 1e-2f32);
    let x = Tensor::f32(vec![2, 4], vec![c; 8]);
    let w = Tensor::f32(vec![4], vec![0.0, 0.5, -1.0, 2.0]);
    let unit = c / (c * c + eps).sqrt();
    let zc = eval1(Op::RmsNorm { eps, zero_centred: true }, &[&x, &w]);
    let want: Vec<f32> = [1.0, 1.5, 0.0, 3.0].iter().cycle().take(8).map(|s| unit * s).collect();
    assert!(close(f32s(&zc), &want, 1e-6), "{zc:?}");
    let plain = eval1(Op::RmsNorm { eps, zero_centred: false }, &[&x, &w]);
    let want: Vec<f32> = [0.0, 0.5, -1.0, 2.0].iter().cycle().take(8).map(|s| unit * s).collect();
    assert!(close(f32s(&plain), &want, 1e-6), "{plain:?}");
}

#[test]
fn gated_rms_norm_and_l2_norm_by_hand() {
    // x = [3, 4]: mean of squares 12.5, sum 25. z = [0, 2]: silu = [0, 2σ(2)].
    let x = Tensor::f32(vec![1, 2], vec![3.0, 4.0]);
    let z = Tensor::f32(vec![1, 2], vec![0.0, 2.0]);
    let w = Tensor::f32(vec![2], vec![2.0, 0.5]);
    let g = eval1(Op::GatedRmsNorm { eps: 0.0 }, &[&x, &z, &w]);
    let silu2 = 2.0 / (1.0 + (-2.0f32).exp());
    assert!(close(f32s(&g), &[0.0, 0.5 * 4.0 / 12.5f32.sqrt() * silu2], 1e-6), "{g:?}");
    let l2 = eval1(Op::L2Norm { eps: 11.0 }, &[&x]);
    assert!(close(f32s(&l2), &[0.5, 4.0 / 6.0], 1e-6), "{l2:?}");
}

#[test]
fn unary_ops_by_hand() {
    let x = Tensor::f32(vec![4], vec![0.0, 1.0, 25.0, -3.0]);
    let sp = eval1(Op::Softplus, &[&x]);
    let want = [2f32.ln(), (1.0 + 1f32.exp()).ln(), 25.0, (1.0 + (-3f32).exp()).ln()];
    assert!(close(f32s(&sp), &want, 1e-6), "{sp:?}");
    assert_eq!(f32s(&eval1(Op::Softplus, &[&Tensor::f32(vec![1], vec![20.5])])), &[20.5]);
    let sg = eval1(Op::Sigmoid, &[&x]);
    assert!(close(&f32s(&sg)[..2], &[0.5, 1.0 / (1.0 + (-1f32).exp())], 1e-6));
    let si = eval1(Op::Silu, &[&x]);
    assert!(close(&f32s(&si)[..2], &[0.0, 1.0 / (1.0 + (-1f32).exp())], 1e-6));
    assert_eq!(f32s(&eval1(Op::Neg, &[&x])), &[0.0, -1.0, -25.0, 3.0]);
    assert_eq!(f32s(&eval1(Op::Scale { by: 2.0 }, &[&x])), &[0.0, 2.0, 50.0, -6.0]);
    assert!(close(f32s(&eval1(Op::Exp, &[&x]))[..2].as_ref(), &[1.0, 1f32.exp()], 1e-6));
}

#[test]
fn add_and_mul_broadcast() {
    let a = Tensor::f32(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let row = Tensor::f32(vec![3], vec![10.0, 20.0, 30.0]);
    assert_eq!(f32s(&eval1(Op::Add, &[&a, &row])), &[11.0, 22.0, 33.0, 14.0, 25.0, 36.0]);
    assert_eq!(f32s(&eval1(Op::Mul, &[&a, &row])), &[10.0, 40.0, 90.0, 40.0, 100.0, 180.0]);
    let gate = Tensor::f32(vec![2, 1], vec![2.0, -1.0]);
    assert_eq!(f32s(&eval1(Op::Mul, &[&a, &gate])), &[2.0, 4.0, 6.0, -4.0, -5.0, -6.0]);
    assert!(eval_op(&Op::Add, &[&a, &gate], &BIND).is_err(), "add does not take a per-row operand");
}

#[test]
fn matmul_and_movement_by_hand() {
    let x = Tensor::f32(vec![1, 2, 2], vec![1.0, 2.0, 3.0, 4.0]);
    let w = Tensor::f32(vec![3, 2], vec![1.0, 0.0, 0.0, 1.0, 1.0, -1.0]);
    let y = eval1(Op::MatMul, &[&x, &w]);
    assert_eq!(y.shape, vec![1, 2, 3]);
    assert_eq!(f32s(&y), &[1.0, 2.0, -1.0, 3.0, 4.0, -1.0]);
    let s = eval1(Op::Slice { axis: 2, start: 1, len: 2 }, &[&y]);
    assert_eq!(f32s(&s), &[2.0, -1.0, 4.0, -1.0]);
    let c = eval1(Op::Concat { axis: 2 }, &[&s, &x]);
    assert_eq!(c.shape, vec![1, 2, 4]);
    assert_eq!(f32s(&c), &[2.0, -1.0, 1.0, 2.0, 4.0, -1.0, 3.0, 4.0]);
    let r = eval_op(&Op::Reshape { shape: vec![Dim::sym(Sym::B), Dim::c(4)] }, &[&c], &Bindings { b: 2, s: 0, p: 0 });
    assert_eq!(r.unwrap()[0].shape, vec![2, 4]);
    let table = Tensor::f32(vec![3, 2], vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    let ids = Tensor::i32(vec![1, 2], vec![2, 0]);
    assert_eq!(f32s(&eval1(Op::Embed, &[&table, &ids])), &[4.0, 5.0, 0.0, 1.0]);
}

#[test]
fn moe_route_picks_top_experts_and_renormalises() {
    // Logits ln(p) for p = [0.1, 0.4, 0.2, 0.3]: top-2 = experts 1, 3 with 0.4, 0.3.
    let p = [0.1f32, 0.4, 0.2, 0.3];
    let logits = Tensor::f32(vec![1, 1, 4], p.iter().map(|x| x.ln()).collect());
    let out = eval_op(&Op::MoeRoute { top_k: 2, renormalize: false }, &[&logits], &BIND).unwrap();
    assert_eq!(out[1].as_i32().unwrap(), &[1, 3]);
    assert!(close(f32s(&out[0]), &[0.4, 0.3], 1e-6), "{:?}", out[0]);
    let out = eval_op(&Op::MoeRoute { top_k: 2, renormalize: true }, &[&logits], &BIND).unwrap();
    assert_eq!(out[1].as_i32().unwrap(), &[1, 3]);
    assert!(close(f32s(&out[0]), &[4.0 / 7.0, 3.0 / 7.0], 1e-6), "{:?}", out[0]);
    let sum: f32 = f32s(&out[0]).iter().sum();
    assert!((sum - 1.0).abs() < 1e-6);
}

#[test]
fn moe_route_ties_go_to_the_lower_index() {
    let logits = Tensor::f32(vec![1, 2, 4], vec![0.5, 1.0, 1.0, 1.0, 2.0, 0.0, 0.0, 2.0]);
    let out = eval_op(&Op::MoeRoute { top_k: 2, renormalize: true }, &[&logits], &BIND).unwrap();
    assert_eq!(out[1].as_i32().unwrap(), &[1, 2, 0, 3]);
    assert!(close(f32s(&out[0]), &[0.5; 4], 1e-6));
}

#[test]
fn moe_experts_weight_after_down_proj_by_hand() {
    // H = 1, I = 1: expert e computes d_e · silu(g_e x) · (u_e x).
    let x = Tensor::f32(vec![1, 1, 1], vec![2.0]);
    let gate = Tensor::f32(vec![3, 1, 1], vec![1.0, 0.0, -1.0]);
    let up = Tensor::f32(vec![3, 1, 1], vec![1.0, 5.0, 3.0]);
    let down = Tensor::f32(vec![3, 1, 1], vec![1.0, 7.0, 2.0]);
    let wts = Tensor::f32(vec![1, 1, 2], vec![0.25, 0.75]);
    let ids = Tensor::i32(vec![1, 1, 2], vec![2, 0]);
    let y = eval1(Op::MoeExperts, &[&x, &wts, &ids, &gate, &up, &down]);
    let silu = |v: f32| v / (1.0 + (-v).exp());
    let want = 0.25 * 2.0 * silu(-2.0) * 6.0 + 0.75 * silu(2.0) * 2.0;
    assert!(close(f32s(&y), &[want], 1e-6), "{y:?} vs {want}");
    let bad = Tensor::i32(vec![1, 1, 2], vec![3, 0]);
    assert!(eval_op(&Op::MoeExperts, &[&x, &wts, &bad, &gate, &up, &down], &BIND).is_err());
}

/// `embed(table, tokens)` then `matmul` with a weight: a two-weight graph for `run` checks.
fn tiny_graph() -> Graph {
    let mut g = Graph::new("tiny");
    let ids = TensorType::new(vec![Dim::sym(Sym::B), Dim::sym(Sym::S)], DType::I32);
    let tok = g.add1("tokens", Op::Input { name: "tokens".into(), ty: ids }, &[]).unwrap();
    let table =
        g.add1("table", Op::Weight { name: "table".into(), ty: TensorType::f32(const_shape(&[3, 2])) }, &[]).unwrap();
    let w = g.add1("w", Op::Weight { name: "w".into(), ty: TensorType::f32(const_shape(&[1, 2])) }, &[]).unwrap();
    let x = g.add1("embed", Op::Embed, &[table, tok]).unwrap();
    let y = g.add1("proj", Op::MatMul, &[x, w]).unwrap();
    g.outputs.push(("y".into(), y));
    g.outputs.push(("x".into(), x));
    g
}

fn tiny_weights() -> MapWeights {
    let mut w = MapWeights::new();
    w.insert("table", Tensor::f32(vec![3, 2], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
    w.insert("w", Tensor::f32(vec![1, 2], vec![1.0, -1.0]));
    w
}

#[test]
fn run_evaluates_a_graph_and_returns_named_outputs() {
    let (g, w) = (tiny_graph(), tiny_weights());
    let bind = Bindings { b: 1, s: 2, p: 0 };
    let inputs = BTreeMap::from([("tokens".to_string(), Tensor::i32(vec![1, 2], vec![2, 1]))]);
    let out = run(&g, &bind, &inputs, &w).unwrap();
    assert_eq!(out["y"], Tensor::f32(vec![1, 2, 1], vec![-1.0, -1.0]));
    assert_eq!(out["x"], Tensor::f32(vec![1, 2, 2], vec![5.0, 6.0, 3.0, 4.0]));
}

#[test]
fn run_rejects_bad_inputs_weights_and_token_ids() {
    let (g, w) = (tiny_graph(), tiny_weights());
    let bind = Bindings { b: 1, s: 2, p: 0 };
    let call = |t: Tensor, w: &MapWeights| {
        let inputs = BTreeMap::from([("tokens".to_string(), t)]);
        run(&g, &bind, &inputs, w)
    };
    assert_eq!(run(&g, &bind, &BTreeMap::new(), &w), Err(InterpError::MissingInput("tokens".into())));
    assert!(matches!(call(Tensor::i32(vec![1, 3], vec![0; 3]), &w), Err(InterpError::BadInput { .. })));
    assert!(matches!(call(Tensor::f32(vec![1, 2], vec![0.0; 2]), &w), Err(InterpError::BadInput { .. })));
    let ragged = Tensor { shape: vec![1, 2], data: qgc_ir::interp::Data::I32(vec![0]) };
    assert!(matches!(call(ragged, &w), Err(InterpError::BadInput { .. })));
    match call(Tensor::i32(vec![1, 2], vec![0, 3]), &w) {
        Err(InterpError::Runtime { node, .. }) => assert_eq!(node, "embed"),
        other => panic!("expected a runtime error at embed, got {other:?}"),
    }
    assert!(matches!(call(Tensor::i32(vec![1, 2], vec![-1, 0]), &w), Err(InterpError::Runtime { .. })));
    let mut bad = tiny_weights();
    bad.insert("w", Tensor::f32(vec![2, 1], vec![1.0, -1.0]));
    assert!(matches!(call(Tensor::i32(vec![1, 2], vec![0, 1]), &bad), Err(InterpError::Weight { .. })));
    bad.tensors.remove("w");
    assert!(matches!(call(Tensor::i32(vec![1, 2], vec![0, 1]), &bad), Err(InterpError::Weight { .. })));
}

/// RoPE at positions `past..past+s` then KV append and attention, as the attention layer does.
fn attend_step(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    caches: (&Tensor, &Tensor),
    past: usize,
) -> (Tensor, Tensor, Tensor) {
    let [b, s] = [q.shape[0], q.shape[1]];
    let pos: Vec<i32> = (0..b).flat_map(|_| (past..past + s).map(|p| p as i32)).collect();
    let pos = Tensor::i32(vec![b, s], pos);
    let rope = Op::Rope { theta: 1e4, rotary_dim: 4 };
    let (q, k) = (eval1(rope.clone(), &[q, &pos]), eval1(rope, &[k, &pos]));
    let kc = eval1(Op::KvAppend, &[caches.0, &k]);
    let vc = eval1(Op::KvAppend, &[caches.1, v]);
    let o = eval1(Op::Attention { scale: 0.3 }, &[&q, &kc, &vc, &pos]);
    (o, kc, vc)
}

/// Tokens `from..to` of a [B,S,...] tensor.
fn tokens(t: &Tensor, from: usize, to: usize) -> Tensor {
    let (b, s) = (t.shape[0], t.shape[1]);
    let w: usize = t.shape[2..].iter().product();
    let d: Vec<f32> = (0..b).flat_map(|bi| f32s(t)[(bi * s + from) * w..(bi * s + to) * w].to_vec()).collect();
    let mut shape = t.shape.clone();
    shape[1] = to - from;
    Tensor::f32(shape, d)
}

#[test]
fn kv_append_attention_continuation_equals_one_call() {
    let (b, s, nq, nkv, d, dv) = (2, 12, 4, 2, 6, 5);
    let mut rng = Rng::new(9);
    let q = rng.tensor(&[b, s, nq, d], -1.0, 1.0);
    let k = rng.tensor(&[b, s, nkv, d], -1.0, 1.0);
    let v = rng.tensor(&[b, s, nkv, dv], -1.0, 1.0);
    let empty = (Tensor::zeros(vec![b, nkv, 0, d]), Tensor::zeros(vec![b, nkv, 0, dv]));
    let (o, kc, vc) = attend_step(&q, &k, &v, (&empty.0, &empty.1), 0);
    for split in [1, 2, 5, 11] {
        let (o1, kc1, vc1) =
            attend_step(&tokens(&q, 0, split), &tokens(&k, 0, split), &tokens(&v, 0, split), (&empty.0, &empty.1), 0);
        let (o2, kc2, vc2) =
            attend_step(&tokens(&q, split, s), &tokens(&k, split, s), &tokens(&v, split, s), (&kc1, &vc1), split);
        assert!(close(f32s(&o1), f32s(&tokens(&o, 0, split)), 1e-6), "split {split}: first part");
        assert!(close(f32s(&o2), f32s(&tokens(&o, split, s)), 1e-6), "split {split}: second part");
        assert!(close(f32s(&kc2), f32s(&kc), 1e-6) && vc2 == vc, "split {split}: caches differ");
    }
    // The cache matters: the second part attending without the first part's entries differs,
    // and cannot claim positions 5.. with no cached slots before it.
    let (o2, kc2, vc2) = attend_step(&tokens(&q, 5, s), &tokens(&k, 5, s), &tokens(&v, 5, s), (&empty.0, &empty.1), 0);
    assert!(!close(f32s(&o2), f32s(&tokens(&o, 5, s)), 1e-3));
    let late = Tensor::i32(vec![b, s - 5], (0..b).flat_map(|_| 5..s as i32).collect());
    let err = eval_op(&Op::Attention { scale: 0.3 }, &[&tokens(&q, 5, s), &kc2, &vc2, &late], &BIND).unwrap_err();
    assert_eq!(err, "position 5 of row 0 is past the 0 cached slots before it");
}
