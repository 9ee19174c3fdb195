"""Equal-compute comparisons: the FLOPs estimate per step (hand-computed, real objectives), the
steps each method gets, the config checks, and a tiny comparison at equal FLOPs end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import onpolicy.objectives  # noqa: F401  (registers the built-ins)
from onpolicy.compare import compare, parse_config, plan_table
from onpolicy.compare.budget import (
    BudgetSpec,
    Sizes,
    parse_budget,
    plan_steps,
    run_flops,
    step_cost,
)
from onpolicy.compare.methods import BUILTIN_METHODS
from onpolicy.errors import ConfigError
from onpolicy.objectives.base import OBJECTIVES

REPO = Path(__file__).resolve().parents[3]
# N_s = 10, N_t = 100, P_s = 2, P_t = 3, C = 4, 5 rows per step, 7 distinct prompts
SIZES = Sizes(10, 100, 2.0, 3.0, 4, 5, 7)
TRAIN = 6 * 10 * (2 + 4) * 5  # 1800: student forward + backward on every row
ROLLOUT = 2 * 10 * (2 + 4) * 5  # 600: the student's own samples
SCORING = 2 * 100 * (3 + 4) * 5  # 7000: the teacher's scoring forward
SAMPLE = 2 * 100 * (3 + 4)  # 1400: the teacher generating one sample
DRAW = 7 * SAMPLE  # 9800: one teacher sample per distinct prompt (7), paid as first used


def _objective(name: str, **params):
    return OBJECTIVES[name](**params)


def test_step_cost_by_hand():
    sft = step_cost(_objective("sft"), SIZES, horizon=10)
    # 5 rows per step over 7 distinct prompts: 5 new samples at step 0, the last 2 at step 1
    assert sft.once == 0 and sft.per_step(0) == TRAIN + 5 * SAMPLE
    assert sft.per_step(1) == TRAIN + 2 * SAMPLE and sft.per_step(2) == TRAIN
    free = step_cost(_objective("sft"), SIZES, horizon=10, teacher_data="free")
    assert [free.per_step(k) for k in range(3)] == [TRAIN] * 3
    rkl = step_cost(_objective("reverse_kl"), SIZES, horizon=10)
    assert rkl.once == 0 and rkl.per_step(3) == TRAIN + ROLLOUT + SCORING
    kd = step_cost(_objective("supervised_kd", source="teacher"), SIZES, horizon=10)
    assert run_flops(kd, 2) == DRAW + 2 * (TRAIN + SCORING)
    gkd = _objective("gkd", lmbda=0.5, beta=0.5, off_policy="teacher", seed=0)
    cost = step_cost(gkd, SIZES, horizon=50)
    on = [gkd.batch_source(k) == "student" for k in range(6)]
    assert 0 < sum(on) < 6  # the coin gives both kinds of steps in 6
    paid, seen = [], 0  # teacher rows before the step; distinct samples charged when first used
    for o in on:
        new = 0 if o else min(seen + 5, 7) - min(seen, 7)
        seen += 0 if o else 5
        paid.append(TRAIN + SCORING + (ROLLOUT if o else 0) + new * SAMPLE)
    assert [cost.per_step(k) for k in range(6)] == paid
    assert run_flops(cost, 6) == sum(paid)


def test_plan_equal_flops_from_a_reference_and_from_a_total():
    costs = {
        "untouched": None,
        "sft": step_cost(_objective("sft"), SIZES, 10),
        "reverse_kl": step_cost(_objective("reverse_kl"), SIZES, 10),
    }
    steps, budget = plan_steps(BudgetSpec("flops", reference="sft"), 10, costs)
    assert budget == DRAW + 10 * TRAIN  # 27,800
    assert steps == {"untouched": 0, "sft": 10, "reverse_kl": 2}  # 27,800 // 9,400
    steps, budget = plan_steps(BudgetSpec("flops", flops=DRAW + 3 * TRAIN), 10, costs)
    assert budget == DRAW + 3 * TRAIN and steps["sft"] == 3
    assert steps["reverse_kl"] == (DRAW + 3 * TRAIN) // (TRAIN + ROLLOUT + SCORING)
    same, none = plan_steps(BudgetSpec(), 10, costs)
    assert same == {"untouched": 0, "sft": 10, "reverse_kl": 10} and none is None
    with pytest.raises(ConfigError, match=r"'reverse_kl' needs 9.4e\+03 FLOPs for one step"):
        plan_steps(BudgetSpec("flops", flops=9000), 10, {"reverse_kl": costs["reverse_kl"]})


def test_budget_config_errors():
    methods = [BUILTIN_METHODS[m] for m in ("untouched", "sft", "reverse_kl")]
    assert parse_budget(None, methods) == BudgetSpec()
    assert parse_budget({"match": "flops", "reference": "sft"}, methods).reference == "sft"
    cases = {
        "use 'steps' or 'flops'": {"match": "tokens"},
        "exactly one of budget.reference": {"match": "flops"},
        "not one of the methods": {"match": "flops", "reference": "gkd"},
        "trains nothing": {"match": "flops", "reference": "untouched"},
        "positive number": {"match": "flops", "flops": -1},
        "budget.flops needs budget.match=flops": {"flops": 1e9},
        "unknown budget keys": {"match": "flops", "refrence": "sft"},
    }
    for message, raw in cases.items():
        with pytest.raises(ConfigError, match=message):
            parse_budget(raw, methods)
    with pytest.raises(ConfigError, match="exactly one of"):
        parse_budget({"match": "flops", "reference": "sft", "flops": 1e9}, methods)
    # budget.match=steps on a flops config (e.g. an override): the reference is dropped, not fatal
    assert parse_budget({"match": "steps", "reference": "sft"}, methods) == BudgetSpec()


@pytest.fixture(scope="module")
def tiny_dirs() -> tuple[str, str]:
    from onpolicy.tiny import tiny_model_dir

    return (
        str(tiny_model_dir("tiny", seed=2, pretrain_steps=100)),
        str(tiny_model_dir("small", seed=1, pretrain_steps=300)),
    )


def _tiny_cfg(tiny_dirs, tmp_path):
    student, teacher = tiny_dirs
    data = tmp_path / "twelve.jsonl"  # 9 train prompts (their fixed teacher samples), 3 held out
    lines = (REPO / "configs" / "data" / "tiny_chat.jsonl").read_text().splitlines()
    data.write_text("\n".join(lines[:12]) + "\n")
    cfg = parse_config(
        {
            "task": {"name": "dataset", "path": str(data), "eval_fraction": 0.25},
            "models": {"kind": "paths", "teacher": teacher, "student": student},
            "methods": ["untouched", "sft", "reverse_kl"],
            "train": {"steps": 6, "batch_size": 2, "max_new_tokens": 6, "lr": 1e-3},
            "budget": {"match": "flops", "reference": "sft"},
            "seeds": [0],
            "output_dir": str(tmp_path / "out"),
        }
    )
    return cfg


def test_plan_only_trains_nothing(tiny_dirs, tmp_path):
    table = plan_table(_tiny_cfg(tiny_dirs, tmp_path))
    lines = {line.split(" | ")[0][2:]: line.split(" | ") for line in table.splitlines()[2:]}
    assert lines["sft"][2] == "6" and lines["untouched"][2] == "0"
    assert 1 <= int(lines["reverse_kl"][2]) < 6
    assert not (tmp_path / "out").exists()


def test_tiny_comparison_at_equal_flops(tiny_dirs, tmp_path):
    cfg = _tiny_cfg(tiny_dirs, tmp_path)
    rows, paths = compare(cfg, progress=False)
    data = json.loads(paths["json"].read_text())
    jobs = {j["method"]: j for j in data["jobs"]}
    budget = data["meta"]["budget"]
    steps = budget["steps"]
    assert steps["sft/seed0"] == 6 and steps["untouched/seed0"] == 0
    # on-policy spends a rollout and the teacher's scoring per step: fewer steps for the same FLOPs
    assert 1 <= steps["reverse_kl/seed0"] < 6
    for name in ("sft", "reverse_kl"):
        job = jobs[name]
        assert job["status"] == "ok" and len(job["losses"]) == job["steps"]
        assert job["steps"] == steps[f"{name}/seed0"]
        # completions stop at or before max_new_tokens: recorded FLOPs never exceed the estimate
        estimate = budget["estimated_flops"][f"{name}/seed0"]
        assert 0.3 * estimate < job["flops"] <= estimate * (1 + 1e-9)
        assert estimate <= budget["flops"]["0"]
    text = paths["markdown"].read_text()
    assert "equal estimated training FLOPs" in text and "reference sft at 6 steps" in text
    by_name = {r.method: r for r in rows}
    assert by_name["reverse_kl"].steps == steps["reverse_kl/seed0"]


def test_cli_bad_budget_is_one_line(capsys):
    from onpolicy.compare import main

    config = str(REPO / "configs" / "compare" / "quickstart.yaml")
    assert main(["--config", config, "--plan", "budget.match=flops"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("onpolicy compare: error: budget.match=flops needs exactly one of")
    assert "\n" not in err
