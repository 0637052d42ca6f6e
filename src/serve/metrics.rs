//! Prometheus metrics under vLLM's names, so existing dashboards work, and the one log line per
//! request. Counters are written as prometheus_client writes them (`# TYPE x counter`, sample
//! `x_total`), every sample labelled with `model_name`.

use super::engine::Summary;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// vLLM's buckets for time to first token (seconds).
const TTFT_BUCKETS: &[f64] =
    &[0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0];
/// vLLM's buckets for inter-token latency (seconds).
const ITL_BUCKETS: &[f64] =
    &[0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0];
/// vLLM's buckets for end-to-end latency (seconds).
const E2E_BUCKETS: &[f64] =
    &[0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0];

struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram { bounds, counts: vec![0; bounds.len()], sum: 0.0, count: 0 }
    }
    fn observe(&mut self, v: f64) {
        for (b, c) in self.bounds.iter().zip(&mut self.counts) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }
}

#[derive(Default)]
struct Gauges {
    running: usize,
    waiting: usize,
    state_used: u64,
    state_budget: u64,
    cache_used: u64,
    cache_limit: u64,
    snapshots: usize,
    evictions: u64,
}

/// Everything `/metrics` reports.
pub struct Metrics {
    model: String,
    prompt_tokens: AtomicU64,
    generation_tokens: AtomicU64,
    cache_queries: AtomicU64,
    cache_hits: AtomicU64,
    cache_hit_requests: AtomicU64,
    computed_tokens: AtomicU64,
    finished: Mutex<Vec<(&'static str, u64)>>,
    cancelled: AtomicU64,
    failed: AtomicU64,
    rejected: AtomicU64,
    gauges: Mutex<Gauges>,
    ttft: Mutex<Histogram>,
    itl: Mutex<Histogram>,
    e2e: Mutex<Histogram>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
    /// Metrics of the model served as `model`.
    pub fn new(model: &str) -> Metrics {
        Metrics {
            model: model.replace(['\\', '"', '\n'], "_"),
            prompt_tokens: AtomicU64::new(0),
            generation_tokens: AtomicU64::new(0),
            cache_queries: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            cache_hit_requests: AtomicU64::new(0),
            computed_tokens: AtomicU64::new(0),
            finished: Mutex::new(Vec::new()),
            cancelled: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            gauges: Mutex::new(Gauges::default()),
            ttft: Mutex::new(Histogram::new(TTFT_BUCKETS)),
            itl: Mutex::new(Histogram::new(ITL_BUCKETS)),
            e2e: Mutex::new(Histogram::new(E2E_BUCKETS)),
        }
    }

    /// Sequences decoding and requests not yet decoding.
    pub fn set_queue(&self, running: usize, waiting: usize) {
        let mut g = lock(&self.gauges);
        g.running = running;
        g.waiting = waiting;
    }

    /// State bytes admitted of the budget, prefix-cache bytes of its limit.
    pub fn set_usage(&self, used: u64, budget: u64, cache: u64, cache_limit: u64) {
        let mut g = lock(&self.gauges);
        g.state_used = used;
        g.state_budget = budget;
        g.cache_used = cache;
        g.cache_limit = cache_limit;
    }

    /// Prefix-cache snapshots held and evicted so far.
    pub fn set_cache(&self, snapshots: usize, evictions: u64) {
        let mut g = lock(&self.gauges);
        g.snapshots = snapshots;
        g.evictions = evictions;
    }

    /// A prompt of `n` cacheable tokens looked up.
    pub fn queried(&self, n: usize) {
        self.cache_queries.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A lookup restored `n` tokens.
    pub fn hit(&self, n: usize) {
        self.cache_hits.fetch_add(n as u64, Ordering::Relaxed);
        self.cache_hit_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` prompt tokens computed by prefill.
    pub fn computed(&self, n: usize) {
        self.computed_tokens.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A request's first token, `s` seconds after it arrived.
    pub fn first_token(&self, s: f64) {
        lock(&self.ttft).observe(s);
    }

    /// A gap of `s` seconds between two tokens of one request.
    pub fn inter_token(&self, s: f64) {
        lock(&self.itl).observe(s);
    }

    /// A client went away before its request ended.
    pub fn cancelled(&self) {
        self.cancelled.fetch_add(1, Ordering::Relaxed);
    }

    /// The engine failed a request.
    pub fn failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    /// The HTTP layer refused a request (4xx).
    pub fn rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// A request ended: counters, histograms, and its log line on stderr.
    pub fn finished(&self, s: &Summary) {
        let u = s.usage;
        self.prompt_tokens.fetch_add(u.prompt_tokens as u64, Ordering::Relaxed);
        self.generation_tokens.fetch_add(u.completion_tokens as u64, Ordering::Relaxed);
        lock(&self.e2e).observe(s.e2e);
        {
            let mut f = lock(&self.finished);
            match f.iter_mut().find(|(r, _)| *r == s.finish) {
                Some((_, n)) => *n += 1,
                None => f.push((s.finish, 1)),
            }
        }
        eprintln!(
            "request {}: prompt {} tokens ({} cached, {} computed), generated {}, ttft {:.3} s, {:.1} tok/s, e2e {:.3} s, finish {}",
            s.id,
            u.prompt_tokens,
            u.cached_tokens,
            u.prompt_tokens - u.cached_tokens,
            u.completion_tokens,
            s.ttft,
            s.tok_s,
            s.e2e,
            s.finish
        );
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let l = format!("model_name=\"{}\"", self.model);
        let g = lock(&self.gauges);
        let gauge = |o: &mut String, name: &str, help: &str, v: f64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{{l}}} {v}");
        };
        let counter = |o: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name}_total{{{l}}} {v}");
        };
        let frac = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        gauge(&mut o, "vllm:num_requests_running", "Sequences in the decode batch.", g.running as f64);
        gauge(&mut o, "vllm:num_requests_waiting", "Requests waiting or prefilling.", g.waiting as f64);
        gauge(
            &mut o,
            "vllm:kv_cache_usage_perc",
            "Sequence state (KV + GDN state) admitted, fraction of the budget.",
            frac(g.state_used, g.state_budget),
        );
        gauge(
            &mut o,
            "qgc:prefix_cache_usage_perc",
            "Prefix-cache bytes, fraction of its limit.",
            frac(g.cache_used, g.cache_limit),
        );
        gauge(&mut o, "qgc:prefix_cache_bytes", "Bytes of prefix-cache snapshots.", g.cache_used as f64);
        gauge(&mut o, "qgc:prefix_cache_snapshots", "Prefix-cache snapshots held.", g.snapshots as f64);
        let evictions = g.evictions;
        drop(g);
        counter(&mut o, "qgc:prefix_cache_evictions", "Snapshots evicted by the LRU.", evictions);
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter(&mut o, "vllm:prompt_tokens", "Prompt tokens of finished requests.", c(&self.prompt_tokens));
        counter(&mut o, "vllm:generation_tokens", "Generated tokens of finished requests.", c(&self.generation_tokens));
        counter(
            &mut o,
            "vllm:prefix_cache_queries",
            "Prompt tokens looked up in the prefix cache.",
            c(&self.cache_queries),
        );
        counter(&mut o, "vllm:prefix_cache_hits", "Prompt tokens restored from the prefix cache.", c(&self.cache_hits));
        counter(
            &mut o,
            "qgc:prefix_cache_hit_requests",
            "Requests that restored a cached prefix.",
            c(&self.cache_hit_requests),
        );
        counter(&mut o, "qgc:prefill_computed_tokens", "Prompt tokens computed by prefill.", c(&self.computed_tokens));
        counter(&mut o, "qgc:requests_cancelled", "Requests whose client went away.", c(&self.cancelled));
        counter(&mut o, "qgc:requests_failed", "Requests the engine failed (server errors).", c(&self.failed));
        counter(&mut o, "qgc:requests_rejected", "Requests refused with a 4xx.", c(&self.rejected));
        let _ = writeln!(o, "# HELP vllm:request_success Finished requests by finish reason.");
        let _ = writeln!(o, "# TYPE vllm:request_success counter");
        for (reason, n) in lock(&self.finished).iter() {
            let _ = writeln!(o, "vllm:request_success_total{{{l},finished_reason=\"{reason}\"}} {n}");
        }
        for (name, help, h) in [
            ("vllm:time_to_first_token_seconds", "Seconds from arrival to the first token.", &self.ttft),
            ("vllm:inter_token_latency_seconds", "Seconds between two tokens of a request.", &self.itl),
            ("vllm:e2e_request_latency_seconds", "Seconds from arrival to the end.", &self.e2e),
        ] {
            let h = lock(h);
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} histogram");
            for (b, n) in h.bounds.iter().zip(&h.counts) {
                let _ = writeln!(o, "{name}_bucket{{{l},le=\"{b}\"}} {n}");
            }
            let _ = writeln!(o, "{name}_bucket{{{l},le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(o, "{name}_sum{{{l}}} {}", h.sum);
            let _ = writeln!(o, "{name}_count{{{l}}} {}", h.count);
        }
        o
    }
}
