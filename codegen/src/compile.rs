//! The compiled program: what `qgc compile` makes and an artifact holds, and what a runtime
//! loads without running the pass pipeline again.
//!
//! [`compile_program`] runs, per entry point of a lowered [`Program`]: the pass pipeline
//! (`qgc_passes::optimise`), hoisting of weight-only subgraphs ([`crate::hoist`]), and the host
//! schedule with its kernel bindings and memory plan ([`crate::host::schedule`]). The entry
//! points are the program's plus [`Entry::PrefillHidden`]: prefill without the `logits` output
//! (what generation feeds all but the last prompt token through, so the vocabulary projection
//! runs once per prompt). [`CompiledProgram::verify`] is what loading checks: every graph
//! verifies, and every schedule is the one this compiler makes of its graph (so a stored
//! schedule can be trusted to fit its graph); no pass runs.

use crate::hoist::{hoist, Hoisted};
use crate::host::{schedule, HostError, HostOptions, ReusePlanner, Schedule};
use qgc_ir::{Graph, IrError, Op, Program, StateDecl, VerifyError};
use qgc_passes::{PassError, Report};
use serde::{Deserialize, Serialize};

/// An entry point of a compiled program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Entry {
    /// Prefill over S tokens, logits for every token.
    Prefill,
    /// Prefill over S tokens without logits (state, and `hidden` with an MTP block).
    PrefillHidden,
    /// One token.
    Decode,
    /// The MTP draft block.
    Mtp,
}

impl Entry {
    /// Its name in messages and summaries.
    pub fn name(self) -> &'static str {
        match self {
            Entry::Prefill => "prefill",
            Entry::PrefillHidden => "prefill_hidden",
            Entry::Decode => "decode",
            Entry::Mtp => "mtp",
        }
    }
}

/// One compiled entry point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompiledEntry {
    /// Which.
    pub entry: Entry,
    /// The per-call graph: optimised, weight-only values as `load:` weights.
    pub graph: Graph,
    /// The weight-only subgraph computing the `load:` weights (evaluated once at load).
    pub load: Graph,
    /// Steps, kernel bindings, in-place decisions and the arena plan.
    pub schedule: Schedule,
}

/// Every entry point, compiled, and the state they carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompiledProgram {
    /// The entry points, in [`Entry`] order.
    pub entries: Vec<CompiledEntry>,
    /// State layout of prefill and decode (as in [`Program::state`]).
    pub state: Vec<StateDecl>,
    /// State layout of the MTP entry point.
    pub mtp_state: Vec<StateDecl>,
}

/// Compilation failures (all compiler bugs for a valid program, except a graph no kernel takes).
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The pass pipeline failed.
    #[error("optimising {entry}")]
    Passes {
        /// Entry point.
        entry: &'static str,
        /// Why.
        #[source]
        source: PassError,
    },
    /// Building an entry point's graph (prefill without logits, hoisting) failed.
    #[error("building {entry}")]
    Graph {
        /// Entry point.
        entry: &'static str,
        /// Why.
        #[source]
        source: IrError,
    },
    /// Scheduling failed (no kernel binding, a bad plan).
    #[error("scheduling {entry}")]
    Schedule {
        /// Entry point.
        entry: &'static str,
        /// Why.
        #[source]
        source: HostError,
    },
    /// A stored graph does not verify.
    #[error("{entry}: stored graph does not verify")]
    Verify {
        /// Entry point.
        entry: &'static str,
        /// Why.
        #[source]
        source: VerifyError,
    },
    /// A `load:` weight the load graph does not compute with the weight's type.
    #[error("{entry}: weight load:{weight} has no output of its type in the load graph")]
    Load {
        /// Entry point.
        entry: &'static str,
        /// The hoisted node's name.
        weight: String,
    },
    /// A stored schedule is not what this compiler makes of its graph.
    #[error("{entry}: the stored schedule does not match its graph")]
    Mismatch {
        /// Entry point.
        entry: &'static str,
    },
}

/// The options every stored schedule is made with.
pub fn schedule_options() -> HostOptions {
    HostOptions { fuse_elementwise: true, ..HostOptions::default() }
}

/// `g` without its `logits` output, dead code removed.
pub fn without_logits(g: &Graph) -> Result<Graph, IrError> {
    let mut h = g.clone();
    h.outputs.retain(|(n, _)| n != "logits");
    qgc_passes::classic::dce(&h)
}

/// One entry point from its optimised graph: hoisting and the schedule.
pub fn compile_graph(entry: Entry, g: &Graph) -> Result<CompiledEntry, CompileError> {
    let name = entry.name();
    let Hoisted { graph, load } = hoist(g).map_err(|source| CompileError::Graph { entry: name, source })?;
    let schedule = schedule::schedule(&graph, &schedule_options(), &ReusePlanner::for_graph(&graph))
        .map_err(|source| CompileError::Schedule { entry: name, source })?;
    Ok(CompiledEntry { entry, graph, load, schedule })
}

/// Optimises and schedules every entry point of `p`; `after(pass, graph)` sees each pass's
/// result (for `--dump-after`). Returns the program and one compile report per optimised graph.
pub fn compile_program(
    p: &Program,
    after: &mut dyn FnMut(&str, &Graph),
) -> Result<(CompiledProgram, Vec<Report>), CompileError> {
    let opts = qgc_passes::Options::default();
    let mut reports = Vec::new();
    let mut opt = |g: &Graph, entry: Entry| {
        let (g, r) = qgc_passes::optimise(g, &opts, after)
            .map_err(|source| CompileError::Passes { entry: entry.name(), source })?;
        reports.push(r);
        Ok::<Graph, CompileError>(g)
    };
    let prefill = opt(&p.prefill, Entry::Prefill)?;
    let hidden = without_logits(&prefill)
        .map_err(|source| CompileError::Graph { entry: Entry::PrefillHidden.name(), source })?;
    let mut graphs = vec![(Entry::Prefill, prefill), (Entry::PrefillHidden, hidden)];
    graphs.push((Entry::Decode, opt(&p.decode, Entry::Decode)?));
    if let Some(m) = &p.mtp {
        graphs.push((Entry::Mtp, opt(m, Entry::Mtp)?));
    }
    let compiled = compile_graphs(graphs, p.state.clone(), p.mtp_state.clone())?;
    Ok((compiled, reports))
}

/// A program from already optimised entry-point graphs (e.g. one random graph as
/// [`Entry::Prefill`]).
pub fn compile_graphs(
    graphs: Vec<(Entry, Graph)>,
    state: Vec<StateDecl>,
    mtp_state: Vec<StateDecl>,
) -> Result<CompiledProgram, CompileError> {
    let entries = graphs.iter().map(|(e, g)| compile_graph(*e, g)).collect::<Result<_, _>>()?;
    Ok(CompiledProgram { entries, state, mtp_state })
}

impl CompiledProgram {
    /// The entry point `entry`, if compiled.
    pub fn entry(&self, entry: Entry) -> Option<&CompiledEntry> {
        self.entries.iter().find(|e| e.entry == entry)
    }

    /// Checks what a runtime relies on (module doc): graphs verify, schedules are this
    /// compiler's schedules of their graphs. Runs no pass.
    pub fn verify(&self) -> Result<(), CompileError> {
        for e in &self.entries {
            let entry = e.entry.name();
            for g in [&e.graph, &e.load] {
                qgc_ir::verify(g).map_err(|source| CompileError::Verify { entry, source })?;
            }
            for n in &e.graph.nodes {
                let Op::Weight { name, ty } = &n.op else { continue };
                let Some(rest) = name.strip_prefix(crate::hoist::LOAD_PREFIX) else { continue };
                if e.load.output(name).map(|v| e.load.ty(v)) != Some(ty) {
                    return Err(CompileError::Load { entry, weight: rest.to_string() });
                }
            }
            let again = schedule::schedule(&e.graph, &schedule_options(), &ReusePlanner::for_graph(&e.graph))
                .map_err(|source| CompileError::Schedule { entry, source })?;
            if again != e.schedule {
                return Err(CompileError::Mismatch { entry });
            }
        }
        Ok(())
    }
}
