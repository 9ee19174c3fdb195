"""Faults on resume: a torn metrics line, a changed or incompatible config, a planted pickle, the
non-finite allowance after a fix (checkpoint.py, metrics_log.py, run_folder.py, loop.py)."""

from __future__ import annotations

import json
import os

import pytest
import torch
from trainer_configs import make_config

from onpolicy.errors import TrainingError
from onpolicy.rollout.base import register_backend
from onpolicy.rollout.hf import HFRolloutBackend
from onpolicy.trainer import checkpoint as ckpt
from onpolicy.trainer import train
from onpolicy.trainer.metrics_log import read_metrics
from onpolicy.trainer.run_folder import ResumePolicy

QUICK = (
    "train.steps=2",
    "eval.num_prompts=0",
    "train.micro_batch_size=2",
    "train.save_final=false",
)


def _steps(output_dir):
    return [r["step"] for r in read_metrics(output_dir) if "train/loss" in r]


def test_torn_last_metrics_line_is_dropped_on_resume(tmp_path):
    train(make_config(tmp_path, *QUICK, "train.checkpoint_every=1"))
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "train/lo')  # a run stopped in the middle of a write (disk full)
    assert _steps(tmp_path) == [1, 2]  # read_metrics drops the torn line
    train(make_config(tmp_path, *QUICK, "train.steps=3"))
    assert _steps(tmp_path) == [1, 2, 3]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert all(json.loads(line) for line in lines)


def test_damaged_middle_metrics_line_names_the_line(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(TrainingError, match=r"metrics.jsonl:2 is not a JSON record"):
        read_metrics(tmp_path)


def test_changed_training_key_is_refused_with_the_keys_and_ways_out(tmp_path):
    train(make_config(tmp_path, *QUICK))
    state = json.loads((ckpt.latest_checkpoint(tmp_path) / ckpt.STATE_FILE).read_text())
    assert len(state["fingerprint"]) == 16 and state["config"]["optim.lr"] == 3e-3
    with pytest.raises(TrainingError) as err:
        train(make_config(tmp_path, *QUICK, "optim.lr=0.01", "objective.name=gkd", "train.steps=3"))
    msg = str(err.value)
    assert "optim.lr 0.003 -> 0.01" in msg and "objective.name 'reverse_kl' -> 'gkd'" in msg
    assert "--fresh" in msg and "--allow-change objective.name --allow-change optim.lr" in msg
    assert "train.steps" not in msg  # a safe key
    assert len(msg.splitlines()) == 1


def test_incompatible_student_is_one_line_not_a_traceback(tmp_path):
    train(make_config(tmp_path, *QUICK))
    cfg = make_config(tmp_path, *QUICK, "train.steps=3", "student.path=tiny:small")
    with pytest.raises(TrainingError, match="does not fit this run's student or optimizer"):
        train(cfg, policy=ResumePolicy(allow_changes=("student.path",)))


def test_incompatible_optimizer_is_one_line_not_a_traceback(tmp_path):
    train(make_config(tmp_path, *QUICK))
    cfg = make_config(tmp_path, *QUICK, "train.steps=3", "optim.optimizer=sgd")
    with pytest.raises(TrainingError, match="does not fit this run's student or optimizer"):
        train(cfg, policy=ResumePolicy(allow_changes=("optim.optimizer",)))


class _Boom:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("planted", ["custom_checkpoint_0.pkl", "random_states_0.pkl"])
def test_planted_pickle_in_a_checkpoint_does_not_run(tmp_path, planted):
    out, marker = tmp_path / "run", tmp_path / "pwned"
    train(make_config(out, *QUICK))
    torch.save({"state": _Boom(marker)}, ckpt.latest_checkpoint(out) / planted)
    with pytest.raises(TrainingError, match=f"refusing to load .*{planted}"):
        train(make_config(out, *QUICK, "train.steps=3"))
    assert not marker.exists()


def test_planted_optimizer_file_does_not_run(tmp_path):
    out, marker = tmp_path / "run", tmp_path / "pwned"
    train(make_config(out, *QUICK))
    torch.save({"state": _Boom(marker)}, ckpt.latest_checkpoint(out) / "optimizer.bin")
    with pytest.raises(TrainingError, match="refusing to load checkpoint"):
        train(make_config(out, *QUICK, "train.steps=3"))
    assert not marker.exists()


def test_checkpoints_hold_no_pickled_scheduler(tmp_path):
    train(make_config(tmp_path, *QUICK))
    names = {p.name for p in ckpt.latest_checkpoint(tmp_path).iterdir()}
    assert "custom_state_0.json" in names and "custom_checkpoint_0.pkl" not in names


@register_backend("hf_nan_switch_test")
class NanSwitchBackend(HFRolloutBackend):
    """The ``hf`` backend; while ``broken`` its first logprob is NaN (a faulty engine)."""

    broken = False

    def generate(self, prompt_ids_B, sampling, prompts=None):
        ro = super().generate(prompt_ids_B, sampling, prompts)
        if NanSwitchBackend.broken:
            row = next(i for i, c in enumerate(ro.completion_ids_B) if c)
            ro.sampling_logprobs_B[row][0] = float("nan")
        return ro


def test_nonfinite_allowance_restarts_on_resume(tmp_path):
    opts = (*QUICK, "objective.name=policy_gradient", "rollout.backend=hf_nan_switch_test")
    opts = (*opts, "train.max_nonfinite=2", "train.checkpoint_every=1", "train.steps=4")
    NanSwitchBackend.broken = True
    try:
        with pytest.raises(TrainingError, match=r"2 steps had a NaN/inf loss .* the student's"):
            train(make_config(tmp_path, *opts))
    finally:
        NanSwitchBackend.broken = False
    assert ckpt.latest_checkpoint(tmp_path).name == "step-00000002"
    result = train(make_config(tmp_path, *opts))  # the cause fixed: the run goes on to the end
    assert result.steps == 4 and result.nonfinite_steps == 2  # the run's total is kept
