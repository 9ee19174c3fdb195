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


def test_teacher_nonfinite_counts_nan_and_posinf_of_each_variant_but_not_masks():
    from onpolicy.losses.chunked import LMHead
    from onpolicy.teacher.types import (
        CrossScores,
        CrossTeacherScores,
        DenseScores,
        HiddenScores,
        TokenScores,
        TopKScores,
    )

    nan, inf = math.nan, math.inf
    tok = torch.tensor([-0.5, nan, -inf])  # one bad value; -inf is a masked token
    common = {"vocab_size": 3, "num_tokens_B": [3], "token_logprobs_N": tok}
    logits = torch.tensor([[0.0, -inf, 1.0], [inf, nan, 0.0], [0.0, 0.0, 0.0]])
    dense = DenseScores(logits_N_V=logits, **common)
    assert d.teacher_nonfinite(dense) == 2 + 1
    head = LMHead(torch.zeros(3, 2))
    hidden = HiddenScores(hidden_N_D=torch.tensor([[0.0, -inf], [nan, 1.0], [0.0, 0.0]]),
                          lm_head=head, **common)  # fmt: skip
    assert d.teacher_nonfinite(hidden) == 2 + 1  # a hidden state's -inf is not a mask
    topk = TopKScores(topk_ids_N_K=torch.zeros(3, 2, dtype=torch.long),
                      topk_logprobs_N_K=torch.tensor([[0.0, -inf], [inf, 0.0], [0.0, 0.0]]),
                      tail_logprob_N=torch.tensor([-inf, nan, 0.0]), **common)  # fmt: skip
    assert d.teacher_nonfinite(topk) == 2 + 1
    assert d.teacher_nonfinite(TokenScores(**common)) == 1
    span = torch.zeros(1, dtype=torch.long)
    view = CrossTeacherScores(
        prompt_ids_B=[[0]], completion_ids_B=[[1]], logits_Nt_V=logits[:2],
        token_logprobs_Nt=torch.tensor([nan, -inf]), num_tokens_B=[2], student_span_B=[span],
        teacher_span_B=[span], num_spans_B=[1], vocab_size=3,
        matched_student_ids_M=span, matched_teacher_ids_M=span,
    )  # fmt: skip
    assert d.teacher_nonfinite(CrossScores(vocab_size=3, num_tokens_B=[3], cross=view)) == 2 + 1
