//! Load time: the values of `load:` weights (`qgc_codegen::hoist`), computed once from their
//! load graph by [`eval_load`] (movement — reshape, concat, slice — keeps bf16 as bf16, anything
//! else is evaluated in f32 by the interpreter's `eval_op`), and the per-expert gate/up stacks.

use crate::weights::{HostTensor, RawWeights};
use qgc_ir::interp::{eval_op, InterpError, Tensor};
use qgc_ir::{Bindings, Graph, Op};
use std::borrow::Cow;

/// Row-major concatenation of `parts` (each `shape`) along `axis` into `out` (load time, and
/// the `concat` shim on 4-byte words).
fn concat_into<T: Copy>(parts: &[(&[usize], &[T])], axis: usize, out: &mut [T]) {
    let outer: usize = parts[0].0[..axis].iter().product();
    let mut at = 0;
    for o in 0..outer {
        for (shape, data) in parts {
            let inner: usize = shape[axis..].iter().product();
            out[at..at + inner].copy_from_slice(&data[o * inner..][..inner]);
            at += inner;
        }
    }
}

fn concat<T: Copy + Default>(parts: &[(&[usize], &[T])], axis: usize) -> Vec<T> {
    let mut out = vec![T::default(); parts.iter().map(|(_, d)| d.len()).sum()];
    concat_into(parts, axis, &mut out);
    out
}

/// Row-major slice `start..start+len` along `axis` of `data` (`shape`) into `out`.
fn slice_into<T: Copy>(shape: &[usize], data: &[T], axis: usize, start: usize, len: usize, out: &mut [T]) {
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    for o in 0..outer {
        out[o * len * inner..][..len * inner]
            .copy_from_slice(&data[(o * shape[axis] + start) * inner..][..len * inner]);
    }
}

fn slice<T: Copy + Default>(shape: &[usize], data: &[T], axis: usize, start: usize, len: usize) -> Vec<T> {
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let mut out = vec![T::default(); outer * len * inner];
    slice_into(shape, data, axis, start, len, &mut out);
    out
}

fn bits<'a>(t: &'a HostTensor) -> Option<&'a [u16]> {
    match t {
        HostTensor::Bf16(v) => Some(v),
        _ => None,
    }
}

/// The value of node `node` of `g` (a weight or a weight-only node with one result), read from
/// `weights`. Values are not cached: the caller binds each `load:` weight once.
pub fn eval_load<'w>(g: &Graph, node: usize, weights: &'w dyn RawWeights) -> Result<HostTensor<'w>, InterpError> {
    let n = &g.nodes[node];
    let bind = Bindings { b: 1, s: 1, p: 0 };
    let shape = n.outputs[0].eval(&bind);
    if let Op::Weight { name, .. } = &n.op {
        return weights.raw(name, &shape);
    }
    let mut ins = Vec::with_capacity(n.inputs.len());
    for v in &n.inputs {
        ins.push(eval_load(g, v.node, weights)?);
    }
    let shapes: Vec<Vec<usize>> = n.inputs.iter().map(|v| g.ty(*v).eval(&bind)).collect();
    let all_bf16 = ins.iter().all(HostTensor::is_bf16);
    Ok(match &n.op {
        Op::Reshape { .. } => ins.swap_remove(0),
        Op::Concat { axis } if all_bf16 => {
            let parts: Vec<(&[usize], &[u16])> =
                shapes.iter().zip(&ins).map(|(s, t)| (s.as_slice(), bits(t).unwrap_or_default())).collect();
            HostTensor::Bf16(Cow::Owned(concat(&parts, *axis)))
        }
        Op::Slice { axis, start, len } if all_bf16 => {
            HostTensor::Bf16(Cow::Owned(slice(&shapes[0], bits(&ins[0]).unwrap_or_default(), *axis, *start, *len)))
        }
        Op::Concat { axis } if ins.iter().all(|t| t.as_f32().is_some()) => {
            let parts: Vec<(&[usize], &[f32])> =
                shapes.iter().zip(&ins).map(|(s, t)| (s.as_slice(), t.as_f32().unwrap_or_default())).collect();
            HostTensor::F32(Cow::Owned(concat(&parts, *axis)))
        }
        op => {
            let ts: Vec<Tensor> = shapes.iter().zip(&ins).map(|(s, t)| Tensor::f32(s.clone(), t.to_f32())).collect();
            let refs: Vec<&Tensor> = ts.iter().collect();
            let mut out =
                eval_op(op, &refs, &bind).map_err(|message| InterpError::Runtime { node: n.name.clone(), message })?;
            let t = out.swap_remove(0);
            HostTensor::F32(Cow::Owned(t.as_f32().map(<[f32]>::to_vec).unwrap_or_default()))
        }
    })
}

/// `gate`, `up: [E, I, H]` stacked per expert into `[E, 2I, H]` (each expert's I gate rows then
/// its I up rows, the layout `moe::moe_experts` reads), in bf16 when both are bf16.
pub fn stack_experts<'w>(gate: &HostTensor<'w>, up: &HostTensor<'w>, experts: usize) -> HostTensor<'w> {
    fn stack<T: Copy + Default>(g: &[T], u: &[T], experts: usize) -> Vec<T> {
        let e = experts.max(1);
        concat(&[(&[e, g.len() / e][..], g), (&[e, u.len() / e][..], u)], 1)
    }
    match (bits(gate), bits(up), gate.as_f32(), up.as_f32()) {
        (Some(g), Some(u), _, _) => HostTensor::Bf16(Cow::Owned(stack(g, u, experts))),
        (_, _, Some(g), Some(u)) => HostTensor::F32(Cow::Owned(stack(g, u, experts))),
        _ => HostTensor::F32(Cow::Owned(stack(&gate.to_f32(), &up.to_f32(), experts))),
    }
}
