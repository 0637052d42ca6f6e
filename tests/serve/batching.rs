//! Continuous batching: a request's greedy tokens do not depend on what else runs; a client
//! that hangs up frees its slot; memory admission queues what does not fit now and refuses
//! what never fits; the prefix cache serves a second turn and a shared document.

use crate::client::Server;
use crate::{greedy_ids, tiny};
use serde_json::{json, Value};
use std::thread;

/// Prompt `i` of a set of different lengths (token ids of the Qwen vocabulary).
fn prompt(i: usize) -> Vec<i64> {
    (0..(5 + 7 * i % 23)).map(|t| ((t * 131 + i * 977) % 150_000) as i64 + 10).collect()
}

#[test]
fn greedy_tokens_alone_equal_tokens_in_a_batch_of_16() {
    let s = tiny(&["--max-num-seqs", "16"]);
    let probe = prompt(3);
    let alone = greedy_ids(&s, &probe, 24);
    assert_eq!(alone.len(), 24);
    thread::scope(|sc| {
        // 15 others with different prompt lengths, started at different times.
        let others: Vec<_> = (0..15)
            .map(|i| {
                let s = &s;
                sc.spawn(move || {
                    thread::sleep(std::time::Duration::from_millis(20 * i as u64));
                    let body = json!({"prompt": prompt(i + 10), "max_tokens": 20 + i, "temperature": 0.8, "seed": i, "ignore_eos": true});
                    let (status, v) = s.post("/v1/completions", &body);
                    assert_eq!(status, 200, "{v}");
                    v["usage"]["completion_tokens"].as_u64().unwrap()
                })
            })
            .collect();
        thread::sleep(std::time::Duration::from_millis(150));
        let batched = greedy_ids(&s, &probe, 24);
        assert_eq!(batched, alone, "greedy tokens changed inside a batch");
        for (i, h) in others.into_iter().enumerate() {
            assert_eq!(h.join().unwrap(), 20 + i as u64);
        }
    });
    // The gauge is set at the end of the engine step that finished the requests, which may come
    // just after their responses.
    s.wait_for(30, "no request running", |s| s.metric("vllm:num_requests_running") == 0.0);
}

#[test]
fn a_client_that_hangs_up_frees_its_slot() {
    let s = tiny(&[]);
    let body = json!({"prompt": [5, 6, 7], "max_tokens": 3000, "ignore_eos": true, "stream": true});
    let sock = s.stream_partially("/v1/completions", &body, 3);
    s.wait_for(30, "the request to run", |s| s.metric("vllm:num_requests_running") == 1.0);
    drop(sock);
    s.wait_for(30, "the slot to be freed", |s| {
        s.metric("vllm:num_requests_running") == 0.0 && s.metric("qgc:requests_cancelled_total") == 1.0
    });
    s.wait_for(30, "the cancellation's log line", |s| s.log.lock().unwrap().contains("cancelled"));
    let (status, _) = s.post("/v1/completions", &json!({"prompt": [1], "max_tokens": 2}));
    assert_eq!(status, 200);

    // A batch of prompts: hanging up cancels every prompt's request, the one still waiting for
    // a slot too (one sequence at a time here).
    let one = tiny(&["--max-num-seqs", "1"]);
    let body = json!({"prompt": [[5, 6, 7], [8, 9]], "max_tokens": 3000, "ignore_eos": true, "stream": true});
    let sock = one.stream_partially("/v1/completions", &body, 3);
    one.wait_for(30, "one running, one waiting", |s| {
        s.metric("vllm:num_requests_running") == 1.0 && s.metric("vllm:num_requests_waiting") == 1.0
    });
    drop(sock);
    one.wait_for(30, "both to be cancelled", |s| {
        s.metric("vllm:num_requests_running") == 0.0
            && s.metric("vllm:num_requests_waiting") == 0.0
            && s.metric("qgc:requests_cancelled_total") == 2.0
    });
}

#[test]
fn admission_queues_what_does_not_fit_and_refuses_what_never_fits() {
    // The tiny model holds ~16.5 KiB of GDN state and 256 B of KV per token per sequence: a
    // 600 KiB budget fits two sequences of ~1,000 tokens, and one of at most ~2,300.
    let s = tiny(&["--memory-budget", "600KiB", "--prefix-cache-bytes", "0"]);
    let log = s.log.lock().unwrap().clone();
    assert!(log.contains("--max-model-len lowered") && log.contains("sequences at"), "{log}");
    let done = std::sync::atomic::AtomicBool::new(false);
    let (max_running, max_waiting) = thread::scope(|sc| {
        let watch = sc.spawn(|| {
            let (mut r, mut w) = (0.0f64, 0.0f64);
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                r = r.max(s.metric("vllm:num_requests_running"));
                w = w.max(s.metric("vllm:num_requests_waiting"));
                thread::sleep(std::time::Duration::from_millis(20));
            }
            (r, w)
        });
        let hs: Vec<_> = (0..4)
            .map(|i| {
                let s = &s;
                sc.spawn(move || {
                    let body = json!({"prompt": prompt(i), "max_tokens": 900, "ignore_eos": true, "temperature": 0});
                    let (status, v) = s.post("/v1/completions", &body);
                    assert_eq!(status, 200, "{v}");
                    assert_eq!(v["usage"]["completion_tokens"], 900);
                })
            })
            .collect();
        hs.into_iter().for_each(|h| h.join().unwrap());
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        watch.join().unwrap()
    });
    assert!(max_running <= 2.0, "{max_running} sequences ran at once in a budget for two");
    assert!(max_waiting >= 1.0, "nothing ever waited");
    // Two choices of 2,000 tokens never fit: refused at once, not queued forever.
    let (status, v) = s.post("/v1/completions", &json!({"prompt": [1, 2], "max_tokens": 2000, "n": 2}));
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    // Longer than the (lowered) context: refused too.
    let (status, v) = s.post("/v1/completions", &json!({"prompt": [1, 2], "max_tokens": 4000}));
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "context_length_exceeded");
}

/// The `logprobs` object of a greedy completion (tokens, their log-probabilities and the top 5 at
/// each step, as the server printed them) and the usage.
fn top_logprobs(s: &Server, prompt: &[i64], n: usize) -> (Value, Value) {
    let (status, v) =
        s.post("/v1/completions", &json!({"prompt": prompt, "max_tokens": n, "temperature": 0, "logprobs": 5}));
    assert_eq!(status, 200, "{v}");
    let lp = v["choices"][0]["logprobs"].clone();
    assert_eq!(lp["top_logprobs"].as_array().map(Vec::len), Some(n), "{v}");
    (lp, v["usage"].clone())
}

#[test]
fn a_second_turn_computes_only_its_new_tokens() {
    let s = tiny(&[]);
    let cold = tiny(&["--prefix-cache-bytes", "0"]);
    let turn1: Vec<i64> = prompt(5);
    let reply = greedy_ids(&s, &turn1, 10);
    // The next turn: the transcript (prompt, reply) and new tokens.
    let turn2: Vec<i64> = turn1.iter().chain(&reply).chain(&[151645, 198, 151644, 872, 198, 3838]).copied().collect();
    let (warm_lp, usage) = top_logprobs(&s, &turn2, 6);
    // The state after the reply holds the prompt and all reply tokens but the last.
    let cached = usage["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap() as usize;
    assert_eq!(cached, turn1.len() + reply.len() - 1, "{usage}");
    // The request's log line says so (stderr is read by another thread: wait for it).
    let line = format!("({cached} cached, {} computed)", turn2.len() - cached);
    s.wait_for(30, &line, |s| s.log.lock().unwrap().contains(&line));
    assert!(s.metric("vllm:prefix_cache_hits_total") >= cached as f64);
    let (cold_lp, cold_usage) = top_logprobs(&cold, &turn2, 6);
    assert_eq!(cold_usage["prompt_tokens_details"]["cached_tokens"], 0);
    // Bit for bit: the server prefills in decode's summation order, so the restored state and
    // the tokens computed after it give what one prefill of the whole prompt gives.
    assert_eq!(warm_lp, cold_lp, "cached vs uncached");
}

#[test]
fn a_shared_document_is_computed_once() {
    let s = tiny(&["--max-num-batched-tokens", "256"]);
    let doc: Vec<i64> = (0..2000).map(|t| (t * 7919 % 150_000) as i64 + 10).collect();
    let before = s.metric("qgc:prefill_computed_tokens_total");
    thread::scope(|sc| {
        for q in 0..8i64 {
            let (s, doc) = (&s, &doc);
            sc.spawn(move || {
                let p: Vec<i64> = doc.iter().copied().chain([1000 + q, 2000 + q, 3000 + q]).collect();
                let (status, v) = s.post("/v1/completions", &json!({"prompt": p, "max_tokens": 2}));
                assert_eq!(status, 200, "{v}");
            });
        }
    });
    let computed = s.metric("qgc:prefill_computed_tokens_total") - before;
    // One request computes the document; each computes its own 3 tokens but the last (which
    // goes through decode). Requests that arrive after the first started may redo a little of
    // the document up to the next snapshot point.
    assert!(
        computed <= 2000.0 + 8.0 * 3.0 + 512.0,
        "computed {computed} prompt tokens for 8 requests; log:\n{}",
        s.log.lock().unwrap()
    );
    assert!(s.metric("qgc:prefix_cache_hit_requests_total") >= 7.0);
}

#[test]
fn chunked_prefill_computes_what_one_prefill_computes() {
    // 16-token steps split a 150-token prompt into ~10 chunks, each continuing the KV, conv and
    // recurrent state; one step takes it whole.
    let chunked = tiny(&["--max-num-batched-tokens", "16", "--prefix-cache-bytes", "0"]);
    let whole = tiny(&["--prefix-cache-bytes", "0"]);
    let p: Vec<i64> = (0..150).map(|t| (t * 4099 % 150_000) as i64 + 10).collect();
    let (a, _) = top_logprobs(&chunked, &p, 4);
    let (b, _) = top_logprobs(&whole, &p, 4);
    assert_eq!(a, b, "chunked vs whole");
    assert_eq!(greedy_ids(&chunked, &p, 8), greedy_ids(&whole, &p, 8));
}
