"""Each objective declares what a top-k teacher (log-probs at temperature 1) cannot serve
(``topk_teacher_limit``), and both teacher checks that read it agree with the declaration: a
vLLM teacher's backend check and the cached-scores check (``teacher.scores``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from onpolicy.config import TeacherConfig, apply_overrides, from_dict
from onpolicy.errors import ConfigError
from onpolicy.objectives.base import (
    OBJECTIVES,
    make_objective,
    teacher_output,
    topk_teacher_limit,
)
from onpolicy.scores.cached import check_cached_scores
from onpolicy.scores.store import Manifest, write_manifest
from onpolicy.teacher.backends import check_backend

sys.path.insert(0, str(Path(__file__).parents[1] / "trainer"))
from trainer_configs import TEACHER, base_raw

# (objective, params, whether a top-k teacher serves it)
CASES = [
    ("supervised_kd", {}, True),
    ("supervised_kd", {"chunked": True}, True),
    ("supervised_kd", {"alpha": 0.5}, False),
    ("supervised_kd", {"temperature": 2.0}, False),
    ("supervised_kd", {"alpha": 0.5, "temperature": 2.0}, False),
    ("gkd", {"off_policy": "dataset"}, True),
    ("gkd", {"off_policy": "dataset", "temperature": 0.5}, False),
    ("reverse_kl", {}, True),
    ("reverse_kl", {"temperature": 2.0}, False),
    ("gold", {}, True),
    ("gold", {"teacher_temperature": 1.0}, True),
    ("gold", {"teacher_temperature": 2.0}, False),
    ("gold", {"temperature": 2.0, "teacher_temperature": 1.0}, False),
    ("uld", {}, True),
    ("uld", {"temperature": 2.0}, False),
    ("next_byte", {}, True),
    ("next_byte", {"teacher_temperature": 0.5}, False),
    ("policy_gradient", {}, True),
    ("sft", {}, True),
    ("sft", {"source": "dataset"}, True),
]
IDS = [f"{name}-{params}" for name, params, _ in CASES]


def test_every_builtin_objective_has_a_case():
    make_objective("sft")  # registers the built-ins
    builtin = {n for n, f in OBJECTIVES.items() if f.__module__.startswith("onpolicy.")}
    assert builtin == {name for name, _, _ in CASES}


@pytest.mark.parametrize(("name", "params", "served"), CASES, ids=IDS)
def test_declaration_matches_the_vllm_backend_check(name, params, served):
    objective = make_objective(name, params)
    reason = topk_teacher_limit(objective)
    assert (reason is None) == served
    t = TeacherConfig(path=TEACHER, backend="vllm-server", server_url="http://127.0.0.1:9")
    if served:
        check_backend("teacher", t, teacher_output(objective), objective)
        return
    assert "\n" not in reason and "set " in reason  # one line, says what to change
    with pytest.raises(ConfigError) as err:
        check_backend("teacher", t, teacher_output(objective), objective)
    message = str(err.value)
    assert reason in message and "temperature 1" in message and "backend=local" in message


@pytest.mark.parametrize(("name", "params", "served"), CASES, ids=IDS)
def test_declaration_matches_the_cached_scores_check(tmp_path, name, params, served):
    scores = tmp_path / "scores"
    scores.mkdir()
    write_manifest(scores, Manifest(TEACHER, "teacher-sha", "tokenizer-sha", 400, 8))
    raw = apply_overrides(base_raw(tmp_path), [f"teacher.scores={scores}"])
    raw["objective"] = {"name": name, "params": params}
    config = from_dict(raw)
    objective = make_objective(name, params, config.train.seed)
    steps = range(config.train.steps)
    if not objective.needs_teacher or all(objective.batch_source(s) != "dataset" for s in steps):
        with pytest.raises(ConfigError, match="never scores dataset batches"):
            check_cached_scores(config)  # refused before the top-k question arises
        return
    if served:
        check_cached_scores(config)
        return
    with pytest.raises(ConfigError) as err:
        check_cached_scores(config)
    message = str(err.value)
    assert "\n" not in message and topk_teacher_limit(objective) in message
    assert "teacher.scores are top-k log-probs at temperature 1" in message


def test_a_hidden_state_wrapper_declares_its_inner_objectives_limit():
    import torch

    from onpolicy.hidden.objective import WithHidden

    for name, params, _ in CASES:
        inner = make_objective(name, params)
        wrapped = WithHidden(inner, (), 1.0, "mse", torch.nn.Identity())
        assert topk_teacher_limit(wrapped) == topk_teacher_limit(inner)
