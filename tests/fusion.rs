//! The optimising pipeline (`qgc-passes`) end to end: on every HF fixture, through the fixture's
//! real weights, the fused program computes what the lowered one does (prefill, decode and MTP
//! within 1e-5 relative) and still matches HF (1e-4); and the fused tiny model's IR is golden
//! (`tests/golden/qwen3-next-tiny.fused.qir`, update on purpose with `QGC_BLESS=1`).

mod common;

use common::{fixtures, reference, rel_err};
use qgc_ir::interp::WeightSource;
use qgc_ir::{lower, print, LowerOptions, ModelSpec, Program};
use qgc_passes::{optimise_program, Options};
use qgc_runtime::weights::{Checkpoint, Weights};
use qgc_runtime::Tensor;
use qgc_runtime::{open_model, Session};

fn fused(p: &Program) -> Program {
    let (f, reports) = optimise_program(p, &Options::default(), &mut |_, _| {}).unwrap();
    for r in &reports {
        assert!(r.saturated(), "a phase stopped on a limit:\n{r}");
    }
    f
}

/// Logits of a prefill of `prefill` tokens then single-token decodes.
fn schedule(p: &Program, w: &dyn WeightSource, vocab: usize, tokens: &[i32], prefill: usize) -> Vec<f32> {
    let mut s = Session::new(p.clone(), w, vocab, usize::MAX, 1);
    let mut out = s.prefill(&[tokens[..prefill].to_vec()]).unwrap().as_f32().unwrap().to_vec();
    for &t in &tokens[prefill..] {
        out.extend_from_slice(s.decode(&[t]).unwrap().as_f32().unwrap());
    }
    out
}

/// MTP draft logits from a prefill of all `tokens` (empty without an MTP block).
fn drafts(p: &Program, w: &dyn WeightSource, vocab: usize, tokens: &[i32]) -> Vec<f32> {
    let mut s = Session::new(p.clone(), w, vocab, usize::MAX, 1);
    s.prefill(&[tokens.to_vec()]).unwrap();
    let Some(h) = s.hidden().cloned() else { return Vec::new() };
    let (t, d) = (tokens.len(), h.shape[2]);
    let rows = Tensor::f32(vec![1, t - 1, d], h.as_f32().unwrap()[..(t - 1) * d].to_vec());
    s.mtp_draft(&rows, &[tokens[1..].to_vec()]).unwrap().0.as_f32().unwrap().to_vec()
}

#[test]
fn fusion_keeps_values_and_hf_parity_on_fixtures() {
    for dir in fixtures() {
        let r = reference(&dir);
        for opts in [LowerOptions::default(), LowerOptions { gdn_prefill_chunk: None }] {
            let m = open_model(&dir, &opts).unwrap();
            let w = Weights::new(Checkpoint::open(&dir).unwrap());
            let f = fused(&m.program);
            let want = schedule(&m.program, &w, m.spec.vocab_size, &r.tokens, r.prefill);
            let got = schedule(&f, &w, m.spec.vocab_size, &r.tokens, r.prefill);
            let (e, hf) = (rel_err(&got, &want), rel_err(&got, &r.logits));
            eprintln!("{}: fused vs lowered {e:.2e}, vs HF {hf:.2e}", dir.display());
            assert!(e <= 1e-5, "{}: fused vs lowered: rel {e:.3e}", dir.display());
            assert!(hf <= 1e-4, "{}: fused vs HF: rel {hf:.3e}", dir.display());
            let want_draft = drafts(&m.program, &w, m.spec.vocab_size, &r.tokens);
            if !want_draft.is_empty() {
                let d = rel_err(&drafts(&f, &w, m.spec.vocab_size, &r.tokens), &want_draft);
                eprintln!("{}: fused MTP draft vs lowered {d:.2e}", dir.display());
                assert!(d <= 1e-5, "{}: fused MTP draft: rel {d:.3e}", dir.display());
            }
        }
    }
}

#[test]
fn fused_tiny_ir_is_golden() {
    let text = std::fs::read_to_string(common::root().join("models/qwen3-next-tiny.json")).unwrap();
    let spec = ModelSpec::from_json(&text).unwrap();
    let p = fused(&lower(&spec, &LowerOptions::default()).unwrap());
    let text = format!("{}\n{}", print(&p.prefill), print(&p.decode));
    common::assert_golden(&text, "qwen3-next-tiny.fused.qir");
}

#[test]
fn compile_reports_passes_and_dumps() {
    let tmp = common::temp_dir("dumps");
    let qgc = |extra: &[&str]| {
        let mut args = vec!["compile", "models/qwen3-next-tiny.json", "-o"];
        let out = tmp.join("t.qgc");
        args.push(out.to_str().unwrap());
        args.extend(extra);
        std::process::Command::new(env!("CARGO_BIN_EXE_qgc")).args(&args).current_dir(common::root()).output().unwrap()
    };
    let dir = tmp.join("ir");
    let out = qgc(&["--dump-after", "fuse", "--dump-all", dir.to_str().unwrap()]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for want in ["passes over prefill:", "passes over decode:", "  select ", "Saturated", "graph decode {", "gdn_gates"]
    {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
    for g in ["prefill", "decode"] {
        for f in ["00-lowered", "01-dce", "02-cse", "03-canonicalise", "04-fuse", "05-select"] {
            assert!(dir.join(format!("{g}.{f}.qir")).is_file(), "{g}.{f}.qir not written");
        }
    }
    let bad = qgc(&["--dump-after", "fusion"]);
    let err = String::from_utf8(bad.stderr).unwrap();
    assert_eq!(err.trim(), "error: --dump-after fusion: no such pass (passes: dce, cse, canonicalise, fuse, select)");
}
