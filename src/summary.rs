//! The model summary printed by `compile` and `inspect`.

use qgc_codegen::compile::CompiledProgram;
use qgc_codegen::host::Step;
use qgc_ir::spec::{FfnSpec, MixerSpec};
use qgc_ir::{ModelSpec, Program};
use std::fmt::Write;

/// `79674391296` → `79,674,391,296`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `805306368` → `768.0 MiB` (the budget's format, so sizes read alike everywhere).
pub fn bytes(n: u64) -> String {
    qgc_runtime::budget::human(n)
}

/// One letter per layer: `L` Gated DeltaNet, `A` gated attention; lower case = dense FFN.
fn layer_letter(m: &MixerSpec, f: &FfnSpec) -> char {
    let c = match m {
        MixerSpec::GatedDeltanet(_) => 'L',
        MixerSpec::GatedAttention(_) => 'A',
    };
    match f {
        FfnSpec::Moe(_) => c,
        FfnSpec::Dense(_) => c.to_ascii_lowercase(),
    }
}

/// The layer layout as a small picture: `12 × LLLA`, or the letters with a repeated tail folded.
fn layout(spec: &ModelSpec) -> String {
    let s: Vec<char> = spec.layers.iter().map(|l| layer_letter(&l.mixer, &l.ffn)).collect();
    for start in 0..s.len() {
        let rest = &s[start..];
        for p in 1..=rest.len() / 2 {
            if rest.len().is_multiple_of(p) && rest.chunks(p).all(|c| c == &rest[..p]) {
                let head: String = s[..start].iter().collect();
                let period: String = rest[..p].iter().collect();
                let sep = if head.is_empty() { "" } else { " + " };
                return format!("{head}{sep}{} × {period}", rest.len() / p);
            }
        }
    }
    s.iter().collect()
}

/// The summary block.
pub fn render(spec: &ModelSpec, program: &Program, context: u64) -> String {
    let mut o = String::new();
    let (mut gdn, mut attn, mut moe, mut dense) = (0, 0, 0, 0);
    for l in &spec.layers {
        match l.mixer {
            MixerSpec::GatedDeltanet(_) => gdn += 1,
            MixerSpec::GatedAttention(_) => attn += 1,
        }
        match l.ffn {
            FfnSpec::Moe(_) => moe += 1,
            FfnSpec::Dense(_) => dense += 1,
        }
    }
    let p = spec.param_counts();
    let _ = writeln!(o, "model      {}", spec.name);
    let _ = writeln!(
        o,
        "layers     {}: {gdn} gated_deltanet + {attn} gated_attention; {moe} moe + {dense} dense",
        spec.num_layers()
    );
    let _ = writeln!(o, "layout     {}   (L gated_deltanet, A gated_attention; lower case: dense FFN)", layout(spec));
    let _ = writeln!(o, "params     {} total without MTP ({:.2} B)", thousands(p.total), p.total as f64 / 1e9);
    if spec.mtp.is_some() {
        let _ = writeln!(o, "           {} in the MTP block", thousands(p.mtp));
    }
    let _ = writeln!(
        o,
        "active     {} non-embedding per token ({:.2} B); {:.2} B with embeddings",
        thousands(p.active_non_embedding),
        p.active_non_embedding as f64 / 1e9,
        (p.active_non_embedding + p.embedding) as f64 / 1e9
    );
    let b = spec.state_bytes(context, 2);
    let _ = writeln!(
        o,
        "state      {} per sequence at {} tokens: KV cache {} (bf16) + conv {} (bf16) + recurrent {} (f32)",
        bytes(b.total()),
        thousands(context),
        bytes(b.kv_cache),
        bytes(b.conv),
        bytes(b.recurrent)
    );
    let _ = writeln!(
        o,
        "ir         prefill {} nodes, decode {} nodes, {} state tensors",
        program.prefill.nodes.len(),
        program.decode.nodes.len(),
        program.state.len()
    );
    o
}

/// Per entry point of a compiled program: kernel calls, compiled loops, nodes on the
/// interpreter fallback, results in place, state updated in its own buffer, and the arena at
/// the entry point's representative binding.
pub struct EntryStats {
    /// Entry point name.
    pub name: &'static str,
    /// Kernel calls.
    pub kernels: usize,
    /// Compiled elementwise loop calls.
    pub loops: usize,
    /// Nodes the interpreter fallback runs.
    pub fallback: usize,
    /// Results written over an operand's bytes.
    pub in_place: usize,
    /// State outputs sharing their input's buffer.
    pub state_in_place: usize,
    /// Arena bytes at `binding`.
    pub arena: u64,
    /// `B=..,S=..,P=..`.
    pub binding: String,
}

/// The [`EntryStats`] of every entry point.
pub fn stats(c: &CompiledProgram) -> Vec<EntryStats> {
    (c.entries.iter())
        .map(|e| {
            let s = &e.schedule;
            let b = qgc_passes::memplan::representative(&e.graph);
            EntryStats {
                name: e.entry.name(),
                kernels: s.steps.iter().filter(|x| matches!(x, Step::Kernel { .. })).count(),
                loops: s.steps.iter().filter(|x| matches!(x, Step::Chain { .. })).count(),
                fallback: s.fallbacks().len(),
                in_place: s.in_place.len() - s.aliases.len(),
                state_in_place: s.aliases.len(),
                arena: s.arena_bytes.eval(&b),
                binding: format!("B={},S={},P={}", b.b, b.s, b.p),
            }
        })
        .collect()
}

/// The compiled program's block of the summary.
pub fn compiled(c: &CompiledProgram) -> String {
    let mut o = String::new();
    for (i, e) in stats(c).iter().enumerate() {
        let _ = writeln!(
            o,
            "{} {:<14} {} kernels + {} loops, {} on the interpreter fallback; {} results in place, {} state tensors \
             updated in their buffer; arena {} at {}",
            if i == 0 { "compiled  " } else { "          " },
            e.name,
            e.kernels,
            e.loops,
            e.fallback,
            e.in_place,
            e.state_in_place,
            bytes(e.arena),
            e.binding
        );
    }
    o
}

/// `qgc inspect --json`: the summary as one JSON object.
pub fn json(spec: &ModelSpec, c: &CompiledProgram, context: u64) -> serde_json::Value {
    let p = spec.param_counts();
    let b = spec.state_bytes(context, 2);
    let st = stats(c);
    let fallback: serde_json::Map<String, serde_json::Value> =
        st.iter().map(|e| (e.name.to_string(), e.fallback.into())).collect();
    let entries: serde_json::Map<String, serde_json::Value> = st
        .iter()
        .map(|e| {
            let v = serde_json::json!({
                "kernels": e.kernels,
                "loops": e.loops,
                "fallback_nodes": e.fallback,
                "in_place": e.in_place,
                "state_in_place": e.state_in_place,
                "arena_bytes": e.arena,
                "arena_binding": e.binding,
            });
            (e.name.to_string(), v)
        })
        .collect();
    serde_json::json!({
        "model": spec.name,
        "layers": spec.num_layers(),
        "params": p.total,
        "mtp_params": p.mtp,
        "active_params": p.active_non_embedding,
        "active_params_with_embeddings": p.active_non_embedding + p.embedding,
        "context": context,
        "state_bytes_per_sequence": b.total(),
        "state_bytes": {"kv_cache_bf16": b.kv_cache, "conv_bf16": b.conv, "recurrent_f32": b.recurrent},
        "fallback_nodes": fallback,
        "entries": entries,
    })
}
