#!/usr/bin/env python3
"""openai_check.py BASE_URL [MODEL] -- `qgc serve` through the official `openai` Python client.

Run by scripts/openai-check, which starts the server and this script in a venv that holds the
pinned `openai` package. BASE_URL is the server root (http://127.0.0.1:PORT); MODEL is the name
the server announced (its listening line), checked against /v1/models.

Each check prints PASS, FAIL (with what differed) or SKIP (with why); the exit status is 1 when
any check failed. Reference values come from the request itself or from algebra, never from the
server's own answer to the same question:
  - greedy streaming equals greedy non-streaming (text and token ids);
  - top_k=1 and min_p=1 at temperature 1 equal greedy decoding;
  - a greedy continuation of prompt + its first k generated ids equals the rest of the ids
    (prefill and decode agree);
  - `stop` cuts the greedy text at the first occurrence of a string taken from that text;
  - usage counts what was sent (token-id prompts) and what ignore_eos forces (max_tokens).

A server without a tokenizer (token-id prompts only) gets the token-id checks; the text ones
print SKIP.
"""

import json
import math
import sys
import traceback
import urllib.error
import urllib.request

import openai

RESULTS = []  # (status, name, detail)


class Fail(Exception):
    """A check found a difference."""


class Skip(Exception):
    """A check does not apply to this server."""


def expect(cond, what):
    if not cond:
        raise Fail(what)


def eq(got, want, what):
    if got != want:
        raise Fail(f"{what}: got {got!r}, want {want!r}")


def check(name):
    """Runs the decorated function now and records PASS/FAIL/SKIP."""

    def run(fn):
        try:
            note = fn()
            RESULTS.append(("PASS", name, note or ""))
        except Skip as e:
            RESULTS.append(("SKIP", name, str(e)))
        except Fail as e:
            RESULTS.append(("FAIL", name, str(e)))
        except openai.APIStatusError as e:
            RESULTS.append(("FAIL", name, f"HTTP {e.status_code}: {e.message}"))
        except Exception as e:  # noqa: BLE001 -- any other error is a failed check, with its trace
            tb = traceback.format_exc(limit=3).strip().splitlines()
            RESULTS.append(("FAIL", name, f"{type(e).__name__}: {e} ({tb[-3] if len(tb) >= 3 else ''})"))
        status, _, detail = RESULTS[-1]
        print(f"{status} {name}" + (f": {detail}" if detail else ""), flush=True)
        return fn

    return run


def extra(obj, key):
    """A field outside the openai types (the client keeps unknown fields)."""
    v = getattr(obj, key, None)
    if v is None and getattr(obj, "model_extra", None):
        v = obj.model_extra.get(key)
    return v


def main():
    if len(sys.argv) not in (2, 3) or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    base = sys.argv[1].rstrip("/")
    announced = sys.argv[2] if len(sys.argv) == 3 else None
    client = openai.OpenAI(base_url=base + "/v1", api_key="qgc-check", max_retries=0, timeout=300.0)
    print(f"openai {openai.__version__} against {base}", flush=True)
    ctx = {"model": announced, "max_len": None, "text": True}

    @check("models.list has the served model")
    def _():
        models = client.models.list()
        ids = [m.id for m in models.data]
        expect(len(ids) >= 1, "no models listed")
        if ctx["model"] is None:
            ctx["model"] = ids[0]
        expect(ctx["model"] in ids, f"served model {ctx['model']!r} not in {ids}")
        m = next(m for m in models.data if m.id == ctx["model"])
        eq(m.object, "model", "object")
        ctx["max_len"] = extra(m, "max_model_len")
        return f"{ctx['model']!r}, max_model_len {ctx['max_len']}"

    model = ctx["model"] or "unknown"
    try:
        ctx["text"] = has_text(client, model)
    except openai.OpenAIError as e:
        print(f"FAIL a one-token text completion: {type(e).__name__}: {e}", flush=True)
        return 1
    if not ctx["text"]:
        print("NOTE this server has no tokenizer: text checks are skipped, token-id checks run", flush=True)
    text_checks(client, model, ctx)
    id_checks(client, model, ctx)
    error_checks(client, model, ctx)

    counts = {s: sum(1 for r in RESULTS if r[0] == s) for s in ("PASS", "FAIL", "SKIP")}
    print(f"openai-check: {counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped", flush=True)
    return 1 if counts["FAIL"] else 0


def has_text(client, model):
    """Whether the server takes text (has a tokenizer): a one-token text completion."""
    try:
        client.completions.create(model=model, prompt="Hi", max_tokens=1, temperature=0)
        return True
    except openai.BadRequestError as e:
        if "token ids" in str(e.message) or "tokenizer" in str(e.message):
            return False
        raise


def need_text(ctx):
    if not ctx["text"]:
        raise Skip("no tokenizer on the server")


MESSAGES = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "Name three prime numbers."},
]

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
                "required": ["city"],
            },
        },
    }
]


def chat_text(msg):
    """Content and reasoning of a message or delta, as strings."""
    return (msg.content or ""), (extra(msg, "reasoning_content") or "")


def check_usage(u, what):
    expect(u is not None, f"{what}: no usage")
    eq(u.total_tokens, u.prompt_tokens + u.completion_tokens, f"{what}: total_tokens")
    expect(u.prompt_tokens > 0, f"{what}: prompt_tokens {u.prompt_tokens}")


def text_checks(client, model, ctx):
    greedy = {}

    @check("chat: system+user, non-stream")
    def _():
        need_text(ctx)
        r = client.chat.completions.create(
            model=model, messages=MESSAGES, temperature=0, max_tokens=16, extra_body={"return_token_ids": True}
        )
        eq(r.object, "chat.completion", "object")
        eq(len(r.choices), 1, "choices")
        c = r.choices[0]
        eq(c.index, 0, "index")
        eq(c.message.role, "assistant", "role")
        expect(isinstance(c.message.content, str), f"content is {c.message.content!r}, want a string")
        expect(c.finish_reason in ("stop", "length"), f"finish_reason {c.finish_reason!r}")
        check_usage(r.usage, "usage")
        expect(1 <= r.usage.completion_tokens <= 16, f"completion_tokens {r.usage.completion_tokens} not in [1, 16]")
        if c.finish_reason == "length":
            eq(r.usage.completion_tokens, 16, "completion_tokens at finish_reason length")
        ids = extra(c, "token_ids")
        expect(isinstance(ids, list), f"return_token_ids: token_ids is {ids!r}")
        eq(len(ids), r.usage.completion_tokens, "len(token_ids) vs usage.completion_tokens")
        greedy.update(content=chat_text(c.message), ids=ids, usage=r.usage, finish=c.finish_reason)
        return f"{r.usage.prompt_tokens}+{r.usage.completion_tokens} tokens, finish {c.finish_reason}"

    @check("chat: stream + include_usage equals non-stream greedy")
    def _():
        need_text(ctx)
        expect(greedy, "no non-stream result to compare with")
        stream = client.chat.completions.create(
            model=model,
            messages=MESSAGES,
            temperature=0,
            max_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"return_token_ids": True},
        )
        chunks = list(stream)
        expect(chunks, "no chunks")
        usage_chunks = [i for i, ch in enumerate(chunks) if ch.usage is not None]
        eq(usage_chunks, [len(chunks) - 1], "indices of chunks with usage (want only the last)")
        last = chunks[-1]
        eq(last.choices, [], "last chunk's choices")
        for i, ch in enumerate(chunks[:-1]):
            expect(ch.choices, f"chunk {i} has empty choices but is not the usage chunk")
            eq(ch.object, "chat.completion.chunk", f"chunk {i} object")
        expect(len({ch.id for ch in chunks}) == 1, "chunks carry different ids")
        content, reasoning, ids, finishes = "", "", [], []
        for ch in chunks[:-1]:
            for c in ch.choices:
                eq(c.index, 0, "choice index")
                a, b = chat_text(c.delta)
                content += a
                reasoning += b
                ids += extra(c, "token_ids") or []
                if c.finish_reason is not None:
                    finishes.append(c.finish_reason)
        eq(finishes, [greedy["finish"]], "finish_reason chunks")
        eq((content, reasoning), greedy["content"], "streamed (content, reasoning) vs non-stream")
        eq(ids, greedy["ids"], "streamed token_ids vs non-stream")
        u, g = last.usage, greedy["usage"]
        eq((u.prompt_tokens, u.completion_tokens), (g.prompt_tokens, g.completion_tokens), "stream usage vs non-stream")
        return f"{len(chunks)} chunks, {len(content)} chars"

    @check("chat: max_completion_tokens with ignore_eos")
    def _():
        need_text(ctx)
        r = client.chat.completions.create(
            model=model, messages=MESSAGES, max_completion_tokens=5, seed=1, extra_body={"ignore_eos": True}
        )
        eq(r.usage.completion_tokens, 5, "completion_tokens")
        eq(r.choices[0].finish_reason, "length", "finish_reason")

    @check("completions: text prompt")
    def _():
        need_text(ctx)
        r = client.completions.create(model=model, prompt="The capital of France is", max_tokens=8, temperature=0)
        eq(r.object, "text_completion", "object")
        eq(len(r.choices), 1, "choices")
        expect(isinstance(r.choices[0].text, str), "text is not a string")
        check_usage(r.usage, "usage")
        expect(1 <= r.usage.completion_tokens <= 8, f"completion_tokens {r.usage.completion_tokens}")
        r2 = client.completions.create(model=model, prompt="The capital of France is", max_tokens=8, temperature=0)
        eq(r2.choices[0].text, r.choices[0].text, "greedy text of a repeated request")
        return f"{r.usage.prompt_tokens} prompt tokens"

    @check("extra_body: chat_template_kwargs enable_thinking=False")
    def _():
        need_text(ctx)
        base = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=1, temperature=0)
        r = client.chat.completions.create(
            model=model,
            messages=MESSAGES,
            max_tokens=8,
            temperature=0,
            extra_body={"chat_template_kwargs": {"enable_thinking": False}},
        )
        msg = r.choices[0].message
        expect(isinstance(msg.content, str), f"content is {msg.content!r} (vllm#17609: null content)")
        expect(
            not extra(msg, "reasoning_content"),
            f"reasoning_content {extra(msg, 'reasoning_content')!r} with thinking off",
        )
        d = r.usage.prompt_tokens - base.usage.prompt_tokens
        return f"prompt {base.usage.prompt_tokens} -> {r.usage.prompt_tokens} tokens ({d:+d}: the template's empty think block)"

    @check("stop: greedy text cut at a string taken from it")
    def _():
        need_text(ctx)
        p = "Once upon a time"
        full = (
            client.completions.create(
                model=model, prompt=p, max_tokens=24, temperature=0, extra_body={"ignore_eos": True}
            )
            .choices[0]
            .text
        )
        stop = pick_stop(full)
        if stop is None:
            raise Fail(f"no usable stop string in the greedy text {full!r}")
        k = full.index(stop)
        r = client.completions.create(
            model=model,
            prompt=p,
            max_tokens=24,
            temperature=0,
            stop=[stop, "\x00never"],
            extra_body={"ignore_eos": True},
        )
        c = r.choices[0]
        eq(c.text, full[:k], f"text with stop={stop!r}")
        eq(c.finish_reason, "stop", "finish_reason")
        expect(r.usage.completion_tokens < 24, f"completion_tokens {r.usage.completion_tokens}, not cut")
        return f"stop {stop!r} at char {k}"

    @check("tools: accepted, reach the template, response shape")
    def _():
        need_text(ctx)
        plain = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=1, temperature=0)
        r = client.chat.completions.create(
            model=model, messages=MESSAGES, tools=TOOLS, tool_choice="auto", max_tokens=16, temperature=0
        )
        expect(
            r.usage.prompt_tokens > plain.usage.prompt_tokens,
            f"prompt tokens with tools {r.usage.prompt_tokens} <= without {plain.usage.prompt_tokens}: tools not rendered",
        )
        c = r.choices[0]
        expect(c.finish_reason in ("stop", "length", "tool_calls"), f"finish_reason {c.finish_reason!r}")
        calls = c.message.tool_calls
        expect(calls is None or isinstance(calls, list), f"tool_calls is {calls!r}")
        if c.finish_reason == "tool_calls":
            expect(calls, "finish_reason tool_calls without tool_calls")
        for t in calls or []:
            eq(t.type, "function", "tool call type")
            expect(t.id, "tool call without id")
            json.loads(t.function.arguments)
        history = MESSAGES + [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 3}'},
        ]
        r2 = client.chat.completions.create(model=model, messages=history, tools=TOOLS, max_tokens=4, temperature=0)
        expect(r2.usage.prompt_tokens > r.usage.prompt_tokens, "tool-call history did not lengthen the prompt")
        r3 = client.chat.completions.create(
            model=model, messages=MESSAGES, tools=TOOLS, tool_choice="none", max_tokens=4
        )
        expect(r3.choices[0].message.tool_calls is None, "tool_choice none returned tool_calls")
        s = client.chat.completions.create(
            model=model, messages=MESSAGES, tools=TOOLS, max_tokens=8, temperature=0, stream=True
        )
        fins = [c.finish_reason for ch in s for c in ch.choices if c.finish_reason]
        expect(len(fins) == 1, f"streamed tools request finish_reasons {fins}")
        return (
            f"prompt +{r.usage.prompt_tokens - plain.usage.prompt_tokens} tokens with tools, finish {c.finish_reason}"
        )

    @check("logprobs: chat top_logprobs")
    def _():
        need_text(ctx)
        r = client.chat.completions.create(
            model=model,
            messages=MESSAGES,
            max_tokens=6,
            temperature=0,
            logprobs=True,
            top_logprobs=3,
            extra_body={"ignore_eos": True},
        )
        lp = r.choices[0].logprobs
        expect(lp is not None and lp.content is not None, "no logprobs.content")
        eq(len(lp.content), r.usage.completion_tokens, "entries vs completion_tokens")
        for i, e in enumerate(lp.content):
            check_top(i, e.token, e.logprob, [(t.token, t.logprob) for t in e.top_logprobs], 3)
            if "\ufffd" in e.token:
                # Part of a character: the token's own bytes, shown as U+FFFD in the text.
                eq(bytes(e.bytes or []).decode("utf-8", "replace"), e.token, f"entry {i} bytes (part of a character)")
            else:
                eq(list(e.bytes or []), list(e.token.encode()), f"entry {i} bytes")
        joined = b"".join(bytes(e.bytes or []) for e in lp.content).decode("utf-8", "replace")
        content, reasoning = chat_text(r.choices[0].message)
        if not reasoning:
            eq(joined, content, "text of the joined logprob bytes (OpenAI: bytes rebuild split characters)")
        return f"{len(lp.content)} tokens, first {lp.content[0].token!r} {lp.content[0].logprob:.3f}"


def pick_stop(text):
    """A two-character string first occurring past the first third of `text`, not blank, no U+FFFD."""
    for k in range(max(1, len(text) // 3), len(text) - 1):
        s = text[k : k + 2]
        if s.strip() and "\ufffd" not in s and text.find(s) == k:
            return s
    return None


def check_top(i, token, logprob, top, k):
    """A greedy token's logprob entry: top-k sorted, the chosen token first, a distribution."""
    expect(logprob <= 1e-6, f"entry {i}: logprob {logprob} > 0")
    eq(len(top), k, f"entry {i}: top count")
    lps = [x[1] for x in top]
    expect(lps == sorted(lps, reverse=True), f"entry {i}: top not sorted: {lps}")
    expect(sum(math.exp(x) for x in lps) <= 1 + 1e-4, f"entry {i}: top probabilities sum over 1: {lps}")
    expect(abs(top[0][1] - logprob) <= 1e-4, f"entry {i}: greedy token logprob {logprob} != best {top[0][1]}")
    if top[0][0] != token and abs(top[0][1] - top[1][1]) > 1e-4:
        raise Fail(f"entry {i}: greedy token {token!r} is not the best {top[0][0]!r}")


def id_checks(client, model, ctx):
    prompt = [(37 * i + 11) % 250 + 3 for i in range(20)]

    def ids_of(r, i=0):
        ids = extra(r.choices[i], "token_ids")
        expect(isinstance(ids, list), f"choice {i} has no token_ids ({ids!r})")
        return ids

    def greedy(p, max_tokens, **kw):
        body = {"return_token_ids": True, "ignore_eos": True}
        body.update(kw.pop("extra_body", {}))
        return client.completions.create(model=model, prompt=p, max_tokens=max_tokens, extra_body=body, **kw)

    ref = {}

    @check("completions: token-id prompt, usage counts it")
    def _():
        r = greedy(prompt, 8, temperature=0)
        eq(r.usage.prompt_tokens, len(prompt), "prompt_tokens")
        eq(r.usage.completion_tokens, 8, "completion_tokens (ignore_eos)")
        eq(r.choices[0].finish_reason, "length", "finish_reason")
        ref["ids"] = ids_of(r)
        eq(len(ref["ids"]), 8, "token_ids")
        return f"ids {ref['ids']}"

    @check("completions: prefill of prompt+generated continues greedily")
    def _():
        expect(ref, "no greedy reference")
        r = greedy(prompt + ref["ids"][:3], 5, temperature=0)
        eq(ids_of(r), ref["ids"][3:], "continuation of prompt + first 3 generated ids")

    @check("completions: stream + include_usage equals non-stream")
    def _():
        expect(ref, "no greedy reference")
        s = client.completions.create(
            model=model,
            prompt=prompt,
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"return_token_ids": True, "ignore_eos": True},
        )
        chunks = list(s)
        with_usage = [i for i, ch in enumerate(chunks) if ch.usage is not None]
        eq(with_usage, [len(chunks) - 1], "indices of chunks with usage")
        eq(chunks[-1].choices, [], "usage chunk's choices")
        ids = [t for ch in chunks[:-1] for c in ch.choices for t in (extra(c, "token_ids") or [])]
        eq(ids, ref["ids"], "streamed token_ids")
        eq(chunks[-1].usage.completion_tokens, 8, "usage.completion_tokens")
        fins = [c.finish_reason for ch in chunks for c in ch.choices if c.finish_reason]
        eq(fins, ["length"], "finish reasons")

    @check("extra_body: top_k=1 and min_p=1 equal greedy; repetition_penalty, ignore_eos")
    def _():
        expect(ref, "no greedy reference")
        eq(ids_of(greedy(prompt, 8, temperature=1.0, seed=7, extra_body={"top_k": 1})), ref["ids"], "top_k=1 ids")
        eq(ids_of(greedy(prompt, 8, temperature=1.0, seed=8, extra_body={"min_p": 1.0})), ref["ids"], "min_p=1 ids")
        r = greedy(
            prompt, 12, temperature=0.8, seed=9, extra_body={"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.3}
        )
        eq(r.usage.completion_tokens, 12, "completion_tokens with ignore_eos")
        eq(r.choices[0].finish_reason, "length", "finish_reason")
        rep = ids_of(greedy(prompt, 12, temperature=0, extra_body={"repetition_penalty": 10.0}))
        plain = ids_of(greedy(prompt, 12, temperature=0))
        return f"greedy repeats {12 - len(set(plain))}, with penalty 10 {12 - len(set(rep))}"

    @check("presence_penalty and frequency_penalty (OpenAI parameters, greedy)")
    def _():
        kw = {"temperature": 0, "frequency_penalty": 2.0, "presence_penalty": 0.5}
        pen = ids_of(greedy(prompt, 12, **kw))
        eq(ids_of(greedy(prompt, 12, **kw)), pen, "penalised greedy ids, twice")
        plain = ids_of(greedy(prompt, 12, temperature=0))
        return f"distinct ids of 12: {len(set(plain))} plain, {len(set(pen))} penalised"

    @check("completions: a batch of prompts, n=2 each, in prompt order")
    def _():
        expect(ref, "no greedy reference")
        r = client.completions.create(
            model=model, prompt=[prompt, prompt[:3]], max_tokens=4, temperature=0, n=2,
            extra_body={"return_token_ids": True, "ignore_eos": True},
        )
        eq(sorted(c.index for c in r.choices), [0, 1, 2, 3], "choice indices")
        by = {c.index: extra(c, "token_ids") for c in r.choices}
        eq(by[0], ref["ids"][:4], "prompt 0's greedy ids")
        eq(by[1], by[0], "prompt 0's second choice")
        eq(by[3], by[2], "prompt 1's two choices")
        eq(r.usage.prompt_tokens, len(prompt) + 3, "usage.prompt_tokens")
        return f"4 choices, usage {r.usage.prompt_tokens} + {r.usage.completion_tokens}"

    @check("n=2 with seed")
    def _():
        kw = {"temperature": 1.0, "seed": 1234}
        a = greedy(prompt, 10, n=2, **kw)
        b = greedy(prompt, 10, n=2, **kw)
        eq(sorted(c.index for c in a.choices), [0, 1], "choice indices")
        eq(a.usage.completion_tokens, 20, "completion_tokens over both choices")
        ia, ib = [ids_of(a, i) for i in range(2)], [ids_of(b, i) for i in range(2)]
        eq(ib, ia, "same seed, same choices")
        expect(ia[0] != ia[1], f"the two choices are identical: {ia[0]}")
        c = greedy(prompt, 10, n=2, temperature=1.0, seed=4321)
        expect([ids_of(c, i) for i in range(2)] != ia, "another seed gave the same choices")

    @check("logprobs: completions")
    def _():
        r = greedy(prompt, 5, temperature=0, logprobs=2)
        lp = r.choices[0].logprobs
        expect(lp is not None, "no logprobs")
        eq(len(lp.tokens), 5, "tokens")
        eq(len(lp.token_logprobs), 5, "token_logprobs")
        eq(len(lp.top_logprobs), 5, "top_logprobs")
        for i in range(5):
            # A dict: tokens whose text is the same (partial UTF-8 as U+FFFD) share one key.
            top = lp.top_logprobs[i]
            expect(1 <= len(top) <= 2, f"entry {i}: {len(top)} top entries, want 1 or 2")
            expect(lp.tokens[i] in top, f"entry {i}: greedy token {lp.tokens[i]!r} not in top {top}")
            expect(
                max(top.values()) <= lp.token_logprobs[i] + 1e-4,
                f"entry {i}: a top logprob exceeds the greedy token's {lp.token_logprobs[i]}: {top}",
            )
        # OpenAI (and vLLM) offsets count characters of the text, not UTF-8 bytes.
        want = [sum(len(t) for t in lp.tokens[:i]) for i in range(5)]
        eq(lp.text_offset, want, f"text_offset (in characters) of tokens {lp.tokens}")
        if ctx["text"]:
            eq("".join(lp.tokens), r.choices[0].text, "joined tokens vs text")


def error_checks(client, model, ctx):
    @check("errors: unknown model -> NotFoundError model_not_found")
    def _():
        try:
            client.completions.create(model=model + "-nope", prompt=[1, 2, 3], max_tokens=2)
        except openai.NotFoundError as e:
            eq(e.code, "model_not_found", "code")
            eq(e.param, "model", "param")
            return
        raise Fail("no error")

    @check("errors: bad temperature -> BadRequestError with param")
    def _():
        try:
            client.completions.create(model=model, prompt=[1, 2, 3], max_tokens=2, temperature=5)
        except openai.BadRequestError as e:
            eq(e.param, "temperature", "param")
            eq(e.type, "invalid_request_error", "type")
            return
        raise Fail("no error")

    @check("errors: too-long prompt -> BadRequestError context_length_exceeded")
    def _():
        n = ctx["max_len"]
        if not isinstance(n, int):
            raise Skip("/v1/models gives no max_model_len")
        cases = [
            (
                "completions, token ids",
                lambda: client.completions.create(model=model, prompt=[5] * (n + 1), max_tokens=1),
            )
        ]
        cases.append(
            (
                "completions, max_tokens past the context",
                lambda: client.completions.create(model=model, prompt=[5] * 4, max_tokens=n),
            )
        )
        if ctx["text"]:
            cases.append(
                (
                    "chat, text",
                    lambda: client.chat.completions.create(
                        model=model, messages=[{"role": "user", "content": " hello" * (n + 1)}], max_tokens=1
                    ),
                )
            )
        for what, call in cases:
            try:
                call()
            except openai.BadRequestError as e:
                eq(e.code, "context_length_exceeded", f"{what}: code")
                continue
            raise Fail(f"{what}: no error")
        return ", ".join(w for w, _ in cases)

    @check("errors: raw bad JSON -> 400 with an OpenAI error body")
    def _():
        url = str(client.base_url).rstrip("/") + "/completions"
        req = urllib.request.Request(url, data=b'{"prompt": [1, 2', headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raise Fail(f"status {r.status}, want 400")
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode("utf-8", "replace")
        eq(status, 400, "status")
        err = json.loads(text).get("error")
        expect(isinstance(err, dict) and isinstance(err.get("message"), str), f"body {text!r}")
        for k in ("type", "param", "code"):
            expect(k in err, f"error body lacks {k!r}: {text!r}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
