"""Diagnostics against hand-derived values and a float64 reference."""

from __future__ import annotations

import math

import torch

from onpolicy.trainer import diagnostics as d


def test_entropy_hand_values_and_reference():
    uniform = torch.zeros(1, 8)
    one_hot = torch.tensor([[0.0, -float("inf"), -float("inf")]])
    assert abs(d.entropy(uniform).item() - math.log(8)) < 1e-6
    assert d.entropy(one_hot).item() == 0.0
    x = torch.randn(5, 11, dtype=torch.float64)
    p = x.softmax(-1)
    ref = -(p * p.log()).sum(-1)
    torch.testing.assert_close(d.entropy(x.float()).double(), ref, rtol=1e-5, atol=1e-6)


def test_reverse_kl_reference_and_zero_for_identical():
    s, t = torch.randn(6, 9, dtype=torch.float64), torch.randn(6, 9, dtype=torch.float64)
    ref = (s.softmax(-1) * (s.log_softmax(-1) - t.log_softmax(-1))).sum(-1)
    torch.testing.assert_close(
        d.reverse_kl_per_token(s.float(), t.float()).double(), ref, rtol=1e-5, atol=1e-6
    )
    assert d.reverse_kl_per_token(s.float(), s.float()).abs().max() < 1e-6


def test_topk_overlap():
    s = torch.tensor([[5.0, 4.0, 3.0, 0.0], [5.0, 4.0, 3.0, 0.0]])
    t = torch.tensor([[4.0, 5.0, 0.0, 3.0], [0.0, 1.0, 2.0, 3.0]])
    # row 0: teacher top-2 {1, 0} vs student {0, 1}: 1.0; row 1: teacher {3, 2} vs {0, 1}: 0.0
    assert d.topk_overlap(s, t, k=2).tolist() == [1.0, 0.0]
    assert d.topk_overlap(s, s, k=3).tolist() == [1.0, 1.0]


def test_repetition_and_empty():
    assert d.repetition_rate([[1, 2, 3, 4, 5]]) == 0.0
    # 1 2 1 2 1 2 -> 3-grams (1,2,1) (2,1,2) (1,2,1) (2,1,2): 2 of 4 repeat
    assert d.repetition_rate([[1, 2, 1, 2, 1, 2]]) == 0.5
    assert d.repetition_rate([[1], []]) == 0.0
    assert d.distribution_diagnostics(torch.zeros(0, 4), torch.zeros(0, 4)) == {}


def test_collapse_warnings():
    quiet = {
        "diag/student_entropy": 1.0,
        "diag/teacher_entropy": 1.2,
        "diag/truncated_share": 0.1,
        "diag/repetition_rate": 0.0,
    }
    assert d.collapse_warnings({**quiet, "eval/completion_length": 6.0}) == {}
    loud = {
        "diag/student_entropy": 0.01,
        "diag/teacher_entropy": 2.0,
        "diag/truncated_share": 0.9,
        "diag/repetition_rate": 0.8,
        "train/nonfinite_steps": 2.0,
        "diag/alignment_coverage": 0.2,
        "eval/completion_length": 1.0,  # evaluation metrics are read too
    }
    assert set(d.collapse_warnings(loud)) == {
        "diag/student_entropy",
        "diag/truncated_share",
        "diag/repetition_rate",
        "train/nonfinite_steps",
        "diag/alignment_coverage",
        "diag/completion_length",
    }
