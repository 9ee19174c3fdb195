"""Checkpoints: atomic (a partial write is never picked up), pruned to the newest ``keep``, and a
damaged state file is a clear error."""

from __future__ import annotations

import json

import pytest
import torch
from accelerate import Accelerator

from onpolicy.errors import TrainingError
from onpolicy.trainer import checkpoint as ckpt


@pytest.fixture
def accelerator():
    acc = Accelerator(cpu=True)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model, opt = acc.prepare(model, opt)
    acc._test_model = model  # kept for the assertions below
    return acc


def test_save_load_prune_and_partial(tmp_path, accelerator):
    model = accelerator._test_model
    for step in (1, 2, 3):
        with torch.no_grad():
            model.weight.fill_(float(step))
        ckpt.save_checkpoint(accelerator, tmp_path, ckpt.TrainerState(step, step * 4, 0), keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-00000002", "step-00000003"]
    # a killed writer leaves a .tmp-* folder and a folder without the state file: both ignored
    (ckpt.checkpoint_root(tmp_path) / ".tmp-step-00000004").mkdir()
    (ckpt.checkpoint_root(tmp_path) / "step-00000005").mkdir()
    latest = ckpt.latest_checkpoint(tmp_path)
    assert latest.name == "step-00000003"
    assert [p.name for p in ckpt.remove_partial(tmp_path)] == [".tmp-step-00000004"]
    with torch.no_grad():
        model.weight.zero_()
    state = ckpt.load_checkpoint(accelerator, latest)
    assert state == ckpt.TrainerState(step=3, data_position=12, nonfinite_steps=0)
    assert torch.all(model.weight == 3.0)


def test_damaged_state_is_a_clear_error(tmp_path, accelerator):
    with pytest.raises(TrainingError, match="is incomplete"):
        ckpt.load_checkpoint(accelerator, tmp_path)
    (tmp_path / ckpt.STATE_FILE).write_text("{broken")
    with pytest.raises(TrainingError, match="is unreadable"):
        ckpt.load_checkpoint(accelerator, tmp_path)
    (tmp_path / ckpt.STATE_FILE).write_text(json.dumps({"step": 1, "bogus": 2}))
    with pytest.raises(TrainingError, match="is unreadable"):
        ckpt.load_checkpoint(accelerator, tmp_path)
