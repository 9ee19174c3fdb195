"""One cross-tokenizer training step of the engine, phase by phase: CPU time and peak RSS.

The e2e benchmark's cross setting (SmolLM2-135M student, the 151k-vocabulary Qwen2 teacher of
``benchmarks/e2e_models.py``, batch 8, completions of 128 tokens): one ``hf`` rollout (cached in
``--rollout-cache`` so repeated runs train on the same tokens), then score -> loss -> backward ->
AdamW step, each phase's CPU time and wall time and the process's peak RSS after it, at each of
``--threads`` torch thread counts (a list, default ``1,default``; ``default``: torch's own count),
interleaved in one process: every step runs once per thread count, in turn; the summary is the
median over steps after the first (the warm-up). ``--profile`` prints a cProfile of the last
step's score + loss + backward phases.

    python benchmarks/cross_step.py --objective gold
    python benchmarks/cross_step.py --objective gold reference_kl=0 matched=token --profile
    python benchmarks/cross_step.py --objective next_byte --student-layers 2
"""

from __future__ import annotations

import argparse
import os
import pickle
import resource
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


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _rollout(args, student, stok):
    from benchmarks.e2e_models import prompts
    from onpolicy.api import rollout as do_rollout
    from onpolicy.rollout.base import make_backend
    from onpolicy.types import SamplingParams

    path = Path(args.rollout_cache)
    if path.exists():
        return pickle.loads(path.read_bytes())
    import torch

    n = args.max_new_tokens
    sampling = SamplingParams(max_new_tokens=n, min_new_tokens=n, temperature=1.0)
    backend = make_backend("hf", model=student, tokenizer=stok)
    with torch.no_grad():
        ro = do_rollout(backend, prompts("smollm2", args.batch), stok, sampling)
    path.write_bytes(pickle.dumps(ro))
    return ro


def _load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def _step(objective, scorer, student, ro, opt, prof) -> dict[str, tuple[float, float, float]]:
    """One training step (score, loss, backward, clip + AdamW): per phase (CPU s, wall s, peak
    RSS MB after it); ``prof`` (a cProfile) covers score + loss + backward when given."""
    import torch

    from onpolicy.api import loss, score

    times, clock = {}, [time.process_time(), time.perf_counter()]

    def mark(name: str) -> None:
        c, w = time.process_time(), time.perf_counter()
        times[name] = (c - clock[0], w - clock[1], peak_mb())
        clock[:] = [time.process_time(), time.perf_counter()]

    if prof is not None:
        prof.enable()
    sc = score(scorer, ro)
    mark("score")
    out = loss(objective, student, ro, sc)
    mark("loss")
    del sc  # as benchmarks/e2e.py's loop: the scores are not held through backward
    (out.loss_sum / max(out.num_tokens, 1)).backward()
    mark("backward")
    if prof is not None:
        prof.disable()
    torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    mark("optimizer")
    return times


def summary(rows: dict[int, list[dict]], steps: int) -> str:
    """Markdown: per thread count and phase, the median CPU s and wall s over the steps after the
    first (all steps when there is one), and CPU time at each count / at the first count."""
    keep = slice(1 if steps > 1 else 0, None)
    med = {
        n: {k: [statistics.median(t[k][i] for t in r[keep]) for i in (0, 1)] for k in r[0]}
        for n, r in rows.items()
    }
    for m in med.values():
        m["total"] = [sum(v[i] for k, v in m.items() if k != "total") for i in (0, 1)]
    first = next(iter(med))
    lines = ["| torch threads | phase | CPU s | wall s | CPU / CPU at "
             f"{first} thread(s) |", "|---:|---|---:|---:|---:|"]  # fmt: skip
    for n, m in med.items():
        lines += [f"| {n} | {k} | {c:.2f} | {w:.2f} | {c / med[first][k][0]:.2f}x |"
                  for k, (c, w) in m.items()]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--objective", nargs="+", default=["gold"], help="name [key=value ...]")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--rollout-cache", default="/tmp/onpolicy-cross-step-rollout.pkl")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--steps", type=int, default=1)
    p.add_argument(
        "--student-layers", type=int, default=0,
        help="keep only this many student layers (the regime where the backbone is cheap)",
    )  # fmt: skip
    p.add_argument("--threads", default="1,default", help="torch thread counts (or 'default')")
    args = p.parse_args(argv)
    import torch

    default = torch.get_num_threads()
    counts = [default if t == "default" else int(t) for t in args.threads.split(",")]
    print(f"torch threads {counts} (--threads {args.threads}; default {default}), load average "
          f"{_load()}", flush=True)  # fmt: skip
    torch.manual_seed(0)
    from benchmarks.e2e_models import model_pair
    from benchmarks.e2e_sides import _value, cut_layers
    from onpolicy.api import make_objective
    from onpolicy.models import load_model, load_tokenizer
    from onpolicy.teacher.local import LocalTeacher

    pair = model_pair("smollm2")
    student, stok = load_model(pair.cross_student), load_tokenizer(pair.cross_student)
    cut_layers(student, args.student_layers)
    teacher, ttok = (
        load_model(pair.cross_teacher, trainable=False),
        load_tokenizer(pair.cross_teacher),
    )
    name, *opts = args.objective
    objective = make_objective(name, **{k: _value(v) for k, v in (o.split("=", 1) for o in opts)})
    scorer = LocalTeacher(teacher, ttok, stok, mode="cross")
    ro = _rollout(args, student, stok)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-5, weight_decay=0.0, fused=True)
    print(f"loaded + rollout: peak {peak_mb():,.0f} MB", flush=True)
    prof, rows = None, {n: [] for n in counts}
    for step in range(args.steps):
        for n in counts:
            torch.set_num_threads(n)
            last = step == args.steps - 1 and n == counts[-1]
            if args.profile and last:
                import cProfile

                prof = cProfile.Profile()
            times = _step(objective, scorer, student, ro, opt, prof)
            rows[n].append(times)
            row = "  ".join(f"{k} {c:.2f}s/{w:.2f}s/{m:,.0f}MB" for k, (c, w, m) in times.items())
            total = sum(c for c, _, _ in times.values())
            print(f"step {step} threads {n}: {row}  total {total:.2f} CPU s", flush=True)
    print(summary(rows, args.steps), flush=True)
    print(f"load average at the end {_load()}")
    if prof is not None:
        import pstats

        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        pstats.Stats(prof).sort_stats("cumulative").print_stats(45)
    return 0


if __name__ == "__main__":
    sys.exit(main())
