"""Faults while training: a diverging run stops non-zero naming the last good checkpoint; a
teacher's NaN is blamed on the teacher; a teacher that masks tokens with -inf trains
(diagnostics.py, loop.py, losses/kernels.py)."""

from __future__ import annotations

import dataclasses
import math

import pytest
from trainer_configs import TEACHER, make_config

from onpolicy.errors import TrainingError
from onpolicy.models import load_model, load_tokenizer, resolve_model_path, save_student
from onpolicy.trainer import train
from onpolicy.trainer.diagnostics import divergence, teacher_nonfinite
from onpolicy.trainer.loop import train_step
from onpolicy.trainer.run import make_accelerator
from onpolicy.trainer.setup import build_components
from onpolicy.types import Prompt

QUICK = ("eval.num_prompts=0", "train.micro_batch_size=2", "train.save_final=false")


def _rec(loss, grad, entropy=None):
    r = {"train/loss": loss, "train/grad_norm": grad, "train/applied": 1.0}
    return r if entropy is None else {**r, "diag/student_entropy": entropy}


def test_divergence_rules_on_step_records():
    healthy = [_rec(2.0 - 0.1 * i, 0.5, 1.2) for i in range(12)]
    assert divergence(healthy) is None
    assert "gradient norm was 0" in divergence([*healthy[:3], *[_rec(9.0, 0.0)] * 5])
    assert divergence([_rec(0.0, 0.0)] * 6) is None  # student == teacher: nothing to learn
    assert divergence([*healthy[:3], *[_rec(9.0, 0.0)] * 4]) is None  # not yet 5 steps
    assert "entropy" in divergence([*healthy[:3], *[_rec(3.0, 0.3, 1e-5)] * 5])
    assert "exceeded 100x" in divergence([*healthy[:5], *[_rec(1e4, 3.0)] * 5])
    skipped = {**_rec(float("nan"), float("nan")), "train/applied": 0.0}
    assert divergence([*[_rec(9.0, 0.0)] * 4, skipped]) is None  # skipped steps do not count


@pytest.mark.slow  # ~20 s alone, a minute on a loaded machine
def test_lr_099_without_clipping_stops_naming_the_last_good_checkpoint(tmp_path):
    cfg = make_config(
        tmp_path,
        *QUICK,
        "optim.lr=0.99",
        "optim.grad_clip=null",
        "train.steps=14",
        "train.checkpoint_every=2",
        "train.keep_checkpoints=10",
    )
    with pytest.raises(TrainingError) as err:
        train(cfg)
    msg = str(err.value)
    assert msg.startswith("training diverged at step") and "gradient norm was 0" in msg
    assert "the last good checkpoint is" in msg and len(msg.splitlines()) == 1
    assert not (tmp_path / "final").exists()  # the collapsed student is not saved as a result


@pytest.fixture(scope="module")
def nan_teacher(tmp_path_factory):
    """The tests' teacher with NaN in one output row (a broken float16 export, say)."""
    src = resolve_model_path(TEACHER)
    model, tok = load_model(src), load_tokenizer(src)
    model.get_output_embeddings().weight.data[7] = float("nan")
    out = tmp_path_factory.mktemp("nan_teacher")
    save_student(model, tok, out)
    return out


def test_teacher_nan_is_blamed_on_the_teacher(tmp_path, nan_teacher):
    cfg = make_config(tmp_path, *QUICK, f"teacher.path={nan_teacher}", "train.steps=3")
    cfg.train.max_nonfinite = 2
    with pytest.raises(TrainingError, match="the TEACHER's scores held NaN/\\+inf values"):
        train(cfg)


class _MaskingTeacher:
    """A teacher that forbids some tokens: their logits are -inf (e.g. a constrained vocabulary)."""

    def __init__(self, inner, banned):
        self.inner, self.banned = inner, banned

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def score(self, rollout):
        scores = self.inner.score(rollout)
        scores.logits_N_V[:, self.banned] = float("-inf")
        return scores


@pytest.mark.parametrize(
    "objective",
    [("objective.name=reverse_kl",), ("objective.name=gkd", "objective.params.lmbda=1")],
)
def test_teacher_with_minus_inf_mask_trains(tmp_path, objective):
    cfg = make_config(tmp_path, *QUICK, *objective)
    accelerator = make_accelerator(cfg)
    c = build_components(cfg, accelerator)
    banned = list(range(40, 60))
    c = dataclasses.replace(c, teacher=_MaskingTeacher(c.teacher, banned))
    prompts = [Prompt(text="What is 1 plus 1?"), Prompt(text="Name a colour.")]
    result = train_step(c, [prompts], 0, accelerator, 1.0)
    assert result.applied and not result.nonfinite and math.isfinite(result.loss)
    assert result.metrics["diag/teacher_nonfinite"] == 0  # a -inf mask is not a fault
    rollout = c.backend.generate([[1, 2, 3]], c.sampling)
    assert teacher_nonfinite(c.teacher.score(rollout)) == 0
