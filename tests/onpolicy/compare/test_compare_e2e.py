"""A tiny comparison end to end: models built, two methods trained, a failing method reported as
failed, the table, JSON and plot written."""

from __future__ import annotations

import json

import pytest
from tiny_compare import TINY_MODELS

from onpolicy.compare import compare, parse_config


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("onpolicy-cache")


@pytest.mark.slow
def test_tiny_compare_end_to_end(tiny_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("ONPOLICY_CACHE", str(tiny_cache))
    cfg = parse_config(
        {
            "task": {"name": "arithmetic", "digits": 2, "num_train": 200, "num_eval": 8},
            "models": TINY_MODELS,
            "methods": [
                "untouched",
                "sft",
                "reverse_kl",
                {"name": "broken", "objective": "no_such_objective"},
            ],
            "train": {"steps": 2, "batch_size": 4, "max_new_tokens": 24},
            "seeds": [0],
            "workers": 1,
            "output_dir": str(tmp_path / "out"),
        }
    )
    rows, paths = compare(cfg, progress=False)
    by_name = {r.method: r for r in rows}
    assert list(by_name) == ["teacher", "untouched", "sft", "reverse_kl", "broken"]
    assert by_name["broken"].status == "failed"
    assert "no_such_objective" in by_name["broken"].error
    for name in ("sft", "reverse_kl"):
        row = by_name[name]
        assert row.status == "ok" and 0.0 <= row.score <= 1.0
        assert row.kl_per_char is not None and row.flops > 0 and row.student_tokens > 0
    # on-policy generates with the student and scores with the teacher; SFT samples the teacher
    data = json.loads(paths["json"].read_text())
    jobs = {j["method"]: j for j in data["jobs"]}
    assert jobs["reverse_kl"]["budget"]["student_gen_tokens"] > 0
    assert jobs["sft"]["budget"]["student_gen_tokens"] == 0
    assert jobs["sft"]["budget"]["teacher_tokens"] > 0
    assert jobs["untouched"]["budget"]["student_train_tokens"] == 0
    assert len(jobs["sft"]["losses"]) == 2 and len(jobs["reverse_kl"]["losses"]) == 2
    # every method ran through the trainer: its run folder holds the log and the student, and the
    # budget is what the trainer's steps logged (plus the fixed teacher samples drawn up front)
    run = tmp_path / "out" / "runs" / "reverse_kl-seed0"
    steps = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert (run / "final").is_dir() and not (run / "checkpoints").exists()
    budget = jobs["reverse_kl"]["budget"]
    assert budget["student_gen_tokens"] == sum(r["train/student_gen_tokens"] for r in steps)
    assert budget["teacher_tokens"] == sum(r["train/teacher_tokens"] for r in steps)
    assert "| broken | failed |" in paths["markdown"].read_text()
    assert paths["plot"].stat().st_size > 1000
