"""The evidence diagnostics on hand-computed cases and an independent float64 reference."""

from __future__ import annotations

import math

import pytest
import torch

from onpolicy.evidence.diagnostics import (
    completion_logits,
    curve_area,
    early_drop,
    entropy_by_position,
    flops_to_reach,
    plateau_index,
    reverse_kl_by_position,
    score_by_bucket,
    survival_by_step,
)


def test_score_by_bucket_hand_computed():
    got = score_by_bucket([82, 22, 82, 22, 52], [1.0, 0.0, 0.0, 1.0, 1.0])
    assert got == {22: (0.5, 2), 52: (1.0, 1), 82: (0.5, 2)}
    assert list(got) == [22, 52, 82]


def test_completion_logits_aligns_by_completion_position():
    B, T, V = 2, 6, 3
    logits = torch.arange(B * T * V, dtype=torch.float32).view(B, T, V)
    out, mask = completion_logits(logits, prompt_lens_B=[2, 3], completion_lens_B=[4, 2])
    assert out.shape == (2, 4, 3)
    assert torch.equal(out[0], logits[0, 1:5])  # predicted at positions 1..4 (prompt of 2)
    assert torch.equal(out[1, :2], logits[1, 2:4]) and torch.equal(out[1, 2:], torch.zeros(2, 3))
    assert mask.tolist() == [[True] * 4, [True, True, False, False]]
    with pytest.raises(ValueError, match="empty prompt"):
        completion_logits(logits, [0, 1], [1, 1])


def test_reverse_kl_by_position_against_float64_reference():
    torch.manual_seed(0)
    s, t = torch.randn(3, 4, 5), torch.randn(3, 4, 5)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    mean, count = reverse_kl_by_position(s, t, mask)
    assert count == [3, 2, 1, 0]
    for j in range(3):
        rows = [b for b in range(3) if mask[b, j]]
        ref = 0.0
        for b in rows:
            ps = torch.softmax(s[b, j].double(), -1)
            pt = torch.softmax(t[b, j].double(), -1)
            ref += float((ps * (ps / pt).log()).sum())
        assert mean[j] == pytest.approx(ref / len(rows), rel=1e-5)
    assert math.isnan(mean[3])
    same, _ = reverse_kl_by_position(s, s, mask)
    assert same[:3] == pytest.approx([0.0] * 3, abs=1e-6)


def test_reverse_kl_hand_computed_two_tokens():
    # s = (0.5, 0.5), t = (0.25, 0.75): KL = 0.5 log 2 + 0.5 log(2/3)
    s = torch.log(torch.tensor([[[0.5, 0.5]]]))
    t = torch.log(torch.tensor([[[0.25, 0.75]]]))
    mean, _ = reverse_kl_by_position(s, t, torch.ones(1, 1, dtype=torch.bool))
    assert mean[0] == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3), rel=1e-6)


def test_curve_readers():
    scores = [0.36, 0.20, 0.14, 0.30, 0.50]
    assert early_drop(scores, window=2) == pytest.approx(0.22)
    assert early_drop([0.3, 0.4, 0.5], window=2) == 0.0
    assert early_drop([0.3], window=3) == 0.0
    flops = [0.0, 1.0, 2.0, 3.0, 4.0]
    assert flops_to_reach(flops, scores, 0.45) == 4.0
    assert flops_to_reach(flops, scores, 0.9) is None
    assert curve_area([0.0, 2.0], [0.0, 1.0]) == pytest.approx(0.5)
    assert curve_area([0.0, 1.0, 3.0], [1.0, 1.0, 0.0]) == pytest.approx((1 + 1) / 3)
    assert curve_area([5.0], [0.7]) == 0.7
    with pytest.raises(ValueError, match="window"):
        early_drop(scores, window=0)


def test_plateau_index():
    rising_then_flat = [0.0, 0.2, 0.4, 0.5, 0.51, 0.51, 0.52, 0.51]
    assert plateau_index(rising_then_flat, window=3, tol=0.03) == 3
    assert plateau_index([0.0, 0.1, 0.2, 0.3], window=2, tol=0.05) == 3  # never flattens
    assert plateau_index([0.5, 0.5, 0.5], window=1, tol=0.01) == 0


def test_survival_by_step_hand_computed():
    assert survival_by_step([0, 1, 3, 3], 3) == [0.75, 0.5, 0.5]
    assert survival_by_step([], 2) == [0.0, 0.0]


def test_entropy_by_position_hand_computed_and_masked():
    # row 0: uniform over 4 tokens (ln 4), then one-hot-ish; row 1: uniform, masked at position 1
    big = 50.0
    logits = torch.tensor(
        [[[0.0, 0.0, 0.0, 0.0], [big, 0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0, 0.0], [0.0] * 4]]
    )
    mask = torch.tensor([[True, True], [True, False]])
    mean, count = entropy_by_position(logits, mask)
    assert count == [2, 1]
    assert mean[0] == pytest.approx(math.log(4), abs=1e-6)
    assert mean[1] == pytest.approx(0.0, abs=1e-6)  # the masked uniform row is not counted
    two = torch.tensor([[[math.log(3.0), 0.0]]])  # p = (3/4, 1/4)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert entropy_by_position(two, torch.tensor([[True]]))[0][0] == pytest.approx(h, abs=1e-6)
    assert math.isnan(entropy_by_position(two, torch.tensor([[False]]))[0][0])
