"""Aligning one million tokens of real text between two real tokenizers, at 1 torch thread and at
torch's default thread count (``--threads``, a list; ``default``: the machine's cores).

Ours: ``alignment.tokens.offsets.offsets_from_encoding`` (token-byte table, vectorised cumsum) +
``alignment.spans.align_spans`` (intersection of end positions + searchsorted).
Peer: TRL 1.16 GOLD's own code, called as TRL ships it: the body of
``trl.experimental.utils.encode_with_byte_offsets`` (char -> byte table per text, then
``_normalize_byte_offsets``) and ``ULDLoss._align_by_byte_offsets`` (a Python walk per token).
TRL supports only byte-level BPE, so the side-by-side pair is GPT-2 vs Qwen2.5; SmolLM2 vs Gemma-3
(SentencePiece with byte fallback) is timed for ours alone.

Both sides get the same ``tokenizers`` encodings (``encode_batch``), timed separately and reported
as "encode". Text: the Python standard library's sources (code, comments, docstrings), one document
per file, until the student side has >= 1,000,000 tokens.

    RAYON_NUM_THREADS=1 .venv/bin/python benchmarks/alignment_speed.py [--threads 1,default]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# benchmarks/alignment.py would shadow the `alignment` package: put the repo root first
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import statistics
import sysconfig
import time

import torch
from transformers import AutoTokenizer

from alignment import align_spans
from alignment.tokens.offsets import offsets_from_encoding
from onpolicy import offline

REPEATS = 3
TARGET_TOKENS = 1_000_000


def corpus(tokenizer, target: int) -> list[str]:
    """Standard-library sources, in name order, until ``tokenizer`` counts ``target`` tokens."""
    docs, total = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        docs.append(text)
        total += len(tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids)
        if total >= target:
            break
    return docs


def ours(a_tok, b_tok, docs, a_encs, b_encs) -> int:
    spans = 0
    for text, ea, eb in zip(docs, a_encs, b_encs, strict=True):
        _, a_off = offsets_from_encoding(a_tok, text, ea)
        _, b_off = offsets_from_encoding(b_tok, text, eb)
        a_span, _ = align_spans(a_off, b_off)
        spans += int(a_span.max()) + 1 if len(a_span) else 0
    return spans


def trl_gold(docs, a_encs, b_encs) -> int:
    from trl.experimental.gold.gold_trainer import ULDLoss
    from trl.experimental.utils import _normalize_byte_offsets

    def trl_offsets(text, enc):  # the loop body of trl.experimental.utils.encode_with_byte_offsets
        char_to_byte = [0]
        for ch in text:
            char_to_byte.append(char_to_byte[-1] + len(ch.encode("utf-8")))
        byte_offsets = [(char_to_byte[s], char_to_byte[e]) for s, e in enc.offsets]
        return _normalize_byte_offsets(byte_offsets, enc.tokens, text.encode("utf-8"))

    spans = 0
    for text, ea, eb in zip(docs, a_encs, b_encs, strict=True):
        groups, _ = ULDLoss._align_by_byte_offsets(trl_offsets(text, ea), trl_offsets(text, eb))
        spans += len(groups)
    return spans


def timed(fn, *args) -> tuple[float, object]:
    """Median process CPU time of ``REPEATS`` calls (one thread: the work itself, not the waits
    a shared machine adds to wall time), and the last result."""
    times, out = [], None
    for _ in range(REPEATS):
        t0 = time.process_time()
        out = fn(*args)
        times.append(time.process_time() - t0)
    return statistics.median(times), out


def run_pair(a_name: str, b_name: str, with_peer: bool, threads: int) -> list[str]:
    a_tok = AutoTokenizer.from_pretrained(offline.ALL[a_name]())
    b_tok = AutoTokenizer.from_pretrained(offline.ALL[b_name]())
    docs = corpus(a_tok, TARGET_TOKENS)

    def encode():
        return (
            a_tok.backend_tokenizer.encode_batch(docs, add_special_tokens=False),
            b_tok.backend_tokenizer.encode_batch(docs, add_special_tokens=False),
        )

    t_enc, (a_encs, b_encs) = timed(encode)
    n_a, n_b = sum(len(e.ids) for e in a_encs), sum(len(e.ids) for e in b_encs)
    ours(a_tok, b_tok, docs[:2], a_encs[:2], b_encs[:2])  # builds the cached token-byte tables
    t_ours, s_ours = timed(ours, a_tok, b_tok, docs, a_encs, b_encs)
    pair = f"{a_name} vs {b_name}"
    head = f"| {threads} | {pair} | {n_a:,} / {n_b:,} | {len(docs)} | {t_enc:.2f} |"
    if not with_peer:
        return [f"{head} {t_ours:.2f} | - | - | {s_ours:,} spans |"]
    t_trl, s_trl = timed(trl_gold, docs, a_encs, b_encs)
    same = "same spans" if s_trl == s_ours else f"spans differ: {s_ours:,} vs {s_trl:,}"
    return [f"{head} {t_ours:.2f} | {t_trl:.2f} | {t_trl / t_ours:.1f}x | {same} ({s_ours:,}) |"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,default", help="torch thread counts, or 'default'")
    args = ap.parse_args()
    default = torch.get_num_threads()
    load0 = _load()
    lines = [
        f"Aligning >= {TARGET_TOKENS:,} tokens of real text "
        f"(median of {REPEATS}, CPU seconds of the process; Python {sys.version.split()[0]}, "
        f"torch {torch.__version__}, {os.cpu_count()} cores, default torch threads {default})",
        "",
        "| torch threads | pair (student vs teacher) | tokens | docs | encode (both) "
        "| ours: offsets + spans | TRL GOLD: offsets + spans | speed-up | check |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for th in args.threads.split(","):
        n = default if th == "default" else int(th)
        torch.set_num_threads(n)
        lines += run_pair("gpt2", "qwen", with_peer=True, threads=n)
        lines += run_pair("smollm2", "gemma3", with_peer=False, threads=n)
    lines += ["", "Target: ours < 10 s per million tokens, excluding the tokenizers' own encode."]
    table = "\n".join(lines)
    print(table)
    out = Path(__file__).with_name("RESULTS-alignment-speed.md")
    out.write_text(
        "# Alignment speed\n\n"
        f"`RAYON_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/alignment_speed.py "
        f"--threads {args.threads}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load "
        f"average {load0} at the start, {_load()} at the end)\n\n" + table + "\n"
    )


def _load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
