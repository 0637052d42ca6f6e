//! The tiny Qwen3-Next model (`models/qwen3-next-tiny.json`, random weights) after the pass
//! pipeline, run through JIT host functions with the interp shim backend: a prefill of two
//! rows then a decode, against `interp::run` on the same graphs.
//!
//! With every node a shim call the results are bit-identical. With compiled elementwise chains
//! (the conv activations' silu, the MoE adds) they are within 1e-6 relative (max |diff| / max
//! |value| per output) in `Precision::F64` (measured: identical), within 1e-5 in `F32` (measured
//! about 1e-6: a few ulp of silu through four layers), and splitting the loops over threads
//! changes no bit. The reusing arena planner (`ReusePlanner`) gives the same bits as the bump
//! planner with a smaller arena.

mod host_common;

use host_common::{compile, compile_with, run_host};
use qgc_codegen::host::place::ReusePlanner;
use qgc_codegen::host::{check_plan, ArenaPlanner, HostOptions, Precision};
use qgc_ir::interp::{run, MapWeights, Rng, Tensor};
use qgc_ir::{lower, Bindings, Graph, LowerOptions, ModelSpec, Program};
use qgc_passes::{optimise_program, Options};
use std::collections::BTreeMap;
use std::sync::OnceLock;

struct Model {
    spec: ModelSpec,
    program: Program,
    weights: MapWeights,
}

fn model() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../models/qwen3-next-tiny.json"))
            .expect("tiny spec");
        let spec = ModelSpec::from_json(&text).expect("tiny spec is valid");
        let lowered = lower(&spec, &LowerOptions::default()).expect("lowers");
        let (program, _) = optimise_program(&lowered, &Options::default(), &mut |_, _| {}).expect("optimises");
        let weights = MapWeights::random(&spec, 11);
        Model { spec, program, weights }
    })
}

/// Inputs of one call: tokens, consecutive positions from `past`, and `state`.
fn inputs(b: usize, s: usize, past: usize, seed: u64, state: &BTreeMap<String, Tensor>) -> BTreeMap<String, Tensor> {
    let mut rng = Rng::new(seed);
    let vocab = model().spec.vocab_size;
    let mut m: BTreeMap<String, Tensor> = state.clone();
    m.insert("tokens".into(), Tensor::i32(vec![b, s], (0..b * s).map(|_| rng.below(vocab) as i32).collect()));
    let pos = (0..b).flat_map(|_| (0..s).map(|t| (past + t) as i32)).collect();
    m.insert("positions".into(), Tensor::i32(vec![b, s], pos));
    m
}

fn fresh_state(b: usize) -> BTreeMap<String, Tensor> {
    let bind = Bindings { b, s: 0, p: 0 };
    model().program.state.iter().map(|d| (d.name.clone(), Tensor::zeros(d.ty.eval(&bind)))).collect()
}

/// max |a − b| / max |b|.
fn rel(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.shape, b.shape);
    let (a, b) = (a.as_f32().unwrap(), b.as_f32().unwrap());
    let num = a.iter().zip(b).fold(0f64, |m, (x, y)| m.max(f64::from(x - y).abs()));
    let den = b.iter().fold(0f64, |m, y| m.max(f64::from(y.abs())));
    num / den.max(1e-30)
}

/// Runs one call of `g` through the host function and the interpreter; returns both outputs.
fn both(
    g: &Graph,
    opts: &HostOptions,
    bind: Bindings,
    ins: &BTreeMap<String, Tensor>,
) -> (BTreeMap<String, Tensor>, BTreeMap<String, Tensor>) {
    let m = model();
    let entry = compile(g, opts);
    check_plan(&entry.schedule.requests, &host_plan(&entry), &bind).expect("bump plan is sound");
    let (got, stats) = run_host(&entry, g, bind, ins, &m.weights);
    assert_eq!(stats.calls, entry.counts().kernels, "one shim call per kernel step");
    if opts.parallel_loops {
        assert!(stats.pieces >= entry.counts().chains, "loops went through qgc_parallel_for");
    }
    let want = run(g, &bind, ins, &m.weights).expect("interp runs");
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
    (got, want)
}

fn host_plan(e: &qgc_codegen::host::HostEntry) -> qgc_codegen::host::ArenaPlan {
    use qgc_codegen::host::ArenaPlanner;
    qgc_codegen::host::BumpPlanner.plan(&e.schedule.requests)
}

/// Prefill (B=2, S=5) then decode (P=5) under `opts`; `check(name, got, want)` per output.
fn prefill_then_decode(opts: &HostOptions, check: &dyn Fn(&str, &Tensor, &Tensor)) {
    let p = &model().program;
    let ins = inputs(2, 5, 0, 1, &fresh_state(2));
    let (got, want) = both(&p.prefill, opts, Bindings { b: 2, s: 5, p: 0 }, &ins);
    for (k, w) in &want {
        check(&format!("prefill {k}"), &got[k], w);
    }
    let state: BTreeMap<String, Tensor> = want.into_iter().filter(|(k, _)| k.starts_with("state.")).collect();
    let ins = inputs(2, 1, 5, 2, &state);
    let (got, want) = both(&p.decode, opts, Bindings { b: 2, s: 1, p: 5 }, &ins);
    for (k, w) in &want {
        check(&format!("decode {k}"), &got[k], w);
    }
}

#[test]
fn all_shims_is_bit_exact() {
    let opts = HostOptions { fuse_elementwise: false, ..HostOptions::default() };
    prefill_then_decode(&opts, &|k, g, w| assert!(g == w, "{k} differs (rel {:.2e})", rel(g, w)));
}

/// Compiled chains with `precision`, every output within `tol` relative.
fn compiled_chains(precision: Precision, tol: f64) {
    let opts = HostOptions { precision, ..HostOptions::default() };
    prefill_then_decode(&opts, &|k, g, w| {
        if w.as_i32().is_some() {
            return assert_eq!(g, w, "{k}");
        }
        let e = rel(g, w);
        eprintln!("{precision:?} {k}: rel {e:.2e}");
        assert!(e <= tol, "{k}: rel {e:.3e}");
    });
}

#[test]
fn compiled_chains_f64_within_1e_6() {
    compiled_chains(Precision::F64, 1e-6);
}

#[test]
fn compiled_chains_f32_within_1e_5() {
    compiled_chains(Precision::F32, 1e-5);
}

#[test]
fn parallel_loops_match_direct_loops() {
    let p = &model().program;
    let ins = inputs(2, 7, 0, 3, &fresh_state(2));
    let bind = Bindings { b: 2, s: 7, p: 0 };
    let direct = HostOptions::default();
    let parallel = HostOptions { parallel_loops: true, ..direct };
    let (a, _) = both(&p.prefill, &direct, bind, &ins);
    let (b, _) = both(&p.prefill, &parallel, bind, &ins);
    assert!(a == b, "parallel loops changed a result");
}

/// Structure: the fused tiny prefill has kernels, compiled chains (one loop per distinct chain),
/// free views, and writes every output in place.
#[test]
fn schedule_structure() {
    let p = &model().program;
    let e = compile(&p.prefill, &HostOptions::default());
    let c = e.counts();
    let nodes = p.prefill.nodes.len();
    let views = p.prefill.op_counts().iter().filter(|(n, _)| *n == "reshape").map(|(_, k)| k).sum::<usize>();
    eprintln!("prefill: {nodes} nodes, {c:?}, arena {} bytes", e.arena_bytes());
    assert!(c.chains >= 7 && c.loops <= 3, "{c:?}");
    assert_eq!(c.copies, 0, "every output written in place");
    assert!(c.kernels + c.chain_nodes + views < nodes, "reshapes and sources cost nothing");
    let io = e.io();
    assert_eq!(io.slots[0].name, "tokens");
    assert_eq!(io.slots[1].name, "positions");
    let n_in = p.prefill.inputs().len();
    assert_eq!(io.slots[n_in].name, "logits");
}

/// Every element's bits (f32 bits or the i32 itself).
fn bits(t: &Tensor) -> Vec<u32> {
    match (t.as_f32(), t.as_i32()) {
        (Some(v), _) => v.iter().map(|x| x.to_bits()).collect(),
        (_, Some(v)) => v.iter().map(|&x| x as u32).collect(),
        _ => unreachable!(),
    }
}

/// One call of `g` compiled with the bump planner and with the reusing planner: the reuse plan
/// is sound at `bind` and smaller, and every output has the same bits. Returns the outputs.
fn bump_vs_reuse(
    g: &Graph,
    opts: &HostOptions,
    bind: Bindings,
    ins: &BTreeMap<String, Tensor>,
) -> BTreeMap<String, Tensor> {
    let m = model();
    let bump = compile(g, opts);
    let reuse = compile_with(g, opts, &ReusePlanner::for_graph(g));
    let reqs = &reuse.schedule.requests;
    check_plan(reqs, &ReusePlanner::for_graph(g).plan(reqs), &bind).expect("reuse plan is sound");
    let (a, b) = (bump.arena_bytes().eval(&bind), reuse.arena_bytes().eval(&bind));
    eprintln!("{} {bind:?}: arena bump {a} B, reuse {b} B", g.name);
    assert!(b < a, "{}: reuse arena {b} not below bump {a}", g.name);
    let (want, _) = run_host(&bump, g, bind, ins, &m.weights);
    let (got, _) = run_host(&reuse, g, bind, ins, &m.weights);
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
    for (k, w) in &want {
        assert_eq!(got[k].shape, w.shape, "{} {k}", g.name);
        assert!(bits(&got[k]) == bits(w), "{} {k}: reuse plan changed bits (rel {:.2e})", g.name, rel(&got[k], w));
    }
    want
}

#[test]
fn reuse_planner_gives_the_bump_planner_bits() {
    let p = &model().program;
    for opts in [HostOptions { fuse_elementwise: false, ..HostOptions::default() }, HostOptions::default()] {
        let ins = inputs(2, 5, 0, 4, &fresh_state(2));
        let out = bump_vs_reuse(&p.prefill, &opts, Bindings { b: 2, s: 5, p: 0 }, &ins);
        let state: BTreeMap<String, Tensor> = out.into_iter().filter(|(k, _)| k.starts_with("state.")).collect();
        let ins = inputs(2, 1, 5, 5, &state);
        bump_vs_reuse(&p.decode, &opts, Bindings { b: 2, s: 1, p: 5 }, &ins);
    }
}
