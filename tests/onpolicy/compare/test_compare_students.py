"""The harness's hidden-state methods and students cut from the teacher (or that shape, fresh)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from onpolicy.compare.config import parse_config
from onpolicy.compare.methods import TrainSettings, trainer_config
from onpolicy.errors import ConfigError
from onpolicy.tasks.cut_students import cut_student_dir
from onpolicy.tiny import tiny_model_dir

BASE = {"task": {"name": "arithmetic"}, "models": {"kind": "arithmetic"}}


def test_a_method_carries_its_hidden_block(tmp_path):
    method = {"name": "rkl_h", "objective": "reverse_kl", "hidden": {"weight": 0.5}}
    cfg = parse_config({**BASE, "methods": ["reverse_kl", method]})
    plain, hidden = cfg.methods
    run = trainer_config(hidden, TrainSettings(), 0, "s", "t", tmp_path)
    assert run.hidden.weight == 0.5 and run.hidden.loss == "mse"
    assert trainer_config(plain, TrainSettings(), 0, "s", "t", tmp_path).hidden.weight == 0.0
    with pytest.raises(ConfigError, match="hidden must be a mapping"):
        parse_config({**BASE, "methods": [{**method, "hidden": 0.5}]})


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ({"kind": "arithmetic", "cut_layers": "0,2"}, r"cut_layers='0,2'; give teacher layer"),
        ({"kind": "arithmetic", "cut_layers": [0], "cut_fresh": "yes"}, "must be true or false"),
        ({"kind": "paths", "teacher": "x", "cut_layers": [0]}, "needs models.kind: arithmetic"),
    ],
)
def test_bad_cut_settings(models, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({**BASE, "models": models, "methods": ["reverse_kl"]})


def test_cut_and_fresh_students_share_the_shape_not_the_weights(tmp_path):
    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_model_dir("small", "bpe", seed=1), teacher)
    cut = cut_student_dir(teacher, [0, 2], log=lambda _: None)
    fresh = cut_student_dir(teacher, [0, 2], fresh=True, log=lambda _: None)
    assert cut != fresh and cut_student_dir(teacher, [0, 2]) == cut  # built once
    t, c, f = (load_file(str(Path(d) / "model.safetensors")) for d in (teacher, cut, fresh))
    assert c.keys() == f.keys()
    layer = "model.layers.1.mlp.down_proj.weight"  # student layer 1 = teacher layer 2
    assert torch.equal(c[layer], t["model.layers.2.mlp.down_proj.weight"])
    assert c[layer].shape == f[layer].shape and not torch.equal(c[layer], f[layer])
