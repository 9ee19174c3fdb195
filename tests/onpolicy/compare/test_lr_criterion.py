"""``lr_search.criterion``: the learning rate can be chosen by the forward measure (the student's
NLL of teacher samples of the validation prompts) instead of the reverse KL of the student's own
completions, which a student collapsing into loops the teacher also likes can lower (the real
SmolLM2 pair: ``docs/results/real-pair-lr.md``). Parsing, the choice, and a tiny end-to-end run
whose trials carry the measure and choose by it."""

from __future__ import annotations

import json

import pytest
from tiny_compare import TINY_MODELS, TINY_TASK

from onpolicy.compare import compare, parse_config
from onpolicy.compare.lr_search import choose, validation_value
from onpolicy.errors import ConfigError

# the real pair's reverse-KL trials in shape: the collapsing rate (1e-4) has the lowest KL per
# token and the highest forward NLL
TRIALS = [
    {"method": "rkl", "start": "warm", "lr": lr, "metrics": {
        "eval/kl_per_token": kl, "eval/forward_nll_per_byte": fwd}}
    for lr, kl, fwd in [(1e-5, 2.788, 3.08), (3e-5, 2.053, 3.11), (1e-4, 1.674, 3.77)]
]  # fmt: skip


def test_the_criterion_decides_the_choice():
    assert choose(TRIALS) == {("rkl", "warm"): 1e-4}  # auto: no score -> lowest KL per token
    assert choose(TRIALS, "kl") == {("rkl", "warm"): 1e-4}
    assert choose(TRIALS, "forward_nll") == {("rkl", "warm"): 1e-5}
    assert validation_value(TRIALS[0]["metrics"], "forward_nll") == -3.08
    # a criterion the trial did not log never wins over one that did
    assert validation_value({"eval/score": 0.9}, "forward_nll") == float("-inf")
    assert validation_value({"eval/score": 0.9, "eval/kl_per_token": 1.0}, "score") == 0.9


def _raw(tmp_path, lr_search):
    return {
        "task": TINY_TASK,
        "models": TINY_MODELS,
        "methods": ["untouched", "reverse_kl"],
        "train": {"steps": 1, "batch_size": 4, "max_new_tokens": 16, "lr": 1e-3},
        "seeds": [0],
        "validation": {"size": 8},
        "lr_search": lr_search,
        "output_dir": str(tmp_path / "out"),
    }


def test_an_unknown_criterion_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match=r"lr_search\.criterion='nll'; use one of"):
        parse_config(_raw(tmp_path, {"grid": [1e-4, 1e-3], "criterion": "nll"}))
    cfg = parse_config(_raw(tmp_path, {"grid": [1e-4, 1e-3]}))
    assert cfg.lr_search.criterion == "auto"  # unchanged default


@pytest.mark.slow
def test_trials_draw_the_pool_and_choose_by_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ONPOLICY_CACHE", str(tmp_path / "cache"))
    lr = {"grid": [1e-4, 1e-1], "steps": 1, "criterion": "forward_nll"}
    _, paths = compare(parse_config(_raw(tmp_path, lr)), progress=False)
    data = json.loads(paths["json"].read_text())
    trials = data["lr_trials"]
    assert len(trials) == 2 and all(t["criterion"] == "forward_nll" for t in trials)
    fwd = {t["lr"]: t["metrics"]["eval/forward_nll_per_byte"] for t in trials}
    assert all(v > 0 for v in fwd.values())  # drawn without eval.forward_nll in the config
    best = min(fwd, key=lambda lr: (fwd[lr], lr))
    chosen = {j["lr"] for j in data["jobs"] if j["method"] == "reverse_kl"}
    assert chosen == {best}
