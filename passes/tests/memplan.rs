//! The memory plan (`qgc_passes::memplan`), checked from outside:
//! - an independent checker (its own liveness, view and in-place rules, true byte sizes at
//!   concrete bindings) finds no two simultaneously live values sharing bytes, on the tiny and
//!   80B models after the full pipeline;
//! - a plan-driven interpreter keeps every arena value in one `Vec<f32>` at its planned offset
//!   and reproduces `interp::run` exactly on the tiny model;
//! - a corrupted plan is caught by both;
//! - the 80B plans use a small fraction of the naive bytes.

#[path = "common.rs"]
mod common;

use qgc_ir::interp::{self, eval_op, MapWeights, Tensor, WeightSource};
use qgc_ir::{Bindings, DType, Graph, Op, TensorType, Value};
use qgc_passes::memplan::{self, Home, MemPlan, Role};
use qgc_passes::{optimise, Options};
use std::collections::BTreeMap;

fn fused(g: &Graph) -> Graph {
    optimise(g, &Options::default(), &mut |_, _| {}).unwrap().0
}

fn values(g: &Graph) -> impl Iterator<Item = Value> + '_ {
    g.nodes.iter().enumerate().flat_map(|(node, n)| (0..n.outputs.len()).map(move |index| Value { node, index }))
}

fn bytes(t: &TensorType, b: &Bindings) -> u64 {
    (t.eval(b).iter().product::<usize>() * t.dtype.size()) as u64
}

// ---- the independent checker --------------------------------------------------------------

/// One value at one binding, as the checker sees it.
#[derive(Clone)]
struct Seen {
    v: Value,
    home: Home,
    lo: u64,
    hi: u64,
    def: usize,
    last: usize,
    /// The checker's own view root: a verified reshape / contiguous slice shares its operand's.
    root: Value,
}

/// The checker's own liveness: `(def, last read)`, graph outputs to the end.
fn live(g: &Graph) -> BTreeMap<Value, (usize, usize)> {
    let mut m: BTreeMap<Value, (usize, usize)> = values(g).map(|v| (v, (v.node, v.node))).collect();
    for (i, n) in g.nodes.iter().enumerate() {
        n.inputs.iter().for_each(|v| m.get_mut(v).unwrap().1 = i);
    }
    g.outputs.iter().for_each(|(_, v)| m.get_mut(v).unwrap().1 = usize::MAX);
    m
}

/// Whether `seen` is, at this binding, exactly the bytes of its operand `x` (reshape, or a slice
/// that is one contiguous run).
fn verified_view(g: &Graph, seen: &Seen, x: &Seen, b: &Bindings) -> bool {
    let n = &g.nodes[seen.v.node];
    let ty = g.ty(n.inputs.first().copied().unwrap_or(seen.v));
    let expect = match n.op {
        Op::Reshape { .. } => Some(x.lo),
        Op::Slice { axis, start, .. } => {
            let d = ty.eval(b);
            let inner: usize = d[axis + 1..].iter().product();
            (d[..axis].iter().product::<usize>() == 1).then(|| x.lo + (start * inner * ty.dtype.size()) as u64)
        }
        _ => None,
    };
    seen.home == x.home && expect == Some(seen.lo) && seen.hi <= x.hi
}

/// Whether result `r` may share its bytes with operand `u` because it is written in place.
fn in_place(g: &Graph, u: &Seen, r: &Seen) -> bool {
    let n = &g.nodes[r.v.node];
    // Pointwise results over either operand; row-wise kernels (norms, RoPE, the GDN gates' q/k)
    // over the operand they normalise; recurrent state updated in place.
    let allowed: &[usize] = match (&n.op, r.v.index) {
        (Op::Add | Op::Mul | Op::AddRmsNorm { .. }, 0) => &[0, 1],
        (Op::Silu | Op::Sigmoid | Op::Softplus | Op::Exp | Op::Neg | Op::Scale { .. } | Op::MaskPadding, 0) => &[0],
        (Op::L2Norm { .. } | Op::Rope { .. } | Op::RmsNormRope { .. } | Op::GdnGates { .. }, 0) => &[0],
        (Op::GdnGates { .. }, 1) => &[1],
        (Op::CausalConv1d { .. }, 1) => &[2],
        (Op::GatedDeltaRule { .. }, 1) => &[5],
        _ => &[],
    };
    let reads = allowed.iter().any(|&k| n.inputs[k] == u.v);
    reads && u.last == r.def && g.ty(u.v) == g.ty(r.v) && (u.lo, u.hi) == (r.lo, r.hi)
}

/// Every violation of the plan at binding `b` (empty when safe).
fn check(g: &Graph, plan: &MemPlan, b: &Bindings) -> Vec<String> {
    let (live, load) = (live(g), g.weight_only());
    let mut errs = Vec::new();
    let mut seen: BTreeMap<Value, Seen> = BTreeMap::new();
    for v in values(g) {
        let name = &g.nodes[v.node].name;
        let Some(p) = plan.placement.get(&v) else {
            errs.push(format!("{name}: not placed"));
            continue;
        };
        let lo = p.offset.eval(b);
        let (def, last) = live[&v];
        let mut s = Seen { v, home: p.home.clone(), lo, hi: lo + bytes(g.ty(v), b), def, last, root: v };
        let operand = g.nodes[v.node].inputs.first().and_then(|x| seen.get(x));
        if let Some(x) = operand.filter(|x| verified_view(g, &s, x, b)) {
            s.root = x.root;
        }
        if let Some(e) = home_error(g, &s, plan, b, &load) {
            errs.push(format!("{name}: {e}"));
        }
        seen.insert(v, s);
    }
    let mut by_home: BTreeMap<Home, Vec<Seen>> = BTreeMap::new();
    for s in seen.into_values().filter(|s| matches!(s.home, Home::Arena | Home::Output(_))) {
        by_home.entry(s.home.clone()).or_default().push(s);
    }
    for group in by_home.values() {
        errs.extend(overlaps(g, group));
    }
    errs
}

/// Whether a value may be in its home, and within the storage's bounds.
fn home_error(g: &Graph, s: &Seen, plan: &MemPlan, b: &Bindings, load: &[bool]) -> Option<String> {
    let node = &g.nodes[s.v.node];
    let is_view = s.root != s.v;
    match &s.home {
        Home::Input(name) => {
            let own = matches!(&node.op, Op::Input { name: n, .. } if n == name) && s.lo == 0;
            (!own && !is_view).then(|| format!("computed value in input {name}"))
        }
        Home::Load => (!load[s.v.node]).then(|| "per-call value in load storage".into()),
        Home::Output(name) => {
            let Some(out) = g.output(name) else { return Some(format!("no output {name}")) };
            let cap = bytes(g.ty(out), b);
            let whole = plan.placement[&out].home == s.home && plan.placement[&out].offset.eval(b) == 0;
            (s.hi > cap || !whole).then(|| format!("[{}, {}) outside output {name} of {cap} bytes", s.lo, s.hi))
        }
        Home::Arena => {
            let size = plan.arena_size.eval(b);
            let misaligned = !is_view && !s.lo.is_multiple_of(memplan::ALIGN);
            (s.hi > size || misaligned).then(|| format!("[{}, {}) in an arena of {size} bytes", s.lo, s.hi))
        }
    }
}

/// Pairs of simultaneously live values of one storage whose bytes overlap, excepting views of
/// one buffer and in-place results over their dying operand.
fn overlaps(g: &Graph, group: &[Seen]) -> Vec<String> {
    let mut errs = Vec::new();
    let mut active: Vec<&Seen> = Vec::new();
    for s in group {
        active.retain(|a| a.last >= s.def);
        for a in &active {
            let bytes_meet = a.lo < s.hi && s.lo < a.hi;
            if bytes_meet && a.root != s.root && !in_place(g, a, s) && !in_place(g, s, a) {
                let (na, ns) = (&g.nodes[a.v.node].name, &g.nodes[s.v.node].name);
                errs.push(format!("{na} [{}, {}) and {ns} [{}, {}) overlap while both live", a.lo, a.hi, s.lo, s.hi));
            }
        }
        active.push(s);
    }
    errs
}

/// Bindings to check a graph at: B 1..=3 and, unless the graph fixes S, `s`; P in `p`.
fn grid(g: &Graph, s: &[usize], p: &[usize]) -> Vec<Bindings> {
    let s: Vec<usize> = if g.fixed_seq.is_some() { vec![1] } else { s.to_vec() };
    let mut out = Vec::new();
    for b in 1..=3 {
        for &s in &s {
            out.extend(p.iter().map(|&p| Bindings { b, s, p }));
        }
    }
    out
}

fn assert_safe(g: &Graph, plan: &MemPlan, grid: &[Bindings]) {
    for b in grid {
        let errs = check(g, plan, b);
        assert!(
            errs.is_empty(),
            "{} at {b:?}: {} violations, first: {:?}",
            g.name,
            errs.len(),
            &errs[..3.min(errs.len())]
        );
    }
}

#[test]
fn tiny_plans_are_safe_at_every_small_binding() {
    let p = common::program(&common::spec("qwen3-next-tiny"));
    let (s, pp): (Vec<usize>, Vec<usize>) = ((1..=70).collect(), (0..=100).collect());
    for g in [&p.prefill, &p.decode] {
        let f = fused(g);
        let plan = memplan::plan(&f);
        assert_safe(&f, &plan, &grid(&f, &s, &pp));
        eprintln!("tiny {}: {plan}", f.name);
        if std::env::var_os("QGC_SHOW").is_some() {
            eprintln!("{}", plan.listing(&f));
        }
    }
}

#[test]
fn flagship_plans_are_safe() {
    let p = common::program(&common::spec("qwen3-next"));
    for g in [&p.prefill, &p.decode, p.mtp.as_ref().unwrap()] {
        let f = fused(g);
        let plan = memplan::plan(&f);
        assert_safe(&f, &plan, &grid(&f, &[1, 2, 3, 5, 17, 64, 70], &[0, 1, 7, 64, 100]));
    }
}

// ---- the plan-driven interpreter ------------------------------------------------------------

/// f32 words of a tensor (i32 elements by their bits).
fn words(t: &Tensor) -> Vec<f32> {
    match (t.as_f32(), t.as_i32()) {
        (Some(x), _) => x.to_vec(),
        (_, Some(x)) => x.iter().map(|&i| f32::from_bits(i as u32)).collect(),
        _ => unreachable!(),
    }
}

fn tensor(ty: &TensorType, shape: Vec<usize>, w: &[f32]) -> Tensor {
    match ty.dtype {
        DType::I32 => Tensor::i32(shape, w.iter().map(|x| x.to_bits() as i32).collect()),
        _ => Tensor::f32(shape, w.to_vec()),
    }
}

/// Storage during a planned run: the arena, the caller's output buffers and the inputs, as
/// f32 words; load-time values by value.
struct Memory {
    arena: Vec<f32>,
    outputs: BTreeMap<String, Vec<f32>>,
    inputs: BTreeMap<String, Vec<f32>>,
    loaded: BTreeMap<Value, Tensor>,
}

impl Memory {
    fn words(&mut self, home: &Home) -> &mut Vec<f32> {
        match home {
            Home::Arena => &mut self.arena,
            Home::Output(n) => self.outputs.get_mut(n).unwrap(),
            Home::Input(n) => self.inputs.get_mut(n).unwrap(),
            Home::Load => unreachable!("load values are kept by value"),
        }
    }

    fn read(&mut self, g: &Graph, plan: &MemPlan, v: Value, b: &Bindings) -> Tensor {
        let p = &plan.placement[&v];
        if p.home == Home::Load {
            return self.loaded[&v].clone();
        }
        let shape = g.ty(v).eval(b);
        let (at, n) = ((p.offset.eval(b) / 4) as usize, shape.iter().product::<usize>());
        tensor(g.ty(v), shape, &self.words(&p.home)[at..at + n])
    }

    fn write(&mut self, plan: &MemPlan, v: Value, t: &Tensor, b: &Bindings) {
        let p = &plan.placement[&v];
        assert!(matches!(p.home, Home::Arena | Home::Output(_)), "a computed value planned into {:?}", p.home);
        let at = (p.offset.eval(b) / 4) as usize;
        let w = words(t);
        self.words(&p.home)[at..at + w.len()].copy_from_slice(&w);
    }
}

/// Runs `g` with every per-call value at its planned place: results are written there (views
/// are not written at all), operands are read from there. The math is `interp::eval_op`.
fn run_planned(
    g: &Graph,
    plan: &MemPlan,
    b: &Bindings,
    inputs: &BTreeMap<String, Tensor>,
    w: &MapWeights,
) -> BTreeMap<String, Tensor> {
    assert!(values(g).all(|v| g.ty(v).dtype.size() == 4), "the planned interpreter keeps 4-byte words");
    let load = g.weight_only();
    let mut mem = Memory {
        arena: vec![f32::NAN; (plan.arena_size.eval(b) / 4) as usize],
        outputs: g
            .outputs
            .iter()
            .map(|(n, v)| (n.clone(), vec![f32::NAN; (bytes(g.ty(*v), b) / 4) as usize]))
            .collect(),
        inputs: inputs.iter().map(|(n, t)| (n.clone(), words(t))).collect(),
        loaded: BTreeMap::new(),
    };
    for (i, n) in g.nodes.iter().enumerate() {
        let v0 = Value { node: i, index: 0 };
        if let Op::Weight { name, ty } = &n.op {
            mem.loaded.insert(v0, (*w.weight(name, &ty.eval(b)).unwrap()).clone());
            continue;
        }
        if matches!(n.op, Op::Input { .. }) {
            continue;
        }
        let ins: Vec<Tensor> = n.inputs.iter().map(|x| mem.read(g, plan, *x, b)).collect();
        let outs = eval_op(&n.op, &ins.iter().collect::<Vec<_>>(), b).unwrap();
        for (index, t) in outs.into_iter().enumerate() {
            let v = Value { node: i, index };
            if load[i] {
                mem.loaded.insert(v, t);
            } else if !matches!(plan.placement[&v].role, Role::View { .. }) {
                mem.write(plan, v, &t, b);
            }
        }
    }
    g.outputs.iter().map(|(n, v)| (n.clone(), mem.read(g, plan, *v, b))).collect()
}

/// The tiny model's fused prefill and decode graphs with their bindings, inputs and weights.
fn tiny_cases() -> Vec<(Graph, Bindings, BTreeMap<String, Tensor>, MapWeights)> {
    let spec = common::spec("qwen3-next-tiny");
    let p = common::program(&spec);
    let cases = [(&p.prefill, Bindings { b: 2, s: 5, p: 3 }), (&p.decode, Bindings { b: 2, s: 1, p: 4 })];
    cases
        .into_iter()
        .map(|(g, b)| {
            let ins = common::inputs(g, &b, spec.vocab_size, 3);
            (fused(g), b, ins, MapWeights::random(&spec, 11))
        })
        .collect()
}

#[test]
fn planned_run_matches_the_interpreter_exactly() {
    for (g, b, ins, w) in tiny_cases() {
        let plan = memplan::plan(&g);
        let (buffers, in_place, views) = plan.counts();
        assert!(in_place > 0 && views > 0 && buffers > plan.slots.len(), "{}: {plan}", g.name);
        let want = interp::run(&g, &b, &ins, &w).unwrap();
        let got = run_planned(&g, &plan, &b, &ins, &w);
        assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
        for (name, t) in &want {
            assert!(got[name] == *t, "{}: output {name} differs", g.name);
        }
    }
}

/// Moves one fresh arena buffer onto the residual stream of layer 1 while that is still live.
fn corrupt(g: &Graph, plan: &mut MemPlan) -> (String, String) {
    let is_buffer = |v: &Value| {
        let p = &plan.placement[v];
        p.home == Home::Arena && p.role == Role::Buffer && g.ty(*v).dtype == DType::F32
    };
    let u = values(g)
        .find(|v| g.nodes[v.node].name.starts_with("l1.") && matches!(g.nodes[v.node].op, Op::AddRmsNorm { .. }))
        .unwrap();
    let pu = plan.placement[&u].clone();
    let v = values(g)
        .filter(|v| v.node > pu.def && v.node < pu.last && is_buffer(v))
        .find(|v| plan.placement[v].slot != pu.slot)
        .unwrap();
    plan.placement.get_mut(&v).unwrap().offset = pu.offset.clone();
    (g.nodes[u.node].name.clone(), g.nodes[v.node].name.clone())
}

#[test]
fn a_corrupted_plan_is_caught_by_the_checker_and_by_the_values() {
    for (g, b, ins, w) in tiny_cases() {
        let mut plan = memplan::plan(&g);
        assert!(check(&g, &plan, &b).is_empty());
        let (u, v) = corrupt(&g, &mut plan);
        let errs = check(&g, &plan, &b);
        assert!(errs.iter().any(|e| e.contains(&u) && e.contains(&v)), "{}: {u} / {v}: {errs:?}", g.name);
        let want = interp::run(&g, &b, &ins, &w).unwrap();
        assert_ne!(run_planned(&g, &plan, &b, &ins, &w)["logits"], want["logits"], "{}: {v} over {u}", g.name);
    }
}

// ---- structure and numbers ------------------------------------------------------------------

#[test]
fn flagship_peak_is_far_below_naive() {
    let p = common::program(&common::spec("qwen3-next"));
    for g in [&p.decode, &p.prefill] {
        let f = fused(g);
        let plan = memplan::plan(&f);
        let b = plan.binding;
        let (arena, naive) = (plan.arena_size.eval(&b), plan.naive_size.eval(&b));
        let floor = max_live(&f, &plan, &b);
        eprintln!(
            "80B {}: {plan}    max live buffer bytes at one node: {floor} (arena / that: {:.3})",
            g.name,
            arena as f64 / floor as f64
        );
        assert!(plan.arena_size <= plan.naive_size, "{plan}");
        assert!(arena * 10 < naive, "{}: arena {arena} vs naive {naive}", g.name);
    }
}

#[test]
fn the_compile_report_shows_the_plan() {
    let p = common::program(&common::spec("qwen3-next-tiny"));
    let (f, report) = optimise(&p.decode, &Options::default(), &mut |_, _| {}).unwrap();
    assert_eq!(report.memplan.as_ref(), Some(&memplan::plan(&f)), "the plan of the optimised graph");
    let text = report.to_string();
    for want in ["  memplan ", "arena 3.19 KiB vs naive 29.75 KiB (10.7%) at B=1,S=1,P=4096", "    arena   = 3264·B"] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

/// A floor for any slot plan of the same buffers: the most arena bytes (each buffer aligned)
/// live at one node. A buffer lives until its last view is read; an in-place result starts
/// after its node, where its operand's bytes are counted.
fn max_live(g: &Graph, plan: &MemPlan, b: &Bindings) -> u64 {
    let live = live(g);
    let root = |mut v: Value| {
        while let Role::View { of } = plan.placement[&v].role {
            v = of;
        }
        v
    };
    let mut span: BTreeMap<Value, (usize, usize)> = BTreeMap::new();
    for v in plan.placement.iter().filter(|(_, p)| p.home == Home::Arena).map(|(v, _)| v) {
        let (r, last) = (root(*v), live[v].1.min(g.nodes.len() - 1));
        let start = if matches!(plan.placement[&r].role, Role::InPlace { .. }) { r.node + 1 } else { r.node };
        let e = span.entry(r).or_insert((start, last));
        e.1 = e.1.max(last);
    }
    let mut delta = vec![0i128; g.nodes.len() + 2];
    for (r, (start, end)) in span {
        let size = plan.placement[&r].size.align_up(memplan::ALIGN).eval(b) as i128;
        delta[start] += size;
        delta[end.max(start) + 1] -= size;
    }
    let mut acc = 0i128;
    delta
        .iter()
        .map(|d| {
            acc += d;
            acc
        })
        .max()
        .unwrap_or(0) as u64
}

/// x → neg → (reshape, silu) → add → exp: silu cannot overwrite neg's buffer (its reshape is
/// read later), the add can overwrite silu's, the output gets the caller's buffer.
#[test]
fn in_place_respects_live_views_and_outputs() {
    let mut g = Graph::new("t");
    let x = g
        .add1(
            "x",
            Op::Input {
                name: "x".into(),
                ty: TensorType::f32(vec![qgc_ir::Dim::sym(qgc_ir::Sym::B), qgc_ir::Dim::c(4)]),
            },
            &[],
        )
        .unwrap();
    let n = g.add1("neg", Op::Neg, &[x]).unwrap();
    let r = g
        .add1(
            "view",
            Op::Reshape { shape: vec![qgc_ir::Dim::sym(qgc_ir::Sym::B), qgc_ir::Dim::c(2), qgc_ir::Dim::c(2)] },
            &[n],
        )
        .unwrap();
    let r2 = g.add1("flat", Op::Reshape { shape: g.ty(n).shape.clone() }, &[r]).unwrap();
    let s = g.add1("silu", Op::Silu, &[n]).unwrap();
    let a = g.add1("add", Op::Add, &[s, r2]).unwrap();
    let e = g.add1("exp", Op::Exp, &[a]).unwrap();
    g.outputs.push(("y".into(), e));
    qgc_ir::verify(&g).unwrap();
    let plan = memplan::plan(&g);
    let role = |v: Value| plan.placement[&v].role;
    assert_eq!(role(n), Role::Buffer, "x is the caller's");
    assert_eq!((role(r), role(r2)), (Role::View { of: n }, Role::View { of: r }));
    assert_eq!(role(s), Role::Buffer, "neg's bytes are still read through its view");
    assert_eq!(role(a), Role::InPlace { of: s });
    assert_eq!((&plan.placement[&e].home, role(e)), (&Home::Output("y".into()), Role::Buffer));
    assert_eq!(plan.arena_size.to_string(), "128·B", "two 64-byte-aligned slots of 16·B bytes");
    assert_safe(&g, &plan, &grid(&g, &[1], &[0]));
}

/// A slice of the last axis of `[B,1,8]` is a copy; of `[1,3,B]` along axis 1 it is a view,
/// `start · B` elements in.
#[test]
fn slices_are_views_only_when_contiguous() {
    use qgc_ir::{Dim, Sym};
    let mut g = Graph::new("t");
    let ty = |d: Vec<Dim>| TensorType::f32(d);
    let x =
        g.add1("x", Op::Input { name: "x".into(), ty: ty(vec![Dim::sym(Sym::B), Dim::c(1), Dim::c(8)]) }, &[]).unwrap();
    let y =
        g.add1("y", Op::Input { name: "y".into(), ty: ty(vec![Dim::c(1), Dim::c(3), Dim::sym(Sym::B)]) }, &[]).unwrap();
    let (nx, ny) = (g.add1("nx", Op::Neg, &[x]).unwrap(), g.add1("ny", Op::Neg, &[y]).unwrap());
    let sx = g.add1("sx", Op::Slice { axis: 2, start: 2, len: 4 }, &[nx]).unwrap();
    let sy = g.add1("sy", Op::Slice { axis: 1, start: 1, len: 1 }, &[ny]).unwrap();
    let (ex, ey) = (g.add1("ex", Op::Exp, &[sx]).unwrap(), g.add1("ey", Op::Exp, &[sy]).unwrap());
    g.outputs.extend([("a".to_string(), ex), ("b".to_string(), ey)]);
    qgc_ir::verify(&g).unwrap();
    let plan = memplan::plan(&g);
    assert_eq!(plan.placement[&sx].role, Role::Buffer);
    assert_eq!(plan.placement[&sy].role, Role::View { of: ny });
    let off = |v: Value| plan.placement[&v].offset.clone();
    let row = qgc_ir::Poly::from_dim(&Dim::sym(Sym::B)).unwrap().scale(4);
    assert_eq!(off(sy), off(ny).add(&row), "one row of B f32 in");
    assert_safe(&g, &plan, &grid(&g, &[1], &[0]));
}
