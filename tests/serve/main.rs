//! `qgc serve` over HTTP on a loopback port: the OpenAI shapes (streaming and not), every error
//! case with its status and `param`, greedy output equal to `qgc run --temp 0` alone and in a
//! batch of 16, cancellation mid-stream, a prompt longer than the context, memory admission and
//! the prefix cache (second turn, shared document), penalties, and the CUDA backend (PTX
//! interpreter) serving what the CPU backend serves.

#[path = "../common/mod.rs"]
mod common;

mod batching;
mod client;
mod errors;

use client::Server;
use serde_json::{json, Value};

/// The tiny model with random weights (the shipped Qwen tokenizer fits its vocabulary).
pub const TINY: &str = "models/qwen3-next-tiny.json";

/// A server on the tiny model with `extra` flags.
pub fn tiny(extra: &[&str]) -> Server {
    let mut args = vec![TINY, "--random-weights"];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// `ids` joined with commas.
pub fn csv(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

/// `qgc run ARGS --json`: the generated ids.
pub fn run_ids(args: &[&str]) -> Vec<i64> {
    let mut a = vec!["run"];
    a.extend_from_slice(args);
    a.push("--json");
    let tmp = common::temp_dir("serve-run");
    let (code, out, err) = common::qgc(&a, &tmp);
    let _ = std::fs::remove_dir_all(&tmp);
    assert_eq!(code, 0, "qgc run failed: {err}");
    let v: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    v["generated_ids"].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()
}

/// A greedy completion of `prompt` ids; the generated ids.
pub fn greedy_ids(s: &Server, prompt: &[i64], max_tokens: usize) -> Vec<i64> {
    let (status, v) = s.post(
        "/v1/completions",
        &json!({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "return_token_ids": true}),
    );
    assert_eq!(status, 200, "{v}");
    v["choices"][0]["token_ids"].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()
}

#[test]
fn models_health_metrics_and_unknown_routes() {
    let s = tiny(&["--served-model-name", "tiny"]);
    let (status, body) = s.get("/v1/models");
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "tiny");
    assert_eq!(v["data"][0]["object"], "model");
    assert_eq!(s.get("/health").0, 200);
    let (status, m) = s.get("/metrics");
    assert_eq!(status, 200);
    for name in [
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:prefix_cache_hits_total",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:inter_token_latency_seconds_bucket",
        "vllm:e2e_request_latency_seconds_bucket",
    ] {
        assert!(m.contains(name), "/metrics lacks {name}:\n{m}");
    }
    let (status, body) = s.get("/v1/nothing");
    assert_eq!(status, 404);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v["error"]["message"].is_string(), "{body}");
    let (status, body) = s.get("/v1/completions");
    assert_eq!(status, 405, "{body}");
    assert!(serde_json::from_str::<Value>(&body).unwrap()["error"].is_object());
}

#[test]
fn completion_shapes_streaming_and_not() {
    let s = tiny(&[]);
    let prompt = [9707, 11, 1879, 0, 5, 77];
    let (status, v) =
        s.post("/v1/completions", &json!({"prompt": prompt, "max_tokens": 5, "temperature": 0, "logprobs": 3}));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
    let c = &v["choices"][0];
    assert_eq!(c["index"], 0);
    assert_eq!(c["finish_reason"], "length");
    assert_eq!(v["usage"]["prompt_tokens"], 6);
    assert_eq!(v["usage"]["completion_tokens"], 5);
    assert_eq!(v["usage"]["total_tokens"], 11);
    let lp = &c["logprobs"];
    assert_eq!(lp["tokens"].as_array().unwrap().len(), 5);
    assert_eq!(lp["top_logprobs"][0].as_object().unwrap().len(), 3);
    // Greedy: the chosen token is the most likely one, and log-probabilities are ≤ 0.
    let best =
        lp["top_logprobs"][0].as_object().unwrap().values().map(|x| x.as_f64().unwrap()).fold(f64::MIN, f64::max);
    let chosen = lp["token_logprobs"][0].as_f64().unwrap();
    assert!(chosen <= 0.0 && (chosen - best).abs() < 1e-6, "{lp}");
    let text = c["text"].as_str().unwrap().to_string();

    let data = s.stream(
        "/v1/completions",
        &json!({"prompt": prompt, "max_tokens": 5, "temperature": 0, "stream": true, "stream_options": {"include_usage": true}}),
    );
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"].as_array().unwrap().len(), 0, "{usage}");
    assert_eq!(usage["usage"]["completion_tokens"], 5);
    let streamed: String = chunks.iter().filter_map(|c| c["choices"][0]["text"].as_str()).collect();
    assert_eq!(streamed, text, "streamed text equals the non-streamed text");
    assert!(chunks[..chunks.len() - 1].iter().all(|c| c["usage"].is_null()), "other chunks carry usage: null");
    let finish: Vec<&Value> =
        chunks.iter().map(|c| &c["choices"][0]["finish_reason"]).filter(|f| !f.is_null()).collect();
    assert_eq!(finish, [&json!("length")]);
}

#[test]
fn chat_streaming_and_not_agree() {
    let s = tiny(&[]);
    let body = json!({
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}],
        "max_tokens": 6, "temperature": 0,
    });
    let (status, v) = s.post("/v1/chat/completions", &body);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    let msg = &v["choices"][0]["message"];
    assert_eq!(msg["role"], "assistant");
    let full = format!("{}{}", msg["reasoning_content"].as_str().unwrap_or(""), msg["content"].as_str().unwrap());
    let mut stream_body = body.clone();
    stream_body["stream"] = json!(true);
    let data = s.stream("/v1/chat/completions", &stream_body);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let streamed: String = chunks
        .iter()
        .flat_map(|c| {
            let d = &c["choices"][0]["delta"];
            [d["reasoning_content"].as_str().unwrap_or(""), d["content"].as_str().unwrap_or("")]
        })
        .collect();
    assert_eq!(streamed, full);
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], v["choices"][0]["finish_reason"]);
}

#[test]
fn n_choices_seed_and_stop() {
    let s = tiny(&[]);
    let body = json!({"prompt": [1, 2, 3, 4], "max_tokens": 8, "n": 3, "temperature": 1.0, "seed": 7, "return_token_ids": true});
    let (status, a) = s.post("/v1/completions", &body);
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["choices"].as_array().unwrap().len(), 3);
    assert_eq!(a["usage"]["completion_tokens"], 24);
    let (_, b) = s.post("/v1/completions", &body);
    let ids = |v: &Value| v["choices"].as_array().unwrap().iter().map(|c| c["token_ids"].clone()).collect::<Vec<_>>();
    assert_eq!(ids(&a), ids(&b), "a seed repeats its choices");
    assert!(ids(&a)[0] != ids(&a)[1] || ids(&a)[1] != ids(&a)[2], "choices draw differently: {:?}", ids(&a));
    // A stop string cuts the text before it and ends with "stop".
    let text = a["choices"][0]["text"].as_str().unwrap().to_string();
    let at = text.char_indices().nth(3).map(|(i, _)| i).expect("8 tokens make more than 3 characters");
    let stop: String = text[at..].chars().take(1).collect();
    let mut b2 = body.clone();
    b2["n"] = json!(1);
    b2["stop"] = json!([stop]);
    let (_, c) = s.post("/v1/completions", &b2);
    let got = c["choices"][0]["text"].as_str().unwrap();
    assert!(!got.contains(&stop) && text.starts_with(got), "{got:?} vs {text:?} stop {stop:?}");
    assert_eq!(c["choices"][0]["finish_reason"], "stop");
}

#[test]
fn greedy_equals_qgc_run() {
    let s = tiny(&[]);
    let prompt = [151644, 872, 198, 9707, 0, 33, 7, 151645];
    let want = run_ids(&[TINY, "--random-weights", "--tokens", &csv(&prompt), "--temp", "0", "-n", "12"]);
    assert_eq!(greedy_ids(&s, &prompt, 12), want);
}

/// An HF fixture checkpoint (320 ids) and the byte-level tokenizer that fits it.
const FIXTURE: &str = "tests/fixtures/hybrid-3to1";
const FIXTURE_TOKENIZER: &str = "tests/fixtures/tokenizer/byte-level.json";

/// `qgc logits` on [`FIXTURE`] over `tokens` (the first `prefill` prefilled, the rest decoded):
/// one row of logits after each token.
fn logit_rows(tokens: &[i64], prefill: usize) -> Vec<Vec<f32>> {
    let tmp = common::temp_dir("serve-logits");
    let out = tmp.join("l.safetensors");
    let (t, p) = (csv(tokens), prefill.to_string());
    let args = ["logits", FIXTURE, "--tokens", t.as_str(), "--prefill", p.as_str(), "--out", out.to_str().unwrap()];
    let (code, _, err) = common::qgc(&args, &tmp);
    assert_eq!(code, 0, "qgc logits failed: {err}");
    let bytes = std::fs::read(&out).unwrap();
    let _ = std::fs::remove_dir_all(&tmp);
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let l = st.tensor("logits").unwrap();
    let v: Vec<f32> = l.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    v.chunks(l.shape()[1]).map(<[f32]>::to_vec).collect()
}

#[test]
fn presence_and_frequency_penalties_steer_greedy_decoding() {
    // Each greedy token must be the argmax of the raw logits after the tokens before it (from
    // `qgc logits`, the same numerics) minus presence · [generated before] minus frequency ·
    // (times generated before), computed here; the prompt's ids count for neither (vLLM).
    let s = Server::start(&[FIXTURE, "--tokenizer", FIXTURE_TOKENIZER]);
    let prompt: Vec<i64> = vec![260, 72, 101, 108, 5, 33, 7, 261];
    let ids = |presence: f32, frequency: f32| {
        let body = json!({"prompt": prompt, "max_tokens": 10, "temperature": 0, "return_token_ids": true,
                          "presence_penalty": presence, "frequency_penalty": frequency});
        let (status, v) = s.post("/v1/completions", &body);
        assert_eq!(status, 200, "{v}");
        v["choices"][0]["token_ids"].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect::<Vec<_>>()
    };
    let plain = ids(0.0, 0.0);
    for (presence, frequency) in [(-2.0f32, 0.0f32), (0.0, 2.0), (1.5, -0.5), (-1.0, 1.0)] {
        let got = ids(presence, frequency);
        let all: Vec<i64> = prompt.iter().chain(&got[..got.len() - 1]).copied().collect();
        let rows = logit_rows(&all, prompt.len());
        for (i, &id) in got.iter().enumerate() {
            let mut l: Vec<f64> = rows[prompt.len() - 1 + i].iter().map(|&x| f64::from(x)).collect();
            for &g in &got[..i] {
                l[g as usize] -= f64::from(frequency);
            }
            for g in got[..i].iter().collect::<std::collections::BTreeSet<_>>() {
                l[*g as usize] -= f64::from(presence);
            }
            let best = l.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            // The chosen id's penalised logit is the largest (to f32 rounding of the penalty).
            let what = format!("presence {presence}, frequency {frequency}, step {i}: {got:?}");
            assert!(l[id as usize] >= best - 1e-5, "{what}: chose {} below the best {best}", l[id as usize]);
        }
        if presence == -2.0 {
            assert_ne!(got, plain, "a bonus of 2 for generated ids changes this output");
            // `qgc run` takes the same penalties.
            let run = run_ids(&[
                FIXTURE,
                "--tokenizer",
                FIXTURE_TOKENIZER,
                "--tokens",
                &csv(&prompt),
                "--temp",
                "0",
                "-n",
                "10",
                "--presence-penalty",
                "-2",
            ]);
            assert_eq!(run, got);
        }
    }
}

#[test]
fn the_cuda_backend_serves_what_the_cpu_backend_serves() {
    // The server does not care which backend runs the model: on the CUDA backend (here on the
    // PTX interpreter, memcheck on) two concurrent greedy requests, batched together, give the
    // ids `qgc run` gives on the CPU backend for each alone.
    let s = Server::start(&[FIXTURE, "--tokenizer", FIXTURE_TOKENIZER, "--backend", "cuda", "--device", "ptx"]);
    let prompts: [Vec<i64>; 2] = [vec![260, 72, 101, 108, 5, 33, 7, 261], vec![260, 9, 40, 41, 42, 43, 261, 260, 120]];
    let got: Vec<Vec<i64>> = std::thread::scope(|sc| {
        let hs: Vec<_> = prompts.iter().map(|p| sc.spawn(|| greedy_ids(&s, p, 6))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (p, g) in prompts.iter().zip(&got) {
        let t = csv(p);
        let want = run_ids(&[FIXTURE, "--tokenizer", FIXTURE_TOKENIZER, "--tokens", &t, "--temp", "0", "-n", "6"]);
        assert_eq!(g, &want, "prompt {p:?}");
    }
}

#[test]
fn a_batch_of_prompts_gets_n_choices_each_in_prompt_order() {
    // OpenAI's batched `prompt`: choice i·n + c is choice c of prompt i, usage sums the prompts;
    // greedy, each prompt's choices equal that prompt sent alone; streaming gives the same.
    let s = tiny(&[]);
    let prompts = [vec![151644, 872, 198, 9707], vec![5, 17, 3, 99, 7, 8], vec![33, 7]];
    let alone: Vec<Vec<i64>> = prompts.iter().map(|p| greedy_ids(&s, p, 5)).collect();
    let body = json!({"prompt": prompts, "max_tokens": 5, "temperature": 0, "n": 2, "return_token_ids": true});
    let (status, v) = s.post("/v1/completions", &body);
    assert_eq!(status, 200, "{v}");
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 6, "{v}");
    for (k, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], k, "{v}");
        let ids: Vec<i64> = c["token_ids"].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect();
        assert_eq!(ids, alone[k / 2], "choice {k}");
    }
    assert_eq!(v["usage"]["prompt_tokens"], 4 + 6 + 2, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 6 * 5, "{v}");
    // Streamed: every chunk names its choice; the text of each choice as above.
    let mut sb = body.clone();
    sb["stream"] = json!(true);
    let mut texts = vec![String::new(); 6];
    for d in s.stream("/v1/completions", &sb).iter().filter(|d| d.as_str() != "[DONE]") {
        let c: Value = serde_json::from_str(d).unwrap();
        for ch in c["choices"].as_array().unwrap() {
            texts[ch["index"].as_u64().unwrap() as usize].push_str(ch["text"].as_str().unwrap_or(""));
        }
    }
    let whole: Vec<&str> = choices.iter().map(|c| c["text"].as_str().unwrap()).collect();
    assert_eq!(texts, whole);
}
