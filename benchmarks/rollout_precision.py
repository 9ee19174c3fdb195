"""The ``hf`` rollout's levers on CPU, measured before building: float32 vs a bfloat16 copy of the
weights, and transformers' static KV cache vs the default dynamic one (SmolLM2-135M-Instruct).

Each cell is one ``generate`` call as the engine's ``hf`` backend makes it (left padding, sampling
at temperature 1, the backend's log-prob recorder as a logits processor, completions forced to
``max_new_tokens``); the variants of a cell run interleaved, round after round, so a load change
on a shared machine hits all of them. Reports the median wall and CPU seconds per call and each
variant's speed against float32 + dynamic cache.

    python benchmarks/rollout_precision.py --batches 4 8 --new-tokens 64 128 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if p not in ("", _HERE)]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

VARIANTS = ("fp32-dynamic", "bf16-dynamic", "fp32-static", "bf16-static")


def _generate(model, tok, rows: list[list[int]], new_tokens: int, cache: str, seed: int) -> None:
    """One left-padded sampling ``generate`` with the engine's recorder (onpolicy.rollout.hf)."""
    import torch
    from transformers import GenerationConfig

    from onpolicy.chat import stop_token_ids
    from onpolicy.rollout.hf import _LogprobRecorder, _neutral_generation_config

    pad, P = tok.pad_token_id, max(len(r) for r in rows)
    ids = torch.full((len(rows), P), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), P), dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, P - len(r) :], mask[b, P - len(r) :] = torch.tensor(r), 1
    stops = stop_token_ids(tok, model)
    config = GenerationConfig(
        max_new_tokens=new_tokens, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
        eos_token_id=list(stops), pad_token_id=pad, use_cache=True, return_dict_in_generate=True,
        **({"cache_implementation": "static"} if cache == "static" else {}),
    )  # fmt: skip
    torch.manual_seed(seed)
    with _neutral_generation_config(model), torch.no_grad():
        out = model.generate(
            input_ids=ids, attention_mask=mask, generation_config=config,
            logits_processor=[_LogprobRecorder(stops, new_tokens)],
        )  # fmt: skip
    assert out.sequences.shape[1] == P + new_tokens


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--new-tokens", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)
    import torch

    from benchmarks.e2e_models import prompts
    from onpolicy.chat import render_prompts
    from onpolicy.models import load_model, load_tokenizer
    from onpolicy.offline import smollm2_dir

    if args.threads:
        torch.set_num_threads(args.threads)
    path = smollm2_dir()
    tok = load_tokenizer(str(path))
    fp32 = load_model(str(path), trainable=False)
    models = {"fp32": fp32, "bf16": load_model(str(path), trainable=False).to(torch.bfloat16)}
    cells = [(b, n) for b in args.batches for n in args.new_tokens]
    rows_of = {b: render_prompts(tok, prompts("smollm2", b)) for b in args.batches}
    times: dict[tuple, list[tuple[float, float]]] = {}
    load0 = os.getloadavg()
    for v in args.variants:  # warm-up: every variant once (kernels, first allocations)
        dtype, cache = v.split("-")
        _generate(models[dtype], tok, rows_of[args.batches[0]], 8, cache, seed=0)
    for r in range(args.rounds):
        for b, n in cells:
            for v in args.variants:
                dtype, cache = v.split("-")
                t0, c0 = time.perf_counter(), time.process_time()
                _generate(models[dtype], tok, rows_of[b], n, cache, seed=r + 1)
                times.setdefault((b, n, v), []).append(
                    (time.perf_counter() - t0, time.process_time() - c0)
                )
                print(f"round {r} batch {b} x {n} {v}: {times[(b, n, v)][-1]}", file=sys.stderr)
    print(report(times, args, cells, load0, os.getloadavg(), torch.get_num_threads()))
    return 0


def report(times: dict, args, cells: list, load0: tuple, load1: tuple, threads: int) -> str:
    """Markdown: per cell and variant, median wall / CPU s per call and speed vs fp32-dynamic."""
    out = [
        f"SmolLM2-135M-Instruct `hf` generate, {args.rounds} interleaved rounds after a warm-up, "
        f"{threads} torch thread(s); load average {load0[0]:.1f}/{load0[1]:.1f}/{load0[2]:.1f} "
        f"at the start, {load1[0]:.1f}/{load1[1]:.1f}/{load1[2]:.1f} at the end. Speed = "
        "fp32-dynamic's median s / this variant's (per round: min..max of the round ratios).",
        "",
        "| batch x new tokens | variant | wall s | CPU s | speed (wall) | per-round wall ratios "
        "| speed (CPU) | per-round CPU ratios |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for b, n in cells:
        base = times[(b, n, "fp32-dynamic")] if "fp32-dynamic" in args.variants else None
        for v in args.variants:
            t = times[(b, n, v)]
            w, c = statistics.median(x[0] for x in t), statistics.median(x[1] for x in t)
            if base:
                bw, bc = (
                    statistics.median(x[0] for x in base),
                    statistics.median(x[1] for x in base),
                )
                pw = [bb[0] / x[0] for bb, x in zip(base, t, strict=True)]
                pc = [bb[1] / x[1] for bb, x in zip(base, t, strict=True)]
                cols = (
                    f"{bw / w:.2f}x | {min(pw):.2f}..{max(pw):.2f} | {bc / c:.2f}x | "
                    + ", ".join(f"{x:.2f}" for x in pc)
                )
            else:
                cols = "– | – | – | –"
            out.append(f"| {b} x {n} | {v} | {w:.2f} | {c:.2f} | {cols} |")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
