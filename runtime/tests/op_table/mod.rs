//! The per-op backend table (ggml's `test-backend-ops`, candle's `test_device!`): every case of
//! every op (`qgc_ir::cases`: odd shapes, sizes of 1 and off every vector width, several
//! bindings) through a backend's kernel binding and ABI, with f32 and with bf16-stored weights,
//! against the reference interpreter on the same (rounded) values, each case within its stated
//! tolerance. Backend-agnostic: a backend implements [`OpBackend`] and calls [`run_table`]; the
//! CPU backend does so in `ops_cpu.rs`, the CUDA backend will run this very table.
//!
//! Two layouts per case: **io** — the one-node graph as drawn (operands are inputs, results
//! outputs); **arena** — every f32 activation operand and result goes through an exact copy
//! (`scale by=1`) so that operands and results live in the arena and the schedule places
//! results over dying operands where the op table allows, and every operand a result updates
//! (`Sharing::Update`/`Append`: conv and delta-rule state, the KV cache) is a state input
//! returned as the state output of the same name, so the runtime passes one buffer for both
//! (a KV cache with spare capacity).
#![allow(dead_code)]

use qgc_ir::cases::{cases, OpCase};
use qgc_ir::interp::{eval_op, MapWeights, Tensor as ITensor};
use qgc_ir::{Bindings, DType, Graph, Op, Sharing};
use qgc_runtime::weights::{Bf16Weights, RawWeights};
use qgc_runtime::{StateTensor, Tensor};
use std::collections::BTreeMap;

/// Weights of a case as a backend stores them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// f32.
    F32,
    /// bf16 (the reference sees the rounded values).
    Bf16,
}

/// What a backend must do for the table: compile `g` (a graph of the layouts above) with
/// weights `w`, then run it at each binding. `state` holds the state tensors by name (inputs
/// in, advanced outputs back, updated in place where the backend can).
pub trait OpBackend {
    /// The compiled form.
    type Compiled<'w>;
    /// Its name, for messages.
    fn name(&self) -> &'static str;
    /// Compiles `g` with weights `w`.
    fn compile<'w>(&self, g: &Graph, w: &'w dyn RawWeights) -> Result<Self::Compiled<'w>, String>;
    /// Whether node `node` of `g` runs on the interpreter fallback in `c`.
    fn fallback(&self, c: &Self::Compiled<'_>, node: &str) -> bool;
    /// How many results of node `node` the schedule placed over an operand (in the arena or as
    /// a state buffer updated in place).
    fn in_place(&self, c: &Self::Compiled<'_>, node: &str) -> usize;
    /// Runs `c` at `bind`.
    fn run(
        &self,
        c: &Self::Compiled<'_>,
        bind: &Bindings,
        inputs: &BTreeMap<String, Tensor>,
        state: &mut BTreeMap<String, StateTensor>,
    ) -> Result<BTreeMap<String, Tensor>, String>;
}

/// The ops whose kernel is the interpreter by design (`qgc_codegen::binding`).
pub const FALLBACK_OPS: &[&str] = &["softmax", "top_k", "renormalize"];

/// One layout of a case: its graph, and per graph input which case operand it is.
struct Layout {
    graph: Graph,
    /// Per input name: the case operand it carries.
    operand_of: BTreeMap<String, usize>,
    /// Per output name: the node result it carries.
    result_of: BTreeMap<String, usize>,
    /// State names (input = output).
    state: Vec<String>,
}

fn io_layout(c: &OpCase) -> Layout {
    let g = c.graph().expect("case graphs verify");
    let operand_of = (0..c.operands.len()).filter(|k| !c.operands[*k].weight).map(|k| (format!("x{k}"), k)).collect();
    let result_of = (0..g.outputs.len()).map(|r| (format!("y{r}"), r)).collect();
    Layout { graph: g, operand_of, result_of, state: vec![] }
}

/// The arena layout (module doc).
fn arena_layout(c: &OpCase) -> Layout {
    let updated: BTreeMap<usize, usize> = (c.op.info().in_place.iter())
        .filter(|p| !matches!(p.sharing, Sharing::Alias))
        .map(|p| (p.operand, p.result))
        .collect();
    let mut g = Graph::new(format!("{}_arena", c.label.replace(' ', "_")));
    let (mut ins, mut operand_of, mut state) = (Vec::new(), BTreeMap::new(), Vec::new());
    for (k, o) in c.operands.iter().enumerate() {
        let v = if o.weight {
            g.add1(format!("w{k}"), Op::Weight { name: format!("w{k}"), ty: o.ty.clone() }, &[]).unwrap()
        } else if updated.contains_key(&k) {
            let name = format!("state.u{k}");
            state.push(name.clone());
            operand_of.insert(name.clone(), k);
            g.add1(name.clone(), Op::Input { name, ty: o.ty.clone() }, &[]).unwrap()
        } else {
            let x = g.add1(format!("x{k}"), Op::Input { name: format!("x{k}"), ty: o.ty.clone() }, &[]).unwrap();
            operand_of.insert(format!("x{k}"), k);
            if o.ty.dtype == DType::F32 {
                g.add1(format!("copy{k}"), Op::Scale { by: 1.0 }, &[x]).unwrap()
            } else {
                x
            }
        };
        ins.push(v);
    }
    let outs = g.add("node", c.op.clone(), &ins).unwrap();
    let mut result_of = BTreeMap::new();
    for (r, v) in outs.iter().enumerate() {
        let updates = updated.iter().find(|(_, res)| **res == r).map(|(op, _)| *op);
        let (name, v) = match updates {
            Some(k) => (format!("state.u{k}"), *v),
            None if g.ty(*v).dtype == DType::F32 => {
                (format!("y{r}"), g.add1(format!("out{r}"), Op::Scale { by: 1.0 }, &[*v]).unwrap())
            }
            None => (format!("y{r}"), *v),
        };
        result_of.insert(name.clone(), r);
        g.outputs.push((name, v));
    }
    qgc_ir::verify(&g).unwrap_or_else(|e| panic!("{}: arena layout: {e}", c.label));
    Layout { graph: g, operand_of, result_of, state }
}

/// The case's weights, drawn from its operands' ranges, stored as `stored`.
fn weights(c: &OpCase, seed: u64, stored: Stored) -> Box<dyn RawWeights> {
    let vals = c.inputs(&Bindings { b: 1, s: 1, p: 0 }, seed);
    let mut m = MapWeights::new();
    for (k, o) in c.operands.iter().enumerate() {
        if o.weight {
            m.insert(format!("w{k}"), vals[k].clone());
        }
    }
    match stored {
        Stored::F32 => Box::new(m),
        Stored::Bf16 => Box::new(Bf16Weights::from_map(&m)),
    }
}

/// max |got − want| / max |want| (0 when equal; i32 must be equal).
fn error(got: &Tensor, want: &ITensor) -> Result<f64, String> {
    if got.shape != want.shape {
        return Err(format!("shape {:?}, want {:?}", got.shape, want.shape));
    }
    match (got.as_i32(), want.as_i32(), got.as_f32(), want.as_f32()) {
        (Some(a), Some(b), _, _) => (a == b).then_some(0.0).ok_or_else(|| format!("{a:?}, want {b:?}")),
        (_, _, Some(a), Some(b)) => {
            let scale = b.iter().fold(0f64, |m, v| m.max(f64::from(v.abs())));
            let diff = a.iter().zip(b).fold(0f64, |m, (x, y)| m.max(f64::from(*x - *y).abs()));
            if a.iter().any(|x| !x.is_finite()) {
                return Err("non-finite result".into());
            }
            Ok(if diff == 0.0 { 0.0 } else { diff / scale.max(1e-30) })
        }
        _ => Err(format!("dtype {}, want {}", got.describe(), want.describe())),
    }
}

/// One row of the table's report.
#[derive(Debug)]
pub struct Row {
    /// `case label, layout, weights`.
    pub what: String,
    /// Worst error over bindings and results.
    pub worst: f64,
    /// The case's tolerance.
    pub tol: f64,
}

/// Runs every case on `backend` (module doc); returns one row per case, layout and dtype, and
/// the failures.
pub fn run_table<B: OpBackend>(backend: &B) -> (Vec<Row>, Vec<String>) {
    let (mut rows, mut failures) = (Vec::new(), Vec::new());
    for (ci, c) in cases().iter().enumerate() {
        for stored in [Stored::F32, Stored::Bf16] {
            if stored == Stored::Bf16 && !c.operands.iter().any(|o| o.weight) {
                continue;
            }
            for (lname, layout) in [("io", io_layout(c)), ("arena", arena_layout(c))] {
                let what = format!("{} [{lname}, {stored:?} weights]", c.label);
                let w = weights(c, ci as u64, stored);
                match check(backend, c, &layout, w.as_ref(), ci as u64) {
                    Ok(worst) => {
                        if worst > c.tol {
                            failures.push(format!("{what}: error {worst:.3e} above {:.1e}", c.tol));
                        }
                        rows.push(Row { what, worst, tol: c.tol });
                    }
                    Err(e) => failures.push(format!("{what}: {e}")),
                }
            }
        }
    }
    (rows, failures)
}

fn check<B: OpBackend>(backend: &B, c: &OpCase, l: &Layout, w: &dyn RawWeights, seed: u64) -> Result<f64, String> {
    let compiled = backend.compile(&l.graph, w)?;
    let fallback = backend.fallback(&compiled, "node");
    if fallback != FALLBACK_OPS.contains(&c.op.name()) {
        return Err(format!("{} runs on the interpreter fallback: {fallback}", backend.name()));
    }
    if !l.graph.name.ends_with("_arena") || c.op.info().pointwise != qgc_ir::Pointwise::No {
        // Pointwise nodes are compiled loops over graph inputs here: nothing to share.
    } else {
        let tys: Vec<&qgc_ir::TensorType> = c.operands.iter().map(|o| &o.ty).collect();
        let out = c.op.infer(&tys)?;
        let mut want: Vec<usize> = (c.op.info().in_place.iter())
            .filter(|p| match p.sharing {
                Sharing::Alias => out[p.result] == *tys[p.operand] && !c.operands[p.operand].weight,
                Sharing::Update | Sharing::Append { .. } => true,
            })
            .map(|p| p.result)
            .collect();
        want.dedup();
        let got = backend.in_place(&compiled, "node");
        if got != want.len() {
            return Err(format!("{got} results in place, the op table allows {}", want.len()));
        }
    }
    let mut worst = 0f64;
    for (i, bind) in c.binds.iter().enumerate() {
        let vals = c.inputs(bind, seed * 31 + i as u64);
        // The reference: the interpreter on the operands, weights as the backend stores them.
        let mut refs: Vec<ITensor> = vals.clone();
        for (k, o) in c.operands.iter().enumerate() {
            if o.weight {
                let shape = o.ty.eval(bind);
                refs[k] = (*w.source().weight(&format!("w{k}"), &shape).map_err(|e| e.to_string())?).clone();
            }
        }
        let want = eval_op(&c.op, &refs.iter().collect::<Vec<_>>(), bind).map_err(|e| format!("reference: {e}"))?;
        let mut inputs = BTreeMap::new();
        let mut state = BTreeMap::new();
        for (name, &k) in &l.operand_of {
            let t: Tensor = vals[k].clone().into();
            if l.state.contains(name) {
                let axis = qgc_runtime::session::grow_axis(&c.operands[k].ty);
                state.insert(name.clone(), StateTensor::from_dense(&t, axis));
            } else {
                inputs.insert(name.clone(), t);
            }
        }
        let mut got = backend.run(&compiled, bind, &inputs, &mut state).map_err(|e| format!("at {bind:?}: {e}"))?;
        for name in &l.state {
            got.insert(name.clone(), state[name].dense());
        }
        for (name, &r) in &l.result_of {
            let g = got.get(name).ok_or_else(|| format!("at {bind:?}: no output {name}"))?;
            let e = error(g, &want[r]).map_err(|e| format!("at {bind:?}, result {r}: {e}"))?;
            worst = worst.max(e);
        }
    }
    Ok(worst)
}
