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
        (cmpl, json!({"prompt": ["a", 5]}).to_string(), 400, Some("prompt"), "an array of those"),
        (cmpl, json!({"prompt": [[1, 2], []]}).to_string(), 400, Some("prompt"), "an array of those"),
        (cmpl, json!({"prompt": vec!["a"; 257]}).to_string(), 400, Some("prompt"), "at most 256 prompts"),
        (
            cmpl,
            json!({"prompt": [[1, 2], [1, 99_999_999]]}).to_string(),
            400,
            Some("prompt[1]"),
            "outside the vocabulary",
        ),
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
        (cmpl, json!({"prompt": [1], "frequency_penalty": 2.5}).to_string(), 400, Some("frequency_penalty"), "[-2, 2]"),
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

/// A deterministic xorshift.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[(self.next() % xs.len() as u64) as usize]
    }
}

/// Odd values a mutation puts anywhere.
fn odd(r: &mut Rng) -> Value {
    r.pick(&[
        json!(null),
        json!(-1),
        json!(0),
        json!(2147483648u64),
        json!(4294967296u64),
        json!(9223372036854775807i64),
        json!(18446744073709551615u64),
        json!(-9223372036854775808i64),
        json!(1e308),
        json!(-1e308),
        json!(0.5),
        json!(6e9),
        json!(""),
        json!("\u{0}\u{ffff}<|im_end|>"),
        json!(true),
        json!([]),
        json!({}),
        json!([[[[[]]]]]),
        json!({"type": "text", "text": 5}),
        json!([1, "a", null]),
    ])
    .clone()
}

fn mutate(v: &mut Value, r: &mut Rng, depth: usize) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            let keys: Vec<String> = m.keys().cloned().collect();
            let k = r.pick(&keys).clone();
            match r.next() % 4 {
                0 => {
                    m.remove(&k);
                }
                1 => {
                    m.insert(k, odd(r));
                }
                _ if depth < 4 => mutate(m.get_mut(&k).unwrap(), r, depth + 1),
                _ => {
                    m.insert(k, odd(r));
                }
            }
        }
        Value::Array(a) if !a.is_empty() => {
            let i = (r.next() % a.len() as u64) as usize;
            match r.next() % 3 {
                0 => a[i] = odd(r),
                1 => a.push(a[i].clone()),
                _ if depth < 4 => mutate(&mut a[i], r, depth + 1),
                _ => a[i] = odd(r),
            }
        }
        _ => *v = odd(r),
    }
}

#[test]
fn mutated_requests_never_get_a_server_error() {
    let s = tiny(&["--max-model-len", "96", "--max-num-seqs", "4"]);
    let seeds = [
        (
            "/v1/completions",
            json!({"prompt": [1, 2, 3], "max_tokens": 4, "temperature": 0.5, "stop": ["a"], "logprobs": 2, "n": 2, "seed": 3}),
        ),
        (
            "/v1/completions",
            json!({"prompt": "hi there", "max_tokens": 3, "stream": true, "stream_options": {"include_usage": true}, "echo": true}),
        ),
        (
            "/v1/chat/completions",
            json!({
                "model": "qwen3-next-tiny", "max_completion_tokens": 4, "top_p": 0.9, "top_k": 5, "min_p": 0.1,
                "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": [{"type": "text", "text": "q"}]},
                             {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{\"x\": 1}"}}]},
                             {"role": "tool", "tool_call_id": "c", "content": "r"}],
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}}}}],
                "chat_template_kwargs": {"enable_thinking": false}, "logprobs": true, "top_logprobs": 2,
            }),
        ),
    ];
    let mut r = Rng(0x5eed);
    let (mut ok, mut refused) = (0, 0);
    for i in 0..240 {
        let (path, seed) = &seeds[i % seeds.len()];
        let mut body = seed.clone();
        for _ in 0..(1 + r.next() % 3) {
            mutate(&mut body, &mut r, 0);
        }
        let (status, text) = s.post_raw(path, body.to_string().as_bytes());
        assert!(status < 500, "{body} -> {status} {text}");
        if status == 200 {
            ok += 1;
        } else {
            refused += 1;
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{body}: not JSON: {text}"));
            assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body} -> {text}");
        }
    }
    assert!(ok > 10 && refused > 10, "the mutations should reach both sides: {ok} answered, {refused} refused");
    assert_eq!(s.get("/health").0, 200);
    assert_eq!(s.metric("qgc:requests_failed_total"), 0.0);
}
