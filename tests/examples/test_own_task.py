"""The "bring your own task and models" example, short form: the three commands of the README guide
(gold-SFT teacher, warmed student, comparison) on the shipped reverse-a-word data, a few steps
each, through the real command line."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from onpolicy.config import DataConfig
from onpolicy.data import read_prompts

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "own_task"


def _run_module():
    spec = importlib.util.spec_from_file_location("own_task_run", EXAMPLE / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_data_is_the_documented_format():
    train = read_prompts(EXAMPLE / "data" / "train.jsonl", DataConfig())
    held_out = read_prompts(EXAMPLE / "data" / "eval.jsonl", DataConfig())
    assert len(train) == 2000 and len(held_out) == 50
    assert not {p.text for p in train} & {p.text for p in held_out}
    p = held_out[0]
    assert p.reference.strip() == p.text.removeprefix("reverse ").removesuffix(":")[::-1]


def test_guide_runs_end_to_end_in_short_form(tmp_path, monkeypatch):
    repo = EXAMPLE.parents[1]
    monkeypatch.chdir(repo)  # the guide's commands run from the repository root
    monkeypatch.setenv("PYTHONPATH", str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = _run_module().main(["--quick", "--out", str(tmp_path)])
    assert (tmp_path / "teacher" / "final" / "config.json").is_file()
    metrics = [json.loads(x) for x in (tmp_path / "teacher" / "metrics.jsonl").open()]
    assert "eval/score" in metrics[0]  # eval.metric: exact_match on the held-out file
    report = (out / "report.md").read_text()
    assert all(f"| {name} " in report for name in ("teacher", "untouched", "gold_sft"))
