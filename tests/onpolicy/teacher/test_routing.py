"""Several teachers (``onpolicy.teacher.routing``): rows routed by the prompt's teacher field, or
every teacher's loss mixed by weight; teachers of different tokenizers in one batch."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tiny_cross_pair import scored_cross_pair

from onpolicy.errors import DataError
from onpolicy.models import load_model, load_tokenizer
from onpolicy.objectives.base import make_objective
from onpolicy.teacher.local import LocalTeacher
from onpolicy.teacher.routing import (
    Part,
    TeacherSet,
    route_rows,
    score_and_loss,
)
from onpolicy.tiny import tiny_model_dir


def test_route_rows_routes_named_rows_and_mixes_the_rest():
    parts = route_rows(["b", None, "a", None, "b"], {"a": 1.0, "b": 3.0})
    assert parts == [
        Part("a", (2,), 1.0),
        Part("b", (0, 4), 1.0),
        Part("a", (1, 3), 0.25),
        Part("b", (1, 3), 0.75),
    ]
    assert route_rows([None], {"a": 2.0}) == [Part("a", (0,), 1.0)]
    with pytest.raises(DataError, match=r"teacher 'c'.*\['a', 'b'\]"):
        route_rows(["c"], {"a": 1.0, "b": 1.0})


@pytest.fixture(scope="module")
def two_tokenizers():
    """The BPE student's rollout; a same-tokenizer BPE teacher and a char (cross) teacher."""
    pair = scored_cross_pair(seed=3, max_new_tokens=12)
    spath = tiny_model_dir("small", "bpe", seed=1, pretrain_steps=300)
    same_model = load_model(tiny_model_dir("tiny", "bpe", seed=2, pretrain_steps=100),
                            trainable=False)  # fmt: skip
    stok = load_tokenizer(spath)
    same = LocalTeacher(same_model, stok, pair.student_tokenizer, mode="same")
    return pair, same


def _with_teachers(rollout, names):
    prompts = [
        dataclasses.replace(p, teacher=n) for p, n in zip(rollout.prompts, names, strict=True)
    ]
    return dataclasses.replace(rollout, prompts=prompts)


def test_mixture_and_routing_equal_the_single_teacher_losses(two_tokenizers):
    pair, same = two_tokenizers
    student, cross = pair.student, pair.scorer
    objective = make_objective("policy_gradient", {})  # same and cross tokenizers
    teachers = TeacherSet({"same": same, "char": cross}, {"same": 1.0, "char": 3.0})
    ro = _with_teachers(pair.rollout, [None] * len(pair.rollout.prompts))
    torch.manual_seed(0)
    out, scored = score_and_loss(teachers, objective, student, ro)
    single = {
        name: objective.loss(student, ro, t.score(ro)) for name, t in teachers.teachers.items()
    }
    want = 0.25 * single["same"].loss_sum + 0.75 * single["char"].loss_sum
    torch.testing.assert_close(out.loss_sum, want)
    assert [s.name for s in scored] == ["same", "char"]
    assert {s.scores.mode for s in scored} == {"same", "cross"}
    assert out.metrics["teacher/char/loss_sum"] == pytest.approx(
        0.75 * float(single["char"].loss_sum.detach())
    )
    n = sum(len(c) for c in ro.completion_ids_B)
    assert out.num_tokens == n and out.metrics["teacher/same/tokens"] == pytest.approx(0.25 * n)
    # routed: rows 0, 2 by "char", 1, 3 by "same"; the loss is the parts' sum
    routed = _with_teachers(pair.rollout, ["char", "same", "char", "same"])
    out, scored = score_and_loss(teachers, objective, student, routed)
    subs = {"same": routed.select([1, 3]), "char": routed.select([0, 2])}
    parts = {
        name: objective.loss(student, sub, teachers.teachers[name].score(sub))
        for name, sub in subs.items()
    }
    torch.testing.assert_close(out.loss_sum, parts["same"].loss_sum + parts["char"].loss_sum)
    assert [len(s.rollout) for s in scored] == [2, 2]
    out.loss_sum.backward()  # one graph through both teachers' parts
    assert any(p.grad is not None for p in student.parameters())
