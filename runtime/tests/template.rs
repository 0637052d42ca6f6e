//! Chat templates against Hugging Face transformers: every render, error, model folder, float
//! and date in `tests/golden/templates/goldens.json` (written by
//! `scripts/make_template_goldens.py` with transformers' `apply_chat_template`, Python's `repr`,
//! `json.dumps` and `time.strftime`) must come out byte for byte. Then loading edge cases, input
//! errors and odd templates, with expectations written by hand.

use minijinja::Value;
use qgc_runtime::template::{py_float, strftime, ChatTemplate, ContentFormat, TemplateError};
use serde_json::json;
use std::path::{Path, PathBuf};

fn goldens_text() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/golden/templates/goldens.json");
    std::fs::read_to_string(path).expect("tests/golden/templates/goldens.json")
}

/// The goldens twice: as serde_json (to navigate) and as minijinja values (which keep key order).
fn goldens() -> (serde_json::Value, Value) {
    let text = goldens_text();
    (serde_json::from_str(&text).unwrap(), serde_json::from_str(&text).unwrap())
}

fn repo_file(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A fresh folder under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("qgc-template-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, rel: &str, text: &str) {
        let path = self.0.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where two strings first differ, with some context, for failure messages.
fn diff(got: &str, want: &str) -> String {
    let at = got.bytes().zip(want.bytes()).take_while(|(a, b)| a == b).count();
    let ctx = |s: &str| {
        let mut lo = at.saturating_sub(60);
        while !s.is_char_boundary(lo) {
            lo -= 1;
        }
        let mut hi = (at + 60).min(s.len());
        while !s.is_char_boundary(hi) {
            hi += 1;
        }
        format!("{:?}", &s[lo..hi])
    };
    format!("first difference at byte {at}\n  got:  {}\n  want: {}", ctx(got), ctx(want))
}

/// Whether every map in `v` lists its keys in sorted order (then serde_json's sorted maps give
/// the same render).
fn keys_sorted(v: &Value) -> bool {
    match v.kind() {
        minijinja::value::ValueKind::Map => {
            let keys: Vec<Value> = v.try_iter().unwrap().collect();
            let names: Vec<&str> = keys.iter().map(|k| k.as_str().unwrap_or("")).collect();
            names.windows(2).all(|w| w[0] <= w[1]) && keys.iter().all(|k| keys_sorted(&v.get_item(k).unwrap()))
        }
        minijinja::value::ValueKind::Seq => v.try_iter().unwrap().all(|x| keys_sorted(&x)),
        _ => true,
    }
}

fn serde_json_keeps_order() -> bool {
    let v: serde_json::Value = serde_json::from_str(r#"{"b": 1, "a": 2}"#).unwrap();
    v.as_object().unwrap().keys().next().map(String::as_str) == Some("b")
}

/// Builds each golden template through `from_model_dir`, as HF loaded it.
fn golden_templates(g: &serde_json::Value) -> Vec<(String, ChatTemplate)> {
    let mut out = Vec::new();
    for (name, t) in g["templates"].as_object().unwrap() {
        let dir = TempDir::new(&format!("golden-{name}"));
        let mut config = t["config"].clone();
        config["chat_template"] = json!(repo_file(t["path"].as_str().unwrap()));
        dir.write("tokenizer_config.json", &config.to_string());
        let template = ChatTemplate::from_model_dir(&dir.0).unwrap().expect("a template");
        let want = match t["content_format"].as_str().unwrap() {
            "string" => ContentFormat::String,
            _ => ContentFormat::Parts,
        };
        assert_eq!(template.content_format(), want, "{name}: content format");
        out.push((name.clone(), template));
    }
    out
}

#[test]
fn renders_match_hf_byte_for_byte() {
    let (g, ordered) = goldens();
    let templates = golden_templates(&g);
    let builtin = ChatTemplate::qwen3();
    let tools = ordered.get_attr("tools").unwrap();
    let serde_tools = &g["tools"];
    let (mut failures, mut checked, mut serde_checked) = (Vec::new(), 0, 0);
    for (i, case) in g["cases"].as_array().unwrap().iter().enumerate() {
        let name = case["template"].as_str().unwrap();
        let conv = case["conversation"].as_str().unwrap();
        let label = format!("case {i} {name}/{conv} agp={} kwargs={}", case["add_generation_prompt"], case["kwargs"]);
        let template = &templates.iter().find(|(n, _)| n == name).unwrap().1;
        let want = case["expected"].as_str().unwrap();
        let messages = ordered.get_attr("conversations").unwrap().get_attr(conv).unwrap();
        let ordered_case = ordered.get_attr("cases").unwrap().get_item(&Value::from(i)).unwrap();
        let kwargs = ordered_case.get_attr("kwargs").unwrap();
        let with_tools = case["tools"].as_bool().unwrap();
        let agp = case["add_generation_prompt"].as_bool().unwrap();
        let mut renders =
            vec![("render_value", template.render_value(&messages, with_tools.then_some(&tools), agp, &kwargs))];
        if name == "qwen3" {
            renders
                .push(("built-in qwen3", builtin.render_value(&messages, with_tools.then_some(&tools), agp, &kwargs)));
        }
        // serde_json maps come sorted unless its preserve_order feature is on; the Qwen templates
        // print maps only in tool conversations (tools, arguments), so the rest must match too.
        let inputs_sorted = keys_sorted(&messages) && keys_sorted(&kwargs) && (!with_tools || keys_sorted(&tools));
        let order_free = name.starts_with("qwen3") && !with_tools;
        if serde_json_keeps_order() || inputs_sorted || order_free {
            let kw = case["kwargs"].as_object().unwrap();
            let serde_messages = &g["conversations"][conv];
            renders.push(("render", template.render(serde_messages, with_tools.then_some(serde_tools), agp, kw)));
            serde_checked += 1;
        }
        for (path, got) in renders {
            checked += 1;
            match got {
                Ok(got) if got == want => {}
                Ok(got) => failures.push(format!("{label} ({path}): {}", diff(&got, want))),
                Err(e) => failures.push(format!("{label} ({path}): error {e}")),
            }
        }
    }
    assert!(failures.is_empty(), "{} of {checked} renders differ from HF:\n{}", failures.len(), failures.join("\n"));
    assert!(checked >= 150 && serde_checked > 0, "checked {checked} renders, {serde_checked} through serde_json");
}

#[test]
fn errors_match_hf() {
    let (g, ordered) = goldens();
    for (i, case) in g["errors"].as_array().unwrap().iter().enumerate() {
        let name = case["name"].as_str().unwrap();
        let hf = case["hf_error"].as_str().unwrap();
        let messages =
            ordered.get_attr("errors").unwrap().get_item(&Value::from(i)).unwrap().get_attr("messages").unwrap();
        let result = ChatTemplate::from_source(case["source"].as_str().unwrap(), "test.jinja")
            .and_then(|t| t.render_value(&messages, None, true, &Value::UNDEFINED));
        let err = match result {
            Ok(s) => panic!("{name}: rendered {s:?}, HF failed with {hf}"),
            Err(e) => e,
        };
        let text = err.to_string();
        match (name, &err) {
            ("raise_exception", TemplateError::Raised { message, origin }) => {
                assert_eq!(Some(message.as_str()), hf.strip_prefix("TemplateError: "), "{name}");
                assert_eq!(origin, "test.jinja");
            }
            ("syntax", TemplateError::Syntax { line: 1, .. }) => assert!(text.contains("test.jinja"), "{text}"),
            ("unknown_filter", TemplateError::Syntax { .. } | TemplateError::Render { .. }) => {
                assert!(text.contains("no_such_filter") || text.contains("unknown filter"), "{text}")
            }
            ("undefined_method", TemplateError::Render { line: 1, .. }) => {
                assert!(text.contains("no_such_method") && text.contains("test.jinja"), "{text}")
            }
            ("qwen3_list_content", TemplateError::Input { path, .. }) => assert_eq!(path, "messages[0].content[0]"),
            _ => panic!("{name}: unexpected error {err:?} (HF: {hf})"),
        }
    }
}

#[test]
fn model_dirs_match_hf() {
    let (g, ordered) = goldens();
    let user = Value::from_serialize(json!([{"role": "user", "content": "hi"}]));
    for (i, case) in g["model_dirs"].as_array().unwrap().iter().enumerate() {
        let name = case["name"].as_str().unwrap();
        let dir = TempDir::new(&format!("dir-{name}"));
        dir.write("tokenizer_config.json", &case["tokenizer_config"].to_string());
        for (rel, text) in case["files"].as_object().unwrap() {
            dir.write(rel, text.as_str().unwrap());
        }
        let template = ChatTemplate::from_model_dir(&dir.0).unwrap().expect("a template");
        let renders =
            ordered.get_attr("model_dirs").unwrap().get_item(&Value::from(i)).unwrap().get_attr("renders").unwrap();
        for (j, r) in case["renders"].as_array().unwrap().iter().enumerate() {
            let tools = renders.get_item(&Value::from(j)).unwrap().get_attr("tools").unwrap();
            let tools = (!tools.is_none()).then_some(&tools);
            let got = template.render_value(&user, tools, false, &Value::UNDEFINED);
            match (r["expected"].as_str(), got) {
                (Some(want), Ok(got)) => assert_eq!(got, want, "{name} render {j}"),
                (None, Err(_)) => {}
                (want, got) => panic!("{name} render {j}: got {got:?}, HF gave {want:?} / {}", r["hf_error"]),
            }
        }
    }
}

#[test]
fn floats_print_as_python() {
    let (g, _) = goldens();
    for f in g["floats"].as_array().unwrap() {
        let x = f64::from_bits(f["bits"].as_u64().unwrap());
        assert_eq!(py_float(x, false), f["repr"].as_str().unwrap(), "repr of {x:e}");
        assert_eq!(py_float(x, true), f["json"].as_str().unwrap(), "json of {x:e}");
    }
}

#[test]
fn strftime_matches_the_c_library() {
    let (g, _) = goldens();
    for c in g["strftime"].as_array().unwrap() {
        let (fmt, unix) = (c["format"].as_str().unwrap(), c["unix"].as_i64().unwrap());
        assert_eq!(strftime(fmt, unix), c["expected"].as_str().unwrap(), "{fmt} at {unix}");
    }
    // Unknown directives stay as written, as glibc leaves them.
    assert_eq!(strftime("%Q %-Q %", 0), "%Q %-Q %");
    let t = ChatTemplate::from_source("{{ strftime_now('%Y') | length }}", "t").unwrap();
    let out = t.render(&json!([{"role": "user", "content": "x"}]), None, false, &Default::default());
    assert_eq!(out.unwrap(), "4");
}

/// A one-line template that shows what the messages became.
fn messages_json(messages: serde_json::Value) -> Result<String, TemplateError> {
    let t = ChatTemplate::from_source("{{ messages | tojson }}", "t")?;
    t.render(&messages, None, false, &Default::default())
}

#[test]
fn messages_are_converted_as_vllm_and_hf_do() {
    // Text parts joined with "\n"; null content as ""; null keys dropped; reasoning aliased.
    let got = messages_json(json!([
        {"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], "role": "user"},
        {"content": null, "reasoning": "r", "role": "assistant", "tool_calls": null},
    ]))
    .unwrap();
    let want = r#"[{"content": "a\nb", "role": "user"}, {"thinking": "r", "content": "", "reasoning": "r", "role": "assistant", "reasoning_content": "r"}]"#;
    assert_eq!(got, want);

    // Assistant tool-call arguments: JSON text parsed, empty or null as {}, other text kept.
    let got = messages_json(json!([{"role": "assistant", "tool_calls": [
        {"function": {"arguments": "{\"a\": [1, 2.5]}", "name": "f"}},
        {"function": {"arguments": "", "name": "g"}},
        {"function": {"name": "h"}},
        {"function": {"arguments": "not json", "name": "i"}},
    ]}]))
    .unwrap();
    let want = concat!(
        r#"[{"role": "assistant", "tool_calls": [{"function": {"arguments": {"a": [1, 2.5]}, "name": "f"}}, "#,
        r#"{"function": {"arguments": {}, "name": "g"}}, {"function": {"name": "h", "arguments": {}}}, "#,
        r#"{"function": {"arguments": "not json", "name": "i"}}], "content": ""}]"#
    );
    assert_eq!(got, want);

    // Other roles keep their tool_calls as given.
    let got =
        messages_json(json!([{"role": "user", "content": "", "tool_calls": [{"function": {"arguments": "{}"}}]}]));
    assert_eq!(got.unwrap(), r#"[{"content": "", "role": "user", "tool_calls": [{"function": {"arguments": "{}"}}]}]"#);
}

#[test]
fn bad_inputs_name_their_path() {
    let t = ChatTemplate::qwen3();
    let none = serde_json::Map::new();
    let path_of = |r: Result<String, TemplateError>| match r {
        Err(TemplateError::Input { path, .. }) => path,
        other => panic!("expected an input error, got {other:?}"),
    };
    assert_eq!(path_of(t.render(&json!({"role": "user"}), None, true, &none)), "messages");
    assert_eq!(path_of(t.render(&json!([]), None, true, &none)), "messages");
    assert_eq!(path_of(t.render(&json!([{"role": "user", "content": "a"}, 3]), None, true, &none)), "messages[1]");
    let image =
        json!([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {}}]}]);
    assert_eq!(path_of(t.render(&image, None, true, &none)), "messages[0].content[1]");
    let no_text = json!([{"role": "user", "content": [{"type": "text"}]}]);
    assert_eq!(path_of(t.render(&no_text, None, true, &none)), "messages[0].content[0].text");
    let number = json!([{"role": "user", "content": 3}]);
    assert_eq!(path_of(t.render(&number, None, true, &none)), "messages[0].content");
    let ok = json!([{"role": "user", "content": "a"}]);
    assert_eq!(path_of(t.render(&ok, Some(&json!({"a": 1})), true, &none)), "tools");
    let reserved = json!({"messages": []}).as_object().unwrap().clone();
    assert_eq!(path_of(t.render(&ok, None, true, &reserved)), "chat_template_kwargs.messages");
    assert_eq!(
        path_of(t.render_value(&Value::from_serialize(&ok), None, true, &Value::from(3))),
        "chat_template_kwargs"
    );
    // A kwarg replaces a special token, as in HF.
    let eos = json!({"eos_token": "<E>"}).as_object().unwrap().clone();
    let t2 = ChatTemplate::from_source("{{ eos_token }}", "t").unwrap();
    assert_eq!(t2.render(&ok, None, true, &none).unwrap(), "");
    assert_eq!(t2.render(&ok, None, true, &eos).unwrap(), "<E>");
    let mut t3 = t2.clone();
    t3.set_special_token("eos_token", "</s>");
    assert_eq!(t3.render(&ok, None, true, &none).unwrap(), "</s>");
    assert_eq!(t3.render(&ok, None, true, &eos).unwrap(), "<E>");
}

#[test]
fn model_dir_loading_edge_cases() {
    let dir = TempDir::new("edges");
    assert!(ChatTemplate::from_model_dir(&dir.0).unwrap().is_none(), "empty folder");
    dir.write("tokenizer_config.json", r#"{"eos_token": "</s>"}"#);
    assert!(ChatTemplate::from_model_dir(&dir.0).unwrap().is_none(), "no chat_template");

    let config_err = |text: &str| {
        dir.write("tokenizer_config.json", text);
        match ChatTemplate::from_model_dir(&dir.0) {
            Err(TemplateError::Config { path, message }) => format!("{path}: {message}"),
            other => panic!("{text}: expected a config error, got {other:?}"),
        }
    };
    assert!(config_err("{not json").contains("tokenizer_config.json: not JSON"));
    assert!(config_err("[1]").contains("expected a JSON object"));
    assert!(config_err(r#"{"chat_template": 3}"#).contains("tokenizer_config.json.chat_template:"));
    assert!(config_err(r#"{"chat_template": [{"name": "x"}]}"#).contains(".chat_template[0]"));
    assert!(config_err(r#"{"chat_template": "x", "bos_token": {"content": 1}}"#).contains(".bos_token"));

    // A list without `default` loads; rendering without tools then fails, as in HF.
    dir.write("tokenizer_config.json", r#"{"chat_template": [{"name": "rag", "template": "R"}]}"#);
    let t = ChatTemplate::from_model_dir(&dir.0).unwrap().unwrap();
    assert_eq!(t.names().collect::<Vec<_>>(), ["rag"]);
    let err = t.render(&json!([{"role": "user", "content": "a"}]), None, true, &Default::default()).unwrap_err();
    assert!(err.to_string().contains("no chat template named 'default' (found: rag)"), "{err}");

    // A syntax error in chat_template.jinja names the file and line.
    dir.write("chat_template.jinja", "line one\n{% for %}\n");
    match ChatTemplate::from_model_dir(&dir.0) {
        Err(e @ TemplateError::Syntax { line: 2, .. }) => assert!(e.to_string().contains("chat_template.jinja"), "{e}"),
        other => panic!("expected a syntax error on line 2, got {other:?}"),
    }
}

#[test]
fn odd_templates_fail_cleanly() {
    let messages = json!([{"role": "user", "content": "hi"}]);
    let none = serde_json::Map::new();
    let sources = [
        "{% if %}",
        "{{",
        "{% for x in %}{% endfor %}",
        "{{ 1 / 0 }}",
        "{{ messages[99].content.x }}",
        "{% set ns.x = 1 %}",
        "{% include 'other' %}",
        "{% extends 'base' %}",
        "{% import 'm' as m %}",
        "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
        "{{ 'a' * 1000000000000 }}",
        "{% for x in range(100000000000) %}{% endfor %}",
        "{{ messages | tojson(indent=[]) }}",
        "{{ namespace() | tojson }}",
        "{{ tojson }}",
        "{{ raise_exception() }}",
        "{{ strftime_now(3) }}",
        "{% generation %}{{ 1 }}",
        "{{ messages[0].content.split('') }}",
        "{{ (messages * 3) | length }}",
        "{{ messages[::0] }}",
        "{{ 'x'.startswith() }}",
        "{% break %}",
        "{{ x | tojson(1, 2, 3, 4, 5) }}",
    ];
    for src in sources {
        // Each either renders or fails with a TemplateError: no panic, no hang.
        if let Ok(t) = ChatTemplate::from_source(src, "odd") {
            let _ = t.render(&messages, None, true, &none);
        }
    }
    // Pseudo-random mixes of template pieces.
    let pieces = [
        "{%",
        "%}",
        "{{",
        "}}",
        "{#",
        "#}",
        "for m in messages",
        "endfor",
        "if",
        "endif",
        "set ns = namespace(a=1)",
        "ns.a",
        "messages[::-1]",
        "|tojson",
        "|length",
        ".split('x')",
        "raise_exception('x')",
        "'",
        "\"",
        "-",
        " ",
        "\n",
        "loop.index0",
        "macro",
        "call",
        "(",
        ")",
        "[",
        "]",
        "none",
        "1e999",
        "é",
        "\u{0}",
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..3000 {
        let mut src = String::new();
        for _ in 0..(state % 12 + 1) {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            src.push_str(pieces[(state >> 33) as usize % pieces.len()]);
        }
        if let Ok(t) = ChatTemplate::from_source(&src, "fuzz") {
            let _ = t.render(&messages, Some(&json!([])), true, &none);
        }
    }
}

#[test]
fn chat_templates_can_be_shared_between_threads() {
    fn send_sync<T: Send + Sync + Clone>() {}
    send_sync::<ChatTemplate>();
    let t = std::sync::Arc::new(ChatTemplate::qwen3());
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let t = t.clone();
            std::thread::spawn(move || {
                t.render(&json!([{"role": "user", "content": format!("q{i}")}]), None, true, &Default::default())
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let want = format!("<|im_start|>user\nq{i}<|im_end|>\n<|im_start|>assistant\n");
        assert_eq!(h.join().unwrap().unwrap(), want);
    }
}
