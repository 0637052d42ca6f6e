//! The MTP draft entry point (qwen3-next.md §6) against an independent HF reference: the
//! `sharded-fused-mtp` fixture's `mtp_logits`, made by `make_fixtures.py` from HF's own
//! `Qwen3NextDecoderLayer` / `Qwen3NextRMSNorm` modules loaded with the `mtp.*` weights. Row i is
//! the draft from (h_i, x_{i+1}) at position i, h_i the target's hidden state after `model.norm`.

mod common;

use common::{fixture, reference, rel_err};
use qgc_codegen::Artifact;
use qgc_ir::LowerOptions;
use qgc_runtime::weights::{self, Checkpoint, Weights};
use qgc_runtime::Tensor;
use qgc_runtime::{open_model, Model, Session};
use safetensors::SafeTensors;

const TOL: f64 = 1e-4;

/// `mtp_logits` f32 `[T-1, V]` of the MTP fixture's reference.safetensors.
fn mtp_reference() -> Vec<f32> {
    let bytes = std::fs::read(fixture("sharded-fused-mtp").join("reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("mtp_logits").expect("reference.safetensors has mtp_logits");
    t.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

fn open(name: &str) -> (Model, Weights) {
    let dir = fixture(name);
    let m = open_model(&dir, &LowerOptions::default()).unwrap();
    let ckpt = Checkpoint::open(&dir).unwrap();
    weights::check(&m.spec, &ckpt).unwrap();
    (m, Weights::new(ckpt))
}

/// Rows `from..to` of a `[1, S, H]` tensor, as `[1, to-from, H]`.
fn rows(t: &Tensor, from: usize, to: usize) -> Tensor {
    let h = t.shape[2];
    Tensor::f32(vec![1, to - from, h], t.as_f32().unwrap()[from * h..to * h].to_vec())
}

#[test]
fn mtp_draft_matches_hf() {
    let r = reference(&fixture("sharded-fused-mtp"));
    let want = mtp_reference();
    let (m, w) = open("sharded-fused-mtp");
    let (t, h) = (r.tokens.len(), m.spec.hidden_size);
    assert_eq!(want.len(), (t - 1) * r.vocab);
    let new = || Session::new(m.program.clone(), &w, m.spec.vocab_size, m.spec.max_position_embeddings, 1);

    // Target prefill over all T tokens; hidden h_0..h_{T-2} with the next tokens x_1..x_{T-1}.
    let mut s = new();
    s.prefill(std::slice::from_ref(&r.tokens)).unwrap();
    let hidden = s.hidden().expect("a model with MTP returns hidden").clone();
    assert_eq!(hidden.shape, vec![1, t, h]);
    let next = &r.tokens[1..];

    // One multi-token MTP call.
    let (logits, d) = s.mtp_draft(&rows(&hidden, 0, t - 1), &[next.to_vec()]).unwrap();
    assert_eq!(logits.shape, vec![1, t - 1, r.vocab]);
    assert_eq!(d.shape, vec![1, t - 1, h]);
    assert_eq!(s.mtp_position(), t - 1);
    let e = rel_err(logits.as_f32().unwrap(), &want);
    eprintln!("mtp: one call over {}: rel {e:.2e}", t - 1);
    assert!(e <= TOL, "one call: rel error {e:.3e} > {TOL:e}");

    // Token by token through the MTP KV cache, and a split 10 + rest.
    for split in [vec![1; t - 1], vec![10, t - 11]] {
        let mut s = new();
        s.prefill(std::slice::from_ref(&r.tokens)).unwrap();
        let (mut out, mut at) = (Vec::new(), 0);
        for n in &split {
            let (l, _) = s.mtp_draft(&rows(&hidden, at, at + n), &[next[at..at + n].to_vec()]).unwrap();
            out.extend_from_slice(l.as_f32().unwrap());
            at += n;
        }
        let e = rel_err(&out, &want);
        eprintln!("mtp: calls of {:?}: rel {e:.2e}", &split[..split.len().min(2)]);
        assert!(e <= TOL, "calls of {split:?}: rel error {e:.3e} > {TOL:e}");
    }
}

/// The speculative-decoding order: target decode of x_i gives h_i, then the MTP drafts from
/// (h_i, x_{i+1}); the target hidden comes from the decode entry point here.
#[test]
fn mtp_draft_interleaved_with_target_decode() {
    let r = reference(&fixture("sharded-fused-mtp"));
    let want = mtp_reference();
    let (m, w) = open("sharded-fused-mtp");
    let mut s = Session::new(m.program, &w, m.spec.vocab_size, m.spec.max_position_embeddings, 1);
    s.prefill(&[vec![r.tokens[0]]]).unwrap();
    let mut out = Vec::new();
    for i in 0..r.tokens.len() - 1 {
        let h = s.hidden().unwrap().clone();
        assert_eq!(h.shape[1], 1);
        let (l, _) = s.mtp_draft(&h, &[vec![r.tokens[i + 1]]]).unwrap();
        out.extend_from_slice(l.as_f32().unwrap());
        s.decode(&[r.tokens[i + 1]]).unwrap();
    }
    assert_eq!(s.mtp_position(), r.tokens.len() - 1);
    let e = rel_err(&out, &want);
    eprintln!("mtp: interleaved with target decode: rel {e:.2e}");
    assert!(e <= TOL, "rel error {e:.3e} > {TOL:e}");
}

/// A bad MTP call is an error and leaves the MTP state as it was; `reset` clears it.
#[test]
fn mtp_draft_errors_keep_state() {
    let r = reference(&fixture("sharded-fused-mtp"));
    let (m, w) = open("sharded-fused-mtp");
    let mut s = Session::new(m.program, &w, m.spec.vocab_size, m.spec.max_position_embeddings, 1);
    s.prefill(&[r.tokens[..4].to_vec()]).unwrap();
    let hidden = s.hidden().unwrap().clone();
    s.mtp_draft(&rows(&hidden, 0, 2), &[r.tokens[1..3].to_vec()]).unwrap();
    let before = s.mtp_state().unwrap();
    assert!(s.mtp_draft(&hidden, &[r.tokens[1..3].to_vec()]).is_err(), "hidden of 4 rows for 2 tokens");
    assert!(s.mtp_draft(&rows(&hidden, 2, 3), &[vec![-1]]).is_err(), "token outside the vocabulary");
    assert_eq!(s.mtp_position(), 2);
    assert_eq!(s.mtp_state().unwrap(), before);
    s.reset();
    assert_eq!(s.mtp_position(), 0);
    assert!(s.hidden().is_none());
    assert!(s.mtp_state().unwrap().values().all(|t| t.shape[2] == 0));
}

#[test]
fn program_layout_with_and_without_mtp() {
    let (m, w) = open("sharded-fused-mtp");
    let p = &m.program;
    let mtp = p.mtp.as_ref().expect("mtp entry point");
    let names: Vec<&str> = p.mtp_state.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["state.mtp0.k", "state.mtp0.v"]);
    assert!(p.state.iter().all(|d| !d.name.contains("mtp")));
    for g in [&p.prefill, &p.decode, mtp] {
        let outs: Vec<&str> = g.outputs.iter().take(2).map(|(n, _)| n.as_str()).collect();
        assert_eq!(outs, ["logits", "hidden"], "{}", g.name);
    }
    // The artifact carries the mtp entry point and its state.
    let (compiled, _) = qgc_codegen::compile::compile_program(&m.program, &mut |_, _| {}).unwrap();
    assert!(compiled.entry(qgc_codegen::compile::Entry::Mtp).is_some() && compiled.mtp_state == m.program.mtp_state);
    let art = Artifact::new(m.spec.clone(), m.options, m.program.clone(), compiled);
    let back = Artifact::from_bytes(&art.to_bytes(), "mem").unwrap();
    assert_eq!((&back.program, &back.compiled), (&m.program, &art.compiled));
    drop(w);

    for name in ["hybrid-3to1", "dense-tied-bf16"] {
        let (m, w) = open(name);
        let p = &m.program;
        assert!(p.mtp.is_none() && p.mtp_state.is_empty(), "{name}");
        assert!(p.prefill.output("hidden").is_none() && p.decode.output("hidden").is_none(), "{name}");
        // Serialised exactly as before the MTP fields existed.
        let v = serde_json::to_value(p).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["decode", "prefill", "state"], "{name}");
        let mut s = Session::new(m.program.clone(), &w, m.spec.vocab_size, m.spec.max_position_embeddings, 1);
        s.prefill(&[vec![1, 2, 3]]).unwrap();
        assert!(s.hidden().is_none() && !s.has_mtp(), "{name}");
        let h = Tensor::zeros(vec![1, 1, m.spec.hidden_size], qgc_ir::DType::F32);
        assert!(s.mtp_draft(&h, &[vec![1]]).is_err(), "{name}: mtp_draft without an MTP block");
    }
}
