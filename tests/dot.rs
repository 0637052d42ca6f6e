//! `qgc inspect --dot DIR`: DOT files of every entry point before and after fusion; valid-looking,
//! deterministic, and the fused graph has fewer kernels. Needs no Graphviz.

mod common;

use common::{qgc, temp_dir};
use std::collections::BTreeSet;

const ENTRIES: [&str; 2] = ["prefill", "decode"];

/// Checks the DOT text's shape; returns its number of kernel nodes.
fn check(name: &str, text: &str) -> usize {
    assert!(text.starts_with("digraph "), "{name}: does not start with digraph");
    let mut depth = 0i64;
    let mut in_str = false;
    let mut prev = ' ';
    for c in text.chars() {
        match c {
            '"' if prev != '\\' => in_str = !in_str,
            '{' if !in_str => depth += 1,
            '}' if !in_str => {
                depth -= 1;
                assert!(depth >= 0, "{name}: unbalanced braces");
            }
            _ => {}
        }
        prev = if prev == '\\' && c == '\\' { ' ' } else { c };
    }
    assert_eq!(depth, 0, "{name}: unbalanced braces");
    assert!(!in_str, "{name}: unterminated string");
    let mut nodes = BTreeSet::new();
    let mut edges = Vec::new();
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().take(3).collect();
        let first = words.first().copied().unwrap_or("");
        if words.get(1) == Some(&"->") {
            edges.push((first.to_string(), words[2].trim_end_matches(';').to_string()));
        } else if first.starts_with('n') && line.contains(" [") {
            assert!(nodes.insert(first.to_string()), "{name}: node {first} declared twice");
        }
    }
    assert!(!edges.is_empty(), "{name}: no edges");
    for (a, b) in &edges {
        assert!(nodes.contains(a) && nodes.contains(b), "{name}: edge {a} -> {b} has an undeclared endpoint");
    }
    assert!(text.contains("subgraph \"cluster_l0\""), "{name}: no layer cluster");
    text.matches("class=\"kernel\"").count()
}

#[test]
fn inspect_dot_writes_lowered_and_fused_graphs() {
    let tmp = temp_dir("dot");
    let mut runs = Vec::new();
    for run in ["a", "b"] {
        let dir = tmp.join(run).join("nested");
        let (code, out, err) = qgc(&["inspect", "models/qwen3-next-tiny.json", "--dot", dir.to_str().unwrap()], &tmp);
        assert_eq!(code, 0, "{err}");
        let mut texts = Vec::new();
        for e in ENTRIES {
            let mut kernels = Vec::new();
            for stage in ["lowered", "fused"] {
                let file = format!("{e}.{stage}.dot");
                assert!(out.contains(&format!("wrote $TMP/{run}/nested/{file}\n")), "{out}");
                let text = std::fs::read_to_string(dir.join(&file)).unwrap();
                kernels.push(check(&file, &text));
                texts.push(text);
            }
            assert!(kernels[1] < kernels[0], "{e}: fused has {} kernels, lowered {}", kernels[1], kernels[0]);
        }
        assert!(!dir.join("mtp.lowered.dot").exists(), "the tiny model has no MTP block");
        let has_svg = dir.join("prefill.fused.svg").exists();
        assert!(has_svg || out.contains("note: Graphviz `dot` not found on PATH; no .svg rendered\n"), "{out}");
        runs.push(texts);
    }
    assert!(runs[0] == runs[1], "DOT output differs between runs");
}

#[test]
fn inspect_dot_unwritable_dir_fails() {
    let tmp = temp_dir("dot-err");
    let file = tmp.join("file");
    std::fs::write(&file, "x").unwrap();
    let (code, out, err) = qgc(&["inspect", "models/qwen3-next-tiny.json", "--dot", file.to_str().unwrap()], &tmp);
    assert_eq!(code, 1);
    assert_eq!(err, "error: creating $TMP/file: File exists (os error 17)\n");
    assert!(!out.contains("wrote"), "{out}");
}
