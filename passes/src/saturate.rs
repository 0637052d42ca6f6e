//! One region kind in an e-graph: import the representative region, run the named phases
//! (each an egg [`Runner`] with explicit limits, its [`StopReason`] recorded), and extract a
//! [`Template`]. The e-graph is never pruned; each phase continues on it, and extraction reads it.

use crate::analysis::{set_label, Label, LeafInfo, QGraph, Shapes};
use crate::extract::extract;
use crate::lang::{split, Attr, Node};
use crate::region::{Io, Leaf, TNode, TRef, Template};
use crate::rules::{get, Rw};
use crate::PassError;
use egg::{Id, Runner, SimpleScheduler, StopReason};
use qgc_ir::{Graph, Op, OpClass, Role, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Limits of one phase's runner.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Rule-application iterations.
    pub iters: usize,
    /// E-nodes.
    pub nodes: usize,
    /// Wall time.
    pub time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { iters: 30, nodes: 50_000, time: Duration::from_secs(5) }
    }
}

/// What one phase did to one region kind.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseStats {
    /// Phase name (`fuse`).
    pub phase: &'static str,
    /// Representative region (`l3`; `-` for the unnamed head/tail).
    pub kind: String,
    /// Regions of this kind (stamped with the result).
    pub regions: usize,
    /// The runner's stop reason, as egg prints it.
    pub stop: String,
    /// Whether it stopped because it saturated (not on a limit).
    pub saturated: bool,
    /// Iterations run.
    pub iterations: usize,
    /// E-nodes and e-classes afterwards.
    pub enodes: usize,
    /// E-classes afterwards.
    pub eclasses: usize,
    /// Applications per rule (rules that matched nothing are absent).
    pub applied: BTreeMap<String, usize>,
    /// The extracted region's cost (see `extract`).
    pub cost: f64,
}

/// A region kind's e-graph.
pub struct KindRun {
    eg: QGraph,
    roots: Vec<Id>,
    label: String,
    regions: usize,
}

impl KindRun {
    /// Imports region `io` of `g` (the representative of `regions` regions).
    pub fn import(g: &Graph, io: &Io, regions: usize) -> KindRun {
        let leaf_of: BTreeMap<Leaf, usize> = io.leaves.iter().enumerate().map(|(k, l)| (*l, k)).collect();
        let leaves = io.leaves.iter().map(|l| leaf_info(g, *l)).collect();
        let mut eg = QGraph::new(Shapes { leaves, labels: BTreeMap::new() });
        let mut vals = BTreeMap::<Value, Id>::new();
        for &i in &io.nodes {
            let n = &g.nodes[i];
            let (name, attrs) = split(&n.op).expect("regions hold no sources");
            let mut ch: Vec<Id> = attrs.into_iter().map(|a| eg.add(Node::Attr(a))).collect();
            for v in &n.inputs {
                let id = match vals.get(v) {
                    Some(&id) => id,
                    None => {
                        let source = g.nodes[v.node].op.class() == OpClass::Source;
                        let leaf = if source { Leaf::Source(v.node) } else { Leaf::Ext(*v) };
                        eg.add(Node::Leaf(leaf_of[&leaf] as u32))
                    }
                };
                ch.push(id);
            }
            let c = eg.add(Node::Op(name, ch));
            set_label(&mut eg, c, Label { name: n.name.clone(), origin: n.origin });
            for j in 0..n.outputs.len() {
                let v = if n.outputs.len() == 1 { c } else { get(&mut eg, j, c) };
                vals.insert(Value { node: i, index: j }, v);
            }
        }
        eg.rebuild();
        let roots = io.live_out.iter().map(|v| vals[v]).collect();
        let label = io.layer.map_or_else(|| "-".to_string(), |l| l.prefix());
        KindRun { eg, roots, label, regions }
    }

    /// Runs one phase's rules to saturation or a limit.
    pub fn run(&mut self, phase: &'static str, rules: &[Rw], limits: &Limits) -> PhaseStats {
        let eg = std::mem::take(&mut self.eg);
        let runner = Runner::default()
            .with_egraph(eg)
            .with_scheduler(SimpleScheduler)
            .with_iter_limit(limits.iters)
            .with_node_limit(limits.nodes)
            .with_time_limit(limits.time)
            .run(rules);
        let mut applied = BTreeMap::new();
        for it in &runner.iterations {
            for (rule, n) in &it.applied {
                *applied.entry(rule.to_string()).or_insert(0) += n;
            }
        }
        let stop = runner.stop_reason.clone().unwrap_or(StopReason::Other("not run".into()));
        let (iterations, enodes, eclasses) =
            (runner.iterations.len(), runner.egraph.total_number_of_nodes(), runner.egraph.number_of_classes());
        self.eg = runner.egraph;
        PhaseStats {
            phase,
            kind: self.label.clone(),
            regions: self.regions,
            saturated: matches!(stop, StopReason::Saturated),
            stop: format!("{stop:?}"),
            iterations,
            enodes,
            eclasses,
            applied,
            cost: 0.0,
        }
    }

    /// Extracts the current best region as a template, and its cost.
    pub fn template(&self) -> Result<(Template, f64), PassError> {
        let err = |message: String| PassError::Extract { kind: self.label.clone(), message };
        let (choice, cost) = extract(&self.eg, &self.roots).ok_or_else(|| err("no acyclic extraction".into()))?;
        let mut named = BTreeMap::new();
        for (c, l) in &self.eg.analysis.labels {
            named.entry(self.eg.find(*c)).or_insert_with(|| l.clone());
        }
        let mut e = Emitter {
            eg: &self.eg,
            choice: &choice,
            named,
            used: BTreeSet::new(),
            memo: BTreeMap::new(),
            nodes: vec![],
        };
        let outs = self.roots.iter().map(|&r| e.emit(r, None)).collect::<Result<Vec<_>, String>>().map_err(err)?;
        Ok((Template { nodes: e.nodes, outs }, cost))
    }
}

fn leaf_info(g: &Graph, l: Leaf) -> LeafInfo {
    match l {
        Leaf::Source(s) => {
            LeafInfo { ty: g.nodes[s].outputs[0].clone(), weight: matches!(g.nodes[s].op, Op::Weight { .. }) }
        }
        Leaf::Ext(v) => LeafInfo { ty: g.ty(v).clone(), weight: false },
    }
}

/// Turns the extracted choice into template nodes, children first.
struct Emitter<'a> {
    eg: &'a QGraph,
    choice: &'a BTreeMap<Id, Node>,
    named: BTreeMap<Id, Label>,
    used: BTreeSet<String>,
    memo: BTreeMap<Id, TRef>,
    nodes: Vec<TNode>,
}

impl Emitter<'_> {
    /// The class's own label if its name is free, else `hint` (the name made unique), else the
    /// op name.
    fn pick_label(&mut self, c: Id, hint: Option<Label>, op: &str) -> Label {
        let own = self.named.get(&c).filter(|l| !self.used.contains(&l.name)).cloned();
        let base = own.or(hint).unwrap_or_else(|| Label { name: op.to_string(), origin: Default::default() });
        let mut name = base.name.clone();
        let mut k = 2;
        while self.used.contains(&name) {
            name = format!("{}.{k}", base.name);
            k += 1;
        }
        self.used.insert(name.clone());
        Label { name, origin: base.origin }
    }

    fn emit(&mut self, c: Id, hint: Option<Label>) -> Result<TRef, String> {
        let c = self.eg.find(c);
        if let Some(r) = self.memo.get(&c) {
            return Ok(*r);
        }
        let node = self.choice.get(&c).ok_or_else(|| format!("class {c} has no choice"))?.clone();
        let r = match &node {
            Node::Leaf(k) => TRef::Leaf(*k as usize),
            Node::Attr(a) => return Err(format!("attribute {a} used as a value")),
            Node::Get([i, n]) => {
                let idx = self.eg[*i].data.attr().and_then(Attr::int).ok_or("get index is not an integer")? as usize;
                let own = self.named.get(&c).cloned().or(hint);
                match self.emit(*n, own)? {
                    TRef::Node(j, 0) => TRef::Node(j, idx),
                    other => return Err(format!("get of {other:?}")),
                }
            }
            Node::Op(name, ch) => self.emit_op(c, name, ch, hint)?,
        };
        self.memo.insert(c, r);
        Ok(r)
    }

    fn emit_op(&mut self, c: Id, name: &'static str, ch: &[Id], hint: Option<Label>) -> Result<TRef, String> {
        let my = self.pick_label(c, hint, name);
        let n_attrs = ch.iter().take_while(|&&a| self.eg[a].data.attr().is_some()).count();
        let attrs: Vec<Attr> = ch[..n_attrs].iter().filter_map(|&a| self.eg[a].data.attr().cloned()).collect();
        let op = crate::lang::join(name, &attrs).ok_or_else(|| format!("{name}: bad attributes {attrs:?}"))?;
        let mut inputs = Vec::with_capacity(ch.len() - n_attrs);
        for &x in &ch[n_attrs..] {
            let weight_only = self.eg[x].data.weight_only;
            let hint = match self.choice.get(&self.eg.find(x)) {
                Some(Node::Op(n, _)) if weight_only => format!("{}.{n}_weight", my.name),
                Some(Node::Op(n, _)) => format!("{}.{n}", my.name),
                _ => format!("{}.value", my.name),
            };
            let role = if weight_only { Role::Weight } else { my.origin.role };
            let origin = qgc_ir::Origin { role, ..my.origin };
            inputs.push(self.emit(x, Some(Label { name: hint, origin }))?);
        }
        self.nodes.push(TNode { name: my.name, origin: my.origin, op, inputs });
        Ok(TRef::Node(self.nodes.len() - 1, 0))
    }
}
