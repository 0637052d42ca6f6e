//! Stamping: rebuilds a graph from its regions, each replaced by its kind's [`Template`] with
//! the region's own leaves and layer (names and origins moved from the representative's layer
//! to the region's, [`restamp`]).

use crate::region::{restamp, Io, Leaf, TRef, Template};
use qgc_ir::{Graph, IrError, Layer, Op, Value};
use std::collections::BTreeMap;

/// Builds the new graph: regions in order, sources copied just before their first use, inputs
/// that nothing reads at the end (they stay part of the interface).
/// `templates[r]` was made from the region of layer `reps[r]` (the representative of region
/// `r`'s kind).
pub fn stamp(g: &Graph, regions: &[Io], templates: &[(&Template, Option<Layer>)]) -> Result<Graph, IrError> {
    let mut out = Graph { nodes: Vec::new(), outputs: Vec::new(), ..g.clone() };
    let mut sources: BTreeMap<usize, Value> = BTreeMap::new();
    let mut vals: BTreeMap<Value, Value> = BTreeMap::new();
    for (io, &(t, rep)) in regions.iter().zip(templates) {
        let mut made: Vec<Vec<Value>> = Vec::with_capacity(t.nodes.len());
        let mut at = |r: &TRef, made: &Vec<Vec<Value>>, out: &mut Graph| match *r {
            TRef::Node(j, i) => Ok(made[j][i]),
            TRef::Leaf(k) => match io.leaves[k] {
                Leaf::Source(s) => source(g, out, &mut sources, s),
                Leaf::Ext(v) => Ok(vals[&v]),
            },
        };
        for n in &t.nodes {
            let ins = n.inputs.iter().map(|r| at(r, &made, &mut out)).collect::<Result<Vec<Value>, _>>()?;
            let (name, origin) = restamp(&n.name, n.origin, rep, io);
            made.push(out.add_at(origin, name, n.op.clone(), &ins)?);
        }
        let outs = t.outs.iter().map(|r| at(r, &made, &mut out)).collect::<Result<Vec<Value>, _>>()?;
        vals.extend(io.live_out.iter().copied().zip(outs));
    }
    for (name, v) in &g.outputs {
        let nv = match vals.get(v) {
            Some(nv) => *nv,
            None => source(g, &mut out, &mut sources, v.node)?,
        };
        out.outputs.push((name.clone(), nv));
    }
    for (i, n) in g.nodes.iter().enumerate() {
        if matches!(n.op, Op::Input { .. }) {
            source(g, &mut out, &mut sources, i)?;
        }
    }
    Ok(out)
}

/// The new value of source node `s`, copying it on first use.
fn source(g: &Graph, out: &mut Graph, seen: &mut BTreeMap<usize, Value>, s: usize) -> Result<Value, IrError> {
    if let Some(v) = seen.get(&s) {
        return Ok(*v);
    }
    let n = &g.nodes[s];
    let v = out.add_at(n.origin, n.name.clone(), n.op.clone(), &[])?[0];
    seen.insert(s, v);
    Ok(v)
}
