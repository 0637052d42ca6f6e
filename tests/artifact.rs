//! Artifacts hold the compiled program: loading one verifies it and generates host code but
//! runs no pass (counted), and the loaded model computes what a model compiled in-process does;
//! the same spec compiles to the same bytes; `qgc run ARTIFACT` and `qgc inspect ARTIFACT` use the
//! stored program.

mod common;

use common::{fixture, qgc, rel_err, root, temp_dir};
use qgc_codegen::compile::{compile_program, Entry};
use qgc_codegen::Artifact;
use qgc_ir::interp::MapWeights;
use qgc_ir::{lower, LowerOptions, ModelSpec};
use qgc_runtime::compiled::{CpuModel, CpuOptions};
use qgc_runtime::{Backend, Session};

fn tiny() -> ModelSpec {
    ModelSpec::from_json(&std::fs::read_to_string(root().join("models/qwen3-next-tiny.json")).unwrap()).unwrap()
}

#[test]
fn loading_an_artifact_runs_no_pass_and_computes_the_same() {
    let spec = tiny();
    let opts = LowerOptions::default();
    let program = lower(&spec, &opts).unwrap();
    let before = qgc_passes::pipeline_runs();
    let (compiled, reports) = compile_program(&program, &mut |_, _| {}).unwrap();
    assert_eq!(qgc_passes::pipeline_runs() - before, reports.len(), "compiling runs the pipeline per entry point");
    let bytes = Artifact::new(spec.clone(), opts, program.clone(), compiled).to_bytes();
    let w = MapWeights::random(&spec, 3);

    let before = qgc_passes::pipeline_runs();
    let art = Artifact::from_bytes(&bytes, "mem").unwrap();
    let loaded = CpuModel::load(&art.compiled, &w, CpuOptions::default()).unwrap();
    let mut s = Session::with_backend(art.program.clone(), Backend::Cpu(&loaded), spec.vocab_size, usize::MAX, 1);
    let tokens: Vec<i32> = (0..40).map(|i| (i * 31 + 7) % spec.vocab_size as i32).collect();
    let mut got = s.prefill(&[tokens[..30].to_vec()]).unwrap().into_f32().unwrap();
    for &t in &tokens[30..] {
        got.extend(s.decode(&[t]).unwrap().into_f32().unwrap());
    }
    assert_eq!(qgc_passes::pipeline_runs(), before, "loading and running an artifact ran the pass pipeline");
    assert!(loaded.has(Entry::PrefillHidden) && loaded.has(Entry::Decode));

    let fresh = CpuModel::compile(&program, &w, CpuOptions::default()).unwrap();
    let mut r = Session::with_backend(program, Backend::Cpu(&fresh), spec.vocab_size, usize::MAX, 1);
    let mut want = r.prefill(&[tokens[..30].to_vec()]).unwrap().into_f32().unwrap();
    for &t in &tokens[30..] {
        want.extend(r.decode(&[t]).unwrap().into_f32().unwrap());
    }
    assert_eq!(rel_err(&got, &want), 0.0, "the artifact's program computes other values");
}

#[test]
fn compile_is_deterministic_and_run_and_inspect_use_the_stored_program() {
    let tmp = temp_dir("artifact");
    let (a, b) = (tmp.join("a.qgc"), tmp.join("b.qgc"));
    for p in [&a, &b] {
        let (code, out, err) = qgc(&["compile", "models/qwen3-next-tiny.json", "-o", &p.display().to_string()], &tmp);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("passes over decode:") && out.contains("0 on the interpreter fallback"), "{out}");
    }
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap(), "two compiles differ");
    let a = a.display().to_string();
    let (code, out, err) = qgc(&["inspect", &a], &tmp);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("(checked, no pass run)") && !out.contains("passes over"), "{out}");
    let args = ["run", &a, "--random-weights", "--tokens", "1,2,3", "--temp", "0", "-n", "4", "--json"];
    let (code, out, err) = qgc(&args, &tmp);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("passes over") && !err.contains("passes over"), "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(v["generated_ids"].as_array().map(|a| a.len()), Some(4), "{v}");
    let (code, spec_out, _) = qgc(
        &[
            "run",
            "models/qwen3-next-tiny.json",
            "--random-weights",
            "--tokens",
            "1,2,3",
            "--temp",
            "0",
            "-n",
            "4",
            "--json",
        ],
        &tmp,
    );
    assert_eq!(code, 0);
    let w: serde_json::Value = serde_json::from_str(spec_out.lines().last().unwrap()).unwrap();
    assert_eq!(v["generated_ids"], w["generated_ids"], "artifact and spec generate alike");
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn an_artifact_refuses_weights_of_another_model() {
    let tmp = temp_dir("artifact-weights");
    let a = tmp.join("m.qgc").display().to_string();
    let (code, _, err) = qgc(&["compile", &fixture("hybrid-3to1").display().to_string(), "-o", &a], &tmp);
    assert_eq!(code, 0, "{err}");
    let other = fixture("edge-odd-rope-noshared").display().to_string();
    let (code, _, err) = qgc(&["logits", &a, "--weights", &other, "--tokens", "1,2", "--out", "x.safetensors"], &tmp);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("error: $TMP/m.qgc: compiled for another model than $ROOT/tests/fixtures/edge-odd-rope-noshared/config.json describes ("),
        "{err}"
    );
    assert!(!tmp.join("x.safetensors").exists());
    // Its own weights are fine.
    let own = fixture("hybrid-3to1").display().to_string();
    let out = tmp.join("l.safetensors").display().to_string();
    let (code, _, err) = qgc(&["logits", &a, "--weights", &own, "--tokens", "1,2", "--out", &out], &tmp);
    assert_eq!(code, 0, "{err}");
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn no_model_or_fixture_runs_a_node_on_the_interpreter_fallback() {
    let mut paths: Vec<std::path::PathBuf> = std::fs::read_dir(root().join("models"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.extend(common::fixtures());
    paths.sort();
    assert!(paths.len() >= 8, "{paths:?}");
    for p in &paths {
        let m = qgc_runtime::open_model(p, &LowerOptions::default()).unwrap();
        for gdn in [Some(64), None] {
            let program = lower(&m.spec, &LowerOptions { gdn_prefill_chunk: gdn }).unwrap();
            let (compiled, _) = compile_program(&program, &mut |_, _| {}).unwrap();
            for e in &compiled.entries {
                let f = e.schedule.fallbacks();
                let names: Vec<&str> = f.iter().map(|&n| e.graph.nodes[n].name.as_str()).collect();
                assert!(f.is_empty(), "{} {}: fallback nodes {names:?}", p.display(), e.entry.name());
            }
        }
    }
    // The same, as scripts read it.
    let tmp = temp_dir("inspect-json");
    let (code, out, err) = qgc(&["inspect", "models/qwen3-next.json", "--json", "--context", "4096"], &tmp);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["params"], 79_674_391_296u64);
    assert_eq!(v["active_params"], 3_252_599_552u64);
    // 12 attention layers x K,V x 2 heads x 256 x 4096 tokens x 2 bytes + conv + recurrent.
    let kv = 12 * 2 * 2 * 256 * 4096 * 2u64;
    assert_eq!(v["state_bytes"]["kv_cache_bf16"], kv);
    assert!(v["state_bytes_per_sequence"].as_u64().unwrap() > kv);
    let fb = v["fallback_nodes"].as_object().unwrap();
    let names: Vec<&str> = fb.keys().map(|k| k.as_str()).collect();
    assert_eq!(names, ["decode", "mtp", "prefill", "prefill_hidden"]);
    assert!(fb.values().all(|n| n == 0), "{v}");
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn every_state_tensor_is_updated_in_its_own_buffer() {
    // The 80B spec: 36 GDN layers (conv + recurrent state) and 12 attention layers (K, V caches).
    let spec = ModelSpec::from_json(&std::fs::read_to_string(root().join("models/qwen3-next.json")).unwrap()).unwrap();
    let program = lower(&spec, &LowerOptions::default()).unwrap();
    let (compiled, _) = compile_program(&program, &mut |_, _| {}).unwrap();
    for e in compiled.entries.iter().filter(|e| e.entry != Entry::Mtp) {
        let s = &e.schedule;
        assert_eq!(s.aliases.len(), program.state.len(), "{}", e.entry.name());
        for a in &s.aliases {
            let (out, inp) = (&s.io.slots[a.output], &s.io.slots[a.input]);
            assert_eq!(out.name, inp.name);
            let kv = out.name.ends_with(".k") || out.name.ends_with(".v");
            assert_eq!(a.grows, kv.then_some(2), "{}: {}", e.entry.name(), out.name);
        }
        // Every residual add + norm writes its sum over the residual stream it reads: per layer
        // the mixer residual with the post-attention norm, and the layer output with the next
        // layer's input norm (the last one's with the final norm).
        let fused = e.graph.nodes.iter().filter(|n| n.op.name() == "add_rms_norm").count();
        let sums = s.in_place.iter().filter(|(r, _)| e.graph.nodes[r.node].op.name() == "add_rms_norm").count();
        assert_eq!((fused, sums), (96, 96), "{}", e.entry.name());
    }
}
