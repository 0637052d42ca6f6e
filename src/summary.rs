//! The model summary printed by `compile` and `inspect`.

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

/// `805306368` → `768.0 MiB`.
pub fn bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
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
