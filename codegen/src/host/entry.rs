//! [`compile_entry`]: one entry point's schedule, chain loops and host function in one JIT
//! module, and the [`HostEntry`] that owns them.

use super::emit::define_host;
use super::jit::{HostFn, JitCode, ShimTable, CHAIN, COPY, PARALLEL_FOR};
use super::loops::define_loop;
use super::place::{ArenaPlanner, IoTable};
use super::schedule::{schedule, HostOptions, Schedule, Step};
use super::HostError;
use qgc_ir::{Graph, Poly};
use std::collections::BTreeSet;

/// A compiled entry point.
#[derive(Debug)]
pub struct HostEntry {
    /// Entry point name (`prefill`, `decode`).
    pub name: String,
    /// The schedule it runs (steps, chains, locations, arena requests).
    pub schedule: Schedule,
    func: HostFn,
    _code: JitCode,
}

/// Step counts of a schedule, for summaries and structural tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StepCounts {
    /// Kernel shim calls.
    pub kernels: usize,
    /// Compiled chain calls.
    pub chains: usize,
    /// Graph nodes computed by those chains.
    pub chain_nodes: usize,
    /// Distinct chains (compiled loops; chain kernels in device host code).
    pub loops: usize,
    /// Output copies.
    pub copies: usize,
}

impl HostEntry {
    /// The host function; valid while `self` lives. Calling it is unsafe: `io` must point to
    /// [`HostEntry::io`]`.slots.len()` pointers, each to a buffer of its slot's type under `b, s, p`
    /// (outputs writable, nothing overlapping an output), `arena` to
    /// [`HostEntry::arena_bytes`] writable bytes, and `ctx` must be what the registered shims
    /// expect.
    pub fn func(&self) -> HostFn {
        self.func
    }

    /// The io pointer table layout.
    pub fn io(&self) -> &IoTable {
        &self.schedule.io
    }

    /// Arena bytes a call needs, as a polynomial in `B, S, P`.
    pub fn arena_bytes(&self) -> &Poly {
        &self.schedule.arena_bytes
    }

    /// How many steps of each kind the schedule has.
    pub fn counts(&self) -> StepCounts {
        let mut c = StepCounts { loops: self.schedule.chains.len(), ..StepCounts::default() };
        for s in &self.schedule.steps {
            match s {
                Step::Kernel { .. } => c.kernels += 1,
                Step::Chain { nodes, .. } => {
                    c.chains += 1;
                    c.chain_nodes += nodes.len();
                }
                Step::Copy { .. } => c.copies += 1,
            }
        }
        c
    }
}

/// The shim symbols the host function of `g` calls under `opts` (kernel shims, and
/// [`PARALLEL_FOR`] when loops go through it, or [`CHAIN`] and [`COPY`] on a device), sorted.
pub fn required_shims(g: &Graph, opts: &HostOptions) -> Result<BTreeSet<String>, HostError> {
    Ok(schedule(g, opts, &super::place::BumpPlanner)?.host_symbols(opts))
}

/// Compiles the host function of `g` (after the pass pipeline): schedules it, plans its arena
/// with `planner`, compiles its chains, and links the kernel calls against `shims`. Every
/// required shim must be registered ([`HostError::MissingShim`] names the first that is not).
pub fn compile_entry(
    g: &Graph,
    shims: &ShimTable,
    planner: &dyn ArenaPlanner,
    opts: &HostOptions,
) -> Result<HostEntry, HostError> {
    compile_schedule(g, schedule(g, opts, planner)?, shims, opts)
}

/// Compiles the host function of `g` from its schedule `sched` (made by
/// [`super::schedule::schedule`] for `g`; e.g. one stored in an artifact and checked): the chains'
/// loops and the host function, linked against `shims`. `opts` chooses the loops' precision and
/// whether they go through `qgc_parallel_for`, or device host code (no loops; chains and copies
/// are [`CHAIN`] and [`COPY`] calls).
pub fn compile_schedule(
    g: &Graph,
    sched: Schedule,
    shims: &ShimTable,
    opts: &HostOptions,
) -> Result<HostEntry, HostError> {
    for s in &sched.steps {
        if let Step::Kernel { node, symbol, .. } = s {
            if !shims.has(symbol) {
                return Err(HostError::MissingShim { symbol: symbol.clone(), node: g.nodes[*node].name.clone() });
            }
        }
    }
    for symbol in sched.host_symbols(opts) {
        if !shims.has(&symbol) {
            let node = match symbol.as_str() {
                PARALLEL_FOR => "(compiled loops)",
                CHAIN => "(elementwise chains)",
                COPY => "(output copies)",
                _ => "(kernel steps)",
            };
            return Err(HostError::MissingShim { symbol, node: node.into() });
        }
    }
    let mut module = JitCode::module(shims)?;
    let mut loops = Vec::with_capacity(sched.chains.len());
    if !opts.device {
        for (k, c) in sched.chains.iter().enumerate() {
            loops.push(define_loop(&mut module, c, opts.precision, &format!("{}.ew{k}", g.name))?);
        }
    }
    let id = define_host(&mut module, g, &sched, &loops, opts, &format!("{}.host", g.name))?;
    let code = JitCode::finalize(module)?;
    Ok(HostEntry { name: g.name.clone(), func: code.host_fn(id), schedule: sched, _code: code })
}
