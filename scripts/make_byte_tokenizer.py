#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizer/byte-level.json: a byte-level BPE tokenizer with no merges
(one token per byte, ids 0..255) plus Qwen's chat special tokens (ids 256..), 264 tokens in all,
so the 320-token HF fixtures can be served with chat templates, reasoning and tool calls.

Needs the `tokenizers` package (pip install tokenizers)."""
import pathlib

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from tokenizers.pre_tokenizers import ByteLevel

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>",
           "<tool_call>", "</tool_call>", "<|fim_pad|>"]

alphabet = ByteLevel.alphabet()
# Byte b is the character the GPT-2 byte-to-unicode table gives it, as ByteLevel expects.
bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
cs = bs[:]
n = 0
for b in range(256):
    if b not in bs:
        bs.append(b)
        cs.append(256 + n)
        n += 1
byte_to_char = {b: chr(c) for b, c in zip(bs, cs)}
vocab = {byte_to_char[b]: b for b in range(256)}
assert set(vocab) <= set(alphabet)

tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
tok.decoder = decoders.ByteLevel()
tok.add_special_tokens(SPECIAL)
out = pathlib.Path(__file__).resolve().parent.parent / "tests/fixtures/tokenizer/byte-level.json"
tok.save(str(out))
print(out, "tokens:", tok.get_vocab_size(with_added_tokens=True))
print(tok.encode("<|im_start|>user\nhé<|im_end|>").ids)
