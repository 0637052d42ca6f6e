//! Splitting generated text, as it streams, into reasoning, content and tool calls (Qwen3's
//! `<think>…</think>` and `<tool_call>…</tool_call>` formats).
//!
//! Both parsers take text in pieces of any size ([`ReasoningParser::push`],
//! [`ToolCallParser::push`]) and give the same total output however the text is cut: a piece
//! that ends in what may be the start of a tag is held back until the next piece (or `finish`)
//! decides it. Feed the reasoning parser first and its `content` into the tool-call parser.
//!
//! Newlines: Qwen writes `<think>\nREASONING\n</think>\n\nCONTENT`, and its chat template strips
//! exactly those newlines when it renders an earlier turn (`reasoning_content.strip('\n')`,
//! `content.lstrip('\n')`). [`ReasoningParser`] strips the same ones, so that reasoning and content
//! sent back by a client render as the model wrote them, and clients do not see content that
//! starts with blank lines. vLLM's Qwen3 parser keeps them (its content starts with `"\n\n"`).

/// Text split by [`ReasoningParser`]; either part may be empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    /// Text inside `<think>…</think>`, tags dropped.
    pub reasoning: String,
    /// Text outside it.
    pub content: String,
}

const THINK_OPEN: &str = "<think>";
const THINK_CLOSE: &str = "</think>";
const CALL_OPEN: &str = "<tool_call>";
const CALL_CLOSE: &str = "</tool_call>";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before any output: a `<think>` here (after optional whitespace) opens reasoning.
    Start,
    /// Inside `<think>`; `leading` while no reasoning text has come yet.
    Reasoning { leading: bool },
    /// Just after `</think>`: newlines are dropped.
    AfterThink,
    /// Everything else is content, passed on as it comes.
    Content,
}

/// Streaming splitter of Qwen3 output into reasoning and content.
///
/// - `starts_inside`: the prompt already opened `<think>` (Qwen3-Thinking-2507 and Qwen3-Next
///   thinking templates end the prompt with `<think>\n`), so output is reasoning until
///   `</think>`. Otherwise a `<think>` opens reasoning only at the very start of the output
///   (after optional whitespace); elsewhere it is content, as is everything when none comes.
/// - Only the first `</think>` ends reasoning; later tags are content, verbatim.
/// - Newlines at both ends of the reasoning and at the start of the content after `</think>`
///   are dropped (see the module docs).
/// - Output that ends inside reasoning (no `</think>`) is all reasoning.
#[derive(Debug, Clone)]
pub struct ReasoningParser {
    phase: Phase,
    buf: String,
}

impl ReasoningParser {
    /// A parser for one generation; `starts_inside` when the prompt ends inside `<think>`.
    pub fn new(starts_inside: bool) -> ReasoningParser {
        let phase = if starts_inside { Phase::Reasoning { leading: true } } else { Phase::Start };
        ReasoningParser { phase, buf: String::new() }
    }

    /// Whether the parser is inside `<think>…</think>` now.
    pub fn in_reasoning(&self) -> bool {
        matches!(self.phase, Phase::Reasoning { .. })
    }

    /// The next piece of generated text; returns what it decides.
    pub fn push(&mut self, text: &str) -> Delta {
        self.buf.push_str(text);
        let mut out = Delta::default();
        self.step(&mut out);
        out
    }

    /// End of output: what was held back, as what it turned out to be.
    pub fn finish(&mut self) -> Delta {
        let mut out = Delta::default();
        self.step(&mut out);
        let rest = std::mem::take(&mut self.buf);
        match self.phase {
            Phase::Start | Phase::Content => out.content.push_str(&rest),
            Phase::Reasoning { .. } => out.reasoning.push_str(rest.trim_end_matches('\n')),
            Phase::AfterThink => {} // only newlines are left
        }
        self.phase = Phase::Content;
        out
    }

    /// Moves every decidable prefix of `buf` to `out`.
    fn step(&mut self, out: &mut Delta) {
        loop {
            match self.phase {
                Phase::Start => {
                    let body = self.buf.trim_start();
                    if let Some(rest) = body.strip_prefix(THINK_OPEN) {
                        self.buf = rest.to_string();
                        self.phase = Phase::Reasoning { leading: true };
                    } else if body.is_empty() || THINK_OPEN.starts_with(body) {
                        return; // whitespace, or a partial `<think>`: wait
                    } else {
                        self.phase = Phase::Content;
                    }
                }
                Phase::Reasoning { leading } => {
                    if leading {
                        let kept = self.buf.trim_start_matches('\n').len();
                        self.buf.drain(..self.buf.len() - kept);
                        if self.buf.is_empty() {
                            return;
                        }
                        self.phase = Phase::Reasoning { leading: false };
                    }
                    if let Some(i) = self.buf.find(THINK_CLOSE) {
                        out.reasoning.push_str(self.buf[..i].trim_end_matches('\n'));
                        self.buf.drain(..i + THINK_CLOSE.len());
                        self.phase = Phase::AfterThink;
                        continue;
                    }
                    // Hold back a partial `</think>` and the newlines before it.
                    let hold = partial_tag_start(&self.buf, THINK_CLOSE);
                    let emit = self.buf[..hold].trim_end_matches('\n').len();
                    out.reasoning.push_str(&self.buf[..emit]);
                    self.buf.drain(..emit);
                    return;
                }
                Phase::AfterThink => {
                    let kept = self.buf.trim_start_matches('\n').len();
                    self.buf.drain(..self.buf.len() - kept);
                    if self.buf.is_empty() {
                        return;
                    }
                    self.phase = Phase::Content;
                }
                Phase::Content => {
                    out.content.push_str(&self.buf);
                    self.buf.clear();
                    return;
                }
            }
        }
    }
}

/// The start of the longest suffix of `text` that is a proper prefix of `tag` (`text.len()` if
/// none): where a tag cut by the end of a piece may begin.
fn partial_tag_start(text: &str, tag: &str) -> usize {
    let longest = tag.len().saturating_sub(1).min(text.len());
    for len in (1..=longest).rev() {
        let start = text.len() - len;
        if text.is_char_boundary(start) && tag.starts_with(&text[start..]) {
            return start;
        }
    }
    text.len()
}

/// What [`ToolCallParser`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolEvent {
    /// Text outside tool-call blocks (or a block that was not a valid call, verbatim).
    Content(String),
    /// A complete, valid tool call.
    Call {
        /// The function name.
        name: String,
        /// The arguments as compact JSON object text, keys in the order the model wrote them.
        arguments: String,
    },
}

/// Streaming parser of Qwen's (Hermes-style) tool calls:
/// `<tool_call>\n{"name": "f", "arguments": {...}}\n</tool_call>`.
///
/// A block becomes a [`ToolEvent::Call`] only once `</tool_call>` has come and the body is one
/// JSON object with a string `name` and an object `arguments` (or a string holding a JSON
/// object, or none: `{}`); so streamed arguments are never partial JSON. Any other block is
/// given back verbatim, tags included, as [`ToolEvent::Content`], as is a block left open at
/// `finish`. Text outside blocks (whitespace between calls included) is content.
#[derive(Debug, Clone, Default)]
pub struct ToolCallParser {
    inside: bool,
    buf: String,
    /// Bytes of `buf` already searched for `</tool_call>` (less a tag length), so a long call
    /// is scanned once, not once per piece.
    scanned: usize,
}

impl ToolCallParser {
    /// A parser for one generation.
    pub fn new() -> ToolCallParser {
        ToolCallParser::default()
    }

    /// Whether an opened block awaits its `</tool_call>`.
    pub fn in_call(&self) -> bool {
        self.inside
    }

    /// The next piece of content; returns the events it completes, in order.
    pub fn push(&mut self, text: &str) -> Vec<ToolEvent> {
        self.buf.push_str(text);
        let mut events = Vec::new();
        loop {
            if self.inside {
                let mut from = self.scanned.min(self.buf.len());
                while !self.buf.is_char_boundary(from) {
                    from -= 1;
                }
                let Some(i) = self.buf[from..].find(CALL_CLOSE).map(|i| i + from) else {
                    self.scanned = self.buf.len().saturating_sub(CALL_CLOSE.len());
                    break;
                };
                self.scanned = 0;
                let event = parse_call(&self.buf[..i])
                    .unwrap_or_else(|| ToolEvent::Content(format!("{CALL_OPEN}{}{CALL_CLOSE}", &self.buf[..i])));
                push_event(&mut events, event);
                self.buf.drain(..i + CALL_CLOSE.len());
                self.inside = false;
            } else if let Some(i) = self.buf.find(CALL_OPEN) {
                push_event(&mut events, ToolEvent::Content(self.buf[..i].to_string()));
                self.buf.drain(..i + CALL_OPEN.len());
                self.inside = true;
            } else {
                let hold = partial_tag_start(&self.buf, CALL_OPEN);
                push_event(&mut events, ToolEvent::Content(self.buf[..hold].to_string()));
                self.buf.drain(..hold);
                break;
            }
        }
        events
    }

    /// End of output: held-back text, and an unclosed block verbatim, as content.
    pub fn finish(&mut self) -> Vec<ToolEvent> {
        let rest = std::mem::take(&mut self.buf);
        let text = if self.inside { format!("{CALL_OPEN}{rest}") } else { rest };
        self.inside = false;
        self.scanned = 0;
        let mut events = Vec::new();
        push_event(&mut events, ToolEvent::Content(text));
        events
    }
}

/// Appends `event`, dropping empty content and merging adjacent content.
fn push_event(events: &mut Vec<ToolEvent>, event: ToolEvent) {
    if let ToolEvent::Content(text) = &event {
        if text.is_empty() {
            return;
        }
        if let Some(ToolEvent::Content(last)) = events.last_mut() {
            last.push_str(text);
            return;
        }
    }
    events.push(event);
}

#[derive(serde::Deserialize)]
struct RawCall {
    name: String,
    #[serde(default)]
    arguments: Option<minijinja::Value>,
}

/// A call from a block's body, if it is one valid JSON object.
fn parse_call(body: &str) -> Option<ToolEvent> {
    // minijinja values keep the keys in the order written (serde_json's own maps sort them).
    let call: RawCall = serde_json::from_str(body.trim()).ok()?;
    let arguments = match call.arguments {
        None => return Some(ToolEvent::Call { name: call.name, arguments: "{}".into() }),
        Some(v) if v.is_none() => return Some(ToolEvent::Call { name: call.name, arguments: "{}".into() }),
        Some(v) => match v.as_str() {
            Some(text) => serde_json::from_str::<minijinja::Value>(text).ok()?,
            None => v,
        },
    };
    if arguments.kind() != minijinja::value::ValueKind::Map {
        return None;
    }
    let arguments = serde_json::to_string(&arguments).ok()?;
    Some(ToolEvent::Call { name: call.name, arguments })
}
