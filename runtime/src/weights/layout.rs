//! Where a logical tensor lives in a checkpoint: shared by [`super::check`] (headers only) and
//! [`super::Weights`] (data), so both accept and reject exactly the same layouts.

use super::check::{Problem, ProblemKind};
use super::checkpoint::{Checkpoint, StoredTensor};
use super::SUPPORTED_DTYPES;
use qgc_ir::spec::TensorRole;

/// How to assemble a logical tensor from stored ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Stored whole under one name (plain tensors; fused `down_proj [E, H, I]`).
    Whole(String),
    /// One stored tensor per expert, stacked along a new leading axis.
    PerExpert(Vec<String>),
    /// Rows `[first, first + rows)` of every expert's slab of a fused `gate_up_proj [E, 2·rows, H]`.
    FusedRows {
        /// Stored name of the fused tensor.
        name: String,
        /// First row within each expert's `2·rows` rows: 0 for gate, `rows` for up.
        first: usize,
        /// Rows per expert (I).
        rows: usize,
    },
}

/// The outcome of looking one logical tensor up.
#[derive(Debug, Default)]
pub(crate) struct Resolved {
    /// How to assemble it; `None` when `problems` says why not.
    pub layout: Option<Layout>,
    /// Stored names it uses (present ones only), so that they are not reported as unexpected.
    pub claimed: Vec<String>,
    /// Everything wrong with it, by stored name.
    pub problems: Vec<Problem>,
}

impl Resolved {
    /// Records a present stored tensor and checks its shape and dtype.
    fn claim(&mut self, name: &str, t: &StoredTensor, expected: &[usize]) {
        self.claimed.push(name.to_string());
        if t.shape != expected {
            let kind = ProblemKind::MisShaped { expected: expected.to_vec(), found: t.shape.clone() };
            self.problems.push(Problem { tensor: name.to_string(), kind });
        }
        if !SUPPORTED_DTYPES.contains(&t.dtype) {
            let kind = ProblemKind::Dtype { dtype: t.dtype.to_string(), shape: t.shape.clone() };
            self.problems.push(Problem { tensor: name.to_string(), kind });
        }
    }

    fn missing(&mut self, name: &str, expected: &[usize], note: Option<String>) {
        let kind = ProblemKind::Missing { expected: expected.to_vec(), note };
        self.problems.push(Problem { tensor: name.to_string(), kind });
    }

    fn finish(mut self, layout: Layout) -> Self {
        if self.problems.is_empty() {
            self.layout = Some(layout);
        }
        self
    }
}

/// The role of a logical tensor named without a spec: expert stacks are recognised by a 3-D
/// `shape` and a name `….experts.{gate,up,down}_proj` that is not itself stored.
pub(crate) fn infer_role(ckpt: &Checkpoint, name: &str, shape: &[usize]) -> TensorRole {
    if shape.len() != 3 || ckpt.get(name).is_some() {
        return TensorRole::Plain;
    }
    match name.rsplit_once('.') {
        Some((p, leaf)) if p == "experts" || p.ends_with(".experts") => match leaf {
            "gate_proj" => TensorRole::ExpertsGate,
            "up_proj" => TensorRole::ExpertsUp,
            "down_proj" => TensorRole::ExpertsDown,
            _ => TensorRole::Plain,
        },
        _ => TensorRole::Plain,
    }
}

/// Finds logical tensor `name` (role `role`, logical shape `shape`) in `ckpt`.
pub(crate) fn resolve(ckpt: &Checkpoint, name: &str, role: TensorRole, shape: &[usize]) -> Resolved {
    let mut r = Resolved::default();
    let (prefix, &[e, rows, cols]) = (name.rsplit_once('.').map_or("", |p| p.0), shape) else {
        return resolve_plain(ckpt, name, shape);
    };
    let (leaf, fused) = match role {
        TensorRole::Plain => return resolve_plain(ckpt, name, shape),
        TensorRole::ExpertsGate => ("gate_proj", format!("{prefix}.gate_up_proj")),
        TensorRole::ExpertsUp => ("up_proj", format!("{prefix}.gate_up_proj")),
        TensorRole::ExpertsDown => ("down_proj", format!("{prefix}.down_proj")),
    };
    if let Some(t) = ckpt.get(&fused) {
        return if role == TensorRole::ExpertsDown {
            r.claim(&fused, t, shape);
            r.finish(Layout::Whole(fused))
        } else {
            r.claim(&fused, t, &[e, 2 * rows, cols]);
            let first = if role == TensorRole::ExpertsUp { rows } else { 0 };
            r.finish(Layout::FusedRows { name: fused, first, rows })
        };
    }
    let names: Vec<String> = (0..e).map(|i| format!("{prefix}.{i}.{leaf}.weight")).collect();
    let present = names.iter().filter(|n| ckpt.get(n).is_some()).count();
    if present == 0 && e > 0 {
        r.missing(name, shape, Some(alternatives(prefix, leaf, shape, &fused)));
        return r;
    }
    for n in &names {
        match ckpt.get(n) {
            Some(t) => r.claim(n, t, &[rows, cols]),
            None => r.missing(n, &[rows, cols], None),
        }
    }
    r.finish(Layout::PerExpert(names))
}

fn resolve_plain(ckpt: &Checkpoint, name: &str, shape: &[usize]) -> Resolved {
    let mut r = Resolved::default();
    match ckpt.get(name) {
        Some(t) => r.claim(name, t, shape),
        None => r.missing(name, shape, None),
    }
    r.finish(Layout::Whole(name.to_string()))
}

/// The two ways an expert stack may be stored, for a "missing" line.
fn alternatives(prefix: &str, leaf: &str, shape: &[usize], fused: &str) -> String {
    let (e, rows, cols) = (shape[0], shape[1], shape[2]);
    let fused = if leaf == "down_proj" {
        format!("fused {fused} {shape:?}")
    } else {
        format!("fused {fused} {:?}", [e, 2 * rows, cols])
    };
    format!("per expert {prefix}.{{0..{}}}.{leaf}.weight {:?}, or {fused}", e - 1, [rows, cols])
}
