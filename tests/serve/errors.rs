//! Every client mistake gets OpenAI's error body with the right status and `param`, never a
//! dropped connection or a 500; the server keeps serving afterwards.

use crate::tiny;
use serde_json::{json, Value};

#[test]
fn bad_requests_get_openai_errors() {
    let s = tiny(&["--max-model-len", "64"]);
    let long: Vec<i64> = (0..64).collect();
    let chat = "/v1/chat/completions";
    let cmpl = "/v1/completions";
    let msgs = json!([{"role": "user", "content": "hi"}]);
    // (path, body, status, param, code or message fragment)
    let cases: Vec<(&str, String, u16, Option<&str>, &str)> = vec![
        (cmpl, "{not json".into(), 400, None, "not valid JSON"),
        (cmpl, "[1, 2]".into(), 400, None, "must be a JSON object"),
        (cmpl, "".into(), 400, None, "not valid JSON"),
        (cmpl, json!({"prompt": [1], "model": "gpt-4"}).to_string(), 404, Some("model"), "model_not_found"),
        (cmpl, json!({"max_tokens": 3}).to_string(), 400, Some("prompt"), "`prompt` is required"),
        (cmpl, json!({"prompt": ""}).to_string(), 400, Some("prompt"), "empty"),
        (cmpl, json!({"prompt": []}).to_string(), 400, Some("prompt"), "empty"),
        (cmpl, json!({"prompt": [1, -3]}).to_string(), 400, Some("prompt"), "outside the vocabulary"),
        (cmpl, json!({"prompt": [1, 151936]}).to_string(), 400, Some("prompt"), "outside the vocabulary"),
        (cmpl, json!({"prompt": [1.5]}).to_string(), 400, Some("prompt"), "whole numbers"),
        (cmpl, json!({"prompt": ["a", "b"]}).to_string(), 400, Some("prompt"), "one request per prompt"),
        (cmpl, json!({"prompt": {"a": 1}}).to_string(), 400, Some("prompt"), "got an object"),
        (cmpl, json!({"prompt": [1], "temperature": -1}).to_string(), 400, Some("temperature"), "in [0, 2]"),
        (cmpl, json!({"prompt": [1], "temperature": "hot"}).to_string(), 400, Some("temperature"), "must be a number"),
        (cmpl, json!({"prompt": [1], "top_p": 0}).to_string(), 400, Some("top_p"), "(0, 1]"),
        (cmpl, json!({"prompt": [1], "top_k": -5}).to_string(), 400, Some("top_k"), "-1 (off)"),
        (cmpl, json!({"prompt": [1], "min_p": 2}).to_string(), 400, Some("min_p"), "[0, 1]"),
        (cmpl, json!({"prompt": [1], "repetition_penalty": 0}).to_string(), 400, Some("repetition_penalty"), "(0, 10]"),
        (cmpl, json!({"prompt": [1], "max_tokens": 0}).to_string(), 400, Some("max_tokens"), "at least 1"),
        (cmpl, json!({"prompt": [1], "max_tokens": 2.5}).to_string(), 400, Some("max_tokens"), "whole number"),
        (cmpl, json!({"prompt": [1], "n": 0}).to_string(), 400, Some("n"), "[1, 16]"),
        (cmpl, json!({"prompt": [1], "n": 17}).to_string(), 400, Some("n"), "[1, 16]"),
        (cmpl, json!({"prompt": [1], "stop": 3}).to_string(), 400, Some("stop"), "array of strings"),
        (cmpl, json!({"prompt": [1], "stop": [1]}).to_string(), 400, Some("stop"), "array of strings"),
        (cmpl, json!({"prompt": [1], "stream": "yes"}).to_string(), 400, Some("stream"), "boolean"),
        (
            cmpl,
            json!({"prompt": [1], "stream_options": {"include_usage": true}}).to_string(),
            400,
            Some("stream_options"),
            "stream: true",
        ),
        (cmpl, json!({"prompt": [1], "logprobs": 50}).to_string(), 400, Some("logprobs"), "[0, 20]"),
        (cmpl, json!({"prompt": [1], "seed": "x"}).to_string(), 400, Some("seed"), "whole number"),
        (
            cmpl,
            json!({"prompt": [1], "frequency_penalty": 0.5}).to_string(),
            400,
            Some("frequency_penalty"),
            "not supported",
        ),
        (
            cmpl,
            json!({"prompt": [1], "response_format": {"type": "json_object"}}).to_string(),
            400,
            Some("response_format"),
            "text",
        ),
        (cmpl, json!({"prompt": long}).to_string(), 400, Some("prompt"), "context_length_exceeded"),
        (
            cmpl,
            json!({"prompt": [1, 2, 3], "max_tokens": 62}).to_string(),
            400,
            Some("prompt"),
            "context_length_exceeded",
        ),
        (chat, json!({}).to_string(), 400, Some("messages"), "`messages` is required"),
        (chat, json!({"messages": []}).to_string(), 400, Some("messages"), "empty"),
        (chat, json!({"messages": "hi"}).to_string(), 400, Some("messages"), "must be an array"),
        (chat, json!({"messages": [{"content": "hi"}]}).to_string(), 400, Some("messages[0].role"), "required"),
        (
            chat,
            json!({"messages": [{"role": "wizard", "content": "hi"}]}).to_string(),
            400,
            Some("messages[0].role"),
            "wizard",
        ),
        (
            chat,
            json!({"messages": [{"role": "user", "content": 5}]}).to_string(),
            400,
            Some("messages[0].content"),
            "string",
        ),
        (
            chat,
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]})
                .to_string(),
            400,
            Some("messages[0].content[0]"),
            "text",
        ),
        (
            chat,
            json!({"messages": msgs, "logprobs": false, "top_logprobs": 2}).to_string(),
            400,
            Some("top_logprobs"),
            "logprobs: true",
        ),
        (
            chat,
            json!({"messages": msgs, "tools": [{"type": "function"}]}).to_string(),
            400,
            Some("tools[0]"),
            "function",
        ),
        (
            chat,
            json!({"messages": msgs, "tools": [], "tool_choice": "required"}).to_string(),
            400,
            Some("tool_choice"),
            "auto",
        ),
        (
            chat,
            json!({"messages": msgs, "chat_template_kwargs": 3}).to_string(),
            400,
            Some("chat_template_kwargs"),
            "object",
        ),
        (
            chat,
            json!({"messages": [{"role": "user", "content": "hello world ".repeat(100)}]}).to_string(),
            400,
            Some("messages"),
            "context_length_exceeded",
        ),
    ];
    for (path, body, status, param, what) in &cases {
        let (got, text) = s.post_raw(path, body.as_bytes());
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{body}: not JSON: {text}"));
        let e = &v["error"];
        assert_eq!(got, *status, "{body} -> {text}");
        assert_eq!(e["param"].as_str(), *param, "{body} -> {text}");
        let msg = e["message"].as_str().unwrap_or("");
        let code = e["code"].as_str().unwrap_or("");
        assert!(msg.contains(what) || code == *what, "{body}: {text} lacks {what:?}");
        assert!(e["type"].is_string(), "{text}");
    }
    // A body over the limit is refused before it is read whole.
    let big = vec![b' '; (32 << 20) + 10];
    let (got, text) = s.post_raw(cmpl, &big);
    assert_eq!(got, 413, "{text}");
    // Still serving, and every refusal was counted.
    let (got, v) = s.post(cmpl, &json!({"prompt": [1, 2], "max_tokens": 2}));
    assert_eq!(got, 200, "{v}");
    assert!(s.metric("qgc:requests_rejected_total") >= cases.len() as f64);
}
