"""The opt-in disk cache of fixed teacher samples (``ONPOLICY_TEACHER_SAMPLES_CACHE``): runs that
would draw the same samples share one draw, and training is exactly what it is without the cache
(same samples, same losses, same counted teacher tokens)."""

from __future__ import annotations

import torch
from trainer_configs import make_config

from onpolicy.tiny import tiny_model_dir
from onpolicy.trainer import train
from onpolicy.trainer.sample_cache import ENV, cached_draw, draw_key
from onpolicy.trainer.step_metrics import ComputeBudget


def _sft(tmp_path, name, seed=0):
    cfg = make_config(
        tmp_path / name,
        "objective.name=sft",
        "teacher.samples=fixed",
        "train.steps=2",
        f"train.seed={seed}",
        "eval.num_prompts=0",
    )
    return train(cfg)


def test_a_cached_draw_trains_exactly_as_a_fresh_one(tmp_path, monkeypatch):
    plain = _sft(tmp_path, "plain")
    cache = tmp_path / "samples"
    monkeypatch.setenv(ENV, str(cache))
    first = _sft(tmp_path, "first")
    assert len(list(cache.glob("*.pkl"))) == 1
    again = _sft(tmp_path, "again")  # loads the draw
    assert len(list(cache.glob("*.pkl"))) == 1
    for run in (first, again):
        assert run.losses == plain.losses
        assert run.budget.teacher_tokens == plain.budget.teacher_tokens > 0
    _sft(tmp_path, "seed1", seed=1)  # another seed draws other samples: its own entry
    assert len(list(cache.glob("*.pkl"))) == 2


def test_the_key_follows_the_teacher_weights_prompts_and_settings(tmp_path):
    from onpolicy.models import load_model

    model = load_model(tiny_model_dir("tiny"), trainable=False)
    key = draw_key(model, ["a", "b"], seed=0)
    assert key == draw_key(model, ["a", "b"], seed=0)
    assert key != draw_key(model, ["b", "a"], seed=0)
    assert key != draw_key(model, ["a", "b"], seed=1)
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 1e-3
    assert key != draw_key(model, ["a", "b"], seed=0)
    calls = []

    def draw():
        calls.append(1)
        return {"x": [1]}, ComputeBudget(teacher_tokens=7, seconds=1.0)

    assert cached_draw("k", draw, tmp_path) == ({"x": [1]}, draw()[1])
    got, spent = cached_draw("k", draw, tmp_path)
    assert got == {"x": [1]} and spent.teacher_tokens == 7 and len(calls) == 2
    assert cached_draw("k", draw, None)[0] == {"x": [1]} and len(calls) == 3  # no folder: draw
