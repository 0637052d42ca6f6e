//! Chat templates: OpenAI chat messages rendered into a prompt exactly as Hugging Face
//! transformers' `tokenizer.apply_chat_template(..., tokenize=False)` renders them.
//!
//! The template is the model's own Jinja source (`chat_template.jinja` or the `chat_template` of
//! `tokenizer_config.json`), run by minijinja set up the way transformers sets up Jinja2:
//! `trim_blocks`, `lstrip_blocks`, loop controls, no auto-escaping, Python string methods
//! (`.startswith`, `.split`, `.lstrip`, ... from `minijinja-contrib`'s pycompat), and HF's
//! globals: `raise_exception(msg)` (becomes [`TemplateError::Raised`]), `strftime_now(fmt)` and
//! `namespace()`. `tojson` is replaced by Python's `json.dumps` (HF's override: no HTML escaping,
//! unicode kept, `", "`/`": "` separators, `indent`, `separators`, `sort_keys`, `ensure_ascii`),
//! and `{{ x }}` prints non-strings as Python does (`None`, `True`, `1e-05`, `['a', 1]`).
//! `{% generation %}` blocks (HF's assistant-mask extension) render their body.
//!
//! Messages go through the same steps as a vLLM OpenAI server, then HF's:
//! - content: an array of `{"type": "text", "text": ...}` parts is joined with `"\n"`, and a
//!   null or missing content becomes `""` (vLLM's "string" content format), unless the template
//!   itself loops over a message's content ([`ContentFormat::Parts`]), which then gets the parts;
//! - an assistant's `tool_calls[].function.arguments` JSON string is parsed into an object (vLLM
//!   does this; templates print it with `tojson` or iterate `arguments|items`, and the Qwen
//!   templates then print it in the `{"k": "v"}` style the model was trained on); empty or null
//!   arguments become `{}`, text that is not JSON stays a string (the template prints it as is);
//! - keys whose value is null are dropped, and a message's reasoning under any of
//!   `reasoning_content`, `thinking`, `reasoning` is copied to `reasoning_content` and `thinking`
//!   (HF's `_normalize_chat_messages` and `_alias_reasoning_fields`).
//!
//! Map key order is kept as given. [`ChatTemplate::render_value`] takes minijinja values, which
//! keep the order of the JSON text they were parsed from (`serde_json::from_str::<Value>`);
//! [`ChatTemplate::render`] takes `serde_json` values, whose maps keep order only when
//! serde_json's `preserve_order` feature is on (otherwise keys come sorted, and `tools | tojson`
//! differs from HF's output for schemas whose keys are not in sorted order).
//!
//! Known differences from Jinja2: `~` and `|string` print `none`/`true` (minijinja's spelling),
//! `strftime_now` uses UTC, and `{{ x }}` of a string inside a container escapes only control,
//! separator and format characters the way Python's `repr` does.

use minijinja::value::ValueKind;
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Value};
use std::fmt::Write as _;
use std::path::Path;

mod python;
pub use python::{py_float, strftime};
use python::{python_formatter, tojson_filter};

/// The built-in template: Qwen3's (as shipped with Qwen/Qwen3-0.6B … Qwen3-32B), with thinking
/// (`enable_thinking`), `<think>` history handling and tools.
pub const QWEN3_TEMPLATE: &str = include_str!("templates/qwen3.jinja");

/// Names HF puts in the template context from the tokenizer's special tokens.
const SPECIAL_TOKENS: [&str; 7] =
    ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"];
/// Context names that `chat_template_kwargs` may not replace.
const RESERVED: [&str; 4] = ["messages", "tools", "documents", "add_generation_prompt"];

/// Chat template failures. Each names where: the template's origin, or the JSON path of an input.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// A file of the model folder that could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A `tokenizer_config.json` that is not what HF reads (bad JSON, a `chat_template` of the
    /// wrong type, a list without a `default` template).
    #[error("{path}: {message}")]
    Config {
        /// The file, with the key when one is at fault.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The template source does not parse.
    #[error("chat template {origin}: line {line}: {detail}")]
    Syntax {
        /// Where the template came from.
        origin: String,
        /// The 1-based line of the fault.
        line: usize,
        /// minijinja's description.
        detail: String,
    },
    /// The template called `raise_exception(message)`.
    #[error("chat template {origin} rejected the conversation: {message}")]
    Raised {
        /// Where the template came from.
        origin: String,
        /// The template's message.
        message: String,
    },
    /// Rendering failed (an undefined filter, an operation on the wrong type, ...).
    #[error("chat template {origin}: line {line}: {detail}")]
    Render {
        /// Where the template came from.
        origin: String,
        /// The 1-based line of the fault (0 if unknown).
        line: usize,
        /// minijinja's description, with its causes.
        detail: String,
    },
    /// Messages, tools or kwargs that are not OpenAI chat input.
    #[error("{path}: {message}")]
    Input {
        /// JSON path of the fault: `messages[2].content[0]`.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// How message content reaches the template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentFormat {
    /// Content is always a string: text parts joined with `"\n"`, null as `""`.
    String,
    /// The template loops over a message's content itself: content parts arrays are passed as
    /// they are, strings stay strings and null content is dropped.
    Parts,
}

/// A chat template ready to render: compiled once, shareable between threads.
#[derive(Clone)]
pub struct ChatTemplate {
    /// The model's templates by name (`default`, `tool_use`, ...), each with its origin.
    named: Vec<(String, String)>,
    source: String,
    content_format: ContentFormat,
    special_tokens: Vec<(String, String)>,
    env: Environment<'static>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("named", &self.named)
            .field("content_format", &self.content_format)
            .field("special_tokens", &self.special_tokens)
            .finish_non_exhaustive()
    }
}

const DEFAULT_NAME: &str = "default";
const TOOL_USE_NAME: &str = "tool_use";

/// A template source with its name and where it came from.
struct Named {
    name: String,
    origin: String,
    source: String,
}

impl ChatTemplate {
    /// The templates of a model folder, found as transformers 5 finds them. Template files win:
    /// `chat_template.jinja` (named `default`) and `additional_chat_templates/NAME.jinja`; when
    /// there are none, the `chat_template` of `tokenizer_config.json` (a string, or a list of
    /// `{name, template}`). `default` is rendered, or `tool_use` when tools are given and the
    /// model has it. The special tokens of `tokenizer_config.json` (`bos_token`, `eos_token`, ...;
    /// a string or `{"content": ...}`) become context variables. `None` when there is no template.
    pub fn from_model_dir(dir: &Path) -> Result<Option<ChatTemplate>, TemplateError> {
        let config_path = dir.join("tokenizer_config.json");
        let config = match read_optional(&config_path)? {
            None => serde_json::Map::new(),
            Some(text) => match serde_json::from_str(&text) {
                Ok(serde_json::Value::Object(map)) => map,
                Ok(_) => return Err(config_err(&config_path, "", "expected a JSON object")),
                Err(e) => return Err(config_err(&config_path, "", &format!("not JSON: {e}"))),
            },
        };
        let mut named = template_files(dir)?;
        if named.is_empty() {
            let origin = format!("{}: chat_template", config_path.display());
            match config.get("chat_template") {
                None | Some(serde_json::Value::Null) => {}
                Some(serde_json::Value::String(source)) => {
                    named.push(Named { name: DEFAULT_NAME.into(), origin, source: source.clone() })
                }
                Some(serde_json::Value::Array(list)) => named = named_templates(list, &config_path)?,
                Some(_) => {
                    let msg = "expected a string or a list of {name, template}";
                    return Err(config_err(&config_path, ".chat_template", msg));
                }
            }
        }
        if named.is_empty() {
            return Ok(None);
        }
        let mut template = ChatTemplate::build(named)?;
        for name in SPECIAL_TOKENS {
            let token = match config.get(name) {
                Some(serde_json::Value::String(s)) => s,
                Some(serde_json::Value::Object(o)) => match o.get("content") {
                    Some(serde_json::Value::String(s)) => s,
                    _ => {
                        let msg = "expected a string or {\"content\": string}";
                        return Err(config_err(&config_path, &format!(".{name}"), msg));
                    }
                },
                _ => continue,
            };
            template.special_tokens.push((name.to_string(), token.clone()));
        }
        Ok(Some(template))
    }

    /// A template from its source; `origin` names it in errors (a path, "request", ...).
    pub fn from_source(source: &str, origin: &str) -> Result<ChatTemplate, TemplateError> {
        let named = Named { name: DEFAULT_NAME.into(), origin: origin.into(), source: source.into() };
        ChatTemplate::build(vec![named])
    }

    /// The built-in Qwen3 template ([`QWEN3_TEMPLATE`]), with Qwen's `eos_token` `<|im_end|>`
    /// and `pad_token` `<|endoftext|>`; for models that ship no template.
    pub fn qwen3() -> ChatTemplate {
        let mut t =
            ChatTemplate::from_source(QWEN3_TEMPLATE, "built-in qwen3").expect("the built-in Qwen3 template compiles");
        t.special_tokens =
            vec![("eos_token".into(), "<|im_end|>".into()), ("pad_token".into(), "<|endoftext|>".into())];
        t
    }

    /// Sets a special token context variable (`bos_token`, `eos_token`, ...).
    pub fn set_special_token(&mut self, name: &str, token: &str) {
        self.special_tokens.retain(|(n, _)| n != name);
        self.special_tokens.push((name.to_string(), token.to_string()));
    }

    /// Where the `default` template (or else the first) came from: a path, `built-in qwen3`, or
    /// the `origin` given.
    pub fn origin(&self) -> &str {
        let main = self.named.iter().find(|(n, _)| n == DEFAULT_NAME).or(self.named.first());
        main.map_or("", |(_, origin)| origin)
    }

    /// The source of the `default` template (or else the first), as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The names of the model's templates (`default`, `tool_use`, ...).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.named.iter().map(|(n, _)| n.as_str())
    }

    /// How message content is passed to this template.
    pub fn content_format(&self) -> ContentFormat {
        self.content_format
    }

    /// The special tokens put in the context, in the order set.
    pub fn special_tokens(&self) -> &[(String, String)] {
        &self.special_tokens
    }

    fn build(named: Vec<Named>) -> Result<ChatTemplate, TemplateError> {
        let mut env = new_environment();
        let main = named.iter().find(|t| t.name == DEFAULT_NAME).or(named.first());
        let source = main.map(|t| t.source.clone()).unwrap_or_default();
        let content_format = if loops_over_content(&source) { ContentFormat::Parts } else { ContentFormat::String };
        for t in &named {
            env.add_template_owned(t.name.clone(), rewrite_generation_tags(&t.source))
                .map_err(|e| syntax_error(&t.origin, &e))?;
        }
        let named = named.into_iter().map(|t| (t.name, t.origin)).collect();
        Ok(ChatTemplate { named, source, content_format, special_tokens: vec![], env })
    }

    /// Renders OpenAI chat `messages` (an array of objects), the `tools` list if any,
    /// `add_generation_prompt`, and `kwargs` (`chat_template_kwargs`, e.g. `enable_thinking`) as
    /// extra context variables. See the module docs for what is done to the messages, and for
    /// key order (serde_json maps keep it only with its `preserve_order` feature).
    pub fn render(
        &self,
        messages: &serde_json::Value,
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
        kwargs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, TemplateError> {
        let kwargs = kwargs.iter().map(|(k, v)| (k.clone(), Value::from_serialize(v))).collect();
        self.render_inner(
            &Value::from_serialize(messages),
            tools.map(Value::from_serialize).as_ref(),
            add_generation_prompt,
            kwargs,
        )
    }

    /// [`render`](Self::render) with minijinja values, e.g. parsed from the request body with
    /// `serde_json::from_str::<minijinja::Value>`, which keeps map keys in their JSON order.
    /// `kwargs` is a map, or none/undefined for no kwargs.
    pub fn render_value(
        &self,
        messages: &Value,
        tools: Option<&Value>,
        add_generation_prompt: bool,
        kwargs: &Value,
    ) -> Result<String, TemplateError> {
        let kwargs = match kwargs.kind() {
            ValueKind::Undefined | ValueKind::None => vec![],
            ValueKind::Map => map_entries(kwargs)
                .into_iter()
                .map(|(k, v)| match k.as_str() {
                    Some(s) => Ok((s.to_string(), v)),
                    None => Err(input_err("chat_template_kwargs", "keys must be strings")),
                })
                .collect::<Result<_, _>>()?,
            kind => return Err(input_err("chat_template_kwargs", &format!("expected an object, found {kind}"))),
        };
        self.render_inner(messages, tools, add_generation_prompt, kwargs)
    }

    fn render_inner(
        &self,
        messages: &Value,
        tools: Option<&Value>,
        add_generation_prompt: bool,
        kwargs: Vec<(String, Value)>,
    ) -> Result<String, TemplateError> {
        let messages = normalize_messages(messages, self.content_format)?;
        if let Some(t) = tools {
            if t.kind() != ValueKind::Seq {
                return Err(input_err("tools", &format!("expected an array, found {}", t.kind())));
            }
        }
        let mut ctx: Vec<(String, Value)> = vec![
            ("messages".into(), messages),
            ("tools".into(), tools.cloned().unwrap_or(Value::from(()))),
            ("documents".into(), Value::from(())),
            ("add_generation_prompt".into(), Value::from(add_generation_prompt)),
        ];
        for (name, token) in &self.special_tokens {
            ctx.push((name.clone(), Value::from(token.as_str())));
        }
        for (name, value) in kwargs {
            if RESERVED.contains(&name.as_str()) {
                let msg = format!("'{name}' is set by the request itself");
                return Err(input_err(&format!("chat_template_kwargs.{name}"), &msg));
            }
            ctx.retain(|(n, _)| *n != name);
            ctx.push((name, value));
        }
        let has = |name: &str| self.named.iter().find(|(n, _)| n == name);
        let chosen = if tools.is_some() { has(TOOL_USE_NAME) } else { None };
        let Some((name, origin)) = chosen.or_else(|| has(DEFAULT_NAME)) else {
            let names: Vec<&str> = self.names().collect();
            let message = format!("no chat template named 'default' (found: {})", names.join(", "));
            return Err(TemplateError::Config { path: self.origin().into(), message });
        };
        let template = self.env.get_template(name).map_err(|e| render_error(origin, &e))?;
        template.render(Value::from_iter(ctx)).map_err(|e| render_error(origin, &e))
    }
}

fn render_error(origin: &str, e: &Error) -> TemplateError {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = src {
        if let Some(r) = err.downcast_ref::<Raised>() {
            return TemplateError::Raised { origin: origin.into(), message: r.0.clone() };
        }
        src = err.source();
    }
    TemplateError::Render { origin: origin.into(), line: e.line().unwrap_or(0), detail: describe(e) }
}

fn read_optional(path: &Path) -> Result<Option<String>, TemplateError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TemplateError::Io { path: path.display().to_string(), source }),
    }
}

fn config_err(path: &Path, key: &str, message: &str) -> TemplateError {
    TemplateError::Config { path: format!("{}{key}", path.display()), message: message.into() }
}

fn input_err(path: &str, message: &str) -> TemplateError {
    TemplateError::Input { path: path.into(), message: message.into() }
}

/// The templates of a `chat_template` list of `{name, template}`.
fn named_templates(list: &[serde_json::Value], path: &Path) -> Result<Vec<Named>, TemplateError> {
    let mut named = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let name = item.get("name").and_then(|v| v.as_str());
        let source = item.get("template").and_then(|v| v.as_str());
        let (Some(name), Some(source)) = (name, source) else {
            let msg = "expected {\"name\": string, \"template\": string}";
            return Err(config_err(path, &format!(".chat_template[{i}]"), msg));
        };
        let origin = format!("{}: chat_template[{i}] ({name})", path.display());
        named.push(Named { name: name.into(), origin, source: source.into() });
    }
    Ok(named)
}

/// `chat_template.jinja` (as `default`) and `additional_chat_templates/*.jinja`, by name order.
fn template_files(dir: &Path) -> Result<Vec<Named>, TemplateError> {
    let mut named = Vec::new();
    let main = dir.join("chat_template.jinja");
    if let Some(source) = read_optional(&main)? {
        named.push(Named { name: DEFAULT_NAME.into(), origin: main.display().to_string(), source });
    }
    let extra_dir = dir.join("additional_chat_templates");
    let mut extra: Vec<_> = match std::fs::read_dir(&extra_dir) {
        Ok(entries) => entries.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
        Err(_) => vec![],
    };
    extra.sort();
    for path in extra {
        let Some(name) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".jinja")) else {
            continue;
        };
        if let Some(source) = read_optional(&path)? {
            named.retain(|t| t.name != name);
            named.push(Named { name: name.into(), origin: path.display().to_string(), source });
        }
    }
    Ok(named)
}

fn syntax_error(origin: &str, e: &Error) -> TemplateError {
    TemplateError::Syntax { origin: origin.into(), line: e.line().unwrap_or(0), detail: describe(e) }
}

/// minijinja's kind and detail, then each cause, without its `(in name:line)` suffix.
fn describe(e: &Error) -> String {
    let mut s = match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    };
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        let _ = write!(s, ": {c}");
        src = c.source();
    }
    s
}

/// The message of `raise_exception`, carried as the source of the render error.
#[derive(Debug)]
struct Raised(String);

impl std::fmt::Display for Raised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Raised {}

/// An environment set up as transformers sets up Jinja2 for chat templates.
fn new_environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(false);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_formatter(python_formatter);
    env.add_filter("tojson", tojson_filter);
    // Jinja2's `number` test is `isinstance(x, numbers.Number)`, which booleans pass.
    env.add_test("number", |v: &Value| v.is_number() || v.kind() == ValueKind::Bool);
    env.add_function("raise_exception", |message: String| -> Result<Value, Error> {
        Err(Error::new(ErrorKind::InvalidOperation, "raise_exception").with_source(Raised(message)))
    });
    env.add_function("strftime_now", |format: String| {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        strftime(&format, now)
    });
    env
}

/// Whether the template loops over a message's content (`{% for part in message['content'] %}`),
/// as templates for multimodal models do; such templates get content parts arrays.
fn loops_over_content(source: &str) -> bool {
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        rest = &rest[start + 2..];
        let end = rest.find("%}").unwrap_or(rest.len());
        let tag = rest[..end].trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
        if let Some(head) = tag.strip_prefix("for").filter(|h| h.starts_with(char::is_whitespace)) {
            if let Some(pos) = head.find(" in ") {
                let iterable = &head[pos + 4..];
                let iterable = iterable.split(" if ").next().unwrap_or(iterable);
                if iterable.contains("content") {
                    return true;
                }
            }
        }
        rest = &rest[end..];
    }
    false
}

/// `{% generation %}`…`{% endgeneration %}` (HF's assistant-mask tag) as `{% if true %}`…
/// `{% endif %}`, keeping whitespace control, so the body renders as in HF.
fn rewrite_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start + 2]);
        rest = &rest[start + 2..];
        let marker_len = rest.chars().next().filter(|c| *c == '-' || *c == '+').map_or(0, |_| 1);
        let (marker, body) = rest.split_at(marker_len);
        let trimmed = body.trim_start();
        let ws = &body[..body.len() - trimmed.len()];
        let word_end = trimmed.find(|c: char| !c.is_ascii_alphanumeric() && c != '_');
        let word = &trimmed[..word_end.unwrap_or(trimmed.len())];
        let replacement = match word {
            "generation" => "if true",
            "endgeneration" => "endif",
            _ => continue,
        };
        out.push_str(marker);
        out.push_str(ws);
        out.push_str(replacement);
        rest = &trimmed[word.len()..];
    }
    out.push_str(rest);
    out
}

/// The (key, value) pairs of a map value, in order.
pub(crate) fn map_entries(map: &Value) -> Vec<(Value, Value)> {
    let Ok(keys) = map.try_iter() else { return vec![] };
    keys.map(|k| {
        let v = map.get_item(&k).unwrap_or_default();
        (k, v)
    })
    .collect()
}

fn entry<'a>(entries: &'a [(Value, Value)], key: &str) -> Option<&'a Value> {
    entries.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v)
}

fn set_entry(entries: &mut Vec<(Value, Value)>, key: &str, value: Value) {
    match entries.iter_mut().find(|(k, _)| k.as_str() == Some(key)) {
        Some(slot) => slot.1 = value,
        None => entries.push((Value::from(key), value)),
    }
}

/// vLLM's OpenAI-to-template message conversion, then HF's null-dropping and reasoning aliases.
fn normalize_messages(messages: &Value, format: ContentFormat) -> Result<Value, TemplateError> {
    if messages.kind() != ValueKind::Seq {
        return Err(input_err("messages", &format!("expected an array, found {}", messages.kind())));
    }
    let list: Vec<Value> = messages.try_iter().map(|it| it.collect()).unwrap_or_default();
    if list.is_empty() {
        return Err(input_err("messages", "the conversation is empty"));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, message) in list.iter().enumerate() {
        let path = format!("messages[{i}]");
        if message.kind() != ValueKind::Map {
            return Err(input_err(&path, &format!("expected an object, found {}", message.kind())));
        }
        let mut entries = map_entries(message);
        let content = entry(&entries, "content").cloned().unwrap_or_default();
        match normalize_content(&content, format, &path)? {
            Some(c) => set_entry(&mut entries, "content", c),
            None => entries.retain(|(k, _)| k.as_str() != Some("content")),
        }
        let is_assistant = entry(&entries, "role").and_then(|r| r.as_str()) == Some("assistant");
        if let (true, Some(calls)) = (is_assistant, entry(&entries, "tool_calls")) {
            let calls = normalize_tool_calls(calls);
            set_entry(&mut entries, "tool_calls", calls);
        }
        entries.retain(|(_, v)| !v.is_none());
        out.push(Value::from_iter(alias_reasoning(entries)));
    }
    Ok(Value::from(out))
}

fn normalize_content(content: &Value, format: ContentFormat, path: &str) -> Result<Option<Value>, TemplateError> {
    match (content.kind(), format) {
        (ValueKind::String, _) => Ok(Some(content.clone())),
        (ValueKind::Undefined | ValueKind::None, ContentFormat::String) => Ok(Some(Value::from(""))),
        (ValueKind::Undefined | ValueKind::None, ContentFormat::Parts) => Ok(None),
        (ValueKind::Seq, ContentFormat::Parts) => Ok(Some(content.clone())),
        (ValueKind::Seq, ContentFormat::String) => {
            let mut texts = Vec::new();
            for (j, part) in content.try_iter().into_iter().flatten().enumerate() {
                let path = format!("{path}.content[{j}]");
                let kind = part.get_attr("type").ok().filter(|v| !v.is_undefined());
                match kind.as_ref().and_then(|k| k.as_str()) {
                    Some("text") => {}
                    Some(other) => {
                        let msg = format!("content part type '{other}' is not supported (text only)");
                        return Err(input_err(&path, &msg));
                    }
                    None => return Err(input_err(&path, "expected {\"type\": \"text\", \"text\": ...}")),
                }
                match part.get_attr("text").ok().as_ref().and_then(|t| t.as_str()) {
                    Some(t) => texts.push(t.to_string()),
                    None => return Err(input_err(&format!("{path}.text"), "expected a string")),
                }
            }
            Ok(Some(Value::from(texts.join("\n"))))
        }
        (kind, _) => {
            let msg = format!("expected a string, an array of content parts or null, found {kind}");
            Err(input_err(&format!("{path}.content"), &msg))
        }
    }
}

/// Parses each `function.arguments` JSON string into an object (vLLM's rule); `{}` when empty.
fn normalize_tool_calls(calls: &Value) -> Value {
    if calls.kind() != ValueKind::Seq {
        return calls.clone();
    }
    let items = calls.try_iter().into_iter().flatten().map(|call| {
        if call.kind() != ValueKind::Map {
            return call;
        }
        let mut entries = map_entries(&call);
        let Some(function) = entry(&entries, "function").filter(|f| f.kind() == ValueKind::Map) else {
            return call;
        };
        let mut fentries = map_entries(function);
        let args = entry(&fentries, "arguments").cloned().unwrap_or_default();
        let parsed = if !args.is_true() {
            Value::from_iter(Vec::<(Value, Value)>::new())
        } else if let Some(text) = args.as_str() {
            serde_json::from_str::<Value>(text).unwrap_or(args)
        } else {
            args
        };
        set_entry(&mut fentries, "arguments", parsed);
        set_entry(&mut entries, "function", Value::from_iter(fentries));
        Value::from_iter(entries)
    });
    Value::from(items.collect::<Vec<_>>())
}

/// HF's `{"thinking": r, **message, "reasoning_content": r}` for the first reasoning field set.
fn alias_reasoning(entries: Vec<(Value, Value)>) -> Vec<(Value, Value)> {
    let reasoning =
        ["reasoning_content", "thinking", "reasoning"].iter().find_map(|name| entry(&entries, name).cloned());
    let Some(r) = reasoning else { return entries };
    let mut out = vec![(Value::from("thinking"), r.clone())];
    for (k, v) in entries {
        if k.as_str() == Some("thinking") {
            out[0].1 = v;
        } else {
            out.push((k, v));
        }
    }
    set_entry(&mut out, "reasoning_content", r);
    out
}
