//! The OpenAI request surface: parsing and checking `/v1/completions` and
//! `/v1/chat/completions` bodies field by field (each error names its `param`), and the error
//! body `{"error": {"message", "type", "param", "code"}}` with its status.
//!
//! `/v1/completions` takes one prompt or a batch (strings or token-id arrays, up to
//! [`MAX_PROMPTS`]), each with `n` choices. Unknown fields are ignored, as OpenAI's clients send
//! more than any server reads. Extensions
//! vLLM accepts (through the `openai` client's `extra_body`): `top_k`, `min_p`,
//! `repetition_penalty`, `ignore_eos`, `chat_template_kwargs`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use qgc_runtime::sampling::SamplingParams;
use serde_json::{json, Map, Value};

/// An OpenAI-shaped error response.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What is wrong, for a person.
    pub message: String,
    /// `invalid_request_error`, `not_found_error`, `server_error`, …
    pub kind: &'static str,
    /// The request field at fault.
    pub param: Option<String>,
    /// A machine-readable code (`model_not_found`, `context_length_exceeded`, …).
    pub code: Option<&'static str>,
}

impl ApiError {
    /// 400 about `param`.
    pub fn bad(param: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: (!param.is_empty()).then(|| param.to_string()),
            code: None,
        }
    }

    /// 400 with `code`.
    pub fn coded(param: &str, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { code: Some(code), ..ApiError::bad(param, message) }
    }

    /// Any status, no param.
    pub fn status(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), kind, param: None, code: None }
    }

    /// 500: the server failed (never for what a client sent).
    pub fn server(message: impl Into<String>) -> ApiError {
        ApiError::status(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

/// Sampling defaults: the model's `generation_config.json`, else qgc's.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    /// Defaults for fields the request leaves out.
    pub sampling: SamplingParams,
}

/// Fields both endpoints share, checked.
#[derive(Debug, Clone)]
pub struct Common {
    /// `model`, when given.
    pub model: Option<String>,
    /// `max_completion_tokens` or `max_tokens`.
    pub max_tokens: Option<usize>,
    /// Sampling, defaults applied.
    pub sampling: SamplingParams,
    /// `stop`.
    pub stop: Vec<String>,
    /// `n`.
    pub n: usize,
    /// `stream`.
    pub stream: bool,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
    /// Chat: `top_logprobs` when `logprobs` is true; completions: `logprobs`.
    pub logprobs: Option<usize>,
    /// `ignore_eos`.
    pub ignore_eos: bool,
    /// `return_token_ids` (vLLM's extension): each choice also carries `token_ids`.
    pub return_token_ids: bool,
}

/// Prompts one `/v1/completions` request may batch.
pub const MAX_PROMPTS: usize = 256;

/// A `/v1/completions` prompt.
#[derive(Debug, Clone)]
pub enum Prompt {
    /// Text to tokenise.
    Text(String),
    /// Token ids as given.
    Ids(Vec<i64>),
}

/// A checked `/v1/completions` body.
#[derive(Debug, Clone)]
pub struct CompletionRequest {
    /// Shared fields.
    pub common: Common,
    /// `prompt`: one, or several (a batch: each gets `n` choices, indexed prompt by prompt).
    pub prompts: Vec<Prompt>,
    /// `echo`: the prompt's text comes before the completion.
    pub echo: bool,
}

/// A checked `/v1/chat/completions` body (`messages` and `chat_template_kwargs` are checked;
/// the template reads them from the body as sent, keys in order).
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// Shared fields.
    pub common: Common,
    /// `tools`, when given.
    pub tools: Option<Value>,
    /// Whether tool calls in the output are parsed (`tools` given, `tool_choice` not `none`).
    pub parse_tools: bool,
}

/// Parses a request body as a JSON object.
pub fn object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(ApiError::bad("", format!("the request body must be a JSON object, got {}", kind(&other)))),
        Err(e) => Err(ApiError::bad("", format!("the request body is not valid JSON: {e}"))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A field, `None` when absent or null.
fn field<'a>(o: &'a Map<String, Value>, k: &str) -> Option<&'a Value> {
    o.get(k).filter(|v| !v.is_null())
}

fn number(o: &Map<String, Value>, k: &str) -> Result<Option<f64>, ApiError> {
    match field(o, k) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            n.as_f64().map(Some).ok_or_else(|| ApiError::bad(k, format!("`{k}` is out of range")))
        }
        Some(v) => Err(ApiError::bad(k, format!("`{k}` must be a number, got {}", kind(v)))),
    }
}

fn integer(o: &Map<String, Value>, k: &str) -> Result<Option<i64>, ApiError> {
    match field(o, k) {
        None => Ok(None),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Ok(Some(i)),
            (None, Some(_), _) => Err(ApiError::bad(k, format!("`{k}` is too large ({n})"))),
            (_, _, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e18 => Ok(Some(f as i64)),
            _ => Err(ApiError::bad(k, format!("`{k}` must be a whole number, got {n}"))),
        },
        Some(v) => Err(ApiError::bad(k, format!("`{k}` must be a whole number, got {}", kind(v)))),
    }
}

fn boolean(o: &Map<String, Value>, k: &str) -> Result<Option<bool>, ApiError> {
    match field(o, k) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(ApiError::bad(k, format!("`{k}` must be a boolean, got {}", kind(v)))),
    }
}

fn ranged(o: &Map<String, Value>, k: &str, ok: impl Fn(f64) -> bool, want: &str) -> Result<Option<f32>, ApiError> {
    match number(o, k)? {
        Some(v) if !ok(v) => Err(ApiError::bad(k, format!("`{k}` must be {want}, got {v}"))),
        v => Ok(v.map(|v| v as f32)),
    }
}

/// The shared fields; `chat` selects the chat forms of `logprobs`; `max_n` bounds `n`.
pub fn common(o: &Map<String, Value>, chat: bool, d: &Defaults, max_n: usize) -> Result<Common, ApiError> {
    let model = match field(o, "model") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(v) => return Err(ApiError::bad("model", format!("`model` must be a string, got {}", kind(v)))),
    };
    let max_tokens = match integer(o, "max_completion_tokens")?.map(|v| ("max_completion_tokens", v)) {
        Some(x) => Some(x),
        None => integer(o, "max_tokens")?.map(|v| ("max_tokens", v)),
    };
    let max_tokens = match max_tokens {
        Some((k, v)) if v < 1 => return Err(ApiError::bad(k, format!("`{k}` must be at least 1, got {v}"))),
        Some((_, v)) => Some(usize::try_from(v).unwrap_or(usize::MAX)),
        None => None,
    };
    let mut s = d.sampling;
    if let Some(t) = ranged(o, "temperature", |v| (0.0..=2.0).contains(&v), "in [0, 2]")? {
        s.temperature = t;
    }
    if let Some(p) = ranged(o, "top_p", |v| v > 0.0 && v <= 1.0, "in (0, 1]")? {
        s.top_p = p;
    }
    if let Some(p) = ranged(o, "min_p", |v| (0.0..=1.0).contains(&v), "in [0, 1]")? {
        s.min_p = p;
    }
    if let Some(p) = ranged(o, "repetition_penalty", |v| v > 0.0 && v <= 10.0, "in (0, 10]")? {
        s.repetition_penalty = p;
    }
    match integer(o, "top_k")? {
        Some(k) if k < -1 => {
            return Err(ApiError::bad("top_k", format!("`top_k` must be -1 (off) or at least 0, got {k}")))
        }
        Some(k) => s.top_k = usize::try_from(k).unwrap_or(0),
        None => {}
    }
    if let Some(p) = ranged(o, "presence_penalty", |v| (-2.0..=2.0).contains(&v), "in [-2, 2]")? {
        s.presence_penalty = p;
    }
    if let Some(p) = ranged(o, "frequency_penalty", |v| (-2.0..=2.0).contains(&v), "in [-2, 2]")? {
        s.frequency_penalty = p;
    }
    if let Some(seed) = integer(o, "seed")? {
        s.seed = seed as u64;
    }
    let stop = match field(o, "stop") {
        None => Vec::new(),
        Some(Value::String(x)) => vec![x.clone()],
        Some(Value::Array(a)) if a.len() > 16 => {
            return Err(ApiError::bad("stop", format!("`stop` has {} strings; at most 16", a.len())))
        }
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ApiError::bad("stop", "`stop` must be a string or an array of strings"))?,
        Some(v) => {
            return Err(ApiError::bad(
                "stop",
                format!("`stop` must be a string or an array of strings, got {}", kind(v)),
            ))
        }
    };
    let n = match integer(o, "n")? {
        None => 1,
        Some(n) if n < 1 || n as u64 > max_n as u64 => {
            return Err(ApiError::bad("n", format!("`n` must be in [1, {max_n}] (--max-num-seqs), got {n}")))
        }
        Some(n) => n as usize,
    };
    let stream = boolean(o, "stream")?.unwrap_or(false);
    let include_usage = match field(o, "stream_options") {
        None => false,
        Some(_) if !stream => {
            return Err(ApiError::bad("stream_options", "`stream_options` can only be given with `stream: true`"))
        }
        Some(Value::Object(so)) => boolean(so, "include_usage")
            .map_err(|e| ApiError::bad("stream_options.include_usage", e.message))?
            .unwrap_or(false),
        Some(v) => {
            return Err(ApiError::bad("stream_options", format!("`stream_options` must be an object, got {}", kind(v))))
        }
    };
    let logprobs = if chat {
        let on = boolean(o, "logprobs")?.unwrap_or(false);
        match integer(o, "top_logprobs")? {
            Some(k) if !(0..=20).contains(&k) => {
                return Err(ApiError::bad("top_logprobs", format!("`top_logprobs` must be in [0, 20], got {k}")))
            }
            Some(_) if !on => return Err(ApiError::bad("top_logprobs", "`top_logprobs` needs `logprobs: true`")),
            Some(k) => Some(k as usize),
            None => on.then_some(0),
        }
    } else {
        match integer(o, "logprobs")? {
            Some(k) if !(0..=20).contains(&k) => {
                return Err(ApiError::bad("logprobs", format!("`logprobs` must be in [0, 20], got {k}")))
            }
            k => k.map(|k| k as usize),
        }
    };
    if let Some(rf) = field(o, "response_format") {
        let t = rf.get("type").and_then(Value::as_str);
        if t != Some("text") {
            return Err(ApiError::bad("response_format", "only `response_format: {\"type\": \"text\"}` is supported"));
        }
    }
    let ignore_eos = boolean(o, "ignore_eos")?.unwrap_or(false);
    let return_token_ids = boolean(o, "return_token_ids")?.unwrap_or(false);
    Ok(Common {
        model,
        max_tokens,
        sampling: s,
        stop,
        n,
        stream,
        include_usage,
        logprobs,
        ignore_eos,
        return_token_ids,
    })
}

/// A `/v1/completions` body.
pub fn completion(o: &Map<String, Value>, d: &Defaults, max_n: usize) -> Result<CompletionRequest, ApiError> {
    let common = common(o, false, d, max_n)?;
    let ids = |a: &[Value]| -> Result<Vec<i64>, ApiError> {
        a.iter()
            .map(|x| x.as_i64().ok_or_else(|| ApiError::bad("prompt", "token-id prompts must be whole numbers")))
            .collect()
    };
    let shape = "`prompt` must be a string, an array of token ids, or an array of those";
    let prompts = match field(o, "prompt") {
        None => return Err(ApiError::bad("prompt", "`prompt` is required")),
        Some(Value::String(s)) => vec![Prompt::Text(s.clone())],
        Some(Value::Array(a)) if a.is_empty() => return Err(ApiError::bad("prompt", "`prompt` is empty")),
        Some(Value::Array(a)) if a.iter().all(Value::is_number) => vec![Prompt::Ids(ids(a)?)],
        Some(Value::Array(a)) if a.len() > MAX_PROMPTS => {
            return Err(ApiError::bad(
                "prompt",
                format!("at most {MAX_PROMPTS} prompts in one request, got {}", a.len()),
            ))
        }
        Some(Value::Array(a)) => a
            .iter()
            .map(|p| match p {
                Value::String(s) => Ok(Prompt::Text(s.clone())),
                Value::Array(x) if !x.is_empty() && x.iter().all(Value::is_number) => Ok(Prompt::Ids(ids(x)?)),
                _ => Err(ApiError::bad("prompt", shape)),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(v) => return Err(ApiError::bad("prompt", format!("{shape}, got {}", kind(v)))),
    };
    if prompts.iter().any(|p| matches!(p, Prompt::Text(t) if t.is_empty())) {
        return Err(ApiError::bad("prompt", "`prompt` is empty"));
    }
    let echo = boolean(o, "echo")?.unwrap_or(false);
    Ok(CompletionRequest { common, prompts, echo })
}

/// A `/v1/chat/completions` body.
pub fn chat(o: &Map<String, Value>, d: &Defaults, max_n: usize) -> Result<ChatRequest, ApiError> {
    let common = common(o, true, d, max_n)?;
    let messages = match field(o, "messages") {
        None => return Err(ApiError::bad("messages", "`messages` is required")),
        Some(Value::Array(a)) if a.is_empty() => return Err(ApiError::bad("messages", "`messages` is empty")),
        Some(Value::Array(a)) => a,
        Some(v) => return Err(ApiError::bad("messages", format!("`messages` must be an array, got {}", kind(v)))),
    };
    for (i, m) in messages.iter().enumerate() {
        check_message(i, m)?;
    }
    let tools = match field(o, "tools") {
        None => None,
        Some(Value::Array(a)) => {
            for (i, t) in a.iter().enumerate() {
                let name = t.get("function").and_then(|f| f.get("name")).and_then(Value::as_str);
                if t.get("type").and_then(Value::as_str) != Some("function") || name.is_none() {
                    return Err(ApiError::bad(
                        &format!("tools[{i}]"),
                        format!("`tools[{i}]` must be {{\"type\": \"function\", \"function\": {{\"name\": …}}}}"),
                    ));
                }
            }
            (!a.is_empty()).then(|| Value::Array(a.clone()))
        }
        Some(v) => return Err(ApiError::bad("tools", format!("`tools` must be an array, got {}", kind(v)))),
    };
    let parse_tools = match field(o, "tool_choice") {
        None => tools.is_some(),
        Some(Value::String(s)) if s == "none" => false,
        Some(Value::String(s)) if s == "auto" => tools.is_some(),
        Some(_) => {
            return Err(ApiError::bad(
                "tool_choice",
                "only `tool_choice` \"auto\" and \"none\" are supported (no constrained decoding yet)",
            ))
        }
    };
    match field(o, "chat_template_kwargs") {
        None | Some(Value::Object(_)) => {}
        Some(v) => {
            return Err(ApiError::bad(
                "chat_template_kwargs",
                format!("`chat_template_kwargs` must be an object, got {}", kind(v)),
            ))
        }
    }
    Ok(ChatRequest { common, tools, parse_tools })
}

fn check_message(i: usize, m: &Value) -> Result<(), ApiError> {
    let p = format!("messages[{i}]");
    let Some(o) = m.as_object() else {
        return Err(ApiError::bad(&p, format!("`{p}` must be an object with `role` and `content`")));
    };
    let role = match o.get("role") {
        Some(Value::String(r)) => r.as_str(),
        _ => return Err(ApiError::bad(&format!("{p}.role"), format!("`{p}.role` is required (a string)"))),
    };
    if !["system", "developer", "user", "assistant", "tool"].contains(&role) {
        return Err(ApiError::bad(
            &format!("{p}.role"),
            format!("`{p}.role` must be system, developer, user, assistant or tool, got {role:?}"),
        ));
    }
    match o.get("content") {
        None | Some(Value::Null) if role == "assistant" => Ok(()),
        Some(Value::String(_)) => Ok(()),
        Some(Value::Array(parts)) => {
            for (j, part) in parts.iter().enumerate() {
                let t = part.get("type").and_then(Value::as_str);
                let text = part.get("text").map(Value::is_string).unwrap_or(false);
                if t != Some("text") || !text {
                    return Err(ApiError::bad(
                        &format!("{p}.content[{j}]"),
                        format!("`{p}.content[{j}]`: only {{\"type\": \"text\", \"text\": …}} parts are supported"),
                    ));
                }
            }
            Ok(())
        }
        _ => Err(ApiError::bad(
            &format!("{p}.content"),
            format!("`{p}.content` must be a string or an array of text parts"),
        )),
    }
}
