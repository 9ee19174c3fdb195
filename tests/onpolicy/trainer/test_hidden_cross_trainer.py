"""Cross-tokenizer hidden-state distillation in the trainer and the compare planner: the plan
picks the span-end variant for a teacher with another tokenizer, a short GOLD + hidden run trains
the projection, and the planner charges the projection's FLOPs (and the teacher's scoring forward
when the objective alone needs no teacher)."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import torch
from safetensors.torch import load_file
from trainer_configs import make_config

import onpolicy.objectives  # noqa: F401  (registers the built-ins)
from onpolicy.compare.budget import Sizes, StepCost
from onpolicy.compare.hidden_cost import projection_params, with_hidden_cost
from onpolicy.config_checks import validate
from onpolicy.hidden.build import hidden_plan
from onpolicy.objectives.base import OBJECTIVES
from onpolicy.trainer import checkpoint as ckpt
from onpolicy.trainer import train
from onpolicy.trainer.step_metrics import PROJECTION_FLOPS, ComputeBudget

CHAR_TEACHER = "teacher.path='tiny:small,tokenizer=char,seed=1,pretrain_steps=300'"
CROSS = ("hidden.weight=0.5", "hidden.loss=cosine", CHAR_TEACHER, "teacher.mode=auto")


def test_plan_for_a_teacher_with_another_tokenizer(tmp_path):
    cfg = make_config(tmp_path, *CROSS, "objective.name=gold")
    validate(cfg)
    plan = hidden_plan(cfg)
    assert plan.cross and plan.pairs == ((1, 2), (2, 3)) and plan.num_maps == 2
    same = hidden_plan(make_config(tmp_path, "hidden.weight=0.5"))
    assert not same.cross
    assert projection_params(cfg) == 2 * 64 * 128


@pytest.mark.parametrize("objective", ["gold", "sft"])
def test_a_short_run_trains_the_projection(tmp_path, objective):
    steps = ("train.steps=2", "train.checkpoint_every=1", "train.keep_checkpoints=5")
    cfg = make_config(tmp_path, *CROSS, f"objective.name={objective}", *steps, "eval.num_prompts=0")
    result = train(cfg)
    saved = ckpt.list_checkpoints(tmp_path)
    first, last = (load_file(str(d / "model_1.safetensors")) for d in (saved[0], saved[-1]))
    assert not torch.equal(first["maps.0.weight"], last["maps.0.weight"])
    assert result.final_dir is not None
    # the projection's FLOPs (6 P per compared span end) are in the run's budget and its FLOPs
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    per_step = [r[PROJECTION_FLOPS] for r in records if PROJECTION_FLOPS in r]
    assert len(per_step) == 2 and all(v > 0 and v % (6 * 2 * 64 * 128) == 0 for v in per_step)
    assert result.budget.projection_flops == pytest.approx(sum(per_step))
    plain = ComputeBudget(**{**asdict(result.budget), "projection_flops": 0.0})
    assert result.budget.flops(1, 1) == pytest.approx(plain.flops(1, 1) + sum(per_step))


def test_planner_charges_the_projection_and_the_scoring_forward(tmp_path):
    sizes = Sizes(10, 100, 2.0, 3.0, 4, 5, 7)  # N_s, N_t, P_s, P_t, C, rows, distinct prompts
    base = StepCost(1.0, lambda step: 1000.0 * (step + 1))
    proj = 6 * (2 * 64 * 128) * 4 * 5  # 6 P per completion position, C = 4, 5 rows
    scoring = 2 * 100 * (3 + 4) * 5
    gold = make_config(tmp_path, *CROSS, "objective.name=gold")
    cost = with_hidden_cost(base, gold, OBJECTIVES["gold"](), sizes)
    assert cost.once == 1.0 and cost.per_step(2) == 3000.0 + proj
    sft = make_config(tmp_path, *CROSS, "objective.name=sft")
    assert with_hidden_cost(base, sft, OBJECTIVES["sft"](), sizes).per_step(0) == (
        1000.0 + proj + scoring
    )
    plain = make_config(tmp_path, "objective.name=gold", CHAR_TEACHER, "teacher.mode=auto")
    assert with_hidden_cost(base, plain, OBJECTIVES["gold"](), sizes) is base
