"""examples/evidence/backfill_diagnostics.py: stored compare runs get the trainer's repetition rate
and cut share by matching their curve to the run's metrics.jsonl; hand-made records."""

from __future__ import annotations

import json

from examples.evidence.backfill_diagnostics import backfill_all, main


def _eval(step, kl, rep, cut):
    return {"step": step, "eval/kl_per_byte": kl, "eval/repetition_rate": rep,
            "eval/truncated_share": cut}  # fmt: skip


def _record(method, seed, kls):
    curve = [{"step": 5 * i, "kl_per_byte": k} for i, k in enumerate(kls)]
    return {"method": method, "seed": seed, "start": "step80", "curve": curve}


def test_backfill_matches_runs_by_their_kl_curve(tmp_path):
    run_a = {0: _eval(0, 1.3, 0.09, 0.25), 5: _eval(5, 0.9, 0.4, 0.9), 10: _eval(10, 0.5, 0.7, 1.0)}
    run_b = {0: _eval(0, 1.3, 0.09, 0.25), 5: _eval(5, 1.2, 0.05, 0.1)}
    records = {
        "job-a.json": _record("reverse_kl", 0, [1.3, 0.9, 0.5]),
        "job-b.json": _record("sft", 0, [1.3, 1.2]),
        "job-u.json": _record("untouched", 0, []),
        "job-x.json": _record("gkd", 0, [1.3, 0.8]),  # no run has this curve: left out
        "job-v.json": _record("untouched", 1, []),  # no trained run of seed 1
    }
    done = backfill_all(records, [run_b, run_a])
    assert sorted(done) == ["job-a.json", "job-b.json", "job-u.json"]
    a = done["job-a.json"]
    assert [p["repetition"] for p in a["curve"]] == [0.09, 0.4, 0.7]
    assert [p["cut_share"] for p in a["curve"]] == [0.25, 0.9, 1.0]
    assert (a["repetition"], a["cut_share"]) == (0.7, 1.0)  # the last evaluation
    assert (done["job-b.json"]["repetition"], done["job-b.json"]["cut_share"]) == (0.05, 0.1)
    assert (done["job-u.json"]["repetition"], done["job-u.json"]["cut_share"]) == (0.09, 0.25)
    # the command: records written under their own names, unmatched ones unchanged
    reuse, runs = tmp_path / "reuse", tmp_path / "runs" / "step80" / "reverse_kl-seed0"
    reuse.mkdir()
    runs.mkdir(parents=True)
    for name, r in records.items():
        (reuse / name).write_text(json.dumps(r))
    (runs / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in run_a.values()))
    main(["--reuse", str(reuse), "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "o")])
    out = {f.name: json.loads(f.read_text()) for f in (tmp_path / "o").iterdir()}
    assert out["job-a.json"]["repetition"] == 0.7 and "repetition" not in out["job-x.json"]
