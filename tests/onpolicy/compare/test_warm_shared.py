"""``warm_start.shared: true``: one warm-up (the first seed's) branches every seed, every run
trains on the warm-up's teacher samples (one draw in all), and the warm-up's cache key follows
the seed it trains with (``warm.warm_seed``: the seed itself when shared)."""

from __future__ import annotations

import json

import pytest
from tiny_compare import TINY_MODELS, TINY_TASK

from onpolicy.compare import compare, parse_config
from onpolicy.compare.warm import cache_folder, parse_warm
from onpolicy.errors import ConfigError
from onpolicy.trainer.sample_cache import ENV

TASK, MODELS = TINY_TASK, TINY_MODELS
WARM = {"method": "sft", "steps": 2, "every": 1, "branch_at": [2], "lr": 3e-2, "cold": False}


def _config(tmp_path, shared: bool):
    return parse_config(
        {
            "task": TASK,
            "models": MODELS,
            "methods": ["untouched", "sft"],
            "train": {"steps": 1, "batch_size": 4, "max_new_tokens": 16, "lr": 1e-3},
            "seeds": [0, 1],
            "eval": {"every": 1},
            "validation": {"size": 8},
            "warm_start": {**WARM, "shared": shared, "cache_dir": str(tmp_path / "warm")},
            "output_dir": str(tmp_path / "out"),
        }
    )


def test_shared_warm_up_is_trained_once_and_branches_every_seed(tmp_path, monkeypatch):
    monkeypatch.setenv("ONPOLICY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(ENV, str(tmp_path / "samples"))  # one file per distinct draw
    _, paths = compare(_config(tmp_path, shared=True), progress=False)
    assert len(list((tmp_path / "samples").glob("*.pkl"))) == 1  # warm-up and both seeds' SFT
    data = json.loads(paths["json"].read_text())
    assert [w["seed"] for w in data["warm_up"]] == [0]  # one warm-up, not one per seed
    jobs = {(j["method"], j["seed"]): j for j in data["jobs"]}
    assert {j["start"] for j in jobs.values()} == {"step2"}
    # both seeds start from the same warm weights: identical step-0 evaluations, and the
    # untouched rows (the start itself, no sampling) score the same
    assert jobs[("sft", 0)]["curve"][0] == jobs[("sft", 1)]["curve"][0]
    assert jobs[("untouched", 0)]["score"] == jobs[("untouched", 1)]["score"]
    assert (tmp_path / "warm").is_dir() and not list((tmp_path / "warm").glob("*/seed1"))


def test_shared_flag_keys_the_cache_by_the_warm_up_seed_and_is_checked(tmp_path):
    from onpolicy.compare.model_dirs import ModelDirs

    dirs = ModelDirs("t", "s", None)
    a, b = _config(tmp_path, shared=True), _config(tmp_path, shared=False)
    # a shared warm-up trains with the seed itself, an unshared one with its warm seed
    # (warm.warm_seed): different weights, so different cache folders
    assert cache_folder(a, dirs, 0, ()) != cache_folder(b, dirs, 0, ())
    assert parse_warm({**WARM, "shared": True}).shared is True
    with pytest.raises(ConfigError, match="unknown warm_start keys"):
        parse_warm({**WARM, "share": True})
