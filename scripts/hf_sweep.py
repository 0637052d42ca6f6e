#!/usr/bin/env python3
"""hf_sweep.py -- randomised differential test of `qgc logits` against HF transformers.

What it does
  For N seeded random Qwen3-Next configs (layer orders incl. all-linear-but-one,
  attention-first, all-attention, full_attention_interval without layer_types; GQA
  ratios 1/2/4; head_dim 8..64 or absent (HF default 256); partial_rotary_factor
  0.25/0.5/1; rope_theta; GDN Hk 1..4, Hv/Hk 1..4, Dk != Dv; conv kernel 1..5;
  dense / MoE mixes via mlp_only_layers, decoder_sparse_step, num_experts 0 or 2..16,
  top-k, norm_topk_prob, shared expert 0 or >0; tied embeddings; legacy rope keys vs
  rope_parameters; f32/bf16/f16 storage; sharded saves; fused expert tensors; extra
  mtp.* tensors) it
    1. builds the HF model (eager attention + eager experts, f32), randomises every
       parameter like tests/fixtures/make_fixtures.py, rescales the final norm so the
       logits are O(1..10), rounds to the storage dtype, and re-draws the weights
       until no MoE router top-k choice is within --margin of a tie;
    2. save_pretrained()s it to a temp dir (then optional post-edits of config.json
       and the tensors), reloads it with HF in f32 and computes
         sched: forward(tokens[:P], use_cache) then one token at a time with `cache=`
                (P=0: every token through the one-token path)
         full : one forward over all T tokens, no cache;
    3. runs `qgc logits DIR --tokens ... --prefill P` (vs sched) and
       `--prefill T` (vs full) and reports rel = max|qgc-hf| / max|hf|.
  Status per case:
    ok        every check within --tol (default 1e-4)
    FAIL      qgc exits non-zero / prints an error, or rel > tol (a finding)
    REJECTED  qgc refuses a config field it says is "not supported" (only with --exotic fields)
    ILLCOND   rel > tol, but qgc is at least as close to a float64 run of the same HF model as
              HF-f32 is (f32 rounding noise of an ill-conditioned random checkpoint)
    HF-QUIRK  HF itself fails (qgc then only checked for self-consistency). When only HF's cached
              schedule fails (all-linear models: Cache.get_seq_length raises), the case still
              runs, with the schedule checked against HF's full forward; the summary lists them.
  Every line shows sched/full/recur (qgc vs HF), hfself (HF schedule vs HF full forward),
  hf64/q64 (HF-f32 / qgc vs float64, on mismatch or with --f64), max|logit| and the smallest
  router top-k gap (a FAIL with a small gap may be a tie flip, and says so).

How to run (from the repository root, after `cargo build --release`):
    /work/.venv-ref/bin/python scripts/hf_sweep.py                 # 60 cases, seed 0
    /work/.venv-ref/bin/python scripts/hf_sweep.py -n 200 --seed 7 --recurrent
    /work/.venv-ref/bin/python scripts/hf_sweep.py --case 13 --keep /tmp/c13   # rerun one case, keep its dir
    /work/.venv-ref/bin/python scripts/hf_sweep.py --spec '{"...": ...}'       # rerun a printed spec,
        optionally edited (failing cases print their full spec as JSON)
  Options: -n cases, --seed, --case i (only case i of the seeded sequence), --qgc PATH,
  --tol, --margin (router tie margin), --recurrent (also run --gdn-prefill recurrent),
  --keep DIR (keep checkpoints of failing cases under DIR), -v (print specs).
  Needs torch + transformers >= 5 (made with torch 2.15, transformers 5.24). CPU only.
"""

import argparse
import copy
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings

import torch
from safetensors.torch import load_file, save_file

import transformers
from transformers import Qwen3NextConfig, Qwen3NextForCausalLM

IMPL = dict(attn_implementation="eager", experts_implementation="eager")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DT = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}

torch.set_num_threads(1)
warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()


# ----------------------------------------------------------------------------
# random specs
# ----------------------------------------------------------------------------

def gen_spec(rng, exotic=False, avoid=()):
    L = rng.randint(1, 7)
    lt_mode = rng.choice(["random", "all_linear_but_one", "attention_first", "interval",
                          "interval", "all_attention", "random"])
    if rng.random() < 0.04:
        lt_mode = "all_linear"  # HF itself fails on these (reported as HF-QUIRK)
    interval = None
    if lt_mode == "interval":
        interval = rng.randint(1, min(L, 4)) if L > 1 else 1
        lt = ["linear_attention" if (i + 1) % interval else "full_attention" for i in range(L)]
    elif lt_mode == "all_linear_but_one":
        lt = ["linear_attention"] * L
        lt[rng.randrange(L)] = "full_attention"
    elif lt_mode == "attention_first":
        lt = ["full_attention"] + [rng.choice(["linear_attention", "full_attention"]) for _ in range(L - 1)]
    elif lt_mode == "all_linear":
        lt = ["linear_attention"] * L
    elif lt_mode == "all_attention":
        lt = ["full_attention"] * L
    else:
        lt = [rng.choice(["linear_attention", "full_attention"]) for _ in range(L)]
        if all(t == "linear_attention" for t in lt):
            lt[rng.randrange(L)] = "full_attention"  # all-linear: see lt_mode "all_linear"
    nkv = rng.randint(1, 4)
    nq = nkv * rng.choice([1, 2, 4, 1, 2, 4, 8])  # 8 = the released 16q/2kv ratio
    hk = rng.randint(1, 4)
    hv = hk * rng.randint(1, 4)
    dk = rng.choice([8, 12, 16, 24, 32, 48, 7, 20])
    dv = rng.choice([d for d in [8, 12, 16, 24, 32, 40, 5, 18] if d != dk])
    E = rng.choice([0, 0, rng.randint(2, 16), rng.randint(2, 16), rng.randint(2, 16)])
    cfg = dict(
        vocab_size=rng.randint(100, 600),
        hidden_size=rng.choice(range(16, 97, 8)) if rng.random() < 0.8 else rng.randint(16, 96),
        num_hidden_layers=L,
        layer_types=lt,
        num_attention_heads=nq, num_key_value_heads=nkv,
        # 12/20/28/36/44 with rotary 0.25 and 10 with 0.5 give an odd rotary dim (HF then rotates dim+1)
        head_dim=rng.choice([8, 16, 24, 32, 48, 64] if rng.random() < 0.85 else [12, 20, 28, 36, 44, 10, 4, 6]),
        linear_num_key_heads=hk, linear_num_value_heads=hv,
        linear_key_head_dim=dk, linear_value_head_dim=dv,
        linear_conv_kernel_dim=rng.randint(1, 5),
        intermediate_size=rng.randint(4, 64),
        num_experts=E,
        num_experts_per_tok=rng.randint(1, E) if E else rng.randint(1, 4),
        moe_intermediate_size=rng.randint(4, 32),
        shared_expert_intermediate_size=rng.choice([0, rng.randint(4, 32), rng.randint(4, 32)]),
        norm_topk_prob=rng.random() < 0.5,
        decoder_sparse_step=rng.randint(1, 3),
        mlp_only_layers=sorted(rng.sample(range(L), rng.randint(0, L))) if rng.random() < 0.4 else [],
        tie_word_embeddings=rng.random() < 0.35,
        rms_norm_eps=rng.choice([1e-6, 1e-6, 1e-5]),
        rope_parameters={"rope_type": "default",
                         "rope_theta": rng.choice([1e4, 1e6, 1e7, 5e5, 100.0]),
                         "partial_rotary_factor": rng.choice([0.25, 0.5, 1.0])},
    )
    if rng.random() < 0.15:
        cfg["max_position_embeddings"] = rng.choice([256, 4096, 262144] if "mpe" not in avoid else [4096, 262144])
    if rng.random() < 0.1 and "mpe" not in avoid:
        cfg["max_position_embeddings"] = rng.randint(8, 160)  # HF's default RoPE ignores it
    if "sh0" in avoid and E and cfg["shared_expert_intermediate_size"] == 0:
        cfg["shared_expert_intermediate_size"] = rng.randint(4, 32)
    if exotic:  # config fields the released family does not use, but Qwen3NextConfig accepts
        x = rng.choice(["attention_bias", "gelu", "rope_linear", "rope_yarn", "rope_dynamic", "none"])
        if x == "attention_bias":
            cfg["attention_bias"] = True
        elif x == "gelu":
            cfg["hidden_act"] = "gelu"
        elif x == "rope_linear":
            cfg["rope_parameters"].update(rope_type="linear", factor=2.0)
        elif x == "rope_yarn":
            cfg["rope_parameters"].update(rope_type="yarn", factor=4.0, original_max_position_embeddings=64)
        elif x == "rope_dynamic":
            cfg["rope_parameters"].update(rope_type="dynamic", factor=2.0)
            cfg["max_position_embeddings"] = 32
    omit_defaults = rng.random() < 0.25
    if omit_defaults:  # move some fields onto HF's class defaults, so that omitting them is tested
        for k, v in [("linear_conv_kernel_dim", 4), ("rms_norm_eps", 1e-6), ("norm_topk_prob", True),
                     ("decoder_sparse_step", 1), ("tie_word_embeddings", False), ("moe_intermediate_size", 512),
                     ("shared_expert_intermediate_size", 512), ("intermediate_size", 5632),
                     ("linear_key_head_dim", 128), ("linear_value_head_dim", 128)]:
            if rng.random() < 0.3:
                cfg[k] = v
        if rng.random() < 0.2:
            cfg.update(linear_num_key_heads=16, linear_num_value_heads=32)
        if E >= 10 and rng.random() < 0.5:
            cfg["num_experts_per_tok"] = 10
        if rng.random() < 0.4:
            cfg["rope_parameters"].update(rope_theta=10000.0, partial_rotary_factor=0.25)
    if "oddrot" in avoid:
        rp = cfg["rope_parameters"]
        while int(cfg["head_dim"] * rp["partial_rotary_factor"]) % 2:
            rp["partial_rotary_factor"] = rng.choice([0.25, 0.5, 1.0])
    drop_head_dim = rng.random() < 0.08
    if drop_head_dim:
        cfg["head_dim"] = 256
    T = rng.choice([rng.randint(1, 150), rng.randint(1, 150), rng.randint(1, 20), rng.randint(120, 300)])
    P = rng.choice([0, T, rng.randint(0, T), rng.randint(0, T)])
    return dict(
        cfg=cfg,
        storage=rng.choice(["f32", "f32", "bf16", "f16"]),
        rope_style=rng.choice(["params", "params", "legacy", "legacy_rope_scaling_null"]),
        drop_head_dim=drop_head_dim,
        drop_layer_types=interval,     # write full_attention_interval instead of layer_types
        shard=rng.choice([None, None, "20KB", "100KB"]),
        fused=E > 0 and rng.random() < 0.3,
        mtp=rng.random() < 0.15,
        torch_dtype_key=rng.random() < 0.2,   # rename config "dtype" -> legacy "torch_dtype"
        omit_interval=rng.random() < 0.5,     # with interval 4: neither layer_types nor the interval
        dtype_lie=rng.choice([None] * 6 + ["bfloat16", "float16", "float32"]),
        mixed=rng.random() < 0.15,            # A_log/dt_bias/norms/conv in f32, the rest in storage dtype
        tied_lm_head=cfg["tie_word_embeddings"] and rng.random() < 0.3,
        omit_defaults=omit_defaults,          # drop config.json keys equal to Qwen3NextConfig's defaults
        explicit_nulls=rng.random() < 0.1,    # "mlp_only_layers": null, "layer_types": null (+ interval)
        int_theta=rng.random() < 0.3,         # "rope_theta": 10000000 (an int, as in the released config)
        regime=rng.choice(["normal"] * 5 + ["fast_decay", "no_decay", "big"]),
        T=T, P=P,
        weight_seed=rng.randrange(1 << 30), token_seed=rng.randrange(1 << 30),
    )


def summary(s):
    c = s["cfg"]
    lt = "".join("A" if t == "full_attention" else "L" for t in c["layer_types"])
    E = c["num_experts"]
    moe = "dense" if E == 0 else f"E{E}k{c['num_experts_per_tok']}{'n' if c['norm_topk_prob'] else ''}" \
        f"s{c['decoder_sparse_step']}sh{c['shared_expert_intermediate_size']}"
    if c["mlp_only_layers"] and E:
        moe += f"mlo{''.join(map(str, c['mlp_only_layers']))}"
    rp = c["rope_parameters"]
    hd = "hd256*" if s["drop_head_dim"] else f"hd{c['head_dim']}"
    extra = [x for x, on in [("tied", c["tie_word_embeddings"]), (s["rope_style"], s["rope_style"] != "params"),
                             (f"int{s['drop_layer_types']}", s["drop_layer_types"]), (f"sh{s['shard']}", s["shard"]),
                             ("fused", s["fused"]), ("mtp", s["mtp"]), ("torch_dtype", s["torch_dtype_key"]),
                             ("noint", s.get("omit_interval") and s["drop_layer_types"] == 4),
                             (f"says-{s.get('dtype_lie')}", s.get("dtype_lie")), ("mixed", s.get("mixed")),
                             ("tied+lm_head", s.get("tied_lm_head")),
                             (s.get("regime"), s.get("regime", "normal") != "normal"),
                             ("omit-defaults", s.get("omit_defaults")), ("nulls", s.get("explicit_nulls")),
                             ("int-theta", s.get("int_theta")),
                             (f"mpe{c.get('max_position_embeddings')}", "max_position_embeddings" in c),
                             ("attn_bias", c.get("attention_bias")), (c.get("hidden_act"), "hidden_act" in c),
                             (rp["rope_type"], rp["rope_type"] != "default"),
                             (f"eps{c['rms_norm_eps']:g}", c["rms_norm_eps"] != 1e-6)] if on]
    return (f"{lt:<7} H{c['hidden_size']} V{c['vocab_size']} q{c['num_attention_heads']}/kv{c['num_key_value_heads']} "
            f"{hd} rot{rp['partial_rotary_factor']} th{rp['rope_theta']:g} "
            f"gdn{c['linear_num_key_heads']}/{c['linear_num_value_heads']}x{c['linear_key_head_dim']}/"
            f"{c['linear_value_head_dim']}c{c['linear_conv_kernel_dim']} {moe} {s['storage']} "
            f"T{s['T']}P{s['P']} {','.join(extra)}")


# ----------------------------------------------------------------------------
# model construction (mirrors tests/fixtures/make_fixtures.py)
# ----------------------------------------------------------------------------

def build(cfg):
    c = Qwen3NextConfig(**copy.deepcopy(cfg), **IMPL)
    c.eos_token_id = c.pad_token_id = c.bos_token_id = None
    return Qwen3NextForCausalLM(c).to(torch.float32).eval()


REGIMES = {  # (A_log lo, hi), (dt_bias lo, hi), in_proj_ba std factor, scale of every other 2-D weight
    "normal": ((-1.0, 1.5), (-1.0, 1.0), 1.0, 1.0),
    "fast_decay": ((1.5, 2.8), (1.0, 3.0), 3.0, 1.0),     # g ~ -50 per token: decays underflow within a chunk
    "no_decay": ((-9.0, -6.0), (-6.0, -4.0), 1.0, 1.0),   # g ~ 0: the GDN state accumulates over all T
    "big": ((-1.0, 1.5), (-1.0, 1.0), 1.0, 2.5),          # large activations everywhere
}


def randomise(model, seed, embed_std, router_std, regime="normal"):
    (alo, ahi), (dlo, dhi), ba_f, w_f = REGIMES[regime]
    g = torch.Generator().manual_seed(seed)
    seen = set()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            s = tuple(p.shape)
            if p.numel() == 0:
                continue
            if name.endswith("embed_tokens.weight"):
                v = torch.randn(s, generator=g) * embed_std
            elif name.endswith("linear_attn.norm.weight"):
                v = torch.rand(s, generator=g) * 2 - 1
            elif name.endswith("norm.weight"):
                v = torch.rand(s, generator=g) - 0.5
            elif name.endswith("A_log"):
                v = torch.rand(s, generator=g) * (ahi - alo) + alo
            elif name.endswith("dt_bias"):
                v = torch.rand(s, generator=g) * (dhi - dlo) + dlo
            elif name.endswith("conv1d.weight"):
                v = torch.randn(s, generator=g) * 0.5
            elif p.dim() == 1 and name.endswith("bias"):
                v = torch.randn(s, generator=g) * 0.5
            elif p.dim() >= 2:
                std = 1.0 / math.sqrt(s[-1]) if s[-1] else 0.0
                if name.endswith("mlp.gate.weight"):
                    std *= router_std  # spread router logits: fewer near-ties
                elif name.endswith("in_proj_ba.weight"):
                    std *= ba_f
                elif not name.endswith(("embed_tokens.weight", "lm_head.weight")):
                    std *= w_f
                v = torch.randn(s, generator=g) * std
            else:
                raise RuntimeError(f"unhandled parameter {name} {s}")
            p.copy_(v)


@torch.no_grad()
def run_full(model, tokens):
    return model(input_ids=tokens[None, :], use_cache=False).logits[0].float()


@torch.no_grad()
def run_schedule(model, tokens, P):
    ids = tokens[None, :]
    rows, cache = [], None
    if P > 0:
        out = model(input_ids=ids[:, :P], use_cache=True)
        rows.append(out.logits[0])
        cache = out.cache
    for i in range(P, tokens.numel()):
        out = model(input_ids=ids[:, i:i + 1], cache=cache, use_cache=True)
        cache = out.cache
        rows.append(out.logits[0])
    return torch.cat(rows, 0).float()


@torch.no_grad()
def router_gap(model, tokens):
    gaps = []

    def hook(mod, inp, out):
        if mod.top_k < mod.num_experts:
            srt = out[0].sort(-1, descending=True).values
            gaps.append((srt[:, mod.top_k - 1] - srt[:, mod.top_k]).min().item())
    hs = [m.register_forward_hook(hook) for m in model.modules() if type(m).__name__ == "Qwen3NextTopKRouter"]
    try:
        run_full(model, tokens)
    finally:
        for h in hs:
            h.remove()
    return min(gaps) if gaps else float("inf")


F32_KEEP = ("A_log", "dt_bias", "norm.weight", "conv1d.weight")  # kept f32 in "mixed" checkpoints


def round_to(model, dt, mixed=False):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if mixed and name.endswith(F32_KEEP):
                continue
            p.copy_(p.to(dt).to(torch.float32))


def scale_final_norm(model, tokens, target):
    """Scale the (zero-centred) final norm so that max|logit| ~ target."""
    mx = run_full(model, tokens).abs().max().item()
    if mx > 0:
        w = model.model.norm.weight
        with torch.no_grad():
            w.copy_((1 + w) * (target / mx) - 1)


def prepare(spec, margin):
    cfg = spec["cfg"]
    tokens = torch.randint(0, cfg["vocab_size"], (spec["T"],),
                           generator=torch.Generator().manual_seed(spec["token_seed"]), dtype=torch.int64)
    probe = torch.randint(0, cfg["vocab_size"], (max(spec["T"], 32),),
                          generator=torch.Generator().manual_seed(spec["token_seed"] + 1), dtype=torch.int64)
    model = build(cfg)
    embed_std = 0.15 if cfg["tie_word_embeddings"] else 1.0
    best = None
    for attempt in range(30):
        seed = spec["weight_seed"] + attempt
        randomise(model, seed, embed_std, router_std=4.0, regime=spec.get("regime", "normal"))
        scale_final_norm(model, probe, target=random.Random(seed).uniform(2.0, 10.0))
        round_to(model, DT[spec["storage"]], spec.get("mixed", False))
        gap = router_gap(model, tokens)
        if gap >= margin:
            return model, tokens, seed, gap
        if best is None or gap > best[1]:
            best = (seed, gap)
    # no tie-free seed: use the best one and report its gap
    randomise(model, best[0], embed_std, router_std=4.0, regime=spec.get("regime", "normal"))
    scale_final_norm(model, probe, target=random.Random(best[0]).uniform(2.0, 10.0))
    round_to(model, DT[spec["storage"]], spec.get("mixed", False))
    return model, tokens, best[0], best[1]


# ----------------------------------------------------------------------------
# checkpoint writing and post-edits
# ----------------------------------------------------------------------------

def shard_files(d):
    idx = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as f:
            index = json.load(f)
        return index, sorted(set(index["weight_map"].values()))
    return None, ["model.safetensors"]


def write_shards(d, index, data):
    for s, t in data.items():
        save_file(t, os.path.join(d, s), metadata={"format": "pt"})
    if index is not None:
        index["weight_map"] = {k: s for s, t in data.items() for k in t}
        index["weight_map"] = dict(sorted(index["weight_map"].items()))
        with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
            json.dump(index, f, indent=2)


def fuse_experts(d, cfg):
    index, shards = shard_files(d)
    data = {s: load_file(os.path.join(d, s)) for s in shards}
    where = {k: s for s, t in data.items() for k in t}
    E = cfg["num_experts"]
    n = 0
    for L in range(cfg["num_hidden_layers"]):
        pre = f"model.layers.{L}.mlp.experts."
        if pre + "0.gate_proj.weight" not in where:
            continue
        get = lambda k: data[where[k]].pop(k)
        gu, dn = [], []
        target = where[pre + "0.gate_proj.weight"]
        for e in range(E):
            gu.append(torch.cat([get(pre + f"{e}.gate_proj.weight"), get(pre + f"{e}.up_proj.weight")], 0))
            dn.append(get(pre + f"{e}.down_proj.weight"))
        data[target][pre + "gate_up_proj"] = torch.stack(gu).contiguous()
        data[target][pre + "down_proj"] = torch.stack(dn).contiguous()
        n += 1
    data = {s: t for s, t in data.items() if t}
    for s in shards:
        if s not in data:
            os.remove(os.path.join(d, s))
    write_shards(d, index, data)
    return n


def add_mtp(d, cfg, dt, seed):
    g = torch.Generator().manual_seed(seed)
    H = cfg["hidden_size"]
    nq, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    E, I, S = cfg["num_experts"], cfg["moe_intermediate_size"], cfg["shared_expert_intermediate_size"]
    lin = lambda o, i: (torch.randn(o, i, generator=g) / math.sqrt(max(i, 1))).to(dt)
    nrm = lambda n: (torch.rand(n, generator=g) - 0.5).to(dt)
    t = {"mtp.fc.weight": lin(H, 2 * H), "mtp.pre_fc_norm_embedding.weight": nrm(H),
         "mtp.pre_fc_norm_hidden.weight": nrm(H), "mtp.norm.weight": nrm(H)}
    p = "mtp.layers.0."
    t[p + "input_layernorm.weight"] = nrm(H)
    t[p + "post_attention_layernorm.weight"] = nrm(H)
    t[p + "self_attn.q_proj.weight"] = lin(2 * nq * hd, H)
    t[p + "self_attn.k_proj.weight"] = lin(nkv * hd, H)
    t[p + "self_attn.v_proj.weight"] = lin(nkv * hd, H)
    t[p + "self_attn.o_proj.weight"] = lin(H, nq * hd)
    t[p + "self_attn.q_norm.weight"] = nrm(hd)
    t[p + "self_attn.k_norm.weight"] = nrm(hd)
    if E:
        t[p + "mlp.gate.weight"] = lin(E, H)
        for e in range(E):
            t[p + f"mlp.experts.{e}.gate_proj.weight"] = lin(I, H)
            t[p + f"mlp.experts.{e}.up_proj.weight"] = lin(I, H)
            t[p + f"mlp.experts.{e}.down_proj.weight"] = lin(H, I)
        if S:
            t[p + "mlp.shared_expert.gate_proj.weight"] = lin(S, H)
            t[p + "mlp.shared_expert.up_proj.weight"] = lin(S, H)
            t[p + "mlp.shared_expert.down_proj.weight"] = lin(H, S)
        t[p + "mlp.shared_expert_gate.weight"] = lin(1, H)
    else:  # dense MTP layer (what a Qwen3NextDecoderLayer with num_experts=0 would hold)
        Id = cfg["intermediate_size"]
        t[p + "mlp.gate_proj.weight"] = lin(Id, H)
        t[p + "mlp.up_proj.weight"] = lin(Id, H)
        t[p + "mlp.down_proj.weight"] = lin(H, Id)
    index, shards = shard_files(d)
    data = {s: load_file(os.path.join(d, s)) for s in shards}
    data[shards[-1]].update(t)
    write_shards(d, index, data)


def edit_config(d, spec):
    path = os.path.join(d, "config.json")
    with open(path) as f:
        c = json.load(f)
    if spec["rope_style"].startswith("legacy"):
        r = c.pop("rope_parameters")
        c["rope_theta"] = r["rope_theta"]
        if r["partial_rotary_factor"] != 0.25 or random.Random(spec["weight_seed"]).random() < 0.5:
            c["partial_rotary_factor"] = r["partial_rotary_factor"]  # else rely on HF's BC default 0.25
        if spec["rope_style"] == "legacy_rope_scaling_null":
            c["rope_scaling"] = None
    if spec["drop_head_dim"]:
        c.pop("head_dim")
    if spec["drop_layer_types"]:
        c.pop("layer_types")
        if spec["drop_layer_types"] != 4 or not spec.get("omit_interval"):
            c["full_attention_interval"] = spec["drop_layer_types"]  # else HF's default interval 4 applies
    if spec.get("dtype_lie"):  # config's dtype disagrees with the stored tensors
        c.pop("torch_dtype", None)
        c["dtype"] = spec["dtype_lie"]
    if spec["mtp"]:
        c["num_nextn_predict_layers"] = 1
    if spec.get("int_theta"):
        r = c.get("rope_parameters") or c
        if float(r["rope_theta"]).is_integer():
            r["rope_theta"] = int(r["rope_theta"])
    if spec.get("explicit_nulls"):
        if not c.get("mlp_only_layers"):
            c["mlp_only_layers"] = None
        if "layer_types" not in c:
            c["layer_types"] = None
    if spec.get("omit_defaults"):
        dflt = Qwen3NextConfig().to_dict()
        for k in ["attention_bias", "attention_dropout", "decoder_sparse_step", "head_dim", "hidden_act",
                  "initializer_range", "intermediate_size", "linear_conv_kernel_dim", "linear_key_head_dim",
                  "linear_num_key_heads", "linear_num_value_heads", "linear_value_head_dim",
                  "max_position_embeddings", "mlp_only_layers", "moe_intermediate_size", "norm_topk_prob",
                  "num_experts_per_tok", "output_router_logits", "rms_norm_eps", "router_aux_loss_coef",
                  "shared_expert_intermediate_size", "tie_word_embeddings", "use_cache", "rope_parameters",
                  "bos_token_id", "eos_token_id", "pad_token_id", "dtype", "torch_dtype"]:
            if k in c and (c[k] == dflt.get(k) or k in ("dtype", "torch_dtype")):
                c.pop(k)
        if "rope_theta" in c and c["rope_theta"] == 10000:
            c.pop("rope_theta")
        if c.get("partial_rotary_factor") == 0.25:
            c.pop("partial_rotary_factor")
        if c.get("full_attention_interval") == 4:
            c.pop("full_attention_interval")
    if spec["torch_dtype_key"] and "dtype" in c:
        c["torch_dtype"] = c.pop("dtype")
    with open(path, "w") as f:
        json.dump(c, f, indent=2, sort_keys=True)


def write_checkpoint(d, model, spec):
    m = copy.deepcopy(model).to(DT[spec["storage"]])
    kw = {"max_shard_size": spec["shard"]} if spec["shard"] else {}
    m.save_pretrained(d, **kw)
    if spec.get("mixed") or spec.get("tied_lm_head"):
        index, shards = shard_files(d)
        data = {s: load_file(os.path.join(d, s)) for s in shards}
        sd = model.state_dict()
        for t in data.values():
            for k in list(t):
                if spec.get("mixed") and k.endswith(F32_KEEP) and k in sd:
                    t[k] = sd[k].detach().to(torch.float32).contiguous()  # unrounded f32 next to bf16/f16
        if spec.get("tied_lm_head"):  # some tied checkpoints still carry a copy of the head
            data[shards[-1]]["lm_head.weight"] = m.model.embed_tokens.weight.detach().clone().contiguous()
        write_shards(d, index, data)
    if spec["fused"]:
        fuse_experts(d, spec["cfg"])
    if spec["mtp"]:
        add_mtp(d, spec["cfg"], DT[spec["storage"]], spec["weight_seed"] + 7)
    edit_config(d, spec)


# ----------------------------------------------------------------------------
# qgc
# ----------------------------------------------------------------------------

def run_qgc(qgc, d, tokens, P, extra=()):
    out = os.path.join(d, f"qgc_{P}_{'_'.join(extra) or 'x'}.safetensors")
    cmd = [qgc, "logits", d, "--tokens", ",".join(map(str, tokens.tolist())), "--prefill", str(P),
           "--out", out, *extra]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return None, "TIMEOUT after 600 s"
    if r.returncode != 0:
        lines = (r.stderr or r.stdout).strip().splitlines()
        more = f"\n  ... ({len(lines) - 6} more lines)" if len(lines) > 6 else ""
        return None, f"exit {r.returncode}: " + "\n".join(lines[:6]) + more
    try:
        return load_file(out)["logits"], None
    except Exception as e:  # noqa: BLE001
        return None, f"bad output file: {e}"


def rel_err(ours, ref):
    if ours.shape != ref.shape:
        return float("inf"), f"shape {tuple(ours.shape)} != {tuple(ref.shape)}"
    if not torch.isfinite(ours).all():
        return float("inf"), "non-finite qgc logits"
    return ((ours.float() - ref).abs().max() / ref.abs().max()).item(), None


def run_case(i, spec, args):
    t0 = time.time()
    res = dict(i=i, summary=summary(spec), spec=spec, status="ok", rel=0.0, msgs=[])
    d = tempfile.mkdtemp(prefix=f"hfsweep{i}_")
    try:
        try:
            model, tokens, seed, gap = prepare(spec, args.margin)
            res["gap"] = gap
            res["seed_used"] = seed
            write_checkpoint(d, model, spec)
            hf, info = Qwen3NextForCausalLM.from_pretrained(d, dtype=torch.float32, output_loading_info=True, **IMPL)
            hf.eval()
            assert not info["missing_keys"], f"HF missing keys {info['missing_keys'][:5]}"
            assert not info["mismatched_keys"], f"HF mismatched keys {info['mismatched_keys'][:5]}"
            full = run_full(hf, tokens)
            mem = run_full(model, tokens)
            if (full - mem).abs().max().item() > 1e-5 * mem.abs().max().item():
                res["msgs"].append(f"note: HF reload differs from in-memory model by "
                                   f"{(full - mem).abs().max().item():.2e} (config edit changed HF semantics)")
            res["maxlogit"] = full.abs().max().item()
            try:
                sched = run_schedule(hf, tokens, spec["P"])
                res["hfself"] = rel_err(sched, full)[0]  # HF's own prefill/decode vs full-forward spread
            except Exception as e:  # noqa: BLE001  (e.g. all-linear models: HF's cache has no get_seq_length)
                res["msgs"].append(f"HF-QUIRK in the cached schedule ({type(e).__name__}: "
                                   f"{str(e).strip().splitlines()[0][:200]}); sched compared with HF full forward")
                res["hf_sched_quirk"] = True
                sched = full
        except Exception as e:  # noqa: BLE001
            res["status"] = "HF-QUIRK"
            res["msgs"].append(f"HF: {type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}")
            if args.verbose:
                traceback.print_exc()
            # qgc self-consistency only, if a checkpoint was written
            if os.path.exists(os.path.join(d, "config.json")):
                tok = torch.randint(0, spec["cfg"]["vocab_size"], (spec["T"],),
                                    generator=torch.Generator().manual_seed(spec["token_seed"]))
                a, ea = run_qgc(args.qgc, d, tok, spec["P"])
                b, eb = run_qgc(args.qgc, d, tok, spec["T"])
                if ea or eb:
                    res["msgs"].append(f"qgc: {ea or eb}")
                else:
                    res["msgs"].append(f"qgc ran; sched-vs-full self rel {rel_err(a, b)[0]:.2e}")
            return res
        checks = [("sched", spec["P"], (), sched), ("full", spec["T"], (), full)]
        if args.recurrent:
            checks.append(("recur", spec["P"], ("--gdn-prefill", "recurrent"), sched))
        worst, ref64, numeric_fail = 0.0, None, []

        def rel64(x):
            return ((x.double() - ref64).abs().max() / ref64.abs().max()).item()
        for name, P, extra, ref in checks:
            ours, err = run_qgc(args.qgc, d, tokens, P, extra)
            if err is None:
                r, err = rel_err(ours, ref)
                if err is None and (args.f64 or r > args.tol):
                    # conditioning: compare both HF-f32 and qgc with the same model run in float64
                    # (every schedule gives the full forward's logits in exact arithmetic)
                    if ref64 is None:
                        ref64 = run_full(copy.deepcopy(hf).double(), tokens).double()
                        res["hf64"] = max(rel64(full), rel64(sched))
                    res["q64"] = max(res.get("q64", 0.0), rel64(ours))
                    if r > args.tol:
                        numeric_fail.append(name)
                res[name] = r
                worst = max(worst, r)
                if err is None and r > args.tol:
                    err = f"rel {r:.3e} > tol (rows over tol: " \
                          f"{((ours - ref).abs().amax(-1) > args.tol * ref.abs().max()).nonzero().flatten().tolist()[:12]})"
            if err is not None:
                res["status"] = "REJECTED" if "not supported" in err and res["status"] != "FAIL" else "FAIL"
                if any(m.endswith(": " + err) for m in res["msgs"]):
                    err = "same error"
                res["msgs"].append(f"{name} (--prefill {P}{' ' + ' '.join(extra) if extra else ''}): {err}")
        res["rel"] = worst
        if numeric_fail and len(numeric_fail) == sum(m.startswith(("sched", "full", "recur")) for m in res["msgs"]) \
                and (res["q64"] <= args.tol or res["q64"] <= res["hf64"]):
            # every failure is numeric and qgc is at least as close to the float64 truth as HF-f32 is
            res["status"] = "ILLCOND"
            res["msgs"].append(f"ILLCOND: qgc vs f64 {res['q64']:.2e}, HF-f32 vs f64 {res['hf64']:.2e}: "
                               f"f32 rounding noise of an ill-conditioned checkpoint, not a qgc bug")
    finally:
        res.pop("ref64", None)
        res["secs"] = time.time() - t0
        if res["status"] == "FAIL" and args.keep:
            dst = os.path.join(args.keep, f"case{i}")
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(d, dst)
            with open(os.path.join(dst, "spec.json"), "w") as f:
                json.dump(spec, f, indent=1)
            res["msgs"].append(f"kept in {dst}")
        shutil.rmtree(d, ignore_errors=True)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--cases", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--case", type=int, action="append", help="run only these case indices")
    ap.add_argument("--spec", help="run one explicit spec (JSON text or file)")
    ap.add_argument("--qgc", default=os.path.join(ROOT, "target", "release", "qgc"))
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--margin", type=float, default=1e-3)
    ap.add_argument("--recurrent", action="store_true", help="also check --gdn-prefill recurrent")
    ap.add_argument("--keep", help="copy failing checkpoints here")
    ap.add_argument("--exotic", action="store_true",
                    help="also draw config fields outside the released family (attention_bias, gelu, "
                         "rope_type linear/yarn/dynamic)")
    ap.add_argument("--avoid", action="append", default=[],
                    help="steer away from a known failure so others surface: sh0 "
                         "(shared_expert_intermediate_size=0 with MoE layers), mpe (T > max_position_embeddings), "
                         "oddrot (odd int(head_dim * partial_rotary_factor))")
    ap.add_argument("--f64", action="store_true",
                    help="always run HF in float64 (done anyway on a mismatch): hf64 = rel(HF f32, f64), "
                         "q64 = rel(qgc, f64); a mismatch with q64 <= max(hf64, tol) is reported as ILLCOND")
    ap.add_argument("--regime", choices=sorted(REGIMES), help="force this weight regime in every case")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    assert os.path.exists(args.qgc), f"{args.qgc} missing: run cargo build --release"
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, qgc {args.qgc}")

    if args.spec:
        spec = json.load(open(args.spec)) if os.path.exists(args.spec) else json.loads(args.spec)
        cases = [(0, spec)]
    else:
        rng = random.Random(args.seed)
        cases = [(i, gen_spec(rng, args.exotic, args.avoid)) for i in range(args.cases)]
        if args.case:
            cases = [c for c in cases if c[0] in args.case]
        if args.regime:
            for _, sp in cases:
                sp["regime"] = args.regime

    results = []
    for i, spec in cases:
        r = run_case(i, spec, args)
        results.append(r)
        gap = r.get("gap", float("nan"))
        parts = " ".join(f"{k}={r[k]:.1e}" for k in ("sched", "full", "recur", "hfself", "hf64", "q64") if k in r)
        print(f"[{i:3d}] {r['status']:<8} {r['summary']} | {parts} "
              f"max|l|={r.get('maxlogit', float('nan')):.1f} gap={gap:.1e} {r['secs']:.1f}s", flush=True)
        for m in r["msgs"]:
            print(f"        {m}")
        if r["status"] != "ok" and (args.verbose or r["status"] == "FAIL"):
            print("        spec: " + json.dumps(spec))
        if r["status"] == "FAIL" and gap < 1e-2:
            print(f"        (router top-k gap {gap:.1e} is small: a tie flip is a possible cause)")

    ok = [r for r in results if r["status"] == "ok"]
    fails = [r for r in results if r["status"] == "FAIL"]
    sq = [r["i"] for r in results if r.get("hf_sched_quirk")]
    quirks = [r for r in results if r["status"] == "HF-QUIRK"]
    rejected = [r for r in results if r["status"] == "REJECTED"]
    illcond = [r for r in results if r["status"] == "ILLCOND"]
    worst = max(results, key=lambda r: r["rel"])
    print(f"\n{len(results)} cases: {len(ok)} ok, {len(fails)} FAIL, {len(rejected)} REJECTED "
          f"(qgc says 'not supported'), {len(illcond)} ILLCOND, {len(quirks)} HF-QUIRK; "
          f"worst rel {worst['rel']:.3e} (case {worst['i']})")
    if sq:
        print(f"  HF-QUIRK: HF's cached schedule failed (sched checked against HF full forward) in cases {sq}")
    for r in fails:
        print(f"  FAIL case {r['i']}: {r['summary']}\n      " + "\n      ".join(r["msgs"]))
    for r in illcond:
        print(f"  ILLCOND case {r['i']}: {r['summary']}: rel {r['rel']:.2e}; {r['msgs'][-1]}")
    for r in rejected:
        why = next(m for m in r["msgs"] if "not supported" in m).splitlines()[-1].strip()
        print(f"  REJECTED case {r['i']}: {r['summary']}: {why}")
    for r in quirks:
        print(f"  HF-QUIRK case {r['i']}: {r['summary']}: {r['msgs'][0]}")
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
