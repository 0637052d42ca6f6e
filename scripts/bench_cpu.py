"""Side-by-side CPU benchmark: HF transformers (../shared/bench/hf_cpu.py, f32) and `qgc bench`
(f32 and bf16-stored weights) on the same config, in one run, alternating rounds so that machine
noise hits both. Prints a Markdown table of medians over the rounds and the ratios.

Usage: python3 scripts/bench_cpu.py [--config ../shared/bench/small] [--rounds 3]
           [--prefill 512] [--decode 24] [--python PYTHON_WITH_TORCH] [--qgc target/release/qgc]
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
ap.add_argument("--out", help="write every raw JSON result here")
a = ap.parse_args()


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{p.stderr}")
    return json.loads(p.stdout.strip().splitlines()[-1])


runs = {"hf f32": [], "qgc f32": [], "qgc bf16": []}
for r in range(a.rounds):
    runs["hf f32"].append(run([a.python, a.hf_script, a.config, "--prefill", str(a.prefill), "--decode", str(a.decode)]))
    for dt in ("f32", "bf16"):
        runs[f"qgc {dt}"].append(run([a.qgc, "bench", a.config, "--random-weights", "--weights-dtype", dt,
                                      "--prefill", str(a.prefill), "--decode", str(a.decode), "--json"]))
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
    if eng == "qgc":
        floor = f"{statistics.median(x['decode_floor_ratio'] for x in runs[k]):.2f}"
    print(f"| {eng} | {dt} | {m['prefill_tok_s']:.1f} | {m['prefill_tok_s'] / hf['prefill_tok_s']:.2f} | "
          f"{m['decode_tok_s']:.2f} | {m['decode_tok_s'] / hf['decode_tok_s']:.2f} | {floor} |")
q = runs["qgc f32"][-1]
print(f"\nqgc: {q['threads']} threads, copy bandwidth {q['copy_bandwidth_gb_s']:.1f} GB/s, "
      f"{q['decode_bytes_per_token'] / 1e6:.0f} MB of weights per f32 decode token, compile {q['compile_s']:.2f} s; "
      f"HF: torch {runs['hf f32'][-1]['torch']}, {runs['hf f32'][-1]['threads']} threads")
if a.out:
    json.dump(runs, open(a.out, "w"), indent=1)
