//! The op table, walked op by op: every op of `qgc_ir::OP_INFOS` must have example cases
//! (`qgc_ir::cases`), print and parse back to itself, survive the e-graph language's split/join,
//! have shape inference that agrees with the table (result count, in-place pairs of equal type),
//! an interpreter that evaluates it to results of the inferred types, and facts the other crates
//! read consistently (pointwise ops compile into elementwise loops, views are single-operand).
//! An op added with a fact missing fails here (or does not compile).

use qgc_codegen::host::{Binary, Unary};
use qgc_ir::attr::AttrValue;
use qgc_ir::cases::{cases, OpCase};
use qgc_ir::interp::{eval_op, Tensor};
use qgc_ir::{Arity, DType, Op, OpClass, Pointwise, Sharing, TensorType, View, OP_INFOS};
use qgc_passes::lang::{join, op_name, split};

fn by_op(all: &[OpCase], name: &str) -> Vec<OpCase> {
    all.iter().filter(|c| c.op.name() == name).cloned().collect()
}

/// Source ops, which have no cases of their own (they are every case's operands).
fn sources() -> Vec<Op> {
    let ty = TensorType::new(vec![qgc_ir::Dim::c(3), qgc_ir::Dim::sym(qgc_ir::Sym::S)], DType::I32);
    vec![
        Op::Input { name: "tokens".into(), ty: ty.clone() },
        Op::Weight { name: "model.layers.0.a \"quoted\" name".into(), ty },
    ]
}

#[test]
fn every_op_has_cases_and_its_facts_are_consistent() {
    let all = cases();
    let mut failures = Vec::new();
    for info in OP_INFOS {
        let name = info.name;
        let here = by_op(&all, name);
        if info.class == OpClass::Source {
            if !here.is_empty() {
                failures.push(format!("{name}: a source with cases"));
            }
            continue;
        }
        if here.is_empty() {
            failures.push(format!("{name}: no example case in qgc_ir::cases"));
            continue;
        }
        for c in &here {
            let tys: Vec<&TensorType> = c.operands.iter().map(|o| &o.ty).collect();
            let out = match c.op.infer(&tys) {
                Ok(o) => o,
                Err(e) => {
                    failures.push(format!("{}: infer: {e}", c.label));
                    continue;
                }
            };
            if out.len() != info.results {
                failures.push(format!("{}: {} results, the table says {}", c.label, out.len(), info.results));
            }
            if let Arity::Fixed(n) = info.arity {
                if n != c.operands.len() {
                    failures.push(format!("{}: arity", c.label));
                }
            }
            for &w in info.weights {
                if !c.operands.get(w).is_some_and(|o| o.weight) {
                    failures.push(format!("{}: operand {w} is a weight in the table, not in the case", c.label));
                }
            }
            for ip in info.in_place {
                let (Some(r), Some(o)) = (out.get(ip.result), tys.get(ip.operand)) else {
                    failures.push(format!("{}: in-place pair {ip:?} out of range", c.label));
                    continue;
                };
                let same = match ip.sharing {
                    // A broadcast operand never has the result's type; one that does may alias.
                    Sharing::Alias => r.dtype == o.dtype,
                    Sharing::Update => r == *o,
                    Sharing::Append { axis } => {
                        r.rank() == o.rank() && (0..r.rank()).all(|d| d == axis || r.shape[d] == o.shape[d])
                    }
                };
                if !same {
                    failures.push(format!("{}: in-place pair {ip:?}: {r} vs {o}", c.label));
                }
            }
        }
        let chain = here.iter().all(|c| match info.pointwise {
            Pointwise::Unary => Unary::of(&c.op).is_some_and(|u| u.op() == c.op),
            Pointwise::Binary => Binary::of(&c.op).is_some_and(|b| b.op() == c.op),
            Pointwise::No => Unary::of(&c.op).is_none() && Binary::of(&c.op).is_none(),
        });
        if !chain {
            failures.push(format!("{name}: pointwise {:?} disagrees with the compiled loops' ops", info.pointwise));
        }
        if info.view != View::No && info.arity != Arity::Fixed(1) {
            failures.push(format!("{name}: a view must have one operand"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_op_round_trips_through_text_and_the_egraph_language() {
    let all = cases();
    let mut failures = Vec::new();
    let mut ops: Vec<(Op, Vec<TensorType>)> = sources()
        .into_iter()
        .map(|op| {
            let ty = match &op {
                Op::Input { ty, .. } | Op::Weight { ty, .. } => ty.clone(),
                _ => unreachable!(),
            };
            (op, vec![ty])
        })
        .collect();
    for c in &all {
        let tys: Vec<&TensorType> = c.operands.iter().map(|o| &o.ty).collect();
        ops.push((c.op.clone(), c.op.infer(&tys).unwrap_or_default()));
    }
    // Attribute values at their edges: none and some, both flags, odd floats.
    ops.push((Op::GatedDeltaRule { chunk: None }, vec![]));
    ops.push((Op::Scale { by: -1.0e-38 }, vec![]));
    ops.push((Op::Rope { theta: 1.234_567_890_123e7, rotary_dim: 0 }, vec![]));
    for (op, results) in &ops {
        let text = format!("{} {}", op.name(), op.attr_text());
        match Op::parse(&text, results) {
            Ok(back) if back == *op => {}
            Ok(back) => failures.push(format!("text {text:?} reads back as {back:?}")),
            Err(e) => failures.push(format!("text {text:?}: {e}")),
        }
        let vals: Vec<AttrValue> = op.attrs().into_iter().map(|(_, v)| v).collect();
        if Op::from_attrs(op.name(), &vals).as_ref() != Some(op) {
            failures.push(format!("{}: from_attrs(attrs) differs", op.name()));
        }
        if op.class() == OpClass::Source {
            if split(op).is_some() || op_name(op.name()).is_some() {
                failures.push(format!("{}: a source in the e-graph language", op.name()));
            }
            continue;
        }
        match split(op) {
            Some((name, attrs)) if op_name(name) == Some(name) && join(name, &attrs).as_ref() == Some(op) => {}
            other => failures.push(format!("{}: split/join round trip failed: {other:?}", op.name())),
        }
    }
    for bad in ["nope", "rms_norm eps=1e-6 zero_centred extra", "slice axis=1 start=2", "scale by=x"] {
        if Op::parse(bad, &[]).is_ok() {
            failures.push(format!("{bad:?} parsed"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_interpreter_defines_every_op_and_every_op_has_a_kernel_binding() {
    let mut failures = Vec::new();
    for c in cases() {
        let tys: Vec<&TensorType> = c.operands.iter().map(|o| &o.ty).collect();
        let out = c.op.infer(&tys).unwrap();
        for (i, bind) in c.binds.iter().enumerate() {
            let ins = c.inputs(bind, i as u64);
            let refs: Vec<&Tensor> = ins.iter().collect();
            match eval_op(&c.op, &refs, bind) {
                Ok(res) => {
                    let fits = res.len() == out.len() && res.iter().zip(&out).all(|(t, ty)| t.fits(ty, bind));
                    let finite = res.iter().all(|t| t.as_f32().is_none_or(|v| v.iter().all(|x| x.is_finite())));
                    if !fits || !finite {
                        failures.push(format!("{} at {bind:?}: results do not fit {out:?} or are not finite", c.label));
                    }
                }
                Err(e) => failures.push(format!("{} at {bind:?}: {e}", c.label)),
            }
        }
        let Ok(g) = c.graph() else {
            failures.push(format!("{}: its one-node graph does not verify", c.label));
            continue;
        };
        // Kernel bound: every op has a binding; the interpreter fallback only where chosen.
        let node = g.nodes.iter().position(|n| n.name == "node").expect("the case's node");
        match qgc_codegen::binding::bind(&g, node) {
            Ok(k) if k.is_fallback() != ["softmax", "top_k", "renormalize"].contains(&c.op.name()) => {
                failures.push(format!("{}: bound to {k}", c.label))
            }
            Ok(_) => {}
            Err(e) => failures.push(format!("{}: {e}", c.label)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
