//! Checking a checkpoint against a spec from the headers alone: every missing, unexpected,
//! mis-shaped or unsupported tensor, reported together.

use super::checkpoint::Checkpoint;
use super::layout::resolve;
use super::WeightsError;
use qgc_ir::ModelSpec;
use std::collections::BTreeSet;
use std::fmt;

/// Problem lines shown before "... and N more".
const MAX_LINES: usize = 50;

/// What is wrong with one stored (or expected) tensor. Variants are in report order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProblemKind {
    /// The spec needs it; the checkpoint does not have it.
    Missing {
        /// Shape the spec expects.
        expected: Vec<usize>,
        /// For expert stacks: the layouts that would satisfy it.
        note: Option<String>,
    },
    /// The checkpoint has it; nothing in the spec uses it.
    Unexpected {
        /// Stored dtype (`F32`, ...).
        dtype: String,
        /// Stored shape.
        found: Vec<usize>,
    },
    /// Present with another shape.
    MisShaped {
        /// Shape the spec expects.
        expected: Vec<usize>,
        /// Stored shape.
        found: Vec<usize>,
    },
    /// Present in a dtype other than F32, BF16, F16.
    Dtype {
        /// Stored dtype (`I64`, ...).
        dtype: String,
        /// Stored shape.
        shape: Vec<usize>,
    },
}

/// One problem, by tensor name (the stored name, e.g. `model.layers.0.mlp.experts.3.up_proj.weight`,
/// or the logical name of an expert stack of which nothing is stored).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// Tensor name.
    pub tensor: String,
    /// What is wrong.
    pub kind: ProblemKind,
}

impl Problem {
    /// The problem without its tensor name: `mis-shaped: expected [64], found [65]`.
    pub fn detail(&self) -> String {
        match &self.kind {
            ProblemKind::Missing { expected, note: None } => format!("missing: expected {expected:?}"),
            ProblemKind::Missing { expected, note: Some(n) } => format!("missing: expected {expected:?} ({n})"),
            ProblemKind::Unexpected { dtype, found } => {
                format!("unexpected: found {dtype} {found:?}")
            }
            ProblemKind::MisShaped { expected, found } => {
                format!("mis-shaped: expected {expected:?}, found {found:?}")
            }
            ProblemKind::Dtype { dtype, shape } => {
                format!("unsupported dtype: found {dtype} {shape:?}, supported F32, BF16, F16")
            }
        }
    }
}

impl fmt::Display for Problem {
    /// `model.norm.weight: mis-shaped: expected [64], found [65]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.tensor, self.detail())
    }
}

/// Every problem [`check`] found in one checkpoint, sorted by tensor name (then kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// The checkpoint path, as shown.
    pub checkpoint: String,
    /// The problems; empty when the checkpoint matches.
    pub problems: Vec<Problem>,
}

impl CheckReport {
    /// Whether the checkpoint matches the spec.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// `2 missing, 1 unexpected, 1 mis-shaped, 1 unsupported dtype` (kinds with a zero count left out).
    pub fn summary(&self) -> String {
        let mut counts = [0usize; 4];
        for p in &self.problems {
            counts[match p.kind {
                ProblemKind::Missing { .. } => 0,
                ProblemKind::Unexpected { .. } => 1,
                ProblemKind::MisShaped { .. } => 2,
                ProblemKind::Dtype { .. } => 3,
            }] += 1;
        }
        let labels = ["missing", "unexpected", "mis-shaped", "unsupported dtype"];
        let parts: Vec<String> =
            counts.iter().zip(labels).filter(|(c, _)| **c > 0).map(|(c, l)| format!("{c} {l}")).collect();
        parts.join(", ")
    }
}

impl fmt::Display for CheckReport {
    /// First line `checkpoint DIR does not match the spec: SUMMARY`, then one indented line per
    /// problem, at most 50, then `  ... and N more`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.problems.is_empty() {
            return write!(f, "checkpoint {} matches the spec", self.checkpoint);
        }
        write!(f, "checkpoint {} does not match the spec: {}", self.checkpoint, self.summary())?;
        for p in self.problems.iter().take(MAX_LINES) {
            write!(f, "\n  {p}")?;
        }
        if self.problems.len() > MAX_LINES {
            write!(f, "\n  ... and {} more", self.problems.len() - MAX_LINES)?;
        }
        Ok(())
    }
}

/// Checks `ckpt` against `spec.tensors()`; `Err(WeightsError::Mismatch)` lists every problem.
pub fn check(spec: &ModelSpec, ckpt: &Checkpoint) -> Result<(), WeightsError> {
    let report = check_report(spec, ckpt);
    if report.is_ok() {
        Ok(())
    } else {
        Err(WeightsError::Mismatch(report))
    }
}

/// The full comparison behind [`check`]. Ignored: `mtp.*` when the spec has no MTP block,
/// `lm_head.weight` when the spec ties the embeddings, and the empty shared expert HF writes for
/// `shared_expert_intermediate_size: 0` (see [`empty_shared_expert`]).
pub fn check_report(spec: &ModelSpec, ckpt: &Checkpoint) -> CheckReport {
    let mut problems = Vec::new();
    let mut claimed = BTreeSet::new();
    for decl in spec.tensors() {
        let r = resolve(ckpt, &decl.name, decl.role, &decl.shape);
        claimed.extend(r.claimed);
        problems.extend(r.problems);
    }
    for (name, t) in ckpt.iter() {
        let ignored = (spec.mtp.is_none() && name.starts_with("mtp."))
            || (spec.tie_word_embeddings && name == "lm_head.weight")
            || empty_shared_expert(ckpt, name);
        if !ignored && !claimed.contains(name) {
            let kind = ProblemKind::Unexpected { dtype: t.dtype.to_string(), found: t.shape.clone() };
            problems.push(Problem { tensor: name.to_string(), kind });
        }
    }
    problems.sort();
    // gate and up may both report the same fused gate_up_proj problem.
    problems.dedup();
    CheckReport { checkpoint: ckpt.path().display().to_string(), problems }
}

/// True for the tensors HF saves for a zero-width shared expert (`shared_expert_intermediate_size:
/// 0`): the `[0, H]` / `[H, 0]` projections and the `[1, H]` gate whose sigmoid scales their
/// exactly-zero output (also when the projections are left out altogether). They contribute
/// nothing, and a spec says so by having no shared expert. A gate beside real projections is
/// not ignored: the spec then disagrees with the checkpoint.
fn empty_shared_expert(ckpt: &Checkpoint, name: &str) -> bool {
    let Some((mlp, rest)) = name.rsplit_once(".mlp.") else { return false };
    let empty = |n: &str| ckpt.get(n).is_some_and(|t| t.shape.iter().product::<usize>() == 0);
    match rest {
        "shared_expert.gate_proj.weight" | "shared_expert.up_proj.weight" | "shared_expert.down_proj.weight" => {
            empty(name)
        }
        "shared_expert_gate.weight" => {
            let sibling = format!("{mlp}.mlp.shared_expert.gate_proj.weight");
            ckpt.get(&sibling).is_none() || empty(&sibling)
        }
        _ => false,
    }
}
