//! The shipped Qwen tokenizer against tiktoken, and `qgc tokenize` / `qgc detokenize` end to end.
//!
//! `tests/fixtures/tokenizer/parity_ids.json` holds tiktoken's ids (same ranks, pattern and
//! specials, applied to NFC text) for each segment of `parity.txt`; it was made by
//! `scripts/make_tokenizer_parity.py`. No Python is needed here.

mod common;

use common::{qgc, root, temp_dir};
use qgc_runtime::tokenizer::Tokenizer;
use serde_json::Value;
use std::path::Path;

const SPECIALS: [&str; 26] = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
];

struct Segment {
    name: String,
    text: String,
    /// NFC(text): what decode(encode(text)) gives.
    nfc: String,
    ids: Vec<u32>,
}

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn fixture_dir() -> std::path::PathBuf {
    root().join("tests/fixtures/tokenizer")
}

/// The parity segments and the whole text with its ids.
fn parity() -> (Vec<Segment>, String, Vec<u32>) {
    let bytes = std::fs::read(fixture_dir().join("parity.txt")).unwrap();
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture_dir().join("parity_ids.json")).unwrap()).unwrap();
    let segs = doc["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let (a, b) = (s["start"].as_u64().unwrap() as usize, s["end"].as_u64().unwrap() as usize);
            let text = String::from_utf8(bytes[a..b].to_vec()).unwrap();
            let nfc = s.get("nfc").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| text.clone());
            Segment { name: s["name"].as_str().unwrap().to_string(), text, nfc, ids: ids_of(&s["ids"]) }
        })
        .collect();
    (segs, String::from_utf8(bytes).unwrap(), ids_of(&doc["ids"]))
}

/// Describes the first difference between `got` and `want`, with decoded context.
fn first_difference(tok: &Tokenizer, got: &[u32], want: &[u32]) -> Option<String> {
    let i = (0..got.len().max(want.len())).find(|&i| got.get(i) != want.get(i))?;
    let lo = i.saturating_sub(4);
    let show = |v: &[u32]| {
        let w = &v[lo.min(v.len())..(i + 5).min(v.len())];
        format!("{w:?} = {:?}", tok.decode(w).unwrap_or_default())
    };
    let before = tok.decode(&want[..i.min(want.len())]).unwrap_or_default();
    let ctx: String = before.chars().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
    Some(format!(
        "first difference at token {i} (got {} tokens, want {}), after {ctx:?}\n    got  {}\n    want {}",
        got.len(),
        want.len(),
        show(got),
        show(want)
    ))
}

#[test]
fn parity_with_tiktoken_per_segment() {
    let tok = Tokenizer::qwen();
    let (segs, whole, whole_ids) = parity();
    assert!(segs.len() >= 10, "{} segments", segs.len());
    assert!(whole.chars().count() >= 20_000, "parity text has {} chars", whole.chars().count());
    let mut failures = Vec::new();
    let mut tokens = 0;
    for s in &segs {
        let got = tok.encode(&s.text).unwrap();
        tokens += got.len();
        if let Some(d) = first_difference(&tok, &got, &s.ids) {
            failures.push(format!("segment {}: {d}", s.name));
        }
    }
    let got = tok.encode(&whole).unwrap();
    if let Some(d) = first_difference(&tok, &got, &whole_ids) {
        failures.push(format!("whole file: {d}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(tokens > 5_000);
}

#[test]
fn decode_of_encode_is_the_nfc_text() {
    let tok = Tokenizer::qwen();
    let (segs, _, _) = parity();
    let mut failures = Vec::new();
    for s in &segs {
        let back = tok.decode(&tok.encode(&s.text).unwrap()).unwrap();
        if back != s.nfc {
            failures.push(format!("segment {}: decode(encode(x)) != NFC(x)", s.name));
        }
        if tok.decode(&s.ids).unwrap() != s.nfc {
            failures.push(format!("segment {}: decode(tiktoken ids) != NFC(x)", s.name));
        }
        // NFC text is a fixed point.
        if tok.decode(&tok.encode(&s.nfc).unwrap()).unwrap() != s.nfc {
            failures.push(format!("segment {}: decode(encode(NFC(x))) != NFC(x)", s.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The fixture exercises normalisation: at least one segment is not NFC.
    assert!(segs.iter().any(|s| s.nfc != s.text));
}

#[test]
fn special_tokens_and_vocab_size() {
    let tok = Tokenizer::qwen();
    assert_eq!(tok.vocab_size(), 151_669);
    for (i, name) in SPECIALS.iter().enumerate() {
        let id = 151_643 + i as u32;
        assert_eq!(tok.token_id(name), Some(id), "{name}");
        assert_eq!(tok.encode(name).unwrap(), vec![id], "{name}");
        assert_eq!(tok.decode(&[id]).unwrap(), *name);
    }
    assert_eq!(tok.token_id("<think>"), Some(151_667));
    assert_eq!(tok.token_id("</think>"), Some(151_668));
    // Specials glued to text are still recognised; near misses are plain text.
    let ids = tok.encode("a<|im_end|>b").unwrap();
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[1], 151_645);
    assert!(!tok.encode("<|im_end |>").unwrap().iter().any(|&i| i >= 151_643));
    // The library skips ids past the vocabulary (a model's padded rows); the CLI rejects them.
    assert_eq!(tok.id_token(151_669), None);
    assert_eq!(tok.decode(&[9707, 151_669, 0]).unwrap(), "Hello!");
}

#[test]
fn resolve_order() {
    let tmp = temp_dir("tok-resolve");
    std::fs::write(tmp.join("tokenizer.json"), tiny_tokenizer()).unwrap();
    std::fs::write(tmp.join("config.json"), "{}").unwrap();
    let dir = Tokenizer::resolve(Some(&tmp), None).unwrap();
    assert_eq!(dir.vocab_size(), 3);
    assert_eq!(Tokenizer::resolve(Some(&tmp.join("config.json")), None).unwrap().vocab_size(), 3);
    let qwen_file = root().join("runtime/assets/qwen-tokenizer.json");
    assert_eq!(Tokenizer::resolve(Some(&tmp), Some(&qwen_file)).unwrap().vocab_size(), 151_669);
    assert_eq!(Tokenizer::resolve(None, None).unwrap().vocab_size(), 151_669);
    let _ = std::fs::remove_dir_all(&tmp);
}

// ---- the CLI ---------------------------------------------------------------------------------

/// A three-word WordLevel tokenizer, to tell a model directory's tokenizer from Qwen's.
fn tiny_tokenizer() -> &'static str {
    r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,
"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
"model":{"type":"WordLevel","vocab":{"[UNK]":0,"hello":1,"world":2},"unk_token":"[UNK]"}}"#
}

#[test]
fn cli_round_trips() {
    let tmp = temp_dir("tok-cli");
    let t = |args: &[&str]| {
        let (code, out, err) = qgc(args, &tmp);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: {err}");
        out
    };
    // The shipped Qwen tokenizer: ids comma-separated and a newline; detokenize prints the text exactly.
    let text = "Hello, world! <|im_start|>user\n안녕 你好 こんにちは 👋🏽<|im_end|>\n";
    let ids = t(&["tokenize", "--text", text]);
    assert!(ids.ends_with('\n') && !ids.trim_end().contains(char::is_whitespace), "{ids:?}");
    assert!(ids.starts_with("9707,11,1879,0,220,151644,872,198,"), "{ids:?}");
    assert_eq!(t(&["detokenize", "--ids", ids.trim_end()]), text);
    // Files both ways, and ids separated by whitespace/newlines.
    let f = tmp.join("in.txt");
    std::fs::write(&f, text).unwrap();
    assert_eq!(t(&["tokenize", "--file", f.to_str().unwrap()]), ids);
    let g = tmp.join("ids.txt");
    std::fs::write(&g, &ids).unwrap();
    assert_eq!(t(&["detokenize", "--file", g.to_str().unwrap()]), text);
    std::fs::write(&g, ids.trim_end().replace(',', " \n")).unwrap();
    assert_eq!(t(&["detokenize", "--file", g.to_str().unwrap()]), text);
    // The whole parity text through the CLI gives tiktoken's ids.
    let (_, whole, whole_ids) = parity();
    let p = fixture_dir().join("parity.txt");
    let want = whole_ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",") + "\n";
    assert_eq!(t(&["tokenize", "--file", p.to_str().unwrap()]), want);
    std::fs::write(&g, &want).unwrap();
    assert_eq!(t(&["detokenize", "--file", g.to_str().unwrap()]), Tokenizer::qwen().decode(&whole_ids).unwrap());
    assert!(whole.len() > 20_000);
    // A model directory's tokenizer.json (directory or its config.json), and --tokenizer over it.
    let m = tmp.join("model");
    std::fs::create_dir(&m).unwrap();
    std::fs::write(m.join("tokenizer.json"), tiny_tokenizer()).unwrap();
    std::fs::write(m.join("config.json"), "{}").unwrap();
    let ms = m.to_str().unwrap();
    assert_eq!(t(&["tokenize", ms, "--text", "hello world hello"]), "1,2,1\n");
    assert_eq!(t(&["tokenize", m.join("config.json").to_str().unwrap(), "--text", "world"]), "2\n");
    assert_eq!(t(&["detokenize", ms, "--ids", "1,2"]), "hello world");
    let q = root().join("runtime/assets/qwen-tokenizer.json");
    assert_eq!(t(&["tokenize", ms, "--tokenizer", q.to_str().unwrap(), "--text", "hello"]), "14990\n");
    assert_eq!(t(&["tokenize", "--tokenizer", m.join("tokenizer.json").to_str().unwrap(), "--text", "world"]), "2\n");
    let _ = std::fs::remove_dir_all(&tmp);
}

type Setup = fn(&Path) -> Vec<String>;

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.display().to_string()
}

const CASES: &[(&str, Setup, &str)] = &[
    // ---- tokenizer sources -----------------------------------------------------------------
    ("missing tokenizer file", |t| s(&["tokenize", "--tokenizer", &t.join("tokenizer.json").display().to_string(), "--text", "a"]), "error: $TMP/tokenizer.json: No such file or directory (os error 2)"),
    ("tokenizer is a directory", |t| s(&["tokenize", "--tokenizer", &t.display().to_string(), "--text", "a"]), "error: $TMP: Is a directory (os error 21)"),
    ("tokenizer not JSON", |t| s(&["tokenize", "--tokenizer", &write(t, "tok.json", b"not json"), "--text", "a"]), "error: $TMP/tok.json: not a valid tokenizer.json: expected ident at line 1 column 2"),
    ("tokenizer empty file", |t| s(&["detokenize", "--tokenizer", &write(t, "tok.json", b""), "--ids", "1"]), "error: $TMP/tok.json: not a valid tokenizer.json: EOF while parsing a value at line 1 column 0"),
    ("tokenizer wrong JSON", |t| s(&["tokenize", "--tokenizer", &write(t, "tok.json", br#"{"model": 3}"#), "--text", "a"]), "error: $TMP/tok.json: not a valid tokenizer.json: data did not match any variant of untagged enum ModelUntagged at line 1 column 12"),
    ("model dir without tokenizer.json", |t| s(&["tokenize", &t.display().to_string(), "--text", "a"]), "error: $TMP: no tokenizer.json in the model directory; give one with --tokenizer FILE"),
    ("model dir with a broken tokenizer.json", |t| {
        write(t, "tokenizer.json", b"{\"version\": ");
        s(&["detokenize", &t.display().to_string(), "--ids", "1"])
    }, "error: $TMP/tokenizer.json: not a valid tokenizer.json: EOF while parsing a value at line 1 column 12"),
    ("missing model", |t| s(&["tokenize", &t.join("nowhere").display().to_string(), "--text", "a"]), "error: $TMP/nowhere: No such file or directory (os error 2)"),
    ("model is a spec file", |_| s(&["tokenize", "models/qwen3-next.json", "--text", "a"]), "error: models/qwen3-next.json: not a model directory (a tokenizer comes from MODEL/tokenizer.json or --tokenizer FILE)"),
    // ---- tokenize input ----------------------------------------------------------------------
    ("empty --text", |_| s(&["tokenize", "--text", ""]), "error: --text: the text is empty"),
    ("empty --file", |t| s(&["tokenize", "--file", &write(t, "empty.txt", b"")]), "error: $TMP/empty.txt: the file is empty"),
    ("missing --file", |t| s(&["tokenize", "--file", &t.join("none.txt").display().to_string()]), "error: $TMP/none.txt: No such file or directory (os error 2)"),
    ("non-UTF-8 --file", |t| s(&["tokenize", "--file", &write(t, "latin1.txt", b"caf\xe9 ok")]), "error: $TMP/latin1.txt: not UTF-8 text (invalid byte at offset 3)"),
    ("--text and --file", |t| s(&["tokenize", "--text", "a", "--file", &write(t, "a.txt", b"a")]), "error: --text and --file are mutually exclusive"),
    ("no text", |_| s(&["tokenize"]), "error: give the text with --text T or --file F"),
    // ---- detokenize input --------------------------------------------------------------------
    ("id not a number", |_| s(&["detokenize", "--ids", "1,x"]), "error: --ids: \"x\" is not a token id"),
    ("negative id", |_| s(&["detokenize", "--ids", "-1"]), "error: --ids: \"-1\" is not a token id"),
    ("id overflows u32", |_| s(&["detokenize", "--ids", "1,99999999999"]), "error: --ids: \"99999999999\" is not a token id"),
    ("empty field", |_| s(&["detokenize", "--ids", "1,,2"]), "error: --ids: \"\" is not a token id"),
    ("empty --ids", |_| s(&["detokenize", "--ids", ""]), "error: --ids: no token ids given"),
    ("only commas", |_| s(&["detokenize", "--ids", " , "]), "error: --ids: no token ids given"),
    ("id past the vocabulary", |_| s(&["detokenize", "--ids", "1,151669"]), "error: --ids: token id 151669 is outside the vocabulary (0..151669)"),
    ("id past a model's vocabulary", |t| {
        write(t, "tokenizer.json", tiny_tokenizer().as_bytes());
        s(&["detokenize", &t.display().to_string(), "--ids", "2,3"])
    }, "error: --ids: token id 3 is outside the vocabulary (0..3)"),
    ("bad id in --file", |t| s(&["detokenize", "--file", &write(t, "ids.txt", b"1,2\n3 4.5\n")]), "error: $TMP/ids.txt: \"4.5\" is not a token id"),
    ("empty ids --file", |t| s(&["detokenize", "--file", &write(t, "ids.txt", b"\n")]), "error: $TMP/ids.txt: no token ids given"),
    ("id past the vocabulary in --file", |t| s(&["detokenize", "--file", &write(t, "ids.txt", b"151668,200000")]), "error: $TMP/ids.txt: token id 200000 is outside the vocabulary (0..151669)"),
    ("--ids and --file", |t| s(&["detokenize", "--ids", "1", "--file", &write(t, "ids.txt", b"1")]), "error: --ids and --file are mutually exclusive"),
    ("no ids", |_| s(&["detokenize"]), "error: give the ids with --ids 1,2,3 or --file F"),
];

#[test]
fn bad_inputs_give_exact_errors() {
    let mut failures = Vec::new();
    for (what, setup, expected) in CASES {
        let tmp = temp_dir("tok-bad");
        let args = setup(&tmp);
        let argv: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let (code, out, err) = qgc(&argv, &tmp);
        if err.contains("panicked") {
            failures.push(format!("{what}: panicked: {err}"));
        }
        if code != 1 {
            failures.push(format!("{what}: exited {code}, expected 1"));
        }
        if !out.is_empty() {
            failures.push(format!("{what}: printed {out:?}"));
        }
        if err.trim_end() != *expected {
            failures.push(format!("{what}:\n  expected: {expected:?}\n  got:      {:?}", err.trim_end()));
        }
        let _ = std::fs::remove_dir_all(&tmp);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
