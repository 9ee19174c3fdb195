"""Staged comparisons on tiny arithmetic models: with ``reuse_runs`` a rerun with more seeds trains
only the new seeds' runs (finished jobs and learning-rate trials are read back, identical); the
warm-up draws teacher samples distinct from the ones its branches' continued SFT trains on; a run
draws teacher samples only for the prompts it reads."""

from __future__ import annotations

import json

import pytest
from tiny_compare import TINY_MODELS, TINY_TASK

from onpolicy.compare import compare, parse_config
from onpolicy.compare.training import split_prompts
from onpolicy.compare.warm import warm_seed
from onpolicy.data import PromptStream
from onpolicy.tasks.base import make_task
from onpolicy.trainer.sources import prompt_key

TASK, MODELS = TINY_TASK, TINY_MODELS
WARM = {"method": "sft", "steps": 13, "every": 13, "branch_at": ["plateau"], "lr": 3e-2}


def _config(tmp_path, seeds):
    return parse_config(
        {
            "task": TASK,
            "models": MODELS,
            "methods": ["sft", "reverse_kl"],
            "train": {"steps": 2, "batch_size": 4, "max_new_tokens": 16, "lr": 1e-3},
            "seeds": seeds,
            "eval": {"every": 1},
            "validation": {"size": 8},
            "warm_start": WARM,
            "lr_search": {"grid": [1e-4, 1e-3], "steps": 1, "methods": ["sft"]},
            "reuse_runs": True,
            "output_dir": str(tmp_path / "out"),
        }
    )


@pytest.mark.slow
def test_staged_seeds_reuse_runs_and_warm_up_samples_are_fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("ONPOLICY_CACHE", str(tmp_path / "cache"))
    import onpolicy.trainer as trainer
    import onpolicy.trainer.sources as sources

    draws, trained = [], []
    real_draw, real_train = sources.draw_teacher_samples, trainer.train

    def spy_draw(prompts, sampling, src, seed, *args, **kwargs):
        fixed, spent = real_draw(prompts, sampling, src, seed, *args, **kwargs)
        draws.append((seed, {k: [r[1] for r in v] for k, v in fixed.rows.items()}))
        return fixed, spent

    def spy_train(config, **kwargs):
        trained.append((config.objective.name, config.train.seed, config.train.steps))
        return real_train(config, **kwargs)

    monkeypatch.setattr(sources, "draw_teacher_samples", spy_draw)
    monkeypatch.setattr(trainer, "train", spy_train)

    _, paths = compare(_config(tmp_path, [0]), progress=False)
    first = json.loads(paths["json"].read_text())
    # the warm-up (seed 10000) and the branches' SFT (seed 0) train on different teacher samples
    assert {seed for seed, _ in draws} == {0, warm_seed(0)}
    train = split_prompts(_config(tmp_path, [0]), make_task(**TASK)).train
    (warm_rows,) = [rows for seed, rows in draws if seed == warm_seed(0)]
    assert len(warm_rows) == len(train)  # 13 steps x 4 rows read every training prompt
    runs = [rows for seed, rows in draws if seed == 0]  # LR trials (1 step), runs (2 steps)
    assert sorted({len(rows) for rows in runs}) == [4, 8]
    for rows in runs:  # samples drawn for the prompts the run reads, and only those
        assert set(rows) == {prompt_key(p) for p in PromptStream(train, 0).take(len(rows))}
        assert any(warm_rows[k] != rows[k] for k in rows)  # not the warm-up's samples
    n_first = len(trained)  # warm-up + 2 starts x 2 LR trials + 2 starts x 2 methods
    assert n_first == 1 + 4 + 4

    trained.clear()
    _, paths = compare(_config(tmp_path, [0, 1]), progress=False)
    second = json.loads(paths["json"].read_text())
    # only seed 1 trains: its warm-up and its 2 starts x 2 methods; no LR trial again
    assert sorted(trained) == sorted(
        [("sft", warm_seed(1), 13)] + [(m, 1, 2) for m in ("sft", "reverse_kl")] * 2
    )
    assert second["lr_trials"] == first["lr_trials"]

    def seed0(data):
        return sorted(
            (j["start"], j["method"], j["score"], j["flops_paid"], json.dumps(j["curve"]))
            for j in data["jobs"]
            if j["seed"] == 0
        )

    assert seed0(second) == seed0(first)
