"""The hidden-state projection under multi-process training on CPU (gloo): two processes give the
same losses, student and projection as one process on the same prompts (the projection's
gradients are synchronized), the projection is saved in the checkpoints and the exported
``final/`` student never holds it. DDP for the cross-tokenizer (span-end) variant (the
same-tokenizer one is in ``test_hidden_trainer.py``); FSDP2 for the same-tokenizer one."""

from __future__ import annotations

import pytest
import torch
import yaml
from launch_helpers import ddp_launch_args, losses, train_under_accelerate
from safetensors.torch import load_file
from trainer_configs import base_raw

from onpolicy.config import apply_overrides, from_dict
from onpolicy.trainer import checkpoint as ckpt
from onpolicy.trainer import train

CHAR_TEACHER = "teacher.path='tiny:small,tokenizer=char,seed=1,pretrain_steps=300'"
CROSS = ("hidden.weight=0.5", "hidden.loss=cosine", CHAR_TEACHER, "teacher.mode=auto",
         "objective.name=gold")  # fmt: skip
SAME = ("hidden.weight=0.5", "hidden.loss=mse")  # the tiny student (64) -> the small teacher (128)
EQUAL = (*SAME, "teacher.path='tiny:tiny,seed=1,pretrain_steps=100'", "hidden.projection=none")
# greedy rollouts (deterministic), SGD without clipping (the update is -lr * gradient)
COMMON = ("rollout.temperature=0", "optim.optimizer=sgd", "optim.lr=0.5", "optim.grad_clip=null",
          "optim.scheduler=constant", "train.steps=2", "eval.num_prompts=0")  # fmt: skip


def _two_and_one(tmp_path, launch, overrides):
    """Train with 2 processes x 2 micro-batches of 1 under ``launch`` and with 1 process x 1
    micro-batch of 4 (the same 4 prompts per step); returns the two output folders."""
    raw = apply_overrides(base_raw(tmp_path / "two"), [*overrides, *COMMON])
    raw["train"].update(micro_batch_size=1, grad_accum=2)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    train_under_accelerate(launch, path)
    one = from_dict(apply_overrides(base_raw(tmp_path / "one"), [*overrides, *COMMON]))
    one.train.micro_batch_size = 4
    train(one)
    return tmp_path / "two", tmp_path / "one"


def _assert_not_exported(out):
    final = out / "final"
    assert not (final / "model_1.safetensors").exists()
    assert not any("maps." in k for k in load_file(str(final / "model.safetensors")))


@pytest.mark.slow
def test_ddp_cross_tokenizer_projection_is_synchronized(tmp_path):
    two, one = _two_and_one(tmp_path, ddp_launch_args(), CROSS)
    assert len(losses(two)) == 2
    assert losses(two) == pytest.approx(losses(one), rel=1e-6)
    for name in ("model.safetensors", "model_1.safetensors"):  # the student, the projection
        a, b = (load_file(str(ckpt.latest_checkpoint(d) / name)) for d in (one, two))
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=f"{name} {k}")
    projection = load_file(str(ckpt.latest_checkpoint(two) / "model_1.safetensors"))
    assert sorted(projection) == ["maps.0.weight", "maps.1.weight"]
    _assert_not_exported(two)


@pytest.mark.slow
def test_fsdp_runs_the_hidden_term_without_a_projection(tmp_path):
    """Equal widths (64 and 64), ``projection: none``: the term needs no second module, and two
    FSDP2 processes match one process; the exported student is a plain folder."""
    two, one = _two_and_one(tmp_path, "fsdp_cpu.yaml", EQUAL)
    assert len(losses(two)) == 2
    assert losses(two) == pytest.approx(losses(one), rel=1e-5)
    a = load_file(str(one / "final" / "model.safetensors"))
    b = load_file(str(two / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-5, msg=k)
    _assert_not_exported(two)


@pytest.mark.slow
def test_fsdp_refuses_a_trained_projection_in_one_line(tmp_path):
    """accelerate's FSDP2 ``prepare`` takes one model: a trained projection is refused with an
    actionable line before the teacher loads (not accelerate's ValueError after it)."""
    raw = apply_overrides(base_raw(tmp_path / "two"), [*SAME, *COMMON])
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(AssertionError, match="cannot run under FSDP2") as err:
        train_under_accelerate("fsdp_cpu.yaml", path)
    assert "use DDP, or equal widths with hidden.projection=none" in str(err.value)
