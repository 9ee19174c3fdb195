"""Step metrics are global values: tallies split over processes (any split) combine to the metrics
of the whole batch, checked against ``_reference`` on the concatenated rows
(an independent computation); the compute budget adds up and survives a checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from onpolicy.trainer.checkpoint import TrainerState
from onpolicy.trainer.diagnostics import repetition_rate
from onpolicy.trainer.step_metrics import (
    ComputeBudget,
    StepTally,
    combine,
    global_budget,
    positions,
    tally_alignment,
    tally_components,
    tally_rollout,
)
from onpolicy.types import Prompt, Rollout

# rows of different lengths, one truncated, one empty, one looping: a mean of per-process shares
# would differ from the global share for an uneven split
ROWS = [
    ([1, 2], [5, 6, 7, 5, 6, 7, 5, 6, 7], "length"),
    ([1], [9], "stop"),
    ([1, 2, 3], [], "stop"),
    ([4], [8, 8, 8, 8, 2], "stop"),
    ([4, 4], [3, 4, 5, 6], "length"),
]


def _reference(completion_ids_B, finish_reason_B) -> dict[str, float]:
    """The step's rollout diagnostics from their definitions, on all rows at once."""
    lengths = [len(c) for c in completion_ids_B]
    rows = max(len(lengths), 1)
    return {
        "diag/truncated_share": sum(r == "length" for r in finish_reason_B) / rows,
        "diag/repetition_rate": repetition_rate(completion_ids_B),
        "diag/empty_share": sum(x == 0 for x in lengths) / rows,
        "diag/completion_length": sum(lengths) / rows,
    }


def _rollout(rows) -> Rollout:
    return Rollout(
        prompts=[Prompt(text="p")],
        prompt_index_B=[0] * len(rows),
        prompt_ids_B=[list(p) for p, _, _ in rows],
        completion_ids_B=[list(c) for _, c, _ in rows],
        sampling_logprobs_B=[[0.0] * len(c) for _, c, _ in rows],
        finish_reason_B=[r for _, _, r in rows],
        texts_B=["" for _ in rows],
    )


def _tally(rows, seconds, components) -> StepTally:
    t = StepTally()
    tally_rollout(t, _rollout(rows))
    tally_components(t, components)
    t.budget.seconds = seconds
    return t


@pytest.mark.parametrize("cut", [1, 2, 4])
def test_any_process_split_gives_the_global_diagnostics(cut):
    whole = _reference(
        [c for _, c, _ in ROWS], [r for _, _, r in ROWS]
    )  # the reference, on every row at once
    parts = [ROWS[:cut], ROWS[cut:]]
    tallies = [_tally(rows, 2.0, {}) for rows in parts]
    got = combine(tallies)
    for key, want in whole.items():
        assert got[key] == pytest.approx(want, abs=1e-12), key
    # not the mean of the per-process values (which is what rank-0-only or mean-of-means gave)
    per_process = [_reference([c for _, c, _ in p], [r for _, _, r in p]) for p in parts]
    mean_of_means = sum(d["diag/truncated_share"] for d in per_process) / 2
    assert mean_of_means != pytest.approx(whole["diag/truncated_share"])
    n_tokens = sum(len(c) for _, c, _ in ROWS)
    assert got["train/completion_tokens"] == n_tokens
    assert got["train/tokens_per_second"] == pytest.approx(n_tokens / 2.0)  # parallel processes
    assert got["train/student_train_tokens"] == sum(len(p) + len(c) for p, c, _ in ROWS)


def test_sums_add_times_average_rates_recomputed():
    rates = {"rollout/tokens_per_second": 9.0}  # dropped: recomputed from the global sums
    a = _tally(ROWS[:1], 1.0, {"nll_sum": 3.0, "rollout/tokens": 9, "rollout/seconds": 1.0,
                               "teacher/seconds": 0.5, **rates})  # fmt: skip
    b = _tally(ROWS[1:], 3.0, {"nll_sum": 4.5, "rollout/tokens": 10, "rollout/seconds": 3.0,
                               "teacher/seconds": 1.5, **rates})  # fmt: skip
    got = combine([a, b])
    assert got["nll_sum"] == 7.5 and got["rollout/tokens"] == 19
    assert got["rollout/seconds"] == 2.0 and got["teacher/seconds"] == 1.0  # mean over processes
    assert got["rollout/tokens_per_second"] == pytest.approx(19 / 2.0)
    assert got["train/step_seconds"] == 2.0
    assert combine([a]) == combine([a])  # a single process is its own global value
    assert combine([a])["nll_sum"] == 3.0


def test_alignment_coverage_is_counted_over_tokens():
    def spans(*rows):
        return [torch.tensor(r) for r in rows]

    a, b = StepTally(), StepTally()
    tally_alignment(a, spans([0, 1, -1, 2]))  # 3 of 4
    tally_alignment(b, spans([-1, -1], [0, 1, 2, 3, 4, 5]))  # 6 of 8
    tally_alignment(b, [])  # no rows: nothing to count
    assert combine([a, b])["teacher/coverage"] == pytest.approx(9 / 12)
    assert "teacher/coverage" not in combine([StepTally()])


def test_budget_adds_flops_and_survives_a_checkpoint():
    one = ComputeBudget(student_gen_tokens=10, student_train_tokens=20, teacher_tokens=30,
                        seconds=1.5)  # fmt: skip
    two = one.add(ComputeBudget(student_gen_tokens=1, seconds=0.5))
    assert two == ComputeBudget(11, 20, 30, 2.0) and one.student_gen_tokens == 10
    assert two.flops(100, 1000) == 6 * 100 * 20 + 2 * 100 * 11 + 2 * 1000 * 30
    t1, t2 = (
        StepTally(budget=ComputeBudget(1, 2, 3, 4.0)),
        StepTally(budget=ComputeBudget(1, 2, 3, 2.0)),
    )
    assert global_budget([t1, t2]) == ComputeBudget(2, 4, 6, 3.0)
    assert positions(_rollout(ROWS)) == sum(len(p) + len(c) for p, c, _ in ROWS)
    from dataclasses import asdict

    state = TrainerState(step=3, data_position=12, nonfinite_steps=1, budget=two)
    assert TrainerState.from_json(json.loads(json.dumps(asdict(state)))) == state
    old = {"step": 3, "data_position": 12, "nonfinite_steps": 0}  # a checkpoint before budgets
    assert TrainerState.from_json(old).budget == ComputeBudget()
