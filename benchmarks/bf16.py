"""bf16 mixed precision on CPU vs float32, for this engine and for TRL, like for like, interleaved.

Four configurations of ``benchmarks/e2e.py``'s same-tokenizer sides (hf rollouts, its like-for-like
settings): the engine's on-policy reverse KL and TRL's ``DistillationTrainer``, each in float32
and with bf16 autocast of the student (``--precision bf16``: the engine's ``train.mixed_precision:
bf16`` and TRL's ``bf16=True``, both accelerate's ``mixed_precision="bf16"``). Every round runs
the four in turn, each in its own process (engine fp32, engine bf16, TRL fp32, TRL bf16, ...), so
a load change on the shared machine hits all alike; throughput = student completion tokens per
second of optimizer step (rollout included), medians over all timed steps; peak RSS per process.

    python benchmarks/bf16.py [--pair smollm2] [--batch 4] [--max-new-tokens 64]
        [--micro-batches 2] [--steps 2] [--rounds 2] [--threads 1,0]
        [--out benchmarks/RESULTS-bf16.md]

``--threads``: a list of torch thread counts (0: torch's default, the machine's cores), each run
in every round next to the others.

On a CPU with AVX512-BF16 (``lscpu`` flag ``avx512_bf16``) bf16 matmuls run natively; without it
they are emulated.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if p not in ("", _HERE)]
sys.path.insert(0, str(ROOT))

from benchmarks.e2e import _spawn, merge, parse  # noqa: E402

SIDES = (("engine", "engine_same:hf"), ("TRL", "trl_distillation:hf"))
PRECISIONS = ("fp32", "bf16")


def _cpu_flag() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    return "yes" if "avx512_bf16" in out else "no"


def table(results: dict[tuple[str, str], dict], args, load: str) -> str:
    def cell(r: dict, key: str, spec: str) -> str:
        return "failed" if "error" in r else format(r[key], spec)

    def ratio(a: dict, b: dict, key: str) -> str:
        return "-" if "error" in a or "error" in b else f"{a[key] / b[key]:.2f}x"

    lines = [
        f"Models: {args.pair}; batch {args.batch}, {args.max_new_tokens} completion tokens (equal "
        f"lengths), {args.micro_batches} micro-batches on both sides, {args.steps} timed steps x "
        f"{args.rounds} rounds per configuration after 1 warm-up each, hf rollouts, "
        f"{args.threads or 'default'} torch thread(s) ({os.cpu_count()} cores shared with other "
        f"jobs; load average {load} at the start); CPU avx512_bf16: {_cpu_flag()}. Medians.",
        "",
        "| side | fp32 tok/s | bf16 tok/s | bf16 / fp32 speed | fp32 CPU s/step | bf16 CPU s/step "
        "| fp32 peak MB | bf16 peak MB | bf16 / fp32 memory |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, config in SIDES:
        a, b = results[(config, "fp32")], results[(config, "bf16")]
        lines.append(
            f"| {name} | {cell(a, 'tokens_per_s', ',.1f')} | {cell(b, 'tokens_per_s', ',.1f')} | "
            f"{ratio(b, a, 'tokens_per_s')} | {cell(a, 'cpu_s', '.2f')} | "
            f"{cell(b, 'cpu_s', '.2f')} | {cell(a, 'peak_mb', ',.0f')} | "
            f"{cell(b, 'peak_mb', ',.0f')} | {ratio(b, a, 'peak_mb')} |"
        )
    eng, trl = results[(SIDES[0][1], "bf16")], results[(SIDES[1][1], "bf16")]
    lines += [
        "",
        f"engine / TRL at bf16: speed {ratio(eng, trl, 'tokens_per_s')}, memory "
        f"{ratio(eng, trl, 'peak_mb')}; at fp32: speed "
        f"{ratio(results[(SIDES[0][1], 'fp32')], results[(SIDES[1][1], 'fp32')], 'tokens_per_s')}.",
    ]
    errors = [f"- {c} {p}: {r['error']}" for (c, p), r in results.items() if "error" in r]
    return "\n".join(lines + (["", "Failed:", *errors] if errors else []))


def _pop(argv: list[str], flag: str, default: str | None) -> str | None:
    """``flag``'s value taken out of ``argv`` (``default`` when absent)."""
    if flag not in argv:
        return default
    i = argv.index(flag)
    value = argv[i + 1]
    del argv[i : i + 2]
    return value


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    out = _pop(argv, "--out", None)
    threads = _pop(argv, "--threads", "1,0")  # a list; 0: torch's default (the machine's cores)
    counts = [int(t) for t in threads.split(",")]
    defaults = ["--pair", "smollm2", "--batch", "4", "--max-new-tokens", "64",
                "--micro-batches", "2", "--steps", "2", "--rounds", "2"]  # fmt: skip
    args = parse([*defaults, *argv, "--equal-lengths"])
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    runs: dict[tuple[int, str, str], list[dict]] = {
        (n, c, p): [] for n in counts for _, c in SIDES for p in PRECISIONS
    }  # fmt: skip
    for r in range(args.rounds):  # every round: each thread count, each side and precision
        for (n, config, precision), done in runs.items():
            if done and "error" in done[-1]:
                continue
            side_args = copy.copy(args)
            side_args.precision, side_args.threads = precision, n
            done.append(_spawn(side_args, config))
            print(f"round {r} threads {n} {config} {precision}: {done[-1]}", file=sys.stderr,
                  flush=True)  # fmt: skip
    end = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    tables = []
    for n in counts:
        args.threads = n
        merged = {(c, p): merge(v) for (m, c, p), v in runs.items() if m == n}
        tables.append(f"### torch threads: {n or 'default'}\n\n" + table(merged, args, load))
    text = "\n\n".join(tables) + f"\n\nLoad average at the end: {end}."
    print(text)
    if out:
        cmd = "python benchmarks/bf16.py " + " ".join([*argv, "--threads", threads, "--out", out])
        Path(out).write_text(f"# bf16 mixed precision on CPU: engine and TRL\n\nCommand: `{cmd}`"
                             f"\n\n{text}\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
