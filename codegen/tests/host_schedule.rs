//! Host schedules of small hand-built graphs: views cost nothing, chains group and broadcast,
//! outputs that no step writes are copied, shape arithmetic follows `B, S, P`, and a missing shim
//! or a short plan is an error, not a crash.

mod host_common;

use host_common::{compile, device_shims, run_device, run_host, shims, DeviceStats};
use qgc_codegen::host::{
    check_plan, compile_entry, ArenaPlan, ArenaPlanner, ArenaRequest, BumpPlanner, HostError, HostOptions, ShimTable,
    Step,
};
use qgc_ir::interp::{run, MapWeights, Rng, Tensor};
use qgc_ir::types::const_shape;
use qgc_ir::{Bindings, Dim, Graph, Op, Poly, Sym, TensorType, Value};
use std::collections::BTreeMap;

/// x [B,S,8] + w [8] → silu → ·0.5 → · g [B,S,1] per row: one chain (the `[8]` suffix and the
/// row gate share inner length 8); a contiguous slice of weight `m` (a view into its io buffer)
/// as a matmul weight; a reshape (view) and a strided slice of it (a kernel) into `exp` (a second
/// chain); a KV-like concat over `P`. Outputs: the exp, the input `x` passed through and the
/// reshape (both copied), the concat.
fn graph() -> Graph {
    let (b, s, p) = (Dim::sym(Sym::B), Dim::sym(Sym::S), Dim::sym(Sym::P));
    let mut g = Graph::new("toy");
    let input = |name: &str, shape: Vec<Dim>| Op::Input { name: name.into(), ty: TensorType::f32(shape) };
    let x = g.add1("x", input("x", vec![b, s, Dim::c(8)]), &[]).unwrap();
    let gate = g.add1("g", input("g", vec![b, s, Dim::c(1)]), &[]).unwrap();
    let cache = g.add1("cache", input("cache", vec![b, p, Dim::c(8)]), &[]).unwrap();
    let w = g.add1("w", Op::Weight { name: "w".into(), ty: TensorType::f32(const_shape(&[8])) }, &[]).unwrap();
    let m = g.add1("m", Op::Weight { name: "m".into(), ty: TensorType::f32(const_shape(&[6, 8])) }, &[]).unwrap();
    let a = g.add1("a", Op::Add, &[x, w]).unwrap();
    let si = g.add1("si", Op::Silu, &[a]).unwrap();
    let sc = g.add1("sc", Op::Scale { by: 0.5 }, &[si]).unwrap();
    let gated = g.add1("gated", Op::Mul, &[sc, gate]).unwrap();
    let m2 = g.add1("m2", Op::Slice { axis: 0, start: 2, len: 3 }, &[m]).unwrap();
    let y = g.add1("y", Op::MatMul, &[gated, m2]).unwrap();
    let y4 = g.add1("y4", Op::Reshape { shape: vec![b, s, Dim::c(3), Dim::c(1)] }, &[y]).unwrap();
    let strided = g.add1("strided", Op::Slice { axis: 2, start: 1, len: 2 }, &[y4]).unwrap();
    let e = g.add1("e", Op::Exp, &[strided]).unwrap();
    let kv = g.add1("kv", Op::Concat { axis: 1 }, &[cache, gated]).unwrap();
    g.outputs = vec![("e".into(), e), ("x".into(), x), ("kv".into(), kv), ("y4".into(), y4)];
    qgc_ir::verify(&g).expect("toy graph verifies");
    g
}

fn weights() -> MapWeights {
    let mut rng = Rng::new(5);
    let mut w = MapWeights::new();
    w.insert("w", rng.tensor(&[8], -1.0, 1.0));
    w.insert("m", rng.tensor(&[6, 8], -1.0, 1.0));
    w
}

fn inputs(bind: Bindings) -> BTreeMap<String, Tensor> {
    let mut rng = Rng::new(bind.b as u64 * 100 + bind.s as u64 * 10 + bind.p as u64);
    let (b, s, p) = (bind.b, bind.s, bind.p);
    BTreeMap::from([
        ("x".to_string(), rng.tensor(&[b, s, 8], -3.0, 3.0)),
        ("g".to_string(), rng.tensor(&[b, s, 1], -2.0, 2.0)),
        ("cache".to_string(), rng.tensor(&[b, p, 8], -1.0, 1.0)),
    ])
}

#[test]
fn toy_graph_matches_interp_at_several_bindings() {
    let g = graph();
    let w = weights();
    for opts in [HostOptions::default(), HostOptions { fuse_elementwise: false, ..HostOptions::default() }] {
        let e = compile(&g, &opts);
        for bind in [Bindings { b: 1, s: 1, p: 0 }, Bindings { b: 2, s: 3, p: 4 }, Bindings { b: 3, s: 17, p: 9 }] {
            check_plan(&e.schedule.requests, &BumpPlanner.plan(&e.schedule.requests), &bind).unwrap();
            let ins = inputs(bind);
            let (got, _) = run_host(&e, &g, bind, &ins, &w);
            let want = run(&g, &bind, &ins, &w).unwrap();
            for (k, v) in &want {
                let (a, b) = (got[k].as_f32().unwrap(), v.as_f32().unwrap());
                assert_eq!(got[k].shape, v.shape, "{k}");
                for (x, y) in a.iter().zip(b) {
                    assert!((x - y).abs() <= 1e-6 * y.abs().max(1.0), "{k} at {bind:?}: {x} vs {y}");
                }
            }
        }
    }
}

#[test]
fn toy_schedule_groups_views_and_copies() {
    let g = graph();
    let e = compile(&g, &HostOptions::default());
    let c = e.counts();
    // add+silu+scale+mul is one chain, exp another; matmul, strided slice, concat are kernels;
    // the passed-through input and the reshape are copied; the weight slice is a view.
    assert_eq!((c.chains, c.chain_nodes, c.kernels, c.copies), (2, 5, 3, 2), "{:?}", e.schedule.steps);
    let chain = e.schedule.steps.iter().find_map(|s| match s {
        Step::Chain { chain, nodes, .. } if nodes.len() == 4 => Some(&e.schedule.chains[*chain]),
        _ => None,
    });
    let chain = chain.expect("the four-node chain");
    assert_eq!(chain.inner, Some(8), "the [8] suffix and the [B,S,1] row share inner length 8");
    // In the arena: `gated`, `y` and the strided slice, each rounded up to 64 bytes per token.
    assert_eq!(e.arena_bytes().to_string(), "192·B·S");
    let m2 = g.nodes.iter().position(|n| n.name == "m2").unwrap();
    let loc = e.schedule.locs[m2][0].as_ref().unwrap();
    assert_eq!(loc.offset, Poly::constant(2 * 8 * 4), "m2 is m's bytes from row 2");
}

#[test]
fn missing_shim_is_an_error() {
    let g = graph();
    let err = compile_entry(&g, &ShimTable::new(), &BumpPlanner, &HostOptions::default()).unwrap_err();
    assert!(matches!(err, HostError::MissingShim { .. }), "{err}");
    assert!(err.to_string().contains("qgc_matmul"), "{err}");
    let parallel = HostOptions { parallel_loops: true, ..HostOptions::default() };
    let mut t = ShimTable::new();
    for s in qgc_codegen::host::required_shims(&g, &HostOptions::default()).unwrap() {
        t.kernel(s, host_common::interp_shim);
    }
    let err = compile_entry(&g, &t, &BumpPlanner, &parallel).unwrap_err();
    assert!(err.to_string().contains("qgc_parallel_for"), "{err}");
}

#[test]
fn device_host_code_calls_shims_for_chains_and_copies() {
    let g = graph();
    let w = weights();
    let cpu = compile(&g, &HostOptions::default());
    let opts = HostOptions { device: true, ..HostOptions::default() };
    let syms = qgc_codegen::host::required_shims(&g, &opts).unwrap();
    assert!(syms.contains("qgc_chain") && syms.contains("qgc_copy"), "{syms:?}");
    let dev = compile_entry(&g, &device_shims(&g, &opts), &BumpPlanner, &opts).expect("device host code compiles");
    assert_eq!(dev.schedule, cpu.schedule, "one schedule for both");
    let c = dev.counts();
    for bind in [Bindings { b: 1, s: 1, p: 0 }, Bindings { b: 2, s: 3, p: 4 }, Bindings { b: 3, s: 17, p: 9 }] {
        let ins = inputs(bind);
        let (want, _) = run_host(&cpu, &g, bind, &ins, &w);
        // Every address the shims get is tagged (a dereference by the host code would fault).
        let (got, stats) = run_device(&dev, &g, bind, &ins, &w, HostOptions::default().precision);
        assert_eq!(stats, DeviceStats { kernels: c.kernels, chains: c.chains, copies: c.copies }, "{bind:?}");
        for (k, v) in &want {
            let bits = |t: &Tensor| t.as_f32().unwrap().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got[k]), bits(v), "{k} at {bind:?}: device host code equals the CPU's bit for bit");
        }
    }
    // Without the chain shim, compiling is an error naming it.
    let mut t = ShimTable::new();
    for s in syms.iter().filter(|s| *s != "qgc_chain") {
        t.kernel(s.clone(), host_common::interp_shim);
    }
    let err = compile_entry(&g, &t, &BumpPlanner, &opts).unwrap_err();
    assert!(matches!(err, HostError::MissingShim { .. }) && err.to_string().contains("qgc_chain"), "{err}");
}

/// A planner that forgets a value.
struct Short;

impl ArenaPlanner for Short {
    fn plan(&self, requests: &[ArenaRequest]) -> ArenaPlan {
        let mut p = BumpPlanner.plan(requests);
        p.offsets.pop();
        p
    }
}

#[test]
fn short_plan_is_an_error() {
    let g = graph();
    let err = compile_entry(&g, &shims(&g, &HostOptions::default()), &Short, &HostOptions::default()).unwrap_err();
    assert!(matches!(err, HostError::Plan { .. }), "{err}");
}

#[test]
fn check_plan_finds_overlaps() {
    let v = |node| Value { node, index: 0 };
    let r = |node, first, last| ArenaRequest { value: v(node), bytes: Poly::constant(16), first, last };
    let reqs = [r(0, 0, 2), r(1, 1, 3), r(2, 3, 4)];
    let zero = Poly::zero();
    let c = |k| Poly::constant(k);
    let shared = ArenaPlan { offsets: vec![zero.clone(), c(16), zero.clone()], size: c(32) };
    check_plan(&reqs, &shared, &Bindings::default()).expect("0 and 2 are never live together");
    let bad = ArenaPlan { offsets: vec![zero.clone(), c(8), zero], size: c(32) };
    assert!(check_plan(&reqs, &bad, &Bindings::default()).is_err());
}

/// A runtime keeps compiled entries in its session and hands the function pointers to threads.
#[test]
fn compiled_code_can_move_between_threads() {
    fn send<T: Send>(_: &T) {}
    fn send_sync<T: Send + Sync + Copy>(_: &T) {}
    let e = compile(&graph(), &HostOptions::default());
    send_sync(&e.func());
    send(&e);
}
