"""The capacity-gap cell of issue 11's regime map, read from the compare harness's output.

    python examples/evidence/ratio_report.py teacher --teacher large --teacher-steps 1000
    python examples/evidence/ratio_report.py tables --run outputs/compare/evidence-ratio
    python examples/evidence/ratio_report.py kl --run outputs/compare/evidence-ratio --seed 0

- ``teacher``: the teacher's greedy and temperature-1 sample exact match on the ``valid`` split
  (its samples are SFT's data) and its entropy per completion position on its own samples.
- ``tables``: from ``<run>/report.json``: every arm against continued SFT at equal FLOPs in both
  accountings (the budget: reverse KL's FLOPs, the same in both; each arm's score at its last
  evaluation within it), FLOPs to reach SFT's best, the early drop, wall seconds; writes
  ``docs/results/evidence-<name>-curves.png``. Reuses ``examples/evidence/report.py``.
- ``kl``: the teacher-scored reverse KL and the teacher's entropy per position on each arm's own
  temperature-1 samples (64 test prompts), at the start (the warm-up branch) and at each arm's end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import drop_table, plot_curves, reach_table, regime_table

from onpolicy.api import rollout
from onpolicy.evidence.diagnostics import (
    completion_logits,
    entropy_by_position,
    reverse_kl_by_position,
)
from onpolicy.models import load_model, load_saved_weights, load_tokenizer
from onpolicy.rollout.base import make_backend
from onpolicy.tasks.long_arithmetic import long_arithmetic_task
from onpolicy.tasks.long_models import (
    LongModelsConfig,
    long_models,
    max_new_tokens,
    teacher_spec,
)
from onpolicy.types import PaddedBatch, SamplingParams

DIGITS = 3


def load_jobs(run: Path) -> dict[tuple[str, str], list[dict]]:
    """``{(start, method): [job per seed]}`` in ``report.py``'s run shape (arm, seed, curve)."""
    data = json.loads((run / "report.json").read_text())
    runs: dict[tuple[str, str], list[dict]] = {}
    for j in data["jobs"]:
        if j["status"] == "ok" and j["curve"]:
            runs.setdefault((j["start"], j["method"]), []).append({**j, "arm": j["method"]})
    return {k: sorted(v, key=lambda r: r["seed"]) for k, v in runs.items()}


def wall_lines(runs: dict) -> list[str]:
    lines = [
        "| start | arm | steps | lr | wall s per run (mean over seeds) |",
        "|---|---|---|---|---|",
    ]
    for (start, arm), rs in sorted(runs.items()):
        wall = statistics.mean(r["curve"][-1]["seconds"] for r in rs)
        lines.append(f"| {start} | {arm} | {rs[0]['steps']} | {rs[0]['lr']} | {wall:.0f} |")
    return lines


def _by_accounting(table, paid: dict, free: dict) -> list[str]:
    """``table``'s rows: the free-accounting ones from ``free``, the rest from ``paid``."""
    head, rows = table(paid)[:2], table(paid)[2:]
    rows = [r for r in rows if "| free |" not in r]
    return head + [r for r in table(free)[2:] if "| free |" in r] + rows


def tables(run: Path, name: str, docs: Path, free_sft: Path | None) -> None:
    """``free_sft``: a second run holding SFT alone at reverse KL's FLOPs with the data free (the
    free rows use its SFT); None: every row from ``run``."""
    runs = load_jobs(run)
    free = dict(runs)
    if free_sft is not None:
        free.update({k: v for k, v in load_jobs(free_sft).items() if k[1] == "sft"})
    sections = {
        "Arm - continued SFT at equal FLOPs": _by_accounting(regime_table, runs, free),
        "FLOPs to reach continued SFT's best score": _by_accounting(reach_table, runs, free),
        "Early drop": drop_table(runs),
        "Steps, learning rate, wall time": wall_lines(runs),
    }
    for title, lines in sections.items():
        print(f"\n### {title}\n\n" + "\n".join(lines))
    plot_curves(free, docs / f"evidence-{name}-curves-free.png")
    plot_curves(runs, docs / f"evidence-{name}-curves-paid.png")


def _models(teacher: str, steps: int):
    cfg = LongModelsConfig(digits=DIGITS, teacher=teacher_spec(teacher), teacher_steps=steps)
    return long_models(cfg)


@torch.no_grad()
def profile(model, teacher, tok, prompts, seed: int) -> dict:
    """Exact match of ``model``'s temperature-1 samples, and per position the reverse KL to the
    teacher and the teacher's entropy on them."""
    backend = make_backend("hf", model=model, tokenizer=tok, max_batch_size=256)
    sampling = SamplingParams(max_new_tokens=max_new_tokens(DIGITS), temperature=1.0, seed=seed)
    ro = rollout(backend, prompts, tok, sampling)
    task = long_arithmetic_task(digits=DIGITS)
    right = [task.score(t, p) for t, p in zip(ro.texts_B, prompts, strict=True)]
    batch = PaddedBatch.from_ragged(ro.prompt_ids_B, ro.completion_ids_B, tok.pad_token_id)
    lp, lc = [len(p) for p in ro.prompt_ids_B], [len(c) for c in ro.completion_ids_B]
    logits = []
    for m in (model, teacher):
        out = m(input_ids=batch.input_ids_B_T, attention_mask=batch.attention_mask_B_T).logits
        logits.append(completion_logits(out, lp, lc))
    mask = logits[0][1]
    return {
        "sample_exact_match": sum(right) / len(right),
        "kl": reverse_kl_by_position(logits[0][0], logits[1][0], mask)[0],
        "teacher_entropy": entropy_by_position(logits[1][0], mask)[0],
    }


def thirds(xs: list[float]) -> str:
    xs = [x for x in xs if x == x]
    n = max(len(xs) // 3, 1)
    parts = (xs[:n], xs[n : 2 * n], xs[2 * n :])
    return " / ".join(f"{statistics.mean(p):.3f}" if p else "–" for p in parts)


def teacher_facts(teacher: str, steps: int, n: int, folder: Path | None = None) -> None:
    """``folder``: a teacher saved elsewhere (``continue_teacher.py``) instead of the cached one."""
    built = _models(teacher, steps)
    where = folder or built.teacher_dir
    model, tok = load_model(where, trainable=False), load_tokenizer(where)
    prompts = list(long_arithmetic_task(digits=DIGITS, num_eval=n, eval_split="valid").eval_prompts)
    backend = make_backend("hf", model=model, tokenizer=tok, max_batch_size=256)
    greedy = rollout(
        backend, prompts, tok, SamplingParams(max_new_tokens=max_new_tokens(DIGITS), temperature=0)
    )
    task = long_arithmetic_task(digits=DIGITS)
    g = statistics.mean(task.score(t, p) for t, p in zip(greedy.texts_B, prompts, strict=True))
    facts = profile(model, model, tok, prompts, seed=0)
    print(
        f"teacher {where} ({built.params['teacher']:,} params; "
        f"{built.params['teacher'] / built.params['medium']:.1f}x medium): valid greedy {g:.3f}, "
        f"temperature-1 samples {facts['sample_exact_match']:.3f} (n={n}); entropy per token on "
        f"its own samples, first / middle / last third: {thirds(facts['teacher_entropy'])}, "
        f"mean {statistics.mean(facts['teacher_entropy']):.3f}"
    )


def kl_rows(run: Path, seed: int, n: int) -> None:
    data = json.loads((run / "report.json").read_text())
    teacher_dir, student_dir = data["meta"]["models"]["teacher"], data["meta"]["models"]["student"]
    teacher, tok = load_model(teacher_dir, trainable=False), load_tokenizer(teacher_dir)
    prompts = list(long_arithmetic_task(digits=DIGITS, num_eval=n).eval_prompts)
    branch = data["warm_up"][0]["branches"][-1]
    rows = {}
    start = load_model(student_dir, trainable=False)
    load_saved_weights(start, branch["path"])
    rows["start"] = profile(start, teacher, tok, prompts, seed)
    for job in data["jobs"]:
        if job["seed"] == seed and job["start"] == branch["name"] and job["steps"]:
            final = run / "runs" / branch["name"] / f"{job['method']}-seed{seed}" / "final"
            rows[job["method"]] = profile(load_model(final), teacher, tok, prompts, seed)
    print("| model | T=1 sample exact match | reverse KL/token: thirds | teacher entropy: thirds |")
    print("|---|---|---|---|")
    for k, r in rows.items():
        print(
            f"| {k} | {r['sample_exact_match']:.3f} | {thirds(r['kl'])} | "
            f"{thirds(r['teacher_entropy'])} |"
        )
    (run / f"kl-seed{seed}.json").write_text(json.dumps(rows))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["teacher", "tables", "kl"])
    p.add_argument("--run", type=Path, default=Path("outputs/compare/evidence-ratio"))
    p.add_argument("--name", default="ratio")
    p.add_argument("--free-sft", type=Path, default=None, help="SFT at the free budget (a run)")
    p.add_argument("--docs", type=Path, default=Path("docs/results"))
    p.add_argument("--teacher", default="large")
    p.add_argument("--teacher-steps", type=int, default=1000)
    p.add_argument("--teacher-dir", type=Path, default=None, help="a teacher saved elsewhere")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prompts", type=int, default=200)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    if a.what == "teacher":
        teacher_facts(a.teacher, a.teacher_steps, a.prompts, a.teacher_dir)
    elif a.what == "tables":
        tables(a.run, a.name, a.docs, a.free_sft)
    else:
        kl_rows(a.run, a.seed, a.prompts)


if __name__ == "__main__":
    main()
