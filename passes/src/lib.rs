//! qgc's named pass pipeline. It reads as one list ([`PASSES`]):
//!
//! | pass | what |
//! |---|---|
//! | `dce` | drop nodes no output needs ([`classic::dce`]) |
//! | `cse` | merge identical nodes ([`classic::cse`]) |
//! | `canonicalise` | e-graph phase 1: movement / identity simplifications ([`rules::canonicalise`]) |
//! | `fuse` | e-graph phase 2: fused ops and merged projections ([`rules::fuse`]) |
//! | `select` | e-graph phase 3: matmul epilogues / prologues ([`rules::select`]) |
//!
//! After the passes, [`memplan::plan`] lays the fused graph's per-call values out in one arena
//! (liveness-based reuse, in place where legal); the report shows its peak against the naive
//! plan. It is an analysis, not a pass: it leaves the graph as it is.
//!
//! The three e-graph phases share one e-graph per region kind ([`region`]): each is an egg
//! `Runner` with explicit limits, and after each the graph is extracted DAG-aware ([`extract`])
//! and stamped over every region of the kind ([`stamp`]), so every pass has a real graph to dump
//! and verify. `verify` runs after every pass. The e-graph language is [`lang`], its shape/dtype
//! analysis [`analysis`].
//!
//! Weight-only subgraph: nodes that read only weights (the stacked weights of merged
//! projections, `-exp(A_log)`, a conv-weight reshape) are marked `[load]` by the printer
//! (`Graph::weight_only`); a runtime evaluates them once at load. Extraction costs them nothing.

pub mod analysis;
pub mod classic;
pub mod extract;
pub mod lang;
pub mod memplan;
pub mod region;
pub mod rules;
pub mod saturate;
pub mod stamp;

use qgc_ir::{verify, Graph, IrError, Program, VerifyError};
pub use saturate::{Limits, PhaseStats};
use std::fmt;
use std::time::{Duration, Instant};

/// The pipeline, in order.
pub const PASSES: &[&str] = &["dce", "cse", "canonicalise", "fuse", "select"];

thread_local! {
    static RUNS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// How many times [`optimise`] has started on this thread (lets tests prove that loading a
/// compiled program runs no pass).
pub fn pipeline_runs() -> usize {
    RUNS.with(|r| r.get())
}

/// Pass failures (all are compiler bugs: valid graphs must optimise).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PassError {
    /// A pass produced a graph the verifier rejects.
    #[error("after pass {pass}")]
    Verify {
        /// Pass name.
        pass: String,
        /// The verifier's message.
        #[source]
        err: VerifyError,
    },
    /// A pass built an ill-typed node.
    #[error("pass {pass}")]
    Build {
        /// Pass name.
        pass: String,
        /// What failed.
        #[source]
        err: IrError,
    },
    /// Extraction failed for a region kind.
    #[error("extracting region kind {kind}: {message}")]
    Extract {
        /// Representative region.
        kind: String,
        /// Why.
        message: String,
    },
}

/// Pipeline options.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Limits of every e-graph phase.
    pub limits: Limits,
}

/// One pass over one graph.
#[derive(Debug, Clone, PartialEq)]
pub struct PassReport {
    /// Pass name.
    pub name: &'static str,
    /// Wall time, the verifier included.
    pub time: Duration,
    /// Node count before.
    pub before: usize,
    /// Node count after.
    pub after: usize,
    /// For e-graph phases: one entry per region kind.
    pub phases: Vec<PhaseStats>,
}

/// The compile report of one graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Entry point name.
    pub graph: String,
    /// Passes in order.
    pub passes: Vec<PassReport>,
    /// The memory plan of the optimised graph (`None` until planned).
    pub memplan: Option<memplan::MemPlan>,
    /// Time spent planning memory.
    pub memplan_time: Duration,
}

impl Report {
    /// Whether every e-graph phase of every region kind saturated.
    pub fn saturated(&self) -> bool {
        self.passes.iter().flat_map(|p| &p.phases).all(|s| s.saturated)
    }
    /// Total applications of `rule` over all phases and region kinds, each kind counted once
    /// per region it is stamped on.
    pub fn applied(&self, rule: &str) -> usize {
        self.passes.iter().flat_map(|p| &p.phases).map(|s| s.applied.get(rule).copied().unwrap_or(0) * s.regions).sum()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "passes over {}:", self.graph)?;
        for p in &self.passes {
            let ms = p.time.as_secs_f64() * 1e3;
            writeln!(f, "  {:<13} {:>9.2} ms  nodes {:>6} -> {:>6}", p.name, ms, p.before, p.after)?;
            for s in &p.phases {
                let rules: Vec<String> = s.applied.iter().map(|(r, n)| format!("{r}×{n}")).collect();
                writeln!(
                    f,
                    "    kind {:<6} x{:<3} {:<16} iters {:>2}  e-nodes {:>5}  e-classes {:>5}  {}",
                    s.kind,
                    s.regions,
                    s.stop,
                    s.iterations,
                    s.enodes,
                    s.eclasses,
                    rules.join(" ")
                )?;
            }
        }
        if let Some(m) = &self.memplan {
            write!(f, "  {:<13} {:>9.2} ms  {m}", "memplan", self.memplan_time.as_secs_f64() * 1e3)?;
        }
        Ok(())
    }
}

fn checked(pass: &str, g: Graph) -> Result<Graph, PassError> {
    verify(&g).map_err(|err| PassError::Verify { pass: pass.into(), err })?;
    Ok(g)
}

/// Runs [`PASSES`] over `g`; calls `after(pass, graph)` after each (for `--dump-after`).
pub fn optimise(g: &Graph, opts: &Options, after: &mut dyn FnMut(&str, &Graph)) -> Result<(Graph, Report), PassError> {
    RUNS.with(|r| r.set(r.get() + 1));
    let mut report = Report { graph: g.name.clone(), passes: Vec::new(), memplan: None, memplan_time: Duration::ZERO };
    let mut cur = checked("input", g.clone())?;
    type Classic = fn(&Graph) -> Result<Graph, IrError>;
    for (name, pass) in [("dce", classic::dce as Classic), ("cse", classic::cse as Classic)] {
        let t0 = Instant::now();
        let next = pass(&cur).map_err(|err| PassError::Build { pass: name.into(), err })?;
        let next = checked(name, next)?;
        report.passes.push(PassReport {
            name,
            time: t0.elapsed(),
            before: cur.nodes.len(),
            after: next.nodes.len(),
            phases: vec![],
        });
        after(name, &next);
        cur = next;
    }
    let base = cur;
    let t0 = Instant::now();
    let mut eggs = EggState::new(&base);
    let mut setup = Some(t0.elapsed());
    let mut last = base.clone();
    for (name, rules) in [("canonicalise", rules::canonicalise()), ("fuse", rules::fuse()), ("select", rules::select())]
    {
        let t0 = Instant::now();
        let (next, phases) = eggs.phase(&base, name, &rules, &opts.limits)?;
        let next = checked(name, next)?;
        let time = t0.elapsed() + setup.take().unwrap_or_default();
        report.passes.push(PassReport { name, time, before: last.nodes.len(), after: next.nodes.len(), phases });
        after(name, &next);
        last = next;
    }
    let t0 = Instant::now();
    report.memplan = Some(memplan::plan(&last));
    report.memplan_time = t0.elapsed();
    Ok((last, report))
}

/// Optimises every entry point of `p` (same state layout); one report per entry point.
pub fn optimise_program(
    p: &Program,
    opts: &Options,
    after: &mut dyn FnMut(&str, &Graph),
) -> Result<(Program, Vec<Report>), PassError> {
    let (prefill, r1) = optimise(&p.prefill, opts, after)?;
    let (decode, r2) = optimise(&p.decode, opts, after)?;
    let mut reports = vec![r1, r2];
    let mtp = match &p.mtp {
        Some(g) => {
            let (g, r) = optimise(g, opts, after)?;
            reports.push(r);
            Some(g)
        }
        None => None,
    };
    Ok((Program { prefill, decode, mtp, state: p.state.clone(), mtp_state: p.mtp_state.clone() }, reports))
}

/// The e-graph phases' shared state: the regions of the graph and one e-graph per region kind.
struct EggState {
    regions: Vec<region::Io>,
    kinds: Vec<(usize, Vec<usize>)>,
    runs: Vec<saturate::KindRun>,
}

impl EggState {
    fn new(g: &Graph) -> EggState {
        let regions = region::partition(g);
        let kinds = region::kinds(&regions);
        let runs =
            kinds.iter().map(|(rep, members)| saturate::KindRun::import(g, &regions[*rep], members.len())).collect();
        EggState { regions, kinds, runs }
    }

    /// Runs one phase on every kind, extracts, and stamps the templates over `base`.
    fn phase(
        &mut self,
        base: &Graph,
        name: &'static str,
        rules: &[rules::Rw],
        limits: &Limits,
    ) -> Result<(Graph, Vec<PhaseStats>), PassError> {
        let mut stats = Vec::with_capacity(self.runs.len());
        let mut templates = Vec::with_capacity(self.runs.len());
        for run in &mut self.runs {
            let mut s = run.run(name, rules, limits);
            let (t, cost) = run.template()?;
            s.cost = cost;
            stats.push(s);
            templates.push(t);
        }
        let mut per_region: Vec<Option<(&region::Template, Option<qgc_ir::Layer>)>> = vec![None; self.regions.len()];
        for (k, (rep, members)) in self.kinds.iter().enumerate() {
            let layer = self.regions[*rep].layer;
            members.iter().for_each(|&r| per_region[r] = Some((&templates[k], layer)));
        }
        let per_region: Vec<(&region::Template, Option<qgc_ir::Layer>)> = per_region.into_iter().flatten().collect();
        let g = stamp::stamp(base, &self.regions, &per_region)
            .map_err(|err| PassError::Build { pass: name.into(), err })?;
        Ok((g, stats))
    }
}
