#!/usr/bin/env python3
"""Writes tests/golden/templates/goldens.json: chat template renders by Hugging Face transformers.

Each case names a template, an OpenAI-style conversation (from `conversations`), whether the
`tools` list is given, add_generation_prompt and chat_template_kwargs, and holds `expected`, the string `tokenizer.apply_chat_template(..., tokenize=False)` returns for them.
The tokenizer is loaded with `AutoTokenizer.from_pretrained` from a temporary folder holding the
template's `tokenizer_config.json` (plus a stub `tokenizer.json`), so HF's own loading, special
tokens and message handling apply. runtime/tests/template.rs checks qgc's renders against them.

OpenAI messages are first converted the way a vLLM OpenAI server converts them before it calls
the template (`openai_to_template` below: text parts joined with "\\n", null content as "",
`function.arguments` JSON text parsed). That conversion is what qgc's `template.rs` copies; the
rest (dropping null keys, reasoning aliases, the Jinja environment) is HF's own.

Run from the repo root with transformers and jinja2 installed (no network needed):

    python scripts/make_template_goldens.py
"""

import copy
import datetime
import json
import os
import struct
import tempfile

import jinja2
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "golden", "templates", "goldens.json")

# Qwen's tokenizer_config.json special tokens (Qwen3 and Qwen3-Next ship the same).
QWEN_CONFIG = {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
TEMPLATES = {
    "qwen3": {"path": "runtime/src/templates/qwen3.jinja", "config": QWEN_CONFIG, "content_format": "string"},
    "qwen3-next-instruct": {
        "path": "tests/golden/templates/qwen3-next-instruct.jinja",
        "config": QWEN_CONFIG,
        "content_format": "string",
    },
    "qwen3-next-thinking": {
        "path": "tests/golden/templates/qwen3-next-thinking.jinja",
        "config": QWEN_CONFIG,
        "content_format": "string",
    },
    "pycompat": {
        "path": "tests/golden/templates/pycompat.jinja",
        "config": {"bos_token": "<s>", "eos_token": {"__type": "AddedToken", "content": "</s>", "lstrip": False, "rstrip": False}},
        "content_format": "string",
    },
    "content-parts": {
        "path": "tests/golden/templates/content-parts.jinja",
        "config": {"eos_token": "<|end|>"},
        "content_format": "parts",
    },
}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in °C for a city; returns <json>, \"quoted\" & more.",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "City, e.g. Zürich"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "default": 1.5e-7},
            },
            "required": ["location"],
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {"name": "get_time", "description": "The time now.", "parameters": {"type": "object", "properties": {}}},
}


def call(id_, name, arguments):
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": arguments}}


CONVERSATIONS = {
    "system_user": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France?"},
    ],
    "multi_turn": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Name a prime."},
    ],
    "think_in_history": [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "<think>\nAdd them.\n</think>\n\n4"},
        {"role": "user", "content": "And 3+3?"},
        {"role": "assistant", "content": "<think>Three and three.</think>6"},
    ],
    "reasoning_fields": [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1", "reasoning_content": "R1"},
        {"role": "user", "content": "Q2"},
        {"role": "assistant", "content": "\nA2", "reasoning": "\nR2\n", "tool_calls": None},
    ],
    "tools": [
        {"role": "system", "content": "Use tools when useful."},
        {"role": "user", "content": "Weather in Paris and the time?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                call("c1", "get_weather", '{"location":"Paris","unit":"celsius"}'),
                call("c2", "get_time", ""),
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 21.5, "sky": "clear"}'},
        {"role": "tool", "tool_call_id": "c2", "content": "12:00"},
        {"role": "assistant", "content": "It is 21.5 °C and noon."},
        {"role": "user", "content": "Thanks. Now Berlin?"},
    ],
    "tool_steps": [
        {"role": "user", "content": "Plan a trip."},
        {
            "role": "assistant",
            "content": "Let me check.",
            "reasoning_content": "Need weather first.",
            "tool_calls": [call("a", "get_weather", {"location": "Oslo", "days": 2})],
        },
        {"role": "tool", "tool_call_id": "a", "content": "rain"},
        {
            "role": "assistant",
            "content": "",
            "reasoning_content": "Try another city.",
            "tool_calls": [call("b", "get_weather", "not json {"), call("c", "get_time", None)],
        },
        {"role": "tool", "tool_call_id": "b", "content": [{"type": "text", "text": "sun"}, {"type": "text", "text": "25"}]},
    ],
    "content_parts": [
        {"role": "system", "content": [{"type": "text", "text": "Part one."}, {"type": "text", "text": "Part two."}]},
        {"role": "user", "content": [{"type": "text", "text": "Look:"}, {"type": "text", "text": "a list of parts"}]},
    ],
    "unicode": [
        {"role": "user", "content": "안녕 你好 こんにちは 👋🏽 e\u0301 — ½ \u2028 tab\tend"},
        {"role": "assistant", "content": "Ça va? 🙂"},
        {"role": "user", "content": "Ελληνικά ✓"},
    ],
    "quotes_and_tags": [
        {"role": "system", "content": "Say \"hi\" and 'bye' with <b>tags</b> & {{ braces }} {% raw %}"},
        {"role": "user", "content": "<tool_response>\nnot really a tool\n</tool_response>"},
        {"role": "user", "content": "Is </think> a tag? <|im_end|> \\n backslash"},
    ],
    "assistant_last": [
        {"role": "user", "content": "Finish this:"},
        {"role": "assistant", "content": "The quick brown fox"},
    ],
}

# (template, conversation, tools, add_generation_prompt, kwargs); `extra` feeds pycompat.
EXTRA = {"extra": {"n": 3, "x": 2.5, "tiny": 1e-07, "big": 1e16, "neg": -0.0, "s": "it's", "none": None, "t": True, "l": [1, "a", None], "d": {"k": "v"}}}


def plan():
    cases = []
    for template in ("qwen3", "qwen3-next-instruct", "qwen3-next-thinking"):
        kwarg_sets = [{}, {"enable_thinking": False}]
        if template == "qwen3":
            kwarg_sets.append({"enable_thinking": True})
        for conv in CONVERSATIONS:
            tools = [WEATHER_TOOL, TIME_TOOL] if conv in ("tools", "tool_steps") else None
            for agp in (True, False):
                for kwargs in kwarg_sets:
                    cases.append((template, conv, tools, agp, kwargs))
    for conv in ("multi_turn", "tools", "unicode", "quotes_and_tags", "reasoning_fields"):
        tools = [WEATHER_TOOL, TIME_TOOL] if conv == "tools" else None
        cases.append(("pycompat", conv, tools, True, dict(EXTRA)))
    cases.append(("pycompat", "system_user", None, False, {"enable_thinking": False}))
    cases.append(("pycompat", "content_parts", None, False, {"enable_thinking": True}))
    for conv in ("content_parts", "tools", "system_user"):
        cases.append(("content-parts", conv, None, True, {}))
    return cases


def openai_to_template(messages, content_format):
    """vLLM's conversion of OpenAI chat messages before it applies the chat template."""
    out = []
    for message in messages:
        m = {}
        for key, value in message.items():
            m[key] = copy.deepcopy(value)
        content = message.get("content")
        if content_format == "string":
            if content is None:
                m["content"] = ""
            elif isinstance(content, list):
                m["content"] = "\n".join(p["text"] for p in content)
        elif content is None:
            m.pop("content", None)
        if m.get("role") == "assistant" and isinstance(m.get("tool_calls"), list):
            for item in m["tool_calls"]:
                fn = item.get("function")
                if not isinstance(fn, dict):
                    continue
                args = fn.get("arguments")
                if not args:
                    fn["arguments"] = {}
                elif isinstance(args, str):
                    try:
                        fn["arguments"] = json.loads(args)
                    except json.JSONDecodeError:
                        pass  # qgc keeps text that is not JSON (vLLM would reject the request)
        out.append(m)
    return out


def write_tokenizer(folder, config):
    vocab = {"[UNK]": 0, "<|im_end|>": 1, "<|endoftext|>": 2, "<s>": 3, "</s>": 4, "<|end|>": 5}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", **config}, f, ensure_ascii=False)


def load(config, files=None):
    with tempfile.TemporaryDirectory(prefix="qgc-tpl-") as folder:
        write_tokenizer(folder, config)
        for name, text in (files or {}).items():
            path = os.path.join(folder, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        return AutoTokenizer.from_pretrained(folder)


def render(tok, messages, tools, agp, kwargs):
    try:
        return {"expected": tok.apply_chat_template(messages, tools=tools, add_generation_prompt=agp, tokenize=False, **kwargs)}
    except Exception as e:  # noqa: BLE001 - the error is the golden
        return {"hf_error": f"{type(e).__name__}: {e}"}


def main():
    sources = {}
    for name, t in TEMPLATES.items():
        with open(os.path.join(ROOT, t["path"]), encoding="utf-8") as f:
            sources[name] = f.read()
    tokenizers = {name: load({**t["config"], "chat_template": sources[name]}) for name, t in TEMPLATES.items()}

    cases = []
    hf_inputs = {"string": {}, "parts": {}}
    for template, conv, tools, agp, kwargs in plan():
        fmt = TEMPLATES[template]["content_format"]
        hf_messages = openai_to_template(CONVERSATIONS[conv], fmt)
        hf_inputs[fmt][conv] = hf_messages
        case = {
            "template": template,
            "conversation": conv,
            "tools": tools is not None,
            "add_generation_prompt": agp,
            "kwargs": kwargs,
        }
        case.update(render(tokenizers[template], hf_messages, tools, agp, kwargs))
        if "hf_error" in case:
            raise SystemExit(f"{template}/{conv}: HF failed: {case['hf_error']}")
        cases.append(case)

    user = [{"role": "user", "content": "hi"}]
    errors = []
    for name, source, messages in [
        ("raise_exception", "{%- for m in messages %}{%- if m.role not in ['user', 'assistant'] %}"
         "{{- raise_exception('Only user and assistant roles are supported, got ' + m.role + '!') }}"
         "{%- endif %}{{ m.content }}{%- endfor %}", [{"role": "system", "content": "s"}] + user),
        ("syntax", "{% if messages %}unclosed", user),
        ("unknown_filter", "{{ messages | no_such_filter }}", user),
        ("undefined_method", "{{ messages[0].content.no_such_method() }}", user),
        ("qwen3_list_content", sources["qwen3"], [{"role": "system", "content": ["not", "text"]}] + user),
    ]:
        tok = load({"chat_template": source})
        result = render(tok, messages, None, True, {})
        if "hf_error" not in result:
            raise SystemExit(f"error case {name}: HF did not fail")
        errors.append({"name": name, "source": source, "messages": messages, **result})

    model_dirs = []
    tool_use_list = [
        {"name": "default", "template": "D{{ messages | length }}{{ eos_token }}"},
        {"name": "tool_use", "template": "T{{ tools | length }}{{ bos_token }}"},
    ]
    for name, config, files in [
        ("list_default_tool_use", {"bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": False}, "eos_token": "</s>",
                                   "chat_template": tool_use_list}, {}),
        ("jinja_file_wins", {"eos_token": {"__type": "AddedToken", "content": "<|end|>"}, "chat_template": "CONFIG"},
         {"chat_template.jinja": "FILE {{ eos_token }}|{{ messages[0].content }}\n"}),
        ("config_string", {"eos_token": "</s>", "pad_token": "<|endoftext|>", "chat_template": "{{ pad_token }}{{ messages[0].content }}{{ eos_token }}"}, {}),
        ("additional_tool_use", {"chat_template": "D"}, {"additional_chat_templates/tool_use.jinja": "T{{ tools[0].function.name }}"}),
    ]:
        tok = load(config, files)
        renders = []
        for tools in (None, [TIME_TOOL]):
            renders.append({"tools": tools, **render(tok, user, tools, False, {})})
        model_dirs.append({"name": name, "tokenizer_config": config, "files": files, "messages": user, "renders": renders})

    floats = [0.1, 1 / 3, 2.5, 100.0, -0.0, 0.0, 1e16, 1e15, 123456789012345678.0, 1e-5, 0.0001, 1.5e-7,
              5e-324, 1.7976931348623157e308, 1e22, -2.75e-10, 9007199254740993.0, 12345.678]
    float_cases = [{"bits": struct.unpack(">Q", struct.pack(">d", x))[0], "repr": repr(x), "json": json.dumps(x)} for x in floats]
    stamps = [0, 951782400, 951868799, 1700000000, 1709251199, 4102444800, 1234567890]
    formats = ["%Y-%m-%d %H:%M:%S", "%d %b %Y", "%A, %B %d, %Y", "%a %j %I%p %y %%", "%e|%-d|%-m|%-H", "%F %T %Z %z", "%c", "%u %w %C %D %R"]
    # HF's strftime_now is `datetime.now().strftime(fmt)`: a naive datetime (so %Z and %z are empty).
    naive = [datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).replace(tzinfo=None) for ts in stamps]
    strftime_cases = [{"unix": ts, "format": f, "expected": d.strftime(f)} for ts, d in zip(stamps, naive) for f in formats]

    out = {
        "generator": "scripts/make_template_goldens.py",
        "transformers": transformers.__version__,
        "jinja2": jinja2.__version__,
        "templates": TEMPLATES,
        "conversations": CONVERSATIONS,
        "tools": [WEATHER_TOOL, TIME_TOOL],
        "hf_messages": hf_inputs,
        "cases": cases,
        "errors": errors,
        "model_dirs": model_dirs,
        "floats": float_cases,
        "strftime": strftime_cases,
    }
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {OUT}: {len(cases)} renders, {len(errors)} errors, {len(model_dirs)} model folders")


if __name__ == "__main__":
    main()
