"""Rollout throughput: ``hf`` (transformers generate) vs ``vllm`` (colocated engine), SmolLM2-135M.

Tokens/s of completion tokens at batch 1, 8 and 32 prompts (one ``generate`` call each,
temperature 1, ``max_new_tokens`` new tokens), median over repeats, side by side with the ratio;
then the time of one full weight sync into the engine. Runs in the vLLM venv:

    .venv-vllm/bin/python benchmarks/rollout.py [--repeats 3] [--max-new-tokens 64] [--out FILE]
        [--threads 1,default]

``--threads`` is a list: each thread count runs in its own process, one after the other.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")

sys.path.insert(0, str(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from benchmarks import device as bench  # ONPOLICY_BENCH_DEVICE: cpu or cuda

QUESTIONS = [
    "What is the capital of France?",
    "Name three colors.",
    "What is 12 plus 30?",
    "Write a haiku about the sea.",
    "Why is the sky blue?",
    "List two prime numbers.",
    "What is a cat?",
    "Describe a tree in one sentence.",
]


def _tokens_per_s(backend, ids, sampling, repeats: int) -> tuple[float, float]:
    """Median completion tokens/s and median seconds over ``repeats`` calls (after one warm-up
    call on the same batch)."""
    backend.generate(ids, sampling)
    rates, secs = [], []
    for r in range(repeats):
        bench.sync()
        start = time.perf_counter()
        ro = backend.generate(ids, type(sampling)(**{**sampling.__dict__, "seed": r}))
        bench.sync()
        seconds = time.perf_counter() - start
        rates.append(sum(len(c) for c in ro.completion_ids_B) / seconds)
        secs.append(seconds)
    return statistics.median(rates), statistics.median(secs)


def _spawn(threads: str, argv: list[str]) -> str:
    """This benchmark at one thread count in a fresh process (vLLM sizes its OpenMP team when the
    engine starts, so a thread count is a process): its table."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if threads != "default":
        env["OMP_NUM_THREADS"] = threads
    cmd = [sys.executable, os.path.abspath(__file__), *argv, "--threads", threads, "--out", ""]
    done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=True)
    return _table_only(done.stdout)


def _table_only(stdout: str) -> str:
    """The table a run printed, without the log lines vLLM writes to stdout before it."""
    return stdout[stdout.find("SmolLM2-135M-Instruct") :].strip()


def _load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--out", default=None, help="also write the table (markdown) here")
    ap.add_argument(
        "--threads", default="1,default", help="torch thread counts (a number or default), a list"
    )
    argv = sys.argv[1:] if argv is None else argv
    args = ap.parse_args(argv)
    if "," in args.threads:  # one fresh process per thread count, in turn
        rest = ["--repeats", str(args.repeats), "--max-new-tokens", str(args.max_new_tokens)]
        rest += ["--batches", *map(str, args.batches)]
        load0 = _load()
        tables = [_spawn(th, rest) for th in args.threads.split(",")]
        text = (
            f"# Rollout throughput: hf vs vllm\n\nCommand: `.venv-vllm/bin/python "
            f"benchmarks/rollout.py {' '.join(argv)}` ({time.strftime('%Y-%m-%d %H:%M UTC')}; "
            f"load average {load0} at the start, {_load()} at the end). One process per thread "
            f"count (OMP_NUM_THREADS set for it, none for `default`); in each, hf and vllm "
            f"alternate per batch size.\n\n" + "\n\n".join(tables) + "\n"
        )
        print(text)
        if args.out:
            with open(args.out, "w") as f:
                f.write(text)
        return 0

    import torch

    if args.threads != "default":
        torch.set_num_threads(int(args.threads))

    from onpolicy.chat import render_prompts
    from onpolicy.models import load_model, load_tokenizer
    from onpolicy.offline import smollm2_dir
    from onpolicy.rollout.base import make_backend
    from onpolicy.types import Prompt, SamplingParams

    path = smollm2_dir()
    tok = load_tokenizer(path)
    model = load_model(path, trainable=False, device=bench.device())
    hf = make_backend("hf", model=model, tokenizer=tok)
    engine = make_backend("vllm", model_path=path, dtype="float32", max_model_len=1024)
    sampling = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=1.0)
    rows = []
    for batch in args.batches:
        qs = [QUESTIONS[i % len(QUESTIONS)] for i in range(batch)]
        ids = render_prompts(tok, [Prompt(messages=({"role": "user", "content": q},)) for q in qs])
        hf_rate, hf_s = _tokens_per_s(hf, ids, sampling, args.repeats)
        vl_rate, vl_s = _tokens_per_s(engine, ids, sampling, args.repeats)
        rows.append((batch, hf_rate, vl_rate, vl_rate / hf_rate, hf_s, vl_s))
        print(f"batch {batch}: hf {hf_rate:.1f} tok/s, vllm {vl_rate:.1f} tok/s", file=sys.stderr)
    syncs = []
    for step in range(1, args.repeats + 2):
        bench.sync()
        start = time.perf_counter()
        engine.sync_weights(model, step)
        bench.sync()
        syncs.append(time.perf_counter() - start)
    engine.close()

    lines = [
        f"SmolLM2-135M-Instruct, float32, {bench.label()} "
        f"({platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()}), "
        f"max_new_tokens={args.max_new_tokens}, temperature 1, median of {args.repeats}",
        "",
        "| batch | hf tok/s | vllm tok/s | vllm / hf | hf s/call | vllm s/call |",
        "|---:|---:|---:|---:|---:|---:|",
        *[
            f"| {b} | {h:.1f} | {v:.1f} | {r:.2f}x | {hs:.2f} | {vs:.2f} |"
            for b, h, v, r, hs, vs in rows
        ],
        "",
        f"weight sync (full model, {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M params, "
        f"reload_weights + reset_prefix_cache): median {statistics.median(syncs):.3f} s "
        f"over {len(syncs)}",
    ]
    table = "\n".join(lines)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            command = " ".join(["benchmarks/rollout.py", *argv])
            f.write(
                "# Rollout throughput: hf vs vllm\n\nCommand: "
                f"`.venv-vllm/bin/python {command}`\n\n{table}\n"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
