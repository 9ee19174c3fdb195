"""Branch warm students by score, not by step: per seed, the first checkpoint whose validation score
reaches ``--min-score``, linked as ``<out>/seed-<s>`` for the harness's ``models.init_from``.

    python examples/evidence/branch_by_score.py --warm DIR --seeds 1,2,3,4 --min-score 0.2 \
        --copies 2 --out DIR-q20

``DIR`` is a ``warm_students.py`` output (``seed-<s>/curve.json`` + ``seed-<s>/step-<n>``). Seeds
branched at one step start at very different points of their climbs (the climb begins at a
different step per seed); branching at a score puts every seed at the same point of its curve. The
score is the warm-up's own validation exact match (compare's validation split, held out from the
warm-ups), never the held-out test split. ``--copies K`` also links seed ``s + 10 k`` (k < K) to
seed ``s``'s branch, so the harness trains K seeds from each start point: the spread between
copies is the training noise at a fixed start, the spread between starts adds the warm-up's.
A seed whose curve never reaches the score is left out, and said so. ``<out>/branch.json``
records each link's seed, start seed, step and validation score.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def first_step_reaching(curve: list[dict], min_score: float) -> tuple[int, float] | None:
    """The first ``(step, score)`` of ``curve`` (``[{"step": int, "score": float}]``, in step order)
    with ``score >= min_score``; ``None`` if no point reaches it."""
    for point in sorted(curve, key=lambda p: p["step"]):
        if point["score"] >= min_score:
            return int(point["step"]), float(point["score"])
    return None


def branch(warm: Path, seeds: list[int], min_score: float, copies: int, out: Path) -> list[dict]:
    """Link ``out/seed-<s + 10 k>`` to each seed's first checkpoint at ``min_score``; returns the
    records written to ``out/branch.json``."""
    if copies < 1 or (copies > 1 and max(seeds) >= 10):
        raise SystemExit("--copies needs seeds below 10 (copy k of seed s is seed s + 10 k)")
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for seed in seeds:
        curve = json.loads((warm / f"seed-{seed}" / "curve.json").read_text())["curve"]
        hit = first_step_reaching(curve, min_score)
        if hit is None:
            print(f"seed {seed}: validation never reaches {min_score}; left out")
            continue
        step, score = hit
        target = (warm / f"seed-{seed}" / f"step-{step}").resolve()
        if not (target / "config.json").exists():
            raise SystemExit(f"{target} has no config.json: was step {step} saved?")
        for k in range(copies):
            link = out / f"seed-{seed + 10 * k}"
            if link.is_symlink() or link.exists():
                link.unlink()
            os.symlink(target, link)
            records.append(
                {"seed": seed + 10 * k, "start_seed": seed, "step": step, "score": score}
            )
        print(f"seed {seed}: step {step} (validation {score:.3f}) x {copies}")
    (out / "branch.json").write_text(json.dumps(records, indent=1) + "\n")
    return records


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--warm", type=Path, required=True)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--min-score", type=float, required=True)
    p.add_argument("--copies", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    branch(a.warm, [int(s) for s in a.seeds.split(",")], a.min_score, a.copies, a.out)


if __name__ == "__main__":
    main()
