"""Side-by-side CPU benchmark: HF transformers (../shared/bench/hf_cpu.py, f32) and `qgc bench`
(f32 and bf16-stored weights) on the same config, in one run, alternating rounds so that machine
noise hits both. Prints a Markdown table of medians over the rounds and the ratios.

With --context N (default 8192) qgc is also run with N prompt tokens, for decode at a long
context; with --baseline QGC another qgc binary (an earlier commit) runs beside it, so changes
show as ratios measured in the same rounds.

Usage: python3 scripts/bench_cpu.py [--config ../shared/bench/small] [--rounds 3]
           [--prefill 512] [--decode 24] [--context 8192] [--python PYTHON_WITH_TORCH]
           [--qgc target/release/qgc] [--baseline OTHER_QGC]
The HF side needs torch and transformers importable by --python (default: this interpreter)."""
import argparse, json, os, platform, statistics, subprocess, sys

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
ap = argparse.ArgumentParser()
ap.add_argument("--config", default=os.path.join(root, "..", "shared", "bench", "small"))
ap.add_argument("--hf-script", default=os.path.join(root, "..", "shared", "bench", "hf_cpu.py"))
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--prefill", type=int, default=512)
ap.add_argument("--decode", type=int, default=24)
ap.add_argument("--python", default=sys.executable)
ap.add_argument("--qgc", default=os.path.join(root, "target", "release", "qgc"))
ap.add_argument("--context", type=int, default=8192, help="also time qgc decode after this many prompt tokens (0: off)")
ap.add_argument("--baseline", help="another qgc binary to run beside --qgc")
ap.add_argument("--out", help="write every raw JSON result here")
a = ap.parse_args()


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{p.stderr}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def qgc(binary, dt, prefill):
    return run([binary, "bench", a.config, "--random-weights", "--weights-dtype", dt,
                "--prefill", str(prefill), "--decode", str(a.decode), "--json"])


runs = {"hf f32": [], "qgc f32": [], "qgc bf16": []}
ctx = {}
for r in range(a.rounds):
    runs["hf f32"].append(run([a.python, a.hf_script, a.config, "--prefill", str(a.prefill), "--decode", str(a.decode)]))
    for dt in ("f32", "bf16"):
        runs[f"qgc {dt}"].append(qgc(a.qgc, dt, a.prefill))
        if a.baseline:
            runs.setdefault(f"baseline {dt}", []).append(qgc(a.baseline, dt, a.prefill))
        for who, binary in [("qgc", a.qgc), ("baseline", a.baseline)]:
            if a.context and binary:
                ctx.setdefault(f"{who} {dt}", []).append(qgc(binary, dt, a.context))
    print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)

med = {k: {m: statistics.median(x[m] for x in v) for m in ("prefill_tok_s", "decode_tok_s")} for k, v in runs.items()}
hf = med["hf f32"]
print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs ({platform.processor() or 'unknown'}); "
      f"config {a.config}; prefill {a.prefill} tokens, decode {a.decode} steps; medians of {a.rounds} rounds\n")
print("| engine | weights | prefill tok/s | × HF | decode tok/s | × HF | decode / DRAM floor |")
print("|---|---|---|---|---|---|---|")
for k, m in med.items():
    eng, dt = k.split()
    floor = ""
    if eng in ("qgc", "baseline"):
        floor = f"{statistics.median(x['decode_floor_ratio'] for x in runs[k]):.2f}"
    print(f"| {eng} | {dt} | {m['prefill_tok_s']:.1f} | {m['prefill_tok_s'] / hf['prefill_tok_s']:.2f} | "
          f"{m['decode_tok_s']:.2f} | {m['decode_tok_s'] / hf['decode_tok_s']:.2f} | {floor} |")
q = runs["qgc f32"][-1]
print(f"\nqgc: {q['threads']} threads, copy bandwidth {q['copy_bandwidth_gb_s']:.1f} GB/s, "
      f"{q['decode_bytes_per_token'] / 1e6:.0f} MB of weights per f32 decode token, compile {q['compile_s']:.2f} s; "
      f"HF: torch {runs['hf f32'][-1]['torch']}, {runs['hf f32'][-1]['threads']} threads")
if ctx:
    print(f"\nDecode at {a.prefill} and at {a.context} tokens of context (qgc; medians of {a.rounds} rounds). "
          "Expected: the extra time is attention reading the longer KV cache, at most its bytes over the "
          "copy bandwidth (attention's own reads run at a fraction of it on one thread per kv head):\n")
    print(f"| engine | weights | decode @{a.prefill} tok/s | decode @{a.context} tok/s | extra ms/token | "
          "extra KV MB/token | KV MB / copy GB/s (ms) |")
    print("|---|---|---|---|---|---|---|")
    for k, v in ctx.items():
        short = runs[k]
        d0 = statistics.median(x["decode_tok_s"] for x in short)
        d1 = statistics.median(x["decode_tok_s"] for x in v)
        eng, dt = k.split()
        # KV bytes per decode token, from this qgc's runs (the baseline may not report them).
        kv = lambda rs: statistics.median(x["kv_read_bytes_per_token"] for x in rs)
        extra_kv = kv(ctx[f"qgc {dt}"]) - kv(runs[f"qgc {dt}"])
        bw = statistics.median(x["copy_bandwidth_gb_s"] for x in v + short)
        print(f"| {eng} | {dt} | {d0:.2f} | {d1:.2f} | {1e3 / d1 - 1e3 / d0:.2f} | {extra_kv / 1e6:.1f} | "
              f"{extra_kv / (bw * 1e9) * 1e3:.2f} |")
if a.out:
    json.dump({"runs": runs, "context": ctx}, open(a.out, "w"), indent=1)
