"""Aggregation over seeds, the Markdown table and config validation (no training)."""

from __future__ import annotations

import json

import pytest

from onpolicy.compare import load_config, parse_config
from onpolicy.compare.methods import Budget
from onpolicy.compare.report import aggregate, markdown, write_report
from onpolicy.compare.run import JobResult
from onpolicy.errors import ConfigError


def _job(method, seed, score, status="ok", error=None):
    return JobResult(
        method=method,
        seed=seed,
        status=status,
        error=error,
        score=score,
        kl_per_char=None if score is None else 1.0 - score,
        agreement=score,
        latency_s=0.01,
        tokens_per_s=100.0,
        budget={
            "student_train_tokens": 10,
            "student_gen_tokens": 5,
            "teacher_tokens": 20,
            "seconds": 2.0,
        },
        flops=1e6,
        params=100,
        disk_bytes=2_000_000,
        flops_free=1e6,
        flops_paid=2e6,
    )


def test_aggregate_mean_spread_and_failures():
    teacher = JobResult(
        "teacher",
        0,
        "ok",
        score=0.8,
        latency_s=0.02,
        tokens_per_s=50.0,
        params=1000,
        disk_bytes=4_000_000,
    )
    jobs = [
        _job("sft", 0, 0.2),
        _job("sft", 1, 0.4),
        _job("bad", 0, None, "failed", "ConfigError: unknown objective 'x'"),
        _job("half", 0, 0.5),
        _job("half", 1, None, "failed", "RuntimeError: boom"),
    ]
    rows = {r.method: r for r in aggregate(teacher, jobs)}
    assert list(rows) == ["teacher", "sft", "bad", "half"]
    sft = rows["sft"]
    assert sft.score == pytest.approx(0.3) and sft.score_std == pytest.approx(0.1414213, rel=1e-5)
    assert sft.retained == pytest.approx(0.3 / 0.8)
    assert sft.student_tokens == 15 and sft.teacher_tokens == 20 and sft.disk_mb == 2.0
    assert rows["bad"].status == "failed" and rows["bad"].score is None
    assert rows["half"].status == "partial" and rows["half"].score == 0.5
    table = markdown(list(rows.values()))
    assert "| bad | failed |" in table and "unknown objective 'x'" in table
    assert "| sft | ok | 2 | 0.300 ± 0.141 | 38% |" in table


def test_write_report_files(tmp_path):
    teacher = JobResult(
        "teacher",
        0,
        "ok",
        score=1.0,
        latency_s=0.02,
        tokens_per_s=50.0,
        params=1000,
        disk_bytes=4_000_000,
    )
    jobs = [_job("sft", 0, 0.5), _job("x", 0, None, "failed", "E: e")]
    rows = aggregate(teacher, jobs)
    meta = {"task": {"name": "t"}, "steps": 3, "batch_size": 2, "lr": 1e-3, "seeds": [0]}
    paths = write_report(rows, jobs, meta, tmp_path, "exact_match")
    data = json.loads(paths["json"].read_text())
    assert [r["method"] for r in data["rows"]] == ["teacher", "sft", "x"]
    assert data["jobs"][1]["status"] == "failed"
    assert "3 optimizer steps x 2 prompts" in paths["markdown"].read_text()
    assert paths["plot"].stat().st_size > 1000  # a PNG was drawn


def test_budget_flops():
    b = Budget(student_train_tokens=10, student_gen_tokens=4, teacher_tokens=7)
    assert b.flops(100, 1000) == 6 * 100 * 10 + 2 * 100 * 4 + 2 * 1000 * 7


def test_config_validation(tmp_path):
    good = {
        "task": {"name": "arithmetic"},
        "models": {"kind": "arithmetic"},
        "methods": [
            "untouched",
            {"name": "rkl2", "objective": "reverse_kl", "params": {"beta": 0.9}},
        ],
    }
    cfg = parse_config(good)
    assert [m.name for m in cfg.methods] == ["untouched", "rkl2"]
    assert cfg.methods[1].params == {"beta": 0.9}
    with pytest.raises(ConfigError, match="unknown method"):
        parse_config({**good, "methods": ["nope"]})
    typo = {"name": "x", "objective": "sft", "paramz": {}}
    with pytest.raises(ConfigError, match=r"method keys \['paramz'\] in 'x'.*mean 'params'\?$"):
        parse_config({**good, "methods": [typo]})
    with pytest.raises(ConfigError, match="distinct"):
        parse_config({**good, "methods": ["sft", "sft"]})
    with pytest.raises(ConfigError, match="unknown compare config keys"):
        parse_config({**good, "sedes": [0]})
    with pytest.raises(ConfigError, match="unknown train keys"):
        parse_config({**good, "train": {"stepz": 3}})
    with pytest.raises(ConfigError, match=r"models\.kind"):
        parse_config({**good, "models": {"kind": "hub"}})
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps(good))
    cfg = load_config(path, ["train.steps=7", "seeds=[1,2]"])
    assert cfg.train.steps == 7 and cfg.seeds == [1, 2]
    with pytest.raises(ConfigError, match="key=value"):
        load_config(path, ["train.steps"])


def test_verdict_sentences_and_report_sections(tmp_path):
    from onpolicy.compare.report_text import verdict

    teacher = JobResult("teacher", 0, "ok", score=1.0, latency_s=0.02, tokens_per_s=5.0, params=9)
    clear = aggregate(teacher, [_job(m, s, v) for m, s, v in (
        ("sft", 0, 0.80), ("sft", 1, 0.82), ("rkl", 0, 0.40), ("rkl", 1, 0.44))])  # fmt: skip
    text = verdict(clear, "paid")
    assert "**sft** leads on score (0.810) ahead of rkl (0.420) by 0.390" in text
    assert "a clear gap" in text and "1.00x rkl's FLOPs" in text
    close = aggregate(teacher, [_job(m, s, v) for m, s, v in (
        ("sft", 0, 0.5), ("sft", 1, 0.7), ("rkl", 0, 0.45), ("rkl", 1, 0.65))])  # fmt: skip
    assert "not a clear gap" in verdict(close, "paid")
    tie = aggregate(teacher, [_job("a", 0, 0.5), _job("b", 0, 0.5)])
    assert verdict(tie, "free") == "Verdict: a, b tie on score (0.500); no method leads."
    jobs = [_job("sft", 0, 0.5), _job("sft", 1, 0.6)]
    jobs[1].steps, jobs[0].steps = 118, 117
    jobs[0].samples, jobs[1].samples = ["4", "5", "6", "7"], ["x", "y", "z", "w"]
    rows = aggregate(teacher, jobs)
    assert rows[1].steps_per_seed == "117 / 118"
    meta = {"task": {"name": "t", "digits": 2}, "steps": 3, "batch_size": 2, "lr": 1e-3,
            "seeds": [0, 1], "methods": [{"name": "sft"}], "num_eval": 4,
            "budget": {"match": "flops", "reference": "sft", "flops": {0: 1e6},
                       "completion_tokens": None}, "max_new_tokens": 8}  # fmt: skip
    doc = write_report(rows, jobs, meta, tmp_path, "exact_match", teacher, None, ["1+1=", "2+2="])
    md = doc["markdown"].read_text()
    assert md.startswith("# t (digits 2): sft") and "- **Seeds:** 0, 1" in md
    assert "117 / 118" in md and "**Prompt 2:** `2+2=`" in md and "- sft: `x`" not in md
    assert "- sft: `4`" in md and "- sft: `5`" in md
    assert "recorded FLOPs are lower than estimated" in md
    assert "{'name'" not in md  # no raw dict in the heading


def test_start_titles_name_a_plateau_that_was_not_reached():
    from types import SimpleNamespace

    from onpolicy.compare.report import start_titles

    def record(seed, reached):
        branch = {"name": "plateau", "step": 1000, "reached": reached}
        return {"seed": seed, "method": "sft", "branches": [branch]}

    reached = start_titles(SimpleNamespace(warm=[record(0, True), record(1, True)]))
    assert reached["plateau"] == "Warm start: sft warm-up at its plateau, step 1000 / 1000 per seed"
    missed = start_titles(SimpleNamespace(warm=[record(0, True), record(1, False)]))
    assert "plateau not reached" in missed["plateau"] and "at its plateau" not in missed["plateau"]
