//! The HTTP side: axum routes, prompt building (chat template → tokens), context and memory
//! checks, handing requests to the engine, and turning its events into OpenAI responses —
//! one JSON body, or SSE chunks ending in `data: [DONE]`.

use super::api::{self, ApiError, ChatRequest, Common, CompletionRequest, Defaults, Prompt};
use super::engine::{Event, Finish, ModelInfo, Params, Submit, TokenLogprob, Usage};
use super::metrics::Metrics;
use axum::body::{to_bytes, Body};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use qgc_runtime::reasoning::{ReasoningParser, ToolCallParser, ToolEvent};
use qgc_runtime::template::ChatTemplate;
use qgc_runtime::tokenizer::Tokenizer;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;

/// Largest request body read (a long document fits; more is a 413).
pub const MAX_BODY: usize = 32 << 20;

/// What every handler shares.
pub struct App {
    /// The served model name.
    pub name: String,
    /// Unix seconds the server started (`created` of the model).
    pub created: u64,
    /// The engine's queue.
    pub submit: UnboundedSender<Submit>,
    /// Text in and out (none: token-id prompts only).
    pub tokenizer: Option<Arc<Tokenizer>>,
    /// The chat template (none: no chat endpoint).
    pub template: Option<ChatTemplate>,
    /// Sampling defaults.
    pub defaults: Defaults,
    /// State sizes, EOS ids, vocabulary.
    pub info: Arc<ModelInfo>,
    /// The engine's limits.
    pub limits: super::engine::Limits,
    /// `/metrics`.
    pub metrics: Arc<Metrics>,
}

/// The routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(not_allowed)
        .with_state(app)
}

async fn not_found() -> ApiError {
    ApiError::status(
        StatusCode::NOT_FOUND,
        "not_found_error",
        "no such route; see /v1/models, /v1/completions, /v1/chat/completions, /health, /metrics",
    )
}

async fn not_allowed() -> ApiError {
    ApiError::status(StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error", "method not allowed on this route")
}

async fn health() -> impl IntoResponse {
    (StatusCode::OK, "")
}

async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], app.metrics.render())
}

async fn models(State(app): State<Arc<App>>) -> impl IntoResponse {
    axum::Json(json!({
        "object": "list",
        "data": [{
            "id": app.name,
            "object": "model",
            "created": app.created,
            "owned_by": "qgc",
            "root": app.name,
            "max_model_len": app.limits.max_model_len,
        }]
    }))
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn request_id(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0) as u64;
    format!("{prefix}-{:012x}{:04x}", t & 0xffff_ffff_ffff, N.fetch_add(1, Ordering::Relaxed) & 0xffff)
}

/// Reads the body (at most [`MAX_BODY`]) as a JSON object; returns the bytes too.
async fn body_object(body: Body) -> Result<(axum::body::Bytes, serde_json::Map<String, Value>), ApiError> {
    let bytes = to_bytes(body, MAX_BODY).await.map_err(|_| {
        ApiError::status(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("the request body is larger than {} MiB", MAX_BODY >> 20),
        )
    })?;
    let o = api::object(&bytes)?;
    Ok((bytes, o))
}

fn check_model(app: &App, c: &Common) -> Result<(), ApiError> {
    match &c.model {
        Some(m) if *m != app.name => Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("The model `{m}` does not exist; this server serves `{}`", app.name),
            kind: "invalid_request_error",
            param: Some("model".into()),
            code: Some("model_not_found"),
        }),
        _ => Ok(()),
    }
}

/// The engine parameters, after the context and memory checks. `default_max`: completions'
/// default `max_tokens` (OpenAI's 16), `None` for chat (the rest of the context).
fn params(
    app: &App,
    c: &Common,
    prompt_len: usize,
    default_max: Option<usize>,
    what: &str,
) -> Result<Params, ApiError> {
    let max_len = app.limits.max_model_len;
    let ctx = |m: String| ApiError::coded(what, "context_length_exceeded", m);
    if prompt_len >= max_len {
        return Err(ctx(format!(
            "This model's maximum context length is {max_len} tokens. However, your {what} has {prompt_len} tokens, which leaves no room for a completion."
        )));
    }
    let room = max_len - prompt_len;
    let max_tokens = match (c.max_tokens, default_max) {
        (Some(m), _) if m > room => {
            return Err(ctx(format!(
                "This model's maximum context length is {max_len} tokens. However, you requested {} tokens ({prompt_len} in the {what}, {m} in the completion).",
                prompt_len.saturating_add(m)
            )))
        }
        (Some(m), _) => m,
        (None, Some(d)) => d.min(room),
        (None, None) => room,
    };
    if !c.stop.is_empty() && app.tokenizer.is_none() {
        return Err(ApiError::bad(
            "stop",
            "`stop` needs text, and this model has no tokenizer that fits its vocabulary",
        ));
    }
    let need = app.info.seq_bytes(prompt_len + max_tokens).saturating_mul(c.n as u64);
    if need > app.limits.state_budget {
        return Err(ctx(format!(
            "{} sequence(s) of {} tokens need {} of state; the server holds {} (--memory-budget). Ask for fewer tokens.",
            c.n,
            prompt_len + max_tokens,
            qgc_runtime::budget::human(need),
            qgc_runtime::budget::human(app.limits.state_budget)
        )));
    }
    Ok(Params {
        max_tokens,
        sampling: c.sampling,
        stop: c.stop.clone(),
        ignore_eos: c.ignore_eos,
        n: c.n,
        logprobs: c.logprobs,
    })
}

fn submit(app: &App, id: &str, prompt: Vec<i32>, params: Params) -> Result<UnboundedReceiver<Event>, ApiError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let s = Submit { id: id.to_string(), prompt, params, events: tx, arrived: Instant::now() };
    app.submit
        .send(s)
        .map_err(|_| ApiError::status(StatusCode::SERVICE_UNAVAILABLE, "server_error", "the engine has stopped"))?;
    Ok(rx)
}

fn rejected(app: &App, e: ApiError) -> Response {
    if e.status.is_client_error() {
        app.metrics.rejected();
    }
    e.into_response()
}

async fn completions(State(app): State<Arc<App>>, body: Body) -> Response {
    match completions_inner(&app, body).await {
        Ok(r) => r,
        Err(e) => rejected(&app, e),
    }
}

async fn completions_inner(app: &Arc<App>, body: Body) -> Result<Response, ApiError> {
    let (_, o) = body_object(body).await?;
    let req: CompletionRequest = api::completion(&o, &app.defaults, app.limits.max_num_seqs)?;
    check_model(app, &req.common)?;
    // Every prompt checked before any is submitted: a bad one fails the whole request.
    let mut each = Vec::with_capacity(req.prompts.len());
    for (i, prompt) in req.prompts.iter().enumerate() {
        let what = if req.prompts.len() == 1 { "prompt".to_string() } else { format!("prompt[{i}]") };
        let (ids, text) = match prompt {
            Prompt::Ids(ids) => {
                let vocab = app.info.vocab as i64;
                if let Some(bad) = ids.iter().find(|&&t| t < 0 || t >= vocab) {
                    return Err(ApiError::bad(&what, format!("token id {bad} is outside the vocabulary (0..{vocab})")));
                }
                let ids: Vec<i32> = ids.iter().map(|&t| t as i32).collect();
                let text = match (&app.tokenizer, req.echo) {
                    (Some(t), true) => t.decode(&ids.iter().map(|&i| i as u32).collect::<Vec<_>>()).unwrap_or_default(),
                    _ => String::new(),
                };
                (ids, text)
            }
            Prompt::Text(t) => (encode(app, t, &what)?, t.clone()),
        };
        let params = params(app, &req.common, ids.len(), Some(16), &what)?;
        each.push((ids, text, params));
    }
    let id = request_id("cmpl");
    let batch = each.len();
    let mut rxs = Vec::with_capacity(batch);
    let mut echo = Vec::new();
    for (i, (ids, text, params)) in each.into_iter().enumerate() {
        let sub = if batch == 1 { id.clone() } else { format!("{id}-{i}") };
        rxs.push(submit(app, &sub, ids, params)?);
        if req.echo {
            echo.push(text);
        }
    }
    let n = req.common.n;
    let rx = if batch == 1 { rxs.remove(0) } else { merge(rxs, n) };
    let out = Output {
        id,
        created: now_s(),
        model: app.name.clone(),
        chat: None,
        echo,
        choices: batch * n,
        common: req.common,
    };
    Ok(respond(app, out, rx).await)
}

fn encode(app: &App, text: &str, what: &str) -> Result<Vec<i32>, ApiError> {
    let tok = app.tokenizer.as_ref().ok_or_else(|| {
        ApiError::bad(what, "this model has no tokenizer that fits its vocabulary: send the prompt as token ids")
    })?;
    let ids = tok.encode(text).map_err(|e| ApiError::bad(what, format!("tokenising the {what}: {e}")))?;
    if ids.is_empty() {
        return Err(ApiError::bad(what, format!("the {what} has no tokens")));
    }
    Ok(ids.into_iter().map(|t| t as i32).collect())
}

async fn chat(State(app): State<Arc<App>>, body: Body) -> Response {
    match chat_inner(&app, body).await {
        Ok(r) => r,
        Err(e) => rejected(&app, e),
    }
}

async fn chat_inner(app: &Arc<App>, body: Body) -> Result<Response, ApiError> {
    let (bytes, o) = body_object(body).await?;
    let req: ChatRequest = api::chat(&o, &app.defaults, app.limits.max_num_seqs)?;
    check_model(app, &req.common)?;
    let template = app.template.as_ref().ok_or_else(|| {
        ApiError::bad(
            "messages",
            "this model has no tokenizer, so no chat template: use /v1/completions with token ids",
        )
    })?;
    // The template sees the request as sent, keys in their order (tool schemas render as HF
    // renders them); the checks above ran on the same JSON.
    let raw: minijinja::Value = serde_json::from_slice(&bytes).map_err(|e| ApiError::bad("", e.to_string()))?;
    let get = |k: &str| raw.get_attr(k).ok().filter(|v| !v.is_undefined() && !v.is_none());
    let tools = req.tools.as_ref().and_then(|_| get("tools"));
    let kwargs = get("chat_template_kwargs").unwrap_or_default();
    let messages = get("messages").unwrap_or_default();
    let text = template
        .render_value(&messages, tools.as_ref(), true, &kwargs)
        .map_err(|e| ApiError::bad("messages", format!("the chat template failed: {e}")))?;
    let ids = encode(app, &text, "messages")?;
    let params = params(app, &req.common, ids.len(), None, "messages")?;
    let id = request_id("chatcmpl");
    let rx = submit(app, &id, ids, params)?;
    let think = text.trim_end().ends_with("<think>");
    let chat = Some(ChatMode { think, tools: req.parse_tools });
    let n = req.common.n;
    let out = Output {
        id,
        created: now_s(),
        model: app.name.clone(),
        chat,
        echo: Vec::new(),
        choices: n,
        common: req.common,
    };
    Ok(respond(app, out, rx).await)
}

/// How a chat choice's text is read.
#[derive(Clone, Copy)]
struct ChatMode {
    /// The prompt opened `<think>`: the output starts inside reasoning.
    think: bool,
    /// Parse `<tool_call>` blocks.
    tools: bool,
}

/// What a response needs besides the events.
struct Output {
    id: String,
    created: u64,
    model: String,
    /// `None` for completions.
    chat: Option<ChatMode>,
    /// Completions with `echo`: each prompt's text (choice `i` is prompt `i / n`'s); empty
    /// without `echo`.
    echo: Vec<String>,
    /// Choices in all (`n` per prompt).
    choices: usize,
    common: Common,
}

impl Output {
    /// What choice `i`'s text starts with (`echo`).
    fn echo_of(&self, i: usize) -> String {
        self.echo.get(i / self.common.n.max(1)).cloned().unwrap_or_default()
    }
}

/// The events of a batched prompt's engine requests as one stream: choice `c` of prompt `i`
/// becomes choice `i·n + c`, one [`Event::Done`] with the summed usage when every request is
/// done, the first failure ends it (and cancels the other prompts). A handler that stops
/// listening cancels every prompt's request at once, even those still waiting.
fn merge(rxs: Vec<UnboundedReceiver<Event>>, n: usize) -> UnboundedReceiver<Event> {
    let (tx, out) = mpsc::unbounded_channel();
    let (each_tx, mut each) = mpsc::unbounded_channel::<(usize, Event)>();
    let pending = rxs.len();
    for (i, mut rx) in rxs.into_iter().enumerate() {
        let each_tx = each_tx.clone();
        // Ends (dropping `rx`, which cancels the engine request) as soon as the merger stops.
        tokio::spawn(async move {
            loop {
                let e = tokio::select! {
                    e = rx.recv() => e,
                    _ = each_tx.closed() => None,
                };
                let Some(e) = e else { return };
                if each_tx.send((i, e)).is_err() {
                    return;
                }
            }
        });
    }
    drop(each_tx);
    tokio::spawn(async move {
        let mut total = Usage::default();
        let mut done = 0;
        loop {
            // The handler gone (client hung up, response built) or a prompt failed: returning
            // drops `each`, which ends every forwarder and so every engine request.
            let (i, e) = tokio::select! {
                m = each.recv() => match m {
                    Some(m) => m,
                    None => return,
                },
                _ = tx.closed() => return,
            };
            let e = match e {
                Event::Token { choice, id, text, logprob } => {
                    Event::Token { choice: i * n + choice, id, text, logprob }
                }
                Event::Finish { choice, text, reason } => Event::Finish { choice: i * n + choice, text, reason },
                Event::Done(u) => {
                    total.prompt_tokens += u.prompt_tokens;
                    total.completion_tokens += u.completion_tokens;
                    total.cached_tokens += u.cached_tokens;
                    done += 1;
                    if done < pending {
                        continue;
                    }
                    Event::Done(total)
                }
                Event::Failed(m) => Event::Failed(m),
            };
            let last = matches!(e, Event::Done(_) | Event::Failed(_));
            if tx.send(e).is_err() || last {
                return;
            }
        }
    });
    out
}

/// One choice's text on its way out: reasoning split, tool calls parsed, logprobs kept.
struct ChoiceOut {
    reasoning: Option<ReasoningParser>,
    tools: Option<ToolCallParser>,
    content: String,
    thinking: String,
    calls: Vec<(String, String)>,
    logprobs: Vec<TokenLogprob>,
    ids: Vec<i32>,
    finish: Option<Finish>,
    started: bool,
    /// Characters streamed so far (completions' `text_offset`).
    offset: usize,
}

/// What one piece of text added.
#[derive(Default)]
struct Delta {
    reasoning: String,
    content: String,
    calls: Vec<(String, String)>,
}

impl ChoiceOut {
    fn new(mode: Option<ChatMode>) -> Self {
        ChoiceOut {
            reasoning: mode.map(|m| ReasoningParser::new(m.think)),
            tools: mode.filter(|m| m.tools).map(|_| ToolCallParser::new()),
            content: String::new(),
            thinking: String::new(),
            calls: Vec::new(),
            logprobs: Vec::new(),
            ids: Vec::new(),
            finish: None,
            started: false,
            offset: 0,
        }
    }

    fn push(&mut self, piece: &str, end: bool) -> Delta {
        let mut d = Delta::default();
        let (reasoning, content) = match &mut self.reasoning {
            Some(r) => {
                let mut x = r.push(piece);
                if end {
                    let y = r.finish();
                    x.reasoning.push_str(&y.reasoning);
                    x.content.push_str(&y.content);
                }
                (x.reasoning, x.content)
            }
            None => (String::new(), piece.to_string()),
        };
        d.reasoning = reasoning;
        match &mut self.tools {
            Some(t) => {
                let mut events = t.push(&content);
                if end {
                    events.extend(t.finish());
                }
                for e in events {
                    match e {
                        ToolEvent::Content(c) => d.content.push_str(&c),
                        ToolEvent::Call { name, arguments } => d.calls.push((name, arguments)),
                    }
                }
            }
            None => d.content = content,
        }
        self.thinking.push_str(&d.reasoning);
        self.content.push_str(&d.content);
        self.calls.extend(d.calls.iter().cloned());
        d
    }

    fn finish_reason(&self) -> &'static str {
        match self.finish {
            Some(Finish::Stop) if !self.calls.is_empty() => "tool_calls",
            Some(f) => f.as_str(),
            None => "abort",
        }
    }
}

fn call_json(index: usize, name: &str, args: &str, id: &str) -> Value {
    json!({"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": args}})
}

fn call_id(req: &str, choice: usize, k: usize) -> String {
    format!("call_{}_{choice}_{k}", req.rsplit('-').next().unwrap_or(req))
}

fn chat_logprob(l: &TokenLogprob) -> Value {
    json!({
        "token": l.token, "logprob": l.logprob, "bytes": l.bytes,
        "top_logprobs": l.top.iter().map(|(t, b, lp)| json!({"token": t, "logprob": lp, "bytes": b})).collect::<Vec<_>>(),
    })
}

/// Completions' logprobs; `text_offset` counts characters (as OpenAI and vLLM do) from
/// `offset0`.
fn completion_logprobs(ls: &[TokenLogprob], offset0: usize) -> Value {
    let mut offset = offset0;
    let mut offsets = Vec::new();
    for l in ls {
        offsets.push(offset);
        offset += l.token.chars().count();
    }
    json!({
        "tokens": ls.iter().map(|l| l.token.clone()).collect::<Vec<_>>(),
        "token_logprobs": ls.iter().map(|l| l.logprob).collect::<Vec<_>>(),
        "top_logprobs": ls.iter().map(|l| l.top.iter().map(|(t, _, lp)| (t.clone(), json!(lp))).collect::<serde_json::Map<_, _>>()).collect::<Vec<_>>(),
        "text_offset": offsets,
    })
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    })
}

async fn respond(app: &Arc<App>, out: Output, rx: UnboundedReceiver<Event>) -> Response {
    if out.common.stream {
        return stream(out, rx);
    }
    match collect(&out, rx).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => rejected(app, e),
    }
}

/// Waits for every event and builds the one response body.
async fn collect(out: &Output, mut rx: UnboundedReceiver<Event>) -> Result<Value, ApiError> {
    let mut choices: Vec<ChoiceOut> = (0..out.choices).map(|_| ChoiceOut::new(out.chat)).collect();
    let usage = loop {
        match rx.recv().await {
            Some(Event::Token { choice, id, text, logprob }) => {
                let c = &mut choices[choice];
                c.push(&text, false);
                c.logprobs.extend(logprob);
                c.ids.push(id);
            }
            Some(Event::Finish { choice, text, reason }) => {
                let c = &mut choices[choice];
                c.push(&text, true);
                c.finish = Some(reason);
            }
            Some(Event::Done(u)) => break u,
            Some(Event::Failed(m)) => return Err(ApiError::server(m)),
            None => return Err(ApiError::server("the engine dropped the request")),
        }
    };
    let body = choices.iter().enumerate().map(|(i, c)| {
        let lp = out.common.logprobs.map(|_| c.logprobs.as_slice());
        let mut choice = match out.chat {
            Some(_) => {
                let calls: Vec<Value> =
                    c.calls.iter().enumerate().map(|(k, (n, a))| call_json(k, n, a, &call_id(&out.id, i, k))).collect();
                let content = if c.content.is_empty() && !calls.is_empty() { Value::Null } else { json!(c.content) };
                let mut msg = json!({"role": "assistant", "content": content});
                if !c.thinking.is_empty() {
                    msg["reasoning_content"] = json!(c.thinking);
                }
                if !calls.is_empty() {
                    msg["tool_calls"] = json!(calls);
                }
                json!({
                    "index": i, "message": msg, "finish_reason": c.finish_reason(),
                    "logprobs": lp.map(|l| json!({"content": l.iter().map(chat_logprob).collect::<Vec<_>>()})),
                })
            }
            None => {
                let echo = out.echo_of(i);
                json!({
                    "index": i, "text": format!("{echo}{}", c.content), "finish_reason": c.finish_reason(),
                    "logprobs": lp.map(|l| completion_logprobs(l, echo.chars().count())),
                })
            }
        };
        if out.common.return_token_ids {
            choice["token_ids"] = json!(c.ids);
        }
        choice
    });
    let object = if out.chat.is_some() { "chat.completion" } else { "text_completion" };
    Ok(json!({
        "id": out.id, "object": object, "created": out.created, "model": out.model,
        "choices": body.collect::<Vec<_>>(), "usage": usage_json(&usage),
    }))
}

/// Server-sent events: one chunk per token (per choice), a last chunk per choice with its
/// `finish_reason`, the usage chunk when asked for, then `[DONE]`. A client that goes away
/// drops the stream, which drops the engine's receiver: the engine cancels the request.
fn stream(out: Output, mut rx: UnboundedReceiver<Event>) -> Response {
    let (tx, sse_rx) = mpsc::unbounded_channel::<SseEvent>();
    tokio::spawn(async move {
        let mut choices: Vec<ChoiceOut> = (0..out.choices).map(|_| ChoiceOut::new(out.chat)).collect();
        let object = if out.chat.is_some() { "chat.completion.chunk" } else { "text_completion" };
        let usage_field = out.common.include_usage;
        let want_ids = out.common.return_token_ids;
        let chunk = |choices: Vec<Value>| {
            let mut v =
                json!({"id": out.id, "object": object, "created": out.created, "model": out.model, "choices": choices});
            if usage_field {
                v["usage"] = Value::Null;
            }
            SseEvent::default().data(v.to_string())
        };
        loop {
            let ev = tokio::select! {
                ev = rx.recv() => ev,
                _ = tx.closed() => return,
            };
            let (i, piece, lp, finish, id) = match ev {
                Some(Event::Token { choice, id, text, logprob }) => (choice, text, logprob, None, Some(id)),
                Some(Event::Finish { choice, text, reason }) => (choice, text, None, Some(reason), None),
                Some(Event::Done(u)) => {
                    if usage_field {
                        let v = json!({"id": out.id, "object": object, "created": out.created, "model": out.model,
                                       "choices": [], "usage": usage_json(&u)});
                        let _ = tx.send(SseEvent::default().data(v.to_string()));
                    }
                    let _ = tx.send(SseEvent::default().data("[DONE]"));
                    return;
                }
                Some(Event::Failed(m)) => {
                    let _ = tx.send(SseEvent::default().data(ApiError::server(m).body().to_string()));
                    let _ = tx.send(SseEvent::default().data("[DONE]"));
                    return;
                }
                None => return,
            };
            let c = &mut choices[i];
            let d = c.push(&piece, finish.is_some());
            if finish.is_some() {
                c.finish = finish;
            }
            let mut parts = Vec::new();
            match out.chat {
                Some(_) => {
                    let mut delta = serde_json::Map::new();
                    if !c.started {
                        c.started = true;
                        delta.insert("role".into(), json!("assistant"));
                        delta.insert("content".into(), json!(""));
                    }
                    if !d.reasoning.is_empty() {
                        delta.insert("reasoning_content".into(), json!(d.reasoning));
                    }
                    if !d.content.is_empty() {
                        delta.insert("content".into(), json!(d.content));
                    }
                    if !d.calls.is_empty() {
                        let first = c.calls.len() - d.calls.len();
                        let calls: Vec<Value> = d
                            .calls
                            .iter()
                            .enumerate()
                            .map(|(k, (n, a))| call_json(first + k, n, a, &call_id(&out.id, i, first + k)))
                            .collect();
                        delta.insert("tool_calls".into(), json!(calls));
                    }
                    let lp = lp.map(|l| json!({"content": [chat_logprob(&l)]}));
                    if !delta.is_empty() || lp.is_some() || (want_ids && id.is_some()) {
                        let mut p = json!({"index": i, "delta": delta, "logprobs": lp, "finish_reason": null});
                        if want_ids {
                            p["token_ids"] = json!(id.into_iter().collect::<Vec<_>>());
                        }
                        parts.push(p);
                    }
                    if finish.is_some() {
                        parts.push(
                            json!({"index": i, "delta": {}, "logprobs": null, "finish_reason": c.finish_reason()}),
                        );
                    }
                }
                None => {
                    let mut text = d.content;
                    if !c.started {
                        c.started = true;
                        let echo = out.echo_of(i);
                        c.offset = echo.chars().count();
                        text = format!("{echo}{text}");
                    }
                    let lp = lp.map(|l| {
                        let v = completion_logprobs(std::slice::from_ref(&l), c.offset);
                        c.offset += l.token.chars().count();
                        v
                    });
                    let fr = finish.map(|_| c.finish_reason());
                    if !text.is_empty() || lp.is_some() || fr.is_some() || (want_ids && id.is_some()) {
                        let mut p = json!({"index": i, "text": text, "logprobs": lp, "finish_reason": fr});
                        if want_ids {
                            p["token_ids"] = json!(id.into_iter().collect::<Vec<_>>());
                        }
                        parts.push(p);
                    }
                }
            }
            for p in parts {
                if tx.send(chunk(vec![p])).is_err() {
                    return;
                }
            }
        }
    });
    let events = UnboundedReceiverStream::new(sse_rx).map(Ok::<_, Infallible>);
    Sse::new(events).keep_alive(KeepAlive::default()).into_response()
}
