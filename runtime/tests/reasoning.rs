//! Streaming reasoning and tool-call parsing: for each output, the expected split is written by
//! hand, and the parsers must give it whether the text comes in one piece, in two pieces cut at
//! every char boundary, or one char at a time.

use qgc_runtime::reasoning::{Delta, ReasoningParser, ToolCallParser, ToolEvent};

/// Every way of feeding `text` that the tests try: whole, cut once at each char boundary, and
/// one char at a time.
fn feedings(text: &str) -> Vec<Vec<&str>> {
    let mut out = vec![vec![text]];
    for (i, _) in text.char_indices().skip(1) {
        out.push(vec![&text[..i], &text[i..]]);
    }
    out.push(text.char_indices().map(|(i, c)| &text[i..i + c.len_utf8()]).collect());
    out
}

fn split_reasoning(starts_inside: bool, pieces: &[&str]) -> Delta {
    let mut p = ReasoningParser::new(starts_inside);
    let mut total = Delta::default();
    for piece in pieces {
        let d = p.push(piece);
        total.reasoning += &d.reasoning;
        total.content += &d.content;
    }
    let d = p.finish();
    total.reasoning += &d.reasoning;
    total.content += &d.content;
    total
}

/// (starts_inside, output, reasoning, content)
const REASONING_CASES: &[(bool, &str, &str, &str)] = &[
    // Qwen3 hybrid: the model opens <think> itself.
    (false, "<think>\nLet me add.\n</think>\n\nThe answer is 4.", "Let me add.", "The answer is 4."),
    (false, "  \n<think>a</think>b", "a", "b"),
    (false, "<think>\n\n</think>\n\nJust content.", "", "Just content."),
    // Thinking disabled or an instruct model: no tags, all content, newlines kept.
    (false, "\n\nNo thinking here.\n", "", "\n\nNo thinking here.\n"),
    (false, "", "", ""),
    (false, "<thin", "", "<thin"),
    (false, "   ", "", "   "),
    // A <think> that is not at the start is content.
    (false, "Use <think> tags.</think>", "", "Use <think> tags.</think>"),
    // Thinking-2507 / Qwen3-Next thinking: the prompt ends with "<think>\n".
    (true, "Reasoning...\n</think>\n\nAnswer.", "Reasoning...", "Answer."),
    (true, "\n\nr1\n\nr2\n\n</think>\n\n\nc1\n\nc2\n", "r1\n\nr2", "c1\n\nc2\n"),
    (true, "r</think>c</think><think>d", "r", "c</think><think>d"),
    (true, "a </thinking> b </thi", "a </thinking> b </thi", ""),
    (true, "cut off mid-thought\n\n", "cut off mid-thought", ""),
    (true, "</think>", "", ""),
    (true, "<think>x</think>y", "<think>x", "y"),
    (true, "é🙂\n</think>\n🙂é", "é🙂", "🙂é"),
    (true, "<<</</t</think>>", "<<</</t", ">"),
];

#[test]
fn reasoning_splits_the_same_however_the_text_is_cut() {
    for &(inside, text, reasoning, content) in REASONING_CASES {
        for pieces in feedings(text) {
            let got = split_reasoning(inside, &pieces);
            assert_eq!(
                (got.reasoning.as_str(), got.content.as_str()),
                (reasoning, content),
                "starts_inside={inside} text={text:?} pieces={pieces:?}"
            );
        }
    }
}

#[test]
fn reasoning_is_released_as_soon_as_it_is_known() {
    let mut p = ReasoningParser::new(true);
    assert!(p.in_reasoning());
    // Text up to a possible tag start comes out at once; "</th" and the newline wait.
    assert_eq!(p.push("Thinking\n</th"), Delta { reasoning: "Thinking".into(), content: String::new() });
    assert_eq!(p.push("ink>\n\nHi"), Delta { reasoning: String::new(), content: "Hi".into() });
    assert!(!p.in_reasoning());
    assert_eq!(p.push(" there"), Delta { reasoning: String::new(), content: " there".into() });
    assert_eq!(p.finish(), Delta::default());

    let mut p = ReasoningParser::new(false);
    assert_eq!(p.push("Hello"), Delta { reasoning: String::new(), content: "Hello".into() });
    assert_eq!(p.push(" <think>"), Delta { reasoning: String::new(), content: " <think>".into() });
}

fn parse_calls(pieces: &[&str]) -> Vec<ToolEvent> {
    let mut p = ToolCallParser::new();
    let mut events: Vec<ToolEvent> = Vec::new();
    for piece in pieces {
        events.extend(p.push(piece));
    }
    events.extend(p.finish());
    // Content may arrive in several events; merge neighbours to compare.
    let mut merged: Vec<ToolEvent> = Vec::new();
    for e in events {
        match (merged.last_mut(), e) {
            (Some(ToolEvent::Content(a)), ToolEvent::Content(b)) => a.push_str(&b),
            (_, e) => merged.push(e),
        }
    }
    merged
}

fn content(s: &str) -> ToolEvent {
    ToolEvent::Content(s.into())
}

fn call(name: &str, arguments: &str) -> ToolEvent {
    ToolEvent::Call { name: name.into(), arguments: arguments.into() }
}

#[test]
fn tool_calls_parse_the_same_however_the_text_is_cut() {
    let weather = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"location\": \"Paris\", \"unit\": \"celsius\"}}\n</tool_call>";
    let cases: Vec<(String, Vec<ToolEvent>)> = vec![
        ("Plain answer.".into(), vec![content("Plain answer.")]),
        (weather.into(), vec![call("get_weather", r#"{"location":"Paris","unit":"celsius"}"#)]),
        (
            format!("Let me check.\n{weather}\n{weather}"),
            vec![
                content("Let me check.\n"),
                call("get_weather", r#"{"location":"Paris","unit":"celsius"}"#),
                content("\n"),
                call("get_weather", r#"{"location":"Paris","unit":"celsius"}"#),
            ],
        ),
        // Key order as written, unicode and escapes kept, compact.
        (
            "<tool_call>{\"arguments\": {\"z\": 1, \"a\": [true, null, 2.5], \"s\": \"é \\\"q\\\" <b>\"}, \"name\": \"f\"}</tool_call>".into(),
            vec![call("f", r#"{"z":1,"a":[true,null,2.5],"s":"é \"q\" <b>"}"#)],
        ),
        // Arguments as a JSON string holding an object, or missing.
        ("<tool_call>{\"name\": \"f\", \"arguments\": \"{\\\"x\\\": 1}\"}</tool_call>".into(), vec![call("f", r#"{"x":1}"#)]),
        ("<tool_call>{\"name\": \"now\"}</tool_call>".into(), vec![call("now", "{}")]),
        // Not a valid call: given back verbatim.
        (
            "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 1}\n</tool_call>after".into(),
            vec![content("<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 1}\n</tool_call>after")],
        ),
        ("<tool_call>{\"arguments\": {}}</tool_call>".into(), vec![content("<tool_call>{\"arguments\": {}}</tool_call>")]),
        ("<tool_call>{\"name\": \"f\", \"arguments\": [1]}</tool_call>".into(), vec![content("<tool_call>{\"name\": \"f\", \"arguments\": [1]}</tool_call>")]),
        // Left open at the end: content, verbatim.
        ("x<tool_call>{\"name\": \"f\"".into(), vec![content("x<tool_call>{\"name\": \"f\"")]),
        // Near misses of the tag are content.
        ("a <tool_cal b </tool_call> <tool_".into(), vec![content("a <tool_cal b </tool_call> <tool_")]),
        ("<<tool_call>{\"name\":\"g\",\"arguments\":{}}</tool_call>>".into(), vec![content("<"), call("g", "{}"), content(">")]),
    ];
    for (text, want) in &cases {
        for pieces in feedings(text) {
            assert_eq!(&parse_calls(&pieces), want, "text={text:?} pieces={pieces:?}");
        }
    }
}

#[test]
fn calls_are_emitted_only_when_complete() {
    let mut p = ToolCallParser::new();
    assert_eq!(p.push("Sure. <tool"), vec![content("Sure. ")]);
    assert_eq!(p.push("_call>\n{\"name\": \"f\", \"argu"), vec![]);
    assert!(p.in_call());
    assert_eq!(p.push("ments\": {\"k\": \"v\"}}\n</tool_call"), vec![]);
    assert_eq!(p.push(">\n"), vec![call("f", r#"{"k":"v"}"#), content("\n")]);
    assert!(!p.in_call());
    assert_eq!(p.finish(), vec![]);
}

#[test]
fn reasoning_then_tool_calls_compose() {
    let out = "Need the weather.\n</think>\n\n<tool_call>\n{\"name\": \"w\", \"arguments\": {}}\n</tool_call>";
    for pieces in feedings(out) {
        let mut r = ReasoningParser::new(true);
        let mut t = ToolCallParser::new();
        let (mut reasoning, mut events) = (String::new(), Vec::new());
        for piece in &pieces {
            let d = r.push(piece);
            reasoning += &d.reasoning;
            events.extend(t.push(&d.content));
        }
        let d = r.finish();
        reasoning += &d.reasoning;
        events.extend(t.push(&d.content));
        events.extend(t.finish());
        assert_eq!(reasoning, "Need the weather.");
        assert_eq!(events, vec![call("w", "{}")], "pieces={pieces:?}");
    }
}
