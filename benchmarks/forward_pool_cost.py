"""What ``eval.forward_nll`` costs on the arithmetic pair of the comparison harness: drawing the
pool (one temperature-1 teacher sample per held-out prompt, once per run) and scoring it (one
student forward over the pool, at every evaluation), next to the evaluation it rides on (the
trainer's ``evaluate`` on the same prompts: greedy completions scored by the teacher), medians of
``--repeats`` timed calls after one untimed one, in one process at one torch thread.

    python benchmarks/forward_pool_cost.py [--prompts 200] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)  # benchmarks/alignment.py would shadow the package
sys.path[:] = [p for p in sys.path if p not in ("", _HERE)]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _median_seconds(fn, repeats: int) -> float:
    fn()  # untimed: first-call allocations
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    import torch
    from accelerate import Accelerator

    from onpolicy.compare.methods import TrainSettings, method_spec, trainer_config
    from onpolicy.tasks.arith_models import ArithmeticModelsConfig, arithmetic_models
    from onpolicy.tasks.base import make_task
    from onpolicy.trainer.evaluate import evaluate, task_metric
    from onpolicy.trainer.forward_pool import draw_pool, pool_sums
    from onpolicy.trainer.setup import build_components, sampling_params

    torch.set_num_threads(1)
    models = arithmetic_models(ArithmeticModelsConfig(digits=3), which=("teacher", "student"))
    task = make_task("arithmetic", digits=3, num_train=4000, num_eval=200)
    held_out = list(task.eval_prompts)[: args.prompts]
    settings = TrainSettings(steps=1, batch_size=32, lr=2e-4, max_new_tokens=40)
    cfg = trainer_config(method_spec("reverse_kl"), settings, 0, str(models.student_dir),
                         str(models.teacher_dir), Path("/tmp/forward_pool_cost"))  # fmt: skip
    c = build_components(cfg, Accelerator(cpu=True))
    teacher = getattr(c.sources.teacher_backend, "model", None)
    sampling = sampling_params(cfg)
    pool = draw_pool(held_out, sampling, c.sources, teacher)
    score_fn = task_metric("exact_match", held_out)
    load = os.getloadavg()
    draw_s = _median_seconds(lambda: draw_pool(held_out, sampling, c.sources, teacher), 3)
    score_s = _median_seconds(lambda: pool_sums(c.raw_model, c.tokenizer, pool, 64), args.repeats)

    def run_eval():
        args_ = (c.raw_model, c.tokenizer, c.teacher, c.backend, held_out, sampling, True, 64)
        return evaluate(*args_, score_fn)

    eval_s = _median_seconds(run_eval, args.repeats)
    print(f"load average at start: {load[0]:.2f}, at end: {os.getloadavg()[0]:.2f}")
    print(f"| part ({len(held_out)} held-out prompts) | median s |")
    print("|---|---|")
    print(f"| draw the pool (once per run) | {draw_s:.3f} |")
    print(f"| score the pool (every evaluation) | {score_s:.3f} |")
    print(f"| the evaluation it rides on (peer) | {eval_s:.3f} |")
    print(f"| scoring / evaluation | {score_s / eval_s:.2f} |")


if __name__ == "__main__":
    main()
