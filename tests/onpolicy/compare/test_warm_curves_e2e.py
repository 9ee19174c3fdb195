"""The harness features on tiny arithmetic models end to end: learning curves logged at the right
steps and FLOPs, warm-up branches that start from the identical warm weights, a warm-up trained
once and reused from its cache, learning rates chosen on the validation split only, and
``student.init_from``."""

from __future__ import annotations

import json
import os

import pytest
import torch
from tiny_compare import TINY_MODELS, TINY_TASK

from onpolicy.compare import compare, parse_config
from onpolicy.compare.accounting import step_budgets
from onpolicy.compare.training import split_prompts
from onpolicy.errors import ConfigError
from onpolicy.tasks.base import make_task

TASK, MODELS = TINY_TASK, TINY_MODELS


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("onpolicy-cache")


def _config(tmp_path, **extra):
    raw = {
        "task": TASK,
        "models": MODELS,
        "methods": ["untouched", "sft", "reverse_kl"],
        "train": {"steps": 2, "batch_size": 4, "max_new_tokens": 16, "lr": 1e-3},
        "seeds": [0],
        "eval": {"every": 1},
        "validation": {"size": 8},
        "output_dir": str(tmp_path / "out"),
        **extra,
    }
    return parse_config(raw)


WARM = {
    "method": "sft",
    "steps": 2,
    "every": 1,
    "branch_at": [1, "plateau"],
    "plateau": {"window": 1, "min_gain": 1.0},  # never climbs by 1.0: not reached, last step
    "lr": 3e-2,  # large: the warm weights differ clearly from the cold student's
}


@pytest.mark.slow
def test_curves_branches_cache_and_lr_grid(tiny_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("ONPOLICY_CACHE", str(tiny_cache))
    lr = {"grid": [1e-4, 1e-3], "steps": 1, "methods": ["reverse_kl"]}
    cache = str(tmp_path / "warm-cache")
    cfg = _config(tmp_path, warm_start={**WARM, "cache_dir": cache}, lr_search=lr)
    _, paths = compare(cfg, progress=False)
    data = json.loads(paths["json"].read_text())
    jobs = {(j["start"], j["method"]): j for j in data["jobs"]}
    assert {s for s, _ in jobs} == {"cold", "step1", "plateau"}
    assert all(j["status"] == "ok" for j in jobs.values())

    # curves: evaluations at steps 0, 1, 2, at the FLOPs of the trainer's logged steps so far
    run = tmp_path / "out" / "runs" / "step1" / "reverse_kl-seed0"
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    logged = step_budgets(records)
    curve = jobs[("step1", "reverse_kl")]["curve"]
    assert [p["step"] for p in curve] == [0, 1, 2]
    n_s, n_t = jobs[("cold", "reverse_kl")]["params"], data["rows"][0]["params"]
    for p in curve:
        spent = sum(b.flops(n_s, n_t) for k, b in logged.items() if k <= p["step"])
        assert p["flops_free"] == pytest.approx(spent) and p["flops_paid"] == p["flops_free"]
        assert p["score"] is not None and p["kl_per_token"] is not None
    sft = jobs[("cold", "sft")]
    assert sft["flops_paid"] > sft["flops_free"] > 0  # SFT pays for the teacher's samples
    assert sft["curve"][-1]["flops_paid"] == pytest.approx(sft["flops_paid"])

    # branches: every method at a start point begins from the same weights (identical step-0
    # evaluations), and those are the warm-up's, not the cold student's
    def first(start, method):
        p = jobs[(start, method)]["curve"][0]
        return p["score"], p["kl_per_token"], p["teacher_nll_per_byte"]

    assert first("step1", "sft") == first("step1", "reverse_kl")
    assert first("plateau", "sft") == first("plateau", "reverse_kl")
    assert first("step1", "sft") != first("cold", "sft")
    warm = data["warm_up"][0]
    branches = [(b["name"], b["step"], b["reached"]) for b in warm["branches"]]
    assert branches == [("step1", 1, True), ("plateau", 2, False)]
    assert first("plateau", "sft") != first("step1", "sft")
    assert warm["cached"] is False and warm["branches"][0]["flops"]["paid"] > 0

    # learning rates: reverse_kl's from the grid, per start, on the validation split only
    split = split_prompts(cfg, make_task(**cfg.task))
    held_out = {p.text for p in make_task(**cfg.task).eval_prompts}
    assert len(data["lr_trials"]) == 3 * 2  # 3 start points x 2 rates
    for t in data["lr_trials"]:
        assert t["validation_prompts"] == [p.text for p in split.validation]
        assert not held_out & set(t["validation_prompts"])
    assert {p.text for p in split.validation}.isdisjoint(p.text for p in split.train)
    for start in ("cold", "step1", "plateau"):
        trials = [t for t in data["lr_trials"] if t["start"] == start]
        best = max(trials, key=lambda t: (t["metrics"]["eval/score"], -t["lr"]))
        assert jobs[(start, "reverse_kl")]["lr"] == best["lr"]
    assert jobs[("cold", "sft")]["lr"] == 1e-3  # not in lr_search.methods: train.lr

    text = paths["markdown"].read_text()
    for needle in ("## Cold start", "## Warm start", "Verdict:", "## Per seed", "Prompt 1",
                   "## Learning rates", "## Warm-up", "teacher data paid"):  # fmt: skip
        assert needle in text
    assert paths["curves"].stat().st_size > 1000

    # a rerun with the same warm-up settings reuses the cached warm-up (trains no warm-up)
    branch = warm["branches"][0]["path"] + "/model.safetensors"
    before = os.stat(branch).st_mtime_ns
    again = _config(tmp_path, warm_start={**WARM, "cache_dir": cache}, methods=["untouched"])
    _, paths2 = compare(again, progress=False)
    data2 = json.loads(paths2["json"].read_text())
    assert data2["warm_up"][0]["cached"] is True
    assert os.stat(branch).st_mtime_ns == before
    untouched = {j["start"]: j for j in data2["jobs"]}
    assert untouched["step1"]["score"] is not None


def test_init_from_loads_saved_weights_exactly(tmp_path):
    from onpolicy.models import load_model, load_saved_weights, load_tokenizer, save_student
    from onpolicy.tiny import tiny_model_dir

    path = tiny_model_dir("tiny")
    a, b = load_model(path), load_model(path)
    with torch.no_grad():
        for p in a.parameters():
            p.add_(torch.randn_like(p))
    save_student(a, load_tokenizer(path), tmp_path / "run" / "final")
    load_saved_weights(b, tmp_path / "run")  # a run folder: its final/
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    with pytest.raises(ConfigError, match=r"holds no model\.safetensors"):
        load_saved_weights(b, tmp_path)
    from onpolicy.config import from_dict
    from onpolicy.config_checks import validate

    bad = from_dict({"student": {"path": "tiny:tiny", "init_from": str(tmp_path / "nope")}})
    with pytest.raises(ConfigError, match=r"student\.init_from="):
        validate(bad)  # before any model loads
