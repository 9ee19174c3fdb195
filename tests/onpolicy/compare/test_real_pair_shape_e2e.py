"""The real-pair comparison's shape (``configs/compare/real_pair_cut.yaml``) end to end on tiny
models: a ``kind: paths`` teacher, a student cut from its layers by ``init_student``, a chat
``dataset`` task without a metric (``metric: none``), an SFT warm-up branched at a fixed step, then
SFT and on-policy reverse KL at equal FLOPs with curves. The report has no score anywhere, so its
curves, their summary and the warm-up are on the KL per byte to the teacher."""

from __future__ import annotations

import json

import pytest

from onpolicy.compare import compare, parse_config
from onpolicy.init_student import init_student
from onpolicy.tiny import corpus_pairs, tiny_model_dir


@pytest.mark.slow
def test_metric_free_warm_start_comparison_on_a_cut_student(tmp_path, monkeypatch):
    monkeypatch.setenv("ONPOLICY_CACHE", str(tmp_path / "cache"))
    teacher = tiny_model_dir("tiny", "bpe", seed=1, pretrain_steps=30)
    student = tmp_path / "student"
    init_student(teacher, student, layers=[1])  # one of its two layers
    data = tmp_path / "prompts.jsonl"
    rows = [{"prompt": q, "reference": a} for q, a in corpus_pairs()[:24]]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    raw = {
        "task": {"name": "dataset", "path": str(data), "chat": True, "metric": "none",
                 "eval_fraction": 0.25},
        "models": {"kind": "paths", "teacher": str(teacher), "student": str(student)},
        "methods": ["untouched", "sft", "reverse_kl"],
        "train": {"steps": 2, "batch_size": 2, "lr": 1e-3, "max_new_tokens": 8},
        "budget": {"match": "flops", "reference": "reverse_kl", "teacher_data": "paid"},
        "eval": {"every": 1},
        "validation": {"size": 4},
        "warm_start": {"method": "sft", "steps": 2, "every": 1, "branch_at": [2],
                       "cold": False, "lr": 3e-2, "cache_dir": str(tmp_path / "warm")},
        "output_dir": str(tmp_path / "out"),
    }  # fmt: skip
    cfg = parse_config(raw)
    _, paths = compare(cfg, progress=False)
    report = json.loads(paths["json"].read_text())
    jobs = {j["method"]: j for j in report["jobs"]}
    assert all(j["status"] == "ok" and j["start"] == "step2" for j in jobs.values())
    assert all(j["score"] is None for j in jobs.values())
    for method in ("sft", "reverse_kl"):
        curve = jobs[method]["curve"]
        assert curve[0]["step"] == 0 and all(p["score"] is None for p in curve)
        assert all(p["kl_per_byte"] is not None and p["teacher_nll_per_byte"] for p in curve)
    # the collapse diagnostics of the greedy held-out completions, at the end and on every point
    for j in jobs.values():
        assert 0.0 <= j["repetition"] <= 1.0 and 0.0 <= j["cut_share"] <= 1.0
    for method in ("sft", "reverse_kl"):
        curve = jobs[method]["curve"]
        assert all(0.0 <= p["repetition"] <= 1.0 and 0.0 <= p["cut_share"] <= 1.0 for p in curve)
        # the trainer's last evaluation and the harness's end point see the same greedy texts
        last = curve[-1]
        assert last["repetition"] == pytest.approx(jobs[method]["repetition"], abs=1e-9)
        assert last["cut_share"] == pytest.approx(jobs[method]["cut_share"], abs=1e-9)
    # both arms start from the same warm weights: identical step-0 evaluations
    assert jobs["sft"]["curve"][0] == jobs["reverse_kl"]["curve"][0]
    warm = report["warm_up"][0]["curve"]
    assert [p["step"] for p in warm] == [0, 1, 2] and warm[0]["kl_per_byte"] is not None
    text = paths["markdown"].read_text()
    for needle in ("Verdict:", "lowest KL/byte", "validation KL/byte", "![curves](curves.png)",
                   "![warm-up](warm_up.png)", "| repetition (± sd) | cut at limit |",
                   "repetition, cut at the lowest KL/byte"):  # fmt: skip
        assert needle in text
    assert paths["curves"].stat().st_size > 1000 and paths["warm_up"].stat().st_size > 1000
