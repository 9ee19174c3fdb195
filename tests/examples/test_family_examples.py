"""The distillation families' recipes and examples run as documented, shortened to 2 steps:
hidden states (same tokenizer, and across tokenizers through ``configs/cross_tokenizer.yaml``),
Hinton's mix and a student cut from the teacher. (``examples/scaling_grid.py --runs`` refits the
committed grid in minutes, too slow here; ``tests/onpolicy/test_scaling.py`` covers the CLI.)"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
SHORT = ("train.steps=2", "eval.num_prompts=2", "rollout.max_new_tokens=8")


def _run_example(monkeypatch, name: str, *args: str) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))  # the examples import their _common
    monkeypatch.setattr(sys, "argv", [str(EXAMPLES / f"{name}.py"), *args])
    runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name="__main__")


@pytest.mark.parametrize(
    ("name", "extra"),
    [
        ("hidden_states", ()),
        ("hinton_kd", ()),
        ("cross_tokenizer", ("hidden.weight=0.5", "hidden.loss=cosine")),
    ],
)
def test_family_example_runs(monkeypatch, capsys, tmp_path, name, extra):
    _run_example(monkeypatch, name, *SHORT, *extra, f"train.output_dir={tmp_path}")
    assert f"{name}: 2 steps, student saved to {tmp_path / 'final'}" in capsys.readouterr().out
    assert (tmp_path / "final" / "model.safetensors").is_file()


def test_cut_student_recipe_runs(monkeypatch, capsys, tmp_path):
    """``examples/cut_student.py``'s two steps: cut layers 0 and 2, train the recipe on them."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    from _common import run_recipe

    from onpolicy.init_student import init_student

    made = init_student("tiny:small,seed=1,pretrain_steps=300", tmp_path / "init", layers=[0, 2])
    assert made.student_params < made.teacher_params
    student = f"student.path={tmp_path / 'init'}"
    result = run_recipe("cut_student", [student, *SHORT, f"train.output_dir={tmp_path / 'run'}"])
    assert result.steps == 2 and "eval/kl_per_token" in result.eval_after
