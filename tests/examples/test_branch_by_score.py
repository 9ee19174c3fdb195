"""``examples/evidence/branch_by_score.py``: each seed branches at the first checkpoint whose
validation score reaches the bar (not the best, not a later one), copies share their start, and a
seed that never reaches the bar is left out rather than branched somewhere else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from examples.evidence.branch_by_score import branch, first_step_reaching


def _curve(scores: list[float]) -> list[dict]:
    return [{"step": 200 * (i + 1), "score": s} for i, s in enumerate(scores)]


def test_first_step_reaching_takes_the_first_crossing_in_step_order():
    curve = _curve([0.0, 0.1, 0.25, 0.19, 0.4])
    assert first_step_reaching(curve, 0.2) == (600, 0.25)
    assert first_step_reaching(list(reversed(curve)), 0.2) == (600, 0.25)
    assert first_step_reaching(curve, 0.25) == (600, 0.25)  # reaching counts
    assert first_step_reaching(curve, 0.5) is None


def _warm(root: Path, seed: int, scores: list[float]) -> None:
    d = root / f"seed-{seed}"
    for point in _curve(scores):
        (d / f"step-{point['step']}").mkdir(parents=True)
        (d / f"step-{point['step']}" / "config.json").write_text("{}")
    (d / "curve.json").write_text(json.dumps({"curve": _curve(scores)}))


def test_branch_links_each_start_and_its_copies(tmp_path):
    warm, out = tmp_path / "warm", tmp_path / "q"
    _warm(warm, 1, [0.0, 0.3, 0.9])
    _warm(warm, 2, [0.0, 0.0, 0.1])  # never reaches 0.2
    _warm(warm, 3, [0.1, 0.2, 0.5])
    records = branch(warm, [1, 2, 3], 0.2, 2, out)
    assert [(r["seed"], r["start_seed"], r["step"]) for r in records] == [
        (1, 1, 400),
        (11, 1, 400),
        (3, 3, 400),
        (13, 3, 400),
    ]
    assert (out / "seed-11").resolve() == (warm / "seed-1" / "step-400").resolve()
    assert not (out / "seed-2").exists() and not (out / "seed-12").exists()
    assert json.loads((out / "branch.json").read_text()) == records
    # re-running replaces the links (a new bar moves every start)
    branch(warm, [1], 0.5, 1, out)
    assert (out / "seed-1").resolve() == (warm / "seed-1" / "step-600").resolve()


def test_copies_need_one_digit_seeds(tmp_path):
    with pytest.raises(SystemExit, match="below 10"):
        branch(tmp_path, [10], 0.2, 2, tmp_path / "q")
