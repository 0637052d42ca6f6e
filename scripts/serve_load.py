#!/usr/bin/env python3
"""serve_load.py --url URL [--pid PID] [--model NAME] [options] -- a bounded load run on `qgc serve`.

Run by scripts/serve-load (which starts the server and passes --url, --pid and --model). Standard
library only: plain HTTP/1.1 over asyncio, so every SSE chunk is timed as it arrives and a dropped
connection is seen as one.

  1. one warm-up streaming request; waits until /metrics shows nothing running; samples the
     server's VmRSS (/proc/PID/status) -- "idle before";
  2. R streaming /v1/completions requests (ignore_eos, max_tokens T, temperature 0, prompts of
     varied length: token ids, and text when the server has a tokenizer) from N concurrent
     clients, with M malformed requests interleaved (bad JSON, bad params, unknown model, too
     long, ...), each of which must get its 4xx with an OpenAI error body;
  3. stops after the fixed count, or stops starting requests at --duration-limit (requests still
     running then get 60 s more, then count as failed);
  4. waits until nothing runs, samples VmRSS again ("idle after"), checks /health.

Prints a readable summary, then one JSON line. Exit status 1 when a request failed, a malformed
one did not get its 4xx, or the server died or stopped answering /health; 2 on bad arguments.
"""

import argparse
import asyncio
import itertools
import json
import os
import random
import sys
import time
import urllib.parse

# fmt: off
WORDS = [
    "the", "model", "reads", "a", "long", "document", "about", "rivers", "mountains", "and", "weather", "of",
    "small", "towns", "then", "answers", "questions", "on", "history", "music", "science", "cooking", "travel",
    "price", "bread", "in", "winter",
]
# fmt: on
GRACE_S = 60.0


class Dropped(Exception):
    """The server closed the connection early or sent something that is not HTTP."""


async def http(host, port, method, path, body=None, on_data=None):
    """One request on its own connection. Returns (status, body bytes); with `on_data`, SSE
    `data:` payloads are passed to it as they arrive (with their arrival time) instead."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        writer.write(head.encode() + b"\r\n" + (body or b""))
        await writer.drain()
        line = await reader.readline()
        parts = line.split()
        if len(parts) < 2 or not parts[1].isdigit():
            raise Dropped(f"no status line (got {line[:60]!r})")
        status = int(parts[1])
        headers = {}
        while True:
            line = await reader.readline()
            if not line:
                raise Dropped("connection closed inside the headers")
            if line in (b"\r\n", b"\n"):
                break
            k, _, v = line.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        out = bytearray()
        sse = bytearray()
        async for piece in body_pieces(reader, headers):
            if on_data is None or status != 200:
                out += piece
                continue
            sse += piece.replace(b"\r\n", b"\n")
            while b"\n\n" in sse:
                event, _, rest = bytes(sse).partition(b"\n\n")
                sse = bytearray(rest)
                now = time.monotonic()
                for ln in event.split(b"\n"):
                    if ln.startswith(b"data:"):
                        on_data(ln[5:].strip(), now)
        return status, bytes(out)
    finally:
        writer.close()


async def body_pieces(reader, headers):
    """The body: chunked, by Content-Length, or to the end of the connection."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            line = await reader.readline()
            if not line:
                raise Dropped("connection closed inside a chunked body")
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                raise Dropped(f"bad chunk size line {line[:40]!r}") from None
            if size == 0:
                return
            try:
                data = await reader.readexactly(size)
                await reader.readexactly(2)
            except asyncio.IncompleteReadError:
                raise Dropped("connection closed inside a chunk") from None
            yield data
    elif "content-length" in headers:
        try:
            yield await reader.readexactly(int(headers["content-length"]))
        except asyncio.IncompleteReadError:
            raise Dropped("connection closed before Content-Length bytes") from None
    else:
        yield await reader.read()


def metric(text, name):
    """Sum of the samples of `name` in Prometheus text (None when absent)."""
    total, seen = 0.0, False
    for ln in text.splitlines():
        if ln.startswith("#"):
            continue
        key = ln.split("{", 1)[0].split(" ", 1)[0]
        if key == name:
            try:
                total += float(ln.rsplit(" ", 1)[1])
                seen = True
            except (IndexError, ValueError):
                pass
    return total if seen else None


def rss_mib(pid):
    """VmRSS of `pid` in MiB (None when unknown or gone)."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for ln in f:
                if ln.startswith("VmRSS:"):
                    return int(ln.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def percentile(xs, p):
    """Linear interpolation between closest ranks; None for no data."""
    if not xs:
        return None
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


class Load:
    def __init__(self, a):
        u = urllib.parse.urlsplit(a.url)
        self.host, self.port = u.hostname, u.port or 80
        self.a = a
        self.model = a.model
        self.max_len = None
        self.text_ok = False
        self.rng = random.Random(a.seed)
        self.results = []  # one dict per good request
        self.malformed = []  # one dict per malformed request
        self.warnings = []

    async def get(self, path):
        status, body = await asyncio.wait_for(http(self.host, self.port, "GET", path), 30)
        return status, body.decode("utf-8", "replace")

    async def setup(self):
        status, body = await self.get("/v1/models")
        if status != 200:
            raise SystemExit(f"serve-load: GET /v1/models answered {status}: {body[:200]}")
        data = json.loads(body)["data"]
        if self.model is None:
            self.model = data[0]["id"]
        if self.model not in [m["id"] for m in data]:
            raise SystemExit(f"serve-load: model {self.model!r} not in /v1/models ({[m['id'] for m in data]})")
        self.max_len = next(m for m in data if m["id"] == self.model).get("max_model_len")
        lo, hi = self.a.prompt_tokens
        room = (self.max_len or 1 << 30) - self.a.max_tokens - 1
        if room < 1:
            raise SystemExit(f"serve-load: max_model_len {self.max_len} leaves no room for {self.a.max_tokens} tokens")
        self.plen = (min(lo, room), min(hi, room))
        self.room = room
        probe = json.dumps({"model": self.model, "prompt": "Hello", "max_tokens": 1}).encode()
        status, body = await asyncio.wait_for(http(self.host, self.port, "POST", "/v1/completions", probe), 300)
        self.text_ok = status == 200
        if status not in (200, 400):
            raise SystemExit(f"serve-load: a one-token text completion answered {status}: {body[:200]!r}")

    def prompt(self, i):
        """Request i's prompt: token ids (even i, or always without a tokenizer) or text."""
        n = self.rng.randint(*self.plen)
        if self.text_ok and i % 2 == 1:
            # About one token per word with a real vocabulary; a quarter of the room keeps a
            # small tokenizer's several tokens per word inside the context.
            n = max(1, min(n, self.room // 4))
            return " ".join(self.rng.choice(WORDS) for _ in range(n))
        return [self.rng.randrange(1, self.a.id_range) for _ in range(n)]

    async def stream_one(self, i, deadline):
        rec = {"i": i, "ok": False, "server_error": False, "tokens": 0, "times": [], "error": None}
        body = {
            "model": self.model,
            "prompt": self.prompt(i),
            "max_tokens": self.a.max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
            "ignore_eos": True,
            "return_token_ids": True,
        }
        state = {"done": False, "usage": None}

        def on_data(payload, now):
            if payload == b"[DONE]":
                state["done"] = True
                return
            ev = json.loads(payload)
            if "error" in ev:
                rec["server_error"] = True
                rec["error"] = f"error in the stream: {ev['error'].get('message')}"
                return
            if ev.get("usage"):
                state["usage"] = ev["usage"]
            k = sum(len(c.get("token_ids") or []) for c in ev.get("choices", []))
            if k:
                rec["tokens"] += k
                rec["times"].append((now, k))

        rec["start"] = time.monotonic()
        try:
            left = max(1.0, deadline - rec["start"])
            status, err = await asyncio.wait_for(
                http(self.host, self.port, "POST", "/v1/completions", json.dumps(body).encode(), on_data), left
            )
            if status != 200:
                rec["server_error"] = status >= 500
                rec["error"] = f"HTTP {status}: {err[:200].decode('utf-8', 'replace')}"
            elif rec["error"] is None and not state["done"]:
                rec["server_error"] = True
                rec["error"] = "the stream ended without [DONE]"
            elif rec["error"] is None:
                u = state["usage"] or {}
                if rec["tokens"] != self.a.max_tokens or u.get("completion_tokens") != self.a.max_tokens:
                    rec["error"] = (
                        f"{rec['tokens']} token ids streamed, usage.completion_tokens "
                        f"{u.get('completion_tokens')}; want {self.a.max_tokens} (ignore_eos)"
                    )
                else:
                    rec["ok"] = True
                    rec["prompt_tokens"] = u.get("prompt_tokens")
        except TimeoutError:
            rec["error"] = "timed out"
            rec["timeout"] = True
        except (Dropped, ConnectionError, OSError) as e:
            rec["server_error"] = True
            rec["error"] = f"connection: {type(e).__name__}: {e}"
        except (ValueError, KeyError, TypeError) as e:
            rec["error"] = f"unreadable response: {type(e).__name__}: {e}"
        rec["end"] = time.monotonic()
        return rec

    def bad_requests(self):
        """(what, path, raw body, expected status, expected param or None, expected code or None)."""
        m = self.model
        j = lambda o: json.dumps(o).encode()
        long_n = (self.max_len or 1 << 20) + 1
        return [
            ("bad JSON", "/v1/completions", b'{"model": "x", "prompt": [1, 2', 400, None, None),
            (
                "temperature 7",
                "/v1/completions",
                j({"model": m, "prompt": [1, 2], "temperature": 7, "stream": True}),
                400,
                "temperature",
                None,
            ),
            (
                "unknown model",
                "/v1/completions",
                j({"model": m + "-nope", "prompt": [1, 2], "stream": True}),
                404,
                "model",
                "model_not_found",
            ),
            (
                "too long",
                "/v1/completions",
                j({"model": m, "prompt": [5] * long_n, "max_tokens": 1, "stream": True}),
                400,
                None,
                "context_length_exceeded",
            ),
            (
                "max_tokens 0",
                "/v1/completions",
                j({"model": m, "prompt": [1, 2], "max_tokens": 0}),
                400,
                "max_tokens",
                None,
            ),
            ("body not an object", "/v1/completions", b"[1, 2, 3]", 400, None, None),
            ("n 0", "/v1/completions", j({"model": m, "prompt": [1], "n": 0, "stream": True}), 400, "n", None),
            (
                "token id outside the vocabulary",
                "/v1/completions",
                j({"model": m, "prompt": [10**9]}),
                400,
                "prompt",
                None,
            ),
            (
                "chat role",
                "/v1/chat/completions",
                j({"model": m, "messages": [{"role": "robot", "content": "x"}]}),
                400,
                "messages[0].role",
                None,
            ),
            (
                "top_p 0",
                "/v1/chat/completions",
                j({"model": m, "messages": [{"role": "user", "content": "x"}], "top_p": 0}),
                400,
                "top_p",
                None,
            ),
        ]

    async def bad_one(self, j, deadline):
        what, path, body, want, param, code = self.bad_requests()[j % len(self.bad_requests())]
        rec = {"what": what, "ok": False, "error": None}
        try:
            status, raw = await asyncio.wait_for(
                http(self.host, self.port, "POST", path, body), max(1.0, deadline - time.monotonic())
            )
            rec["status"] = status
            err = None
            try:
                err = json.loads(raw).get("error")
            except (ValueError, AttributeError):
                pass
            if status != want:
                rec["error"] = f"HTTP {status}, want {want}: {raw[:160]!r}"
            elif not (
                isinstance(err, dict)
                and isinstance(err.get("message"), str)
                and isinstance(err.get("type"), str)
                and "param" in err
                and "code" in err
            ):
                rec["error"] = f"not an OpenAI error body: {raw[:160]!r}"
            elif param is not None and err.get("param") != param:
                rec["error"] = f"param {err.get('param')!r}, want {param!r}"
            elif code is not None and err.get("code") != code:
                rec["error"] = f"code {err.get('code')!r}, want {code!r}"
            else:
                rec["ok"] = True
        except TimeoutError:
            rec["error"] = "timed out"
        except (Dropped, ConnectionError, OSError) as e:
            rec["error"] = f"connection: {type(e).__name__}: {e}"
            rec["server_error"] = True
        return rec

    def schedule(self):
        """R good and M malformed requests, the malformed ones spread evenly among the good."""
        r, m = self.a.requests, self.a.malformed
        items = [("good", i) for i in range(r)]
        for j in reversed(range(m)):
            items.insert(min(len(items), round((j + 1) * r / (m + 1))), ("bad", j))
        return items

    async def run(self):
        items = self.schedule()
        start = time.monotonic()
        soft = start + self.a.duration_limit
        hard = soft + GRACE_S
        queue = list(reversed(items))
        self.stopped_by = "count"

        async def worker():
            while queue:
                if time.monotonic() >= soft:
                    self.stopped_by = "duration-limit"
                    return
                kind, i = queue.pop()
                if kind == "good":
                    self.results.append(await self.stream_one(i, hard))
                else:
                    self.malformed.append(await self.bad_one(i, hard))

        await asyncio.gather(*(worker() for _ in range(self.a.clients)))
        self.wall = time.monotonic() - start
        self.not_started = sum(1 for k, _ in queue if k == "good")
        self.bad_not_started = sum(1 for k, _ in queue if k == "bad")

    async def idle_rss(self, what):
        """Waits (at most 60 s) until /metrics shows no running or waiting request; VmRSS then."""
        t0 = time.monotonic()
        refused = 0
        while time.monotonic() - t0 < 60:
            if self.a.pid is not None and not os.path.exists(f"/proc/{self.a.pid}"):
                self.warnings.append(f"{what}: the server process is gone")
                return None, ""
            try:
                status, text = await self.get("/metrics")
                refused = 0
            except (TimeoutError, Dropped, OSError) as e:
                status, text, refused = 0, "", refused + 1
                if refused >= 10:
                    self.warnings.append(f"{what}: /metrics does not answer: {type(e).__name__}: {e}")
                    return rss_mib(self.a.pid), ""
            running = metric(text, "vllm:num_requests_running")
            waiting = metric(text, "vllm:num_requests_waiting")
            if status == 200 and running == 0 and (waiting or 0) == 0:
                await asyncio.sleep(0.2)
                return rss_mib(self.a.pid), text
            await asyncio.sleep(0.2)
        self.warnings.append(f"{what}: /metrics never showed 0 running within 60 s")
        return rss_mib(self.a.pid), ""


def summarise(ld, rss0, rss1, health, alive, text0, text1):
    rej0, rej1 = (metric(t, "qgc:requests_rejected_total") for t in (text0, text1))
    cache = metric(text1, "qgc:prefix_cache_bytes")
    ok = [r for r in ld.results if r["ok"]]
    failed = [r for r in ld.results if not r["ok"]]
    server_errors = sum(1 for r in ld.results + ld.malformed if r.get("server_error"))
    ttft, itl = [], []
    for r in ok:
        ts = r["times"]
        ttft.append(ts[0][0] - r["start"])
        itl += [(b[0] - a[0]) / b[1] for a, b in itertools.pairwise(ts)]
    gen = sum(r["tokens"] for r in ld.results)
    ms = lambda x: None if x is None else round(1000 * x, 2)
    bad_ok = sum(1 for r in ld.malformed if r["ok"])
    rej = None if rej0 is None or rej1 is None else int(rej1 - rej0)
    if rej is not None and rej != bad_ok:
        ld.warnings.append(f"qgc:requests_rejected_total rose by {rej}; {bad_ok} malformed requests got their 4xx")
    out = {
        "model": ld.model,
        "clients": ld.a.clients,
        "requests": ld.a.requests,
        "max_tokens": ld.a.max_tokens,
        "prompt_tokens_range": list(ld.plen),
        "text_prompts": ld.text_ok,
        "ok": len(ok),
        "failed": len(failed),
        "not_started": ld.not_started,
        "stopped_by": ld.stopped_by,
        "server_errors": server_errors,
        "malformed_sent": len(ld.malformed),
        "malformed_4xx": bad_ok,
        "malformed_not_started": ld.bad_not_started,
        "generated_tokens": gen,
        "prompt_tokens": sum(r.get("prompt_tokens") or 0 for r in ok),
        "wall_s": round(ld.wall, 3),
        "decode_tok_s": round(gen / ld.wall, 2) if ld.wall > 0 else None,
        "ttft_p50_ms": ms(percentile(ttft, 50)),
        "ttft_p99_ms": ms(percentile(ttft, 99)),
        "itl_p50_ms": ms(percentile(itl, 50)),
        "itl_p99_ms": ms(percentile(itl, 99)),
        "rss_idle_before_mib": None if rss0 is None else round(rss0, 1),
        "rss_idle_after_mib": None if rss1 is None else round(rss1, 1),
        "rss_diff_mib": None if rss0 is None or rss1 is None else round(rss1 - rss0, 1),
        "prefix_cache_mib_after": None if cache is None else round(cache / 2**20, 1),
        "rejected_metric_delta": rej,
        "health_ok": health,
        "server_alive": alive,
        "failures": [f"request {r['i']}: {r['error']}" for r in failed[:5]]
        + [f"malformed {r['what']!r}: {r['error']}" for r in ld.malformed if not r["ok"]][:5],
        "warnings": ld.warnings,
    }
    return out


def print_summary(s):
    p = lambda *x: print(*x, flush=True)
    p(
        f"serve-load: model {s['model']!r}, {s['clients']} clients, {s['requests']} requests x {s['max_tokens']} tokens, "
        f"prompts {s['prompt_tokens_range'][0]}-{s['prompt_tokens_range'][1]} tokens"
        + (" (ids and text)" if s["text_prompts"] else " (token ids)")
    )
    p(
        f"  requests ok/failed     {s['ok']}/{s['failed']}"
        + (f" ({s['not_started']} not started: {s['stopped_by']})" if s["not_started"] else "")
    )
    p(f"  server errors          {s['server_errors']} (5xx or dropped connections)")
    p(f"  malformed -> 4xx       {s['malformed_4xx']}/{s['malformed_sent']}")
    p(f"  decode                 {s['generated_tokens']} tokens in {s['wall_s']} s = {s['decode_tok_s']} tok/s")
    p(f"  TTFT p50/p99           {s['ttft_p50_ms']} / {s['ttft_p99_ms']} ms")
    p(f"  inter-token p50/p99    {s['itl_p50_ms']} / {s['itl_p99_ms']} ms")
    if s["rss_diff_mib"] is not None:
        p(
            f"  server RSS idle        {s['rss_idle_before_mib']} MiB before, {s['rss_idle_after_mib']} MiB after "
            f"({s['rss_diff_mib']:+} MiB; prefix cache holds {s['prefix_cache_mib_after']} MiB)"
        )
    elif s["rss_idle_before_mib"] is not None:
        p(f"  server RSS idle        {s['rss_idle_before_mib']} MiB before, none after")
    p(
        f"  /health after          {'200' if s['health_ok'] else 'FAILED'}"
        + ("" if s["server_alive"] else "; SERVER DIED")
    )
    for f in s["failures"]:
        p(f"  FAIL {f}")
    for w in s["warnings"]:
        p(f"  warning: {w}")


async def amain(a):
    ld = Load(a)
    await ld.setup()
    warm = await ld.stream_one(-1, time.monotonic() + 600)
    if not warm["ok"]:
        raise SystemExit(f"serve-load: the warm-up request failed: {warm['error']}")
    rss0, text0 = await ld.idle_rss("before")
    await ld.run()
    rss1, text1 = await ld.idle_rss("after")
    try:
        health = (await ld.get("/health"))[0] == 200
    except (TimeoutError, Dropped, OSError):
        health = False
    alive = a.pid is None or os.path.exists(f"/proc/{a.pid}")
    s = summarise(ld, rss0, rss1, health, alive, text0, text1)
    print_summary(s)
    print(json.dumps(s), flush=True)
    bad = s["failed"] or s["server_errors"] or s["malformed_4xx"] != s["malformed_sent"] or not health or not alive
    return 1 if bad else 0


def parse(argv):
    ap = argparse.ArgumentParser(description="A bounded loopback load run on qgc serve.")
    ap.add_argument("--url", required=True, help="server root, http://127.0.0.1:PORT (loopback only)")
    ap.add_argument("--pid", type=int, help="the server's process id (for VmRSS)")
    ap.add_argument("--model", help="model name (default: the first in /v1/models)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--malformed", type=int, default=20)
    ap.add_argument("--duration-limit", type=float, default=600.0, help="seconds before no new request starts")
    ap.add_argument("--prompt-tokens", default="16:256", help="MIN:MAX prompt length (default 16:256)")
    ap.add_argument("--id-range", type=int, default=256, help="token-id prompts use ids in [1, N) (default 256)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    u = urllib.parse.urlsplit(a.url)
    if u.scheme != "http" or u.hostname not in ("127.0.0.1", "localhost", "::1"):
        ap.error(f"--url {a.url}: only http:// on loopback (127.0.0.1, localhost, ::1)")
    try:
        lo, hi = (int(x) for x in a.prompt_tokens.split(":"))
    except ValueError:
        ap.error(f"--prompt-tokens {a.prompt_tokens!r}: want MIN:MAX")
    for name, v, least in (
        ("clients", a.clients, 1),
        ("requests", a.requests, 0),
        ("max-tokens", a.max_tokens, 1),
        ("malformed", a.malformed, 0),
        ("id-range", a.id_range, 2),
        ("prompt-tokens MIN", lo, 1),
    ):
        if v < least:
            ap.error(f"--{name} must be at least {least}, got {v}")
    if hi < lo or a.duration_limit <= 0:
        ap.error("--prompt-tokens MAX must be >= MIN and --duration-limit > 0")
    a.prompt_tokens = (lo, hi)
    return a


if __name__ == "__main__":
    args = parse(sys.argv[1:])
    try:
        sys.exit(asyncio.run(amain(args)))
    except KeyboardInterrupt:
        sys.exit(130)
