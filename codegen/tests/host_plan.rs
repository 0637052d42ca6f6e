//! The reusing arena planner (`place::ReusePlanner`) against the schedules of every model spec
//! in `models/` after the pass pipeline, and on random requests:
//! - every entry point's plan passes `check_plan` at a grid of bindings and is strictly smaller
//!   than the bump plan at the entry's representative binding;
//! - random step intervals with random polynomial sizes: no two values live at once overlap, every
//!   offset is 64-aligned under every binding, and the arena is never above the bump plan's;
//! - small fixed cases pin the heuristic (best fit, grow vs open, free only after death).

use proptest::prelude::*;
use qgc_codegen::host::place::ReusePlanner;
use qgc_codegen::host::schedule::schedule;
use qgc_codegen::host::{check_plan, ArenaPlan, ArenaPlanner, ArenaRequest, BumpPlanner, HostOptions};
use qgc_ir::{lower, Bindings, LowerOptions, ModelSpec, Poly, Value};
use qgc_passes::memplan::{human, representative};
use qgc_passes::{optimise_program, Options};
use std::path::PathBuf;

/// Whether every coefficient of `p` is a multiple of 64 (so `p` is, under every binding).
fn aligned(p: &Poly) -> bool {
    p.terms().iter().all(|&(_, c)| c % 64 == 0)
}

/// `B` in 1..=3, `S` in {1, 7, 512}, `P` in {0, 5, 4096}.
fn grid() -> Vec<Bindings> {
    let mut out = Vec::new();
    for b in 1..=3 {
        for s in [1, 7, 512] {
            for p in [0, 5, 4096] {
                out.push(Bindings { b, s, p });
            }
        }
    }
    out
}

fn specs() -> Vec<PathBuf> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../models"));
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("models/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths
}

/// A floor for any plan of `reqs` at `bind`: the most aligned bytes live at one step.
fn max_live(reqs: &[ArenaRequest], bind: &Bindings) -> u64 {
    let steps = reqs.iter().map(|r| r.last + 1).max().unwrap_or(0);
    let mut live = vec![0u64; steps];
    for r in reqs {
        let bytes = r.bytes.align_up(64).eval(bind);
        live[r.first..=r.last].iter_mut().for_each(|x| *x += bytes);
    }
    live.into_iter().max().unwrap_or(0)
}

#[test]
fn every_model_entry_plans_soundly_and_below_the_bump_plan() {
    let specs = specs();
    assert!(specs.len() >= 4, "{specs:?}");
    for path in specs {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let spec = ModelSpec::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let lowered = lower(&spec, &LowerOptions::default()).unwrap();
        let (program, _) = optimise_program(&lowered, &Options::default(), &mut |_, _| {}).unwrap();
        for g in [Some(&program.prefill), Some(&program.decode), program.mtp.as_ref()].into_iter().flatten() {
            let planner = ReusePlanner::for_graph(g);
            let sched = schedule(g, &HostOptions::default(), &planner).unwrap();
            let reqs = &sched.requests;
            let (reuse, bump) = (planner.plan(reqs), BumpPlanner.plan(reqs));
            assert_eq!(sched.arena_bytes, reuse.size, "{name} {}: the schedule carries the plan", g.name);
            assert!(reuse.offsets.iter().all(aligned) && aligned(&reuse.size), "{name} {}", g.name);
            assert!(reuse.size.le(&bump.size), "{name} {}: {} vs {}", g.name, reuse.size, bump.size);
            for bind in grid() {
                check_plan(reqs, &reuse, &bind).unwrap_or_else(|e| panic!("{name} {} at {bind:?}: {e}", g.name));
            }
            let rep = representative(g);
            let (r, b, floor) = (reuse.size.eval(&rep), bump.size.eval(&rep), max_live(reqs, &rep));
            eprintln!(
                "{name} {}: {} requests, arena reuse {r} B ({}) vs bump {b} B ({}), max live {floor} B, at B={},S={},P={}",
                g.name,
                reqs.len(),
                human(r),
                human(b),
                rep.b,
                rep.s,
                rep.p
            );
            assert!(r < b, "{name} {}: reuse {r} not below bump {b}", g.name);
        }
    }
}

fn req(node: usize, bytes: Poly, first: usize, last: usize) -> ArenaRequest {
    ArenaRequest { value: Value { node, index: 0 }, bytes, first, last }
}

/// Plans `reqs` at `S=512` and checks it at a few bindings.
fn plan(reqs: &[ArenaRequest]) -> ArenaPlan {
    let plan = ReusePlanner::default().plan(reqs);
    for bind in [Bindings { b: 1, s: 1, p: 0 }, Bindings { b: 2, s: 512, p: 7 }] {
        check_plan(reqs, &plan, &bind).unwrap();
    }
    plan
}

#[test]
fn a_slot_is_reused_only_after_its_value_died() {
    let c = Poly::constant;
    // 0 and 1 meet at step 1 (inclusive intervals); 2 starts after 0 died and takes its bytes.
    let p = plan(&[req(0, c(100), 0, 1), req(1, c(100), 1, 2), req(2, c(60), 2, 3)]);
    assert_eq!(p.offsets, vec![c(0), c(128), c(0)]);
    assert_eq!(p.size, c(256));
}

#[test]
fn best_fit_then_grow_or_open() {
    let s = |k: u64| Poly::term([0, 1, 0], k);
    // Two free slots (64·S, 256·S): 64·S fits the smaller. Then 320·S fits neither; growing
    // the 256·S slot adds 64·S at S=512, less than a new slot.
    let reqs = [req(0, s(64), 0, 0), req(1, s(256), 0, 0), req(2, s(60), 1, 1), req(3, s(320), 2, 2)];
    let p = plan(&reqs);
    assert_eq!(p.offsets, vec![Poly::zero(), s(64), Poly::zero(), s(64)]);
    assert_eq!(p.size, s(384));
    // Growing a constant slot to S-sized bytes would add as much as a new slot: a new one.
    let reqs = [req(0, Poly::constant(4096), 0, 0), req(1, s(64), 1, 1)];
    let p = plan(&reqs);
    assert_eq!(p.offsets, vec![Poly::zero(), Poly::constant(4096)]);
}

/// A size: up to three terms over the monomials an activation size has, any coefficients.
fn size() -> impl Strategy<Value = Poly> {
    const MONOMIALS: [[u8; 3]; 6] = [[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0], [1, 0, 1], [1, 1, 1]];
    prop::collection::vec((0..MONOMIALS.len(), 0u64..5000), 0..4)
        .prop_map(|ts| ts.into_iter().fold(Poly::zero(), |p, (m, c)| p.add(&Poly::term(MONOMIALS[m], c))))
}

fn requests() -> impl Strategy<Value = Vec<ArenaRequest>> {
    let one = (size(), 0usize..40, 0usize..12);
    prop::collection::vec(one, 0..60).prop_map(|rs| {
        rs.into_iter().enumerate().map(|(k, (bytes, first, len))| req(k, bytes, first, first + len)).collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random requests (in any step order): sound at fixed and random bindings, 64-aligned, and
    /// never larger than the bump plan.
    #[test]
    fn random_requests_never_overlap_while_live(
        reqs in requests(),
        b in 0usize..5,
        s in 0usize..700,
        p in 0usize..5000,
        rep in prop::sample::select(vec![Bindings { b: 1, s: 512, p: 0 }, Bindings { b: 1, s: 1, p: 4096 }]),
    ) {
        let plan = ReusePlanner { binding: rep }.plan(&reqs);
        prop_assert_eq!(plan.offsets.len(), reqs.len());
        for bind in [Bindings { b, s, p }, rep, Bindings { b: 1, s: 1, p: 0 }, Bindings { b: 3, s: 7, p: 5 }] {
            if let Err(e) = check_plan(&reqs, &plan, &bind) {
                return Err(TestCaseError::fail(format!("at {bind:?}: {e}")));
            }
        }
        prop_assert!(plan.offsets.iter().all(aligned), "{:?}", plan.offsets);
        prop_assert!(aligned(&plan.size), "{}", plan.size);
        prop_assert!(plan.size.le(&BumpPlanner.plan(&reqs).size), "{}", plan.size);
    }
}
