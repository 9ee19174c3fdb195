"""Cross-tokenizer teacher scoring on two real tiny tokenizers (byte-level BPE student,
SentencePiece-style char teacher): the teacher's own template, byte-exact spans, the stop span,
invalid UTF-8, and the cross objectives (chain rule, identical models give 0)."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_cross_pair import scored_cross_pair, self_scored_rollout

from alignment.tokens.offsets import token_bytes
from onpolicy.api import make_objective
from onpolicy.chat import render_prompt
from onpolicy.teacher.local import LocalTeacher
from onpolicy.types import Prompt, Rollout


@pytest.fixture(scope="module")
def setup():
    p = scored_cross_pair(seed=1, mode="auto")
    return p.student, p.student_tokenizer, p.teacher, p.teacher_tokenizer, p.rollout, p.scores


def _span_bytes(tok, ids, span, S):
    out = [b""] * S
    for piece, s in zip(token_bytes(tok, ids), span.tolist(), strict=True):
        if s >= 0:
            out[s] += piece
    return out


def test_teacher_sees_its_own_template_and_the_same_bytes(setup):
    _, stok, _, ttok, ro, scores = setup
    cross = scores.cross
    assert scores.mode == "cross" and scores.metrics["teacher/coverage"] == 1.0
    end = ttok.convert_tokens_to_ids("<end_of_turn>")
    for b in range(len(ro)):
        assert cross.prompt_ids_B[b] == render_prompt(ttok, ro.prompts[ro.prompt_index_B[b]])
        t_ids = cross.completion_ids_B[b]
        assert ttok.decode(t_ids[:-1]) == ro.texts_B[b] and t_ids[-1] == end
        S = cross.num_spans_B[b]
        s_bytes = _span_bytes(stok, ro.completion_ids_B[b], cross.student_span_B[b], S)
        t_bytes = _span_bytes(ttok, t_ids, cross.teacher_span_B[b], S)
        assert s_bytes[:-1] == t_bytes[:-1] and all(s_bytes[:-1])  # same bytes per span
        assert cross.student_span_B[b][-1] == cross.teacher_span_B[b][-1] == S - 1  # stop span
    assert cross.logits_Nt_V.shape == (sum(cross.num_tokens_B), len(ttok))


def test_invalid_utf8_bytes_reach_the_teacher_as_byte_tokens(setup):
    _, stok, teacher, ttok, _, _ = setup
    ids = stok.encode("ab", add_special_tokens=False) + stok.convert_tokens_to_ids(["æ"])
    ids += [*stok.encode("cd", add_special_tokens=False), stok.convert_tokens_to_ids("<|im_end|>")]
    prompt = Prompt(text="x")
    ro = Rollout(
        [prompt], [0], [render_prompt(stok, prompt)], [ids], [[0.0] * len(ids)], ["stop"], ["ab?cd"]
    )
    scores = LocalTeacher(teacher, ttok, stok).score(ro)
    cross = scores.cross
    assert scores.metrics["teacher/coverage"] == 1.0
    t_ids = cross.completion_ids_B[0]
    assert ttok.convert_ids_to_tokens(t_ids) == ["a", "b", "<0xE6>", "c", "d", "<end_of_turn>"]
    S = cross.num_spans_B[0]
    assert (
        _span_bytes(stok, ids, cross.student_span_B[0], S)[:-1]
        == _span_bytes(ttok, t_ids, cross.teacher_span_B[0], S)[:-1]
    )


def test_span_advantages_follow_the_chain_rule(setup):
    student, _, teacher, _, ro, scores = setup
    from onpolicy.objectives.cross import span_advantages_and_logprobs

    _, adv_N, _ = span_advantages_and_logprobs(student, ro, scores)
    rows = torch.split(adv_N, [len(c) for c in ro.completion_ids_B])
    cross = scores.cross
    with torch.no_grad():
        for b, (p, c) in enumerate(zip(ro.prompt_ids_B, ro.completion_ids_B, strict=True)):
            s_lp = torch.log_softmax(student(input_ids=torch.tensor([p + c])).logits[0], -1)
            s_seq = s_lp[len(p) - 1 : -1].gather(1, torch.tensor(c)[:, None]).sum()
            tp, tc = cross.prompt_ids_B[b], cross.completion_ids_B[b]
            t_lp = torch.log_softmax(teacher(input_ids=torch.tensor([tp + tc])).logits[0], -1)
            t_seq = t_lp[len(tp) - 1 : -1].gather(1, torch.tensor(tc)[:, None]).sum()
            torch.testing.assert_close(rows[b].sum(), t_seq - s_seq, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("name", ["gold", "uld", "policy_gradient"])
def test_cross_objective_contract(name, setup):
    student, _, teacher, _, ro, scores = setup
    student.zero_grad(set_to_none=True)
    out = make_objective(name).loss(student, ro, scores)
    assert torch.isfinite(out.loss_sum) and out.num_tokens > 0
    if name != "policy_gradient":  # counted units are the spans present on both sides
        assert out.num_tokens == sum(scores.cross.num_spans_B)
    out.loss_sum.backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    student.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", ["gold", "uld", "policy_gradient"])
def test_identical_models_in_cross_mode_give_zero(name, setup):
    _, _, teacher, ttok, _, _ = setup
    ro, scores = self_scored_rollout(teacher, ttok)
    assert all((s == torch.arange(len(s))).all() for s in scores.cross.student_span_B)
    twin = copy.deepcopy(teacher).requires_grad_(True)
    out = make_objective(name).loss(twin, ro, scores)
    assert abs(out.loss_sum.item()) < 1e-4
