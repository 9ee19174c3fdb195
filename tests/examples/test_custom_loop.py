"""``examples/custom_loop.py``: the per-prompt advantage by hand, and two steps of the loop with its
defaults (advantage whitening, distillation coefficient 0.1) on both tasks."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[2] / "examples" / "custom_loop.py"


@pytest.fixture(scope="module")
def loop():
    spec = importlib.util.spec_from_file_location("custom_loop_example", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_group_advantages_by_hand(loop):
    rewards, groups = [1.0, 0.0, 0.0, 0.0, 1.0, 1.0], [0, 0, 0, 0, 1, 1]
    centred = loop.group_advantages(rewards, groups, scale=False)
    assert centred == pytest.approx([0.75, -0.25, -0.25, -0.25, 0.0, 0.0])
    scaled = loop.group_advantages(rewards, groups, scale=True)
    std = math.sqrt(0.75 * 0.25)  # population std of (1, 0, 0, 0)
    expected = [0.75 / std, -0.25 / std, -0.25 / std, -0.25 / std, 0, 0]
    assert scaled == pytest.approx(expected, rel=1e-5)  # eps 1e-6 in the denominator


@pytest.mark.parametrize("task", ["sum", "count"])
def test_loop_runs_with_its_defaults(loop, task):
    curve = loop.main(["--task", task, "--steps", "2", "--batch", "2", "--eval-every", "1"])
    assert [s for s, _ in curve] == [0, 1, 2]
    assert all(0.0 <= acc <= 1.0 for _, acc in curve)
