"""``examples/evidence/experiment.py``'s warm-up stopping rule: a curve that rose and flattened
has a plateau; a curve still at ~0 (one lucky problem of 200) has none: the warm-up goes on."""

from __future__ import annotations

from examples.evidence.experiment import _plateau


def _merged(scores: list[float]) -> dict:
    return {"curve": [{"step": 100 * i, "score": s} for i, s in enumerate(scores)], "saved": []}


def test_rise_then_flat_is_a_plateau():
    assert _plateau(_merged([0.0, 0.2, 0.5, 0.7, 0.71, 0.71, 0.71, 0.71, 0.71])) == 300


def test_flat_at_zero_is_not_a_plateau():
    # the 6-digit warm-up's first stage: 0.005 once, else 0.000 (it had not started to learn)
    assert _plateau(_merged([0.0] * 10 + [0.005, 0.005, 0.0])) is None
