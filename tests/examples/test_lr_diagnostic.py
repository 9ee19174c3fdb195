"""examples/evidence/lr_diagnostic.py: the learning-rate trials' validation end points and each
run's end and best point with the collapse diagnostics; hand-made reports."""

from __future__ import annotations

import json

from examples.evidence.lr_diagnostic import best_point, groups, main, run_table, trial_table


def _point(step, kl, rep):
    return {"step": step, "flops_free": 1e9 * step, "flops_paid": 2e9 * step, "seconds": step,
            "kl_per_byte": kl, "teacher_nll_per_byte": kl + 0.5, "repetition": rep,
            "cut_share": rep / 2, "forward_nll_per_byte": None}  # fmt: skip


def _job(method, lr, curve, kl_char=1.0):
    return {"method": method, "seed": 0, "status": "ok", "lr": lr, "steps": 10,
            "kl_per_char": kl_char, "curve": curve}  # fmt: skip


def test_best_point_is_the_lowest_kl_earliest_on_a_tie():
    curve = [_point(0, 1.3, 0.1), _point(5, 0.4, 0.7), _point(10, 0.4, 0.2)]
    assert best_point(curve)["step"] == 5


def test_run_table_end_and_best_by_hand():
    curve = [_point(0, 1.3, 0.1), _point(5, 0.4, 0.7), _point(10, 0.9, 0.6)]
    jobs = [_job("untouched", None, [], 1.2), _job("reverse_kl", 3e-5, curve),
            {**_job("gkd", 1e-4, curve), "status": "error"}]  # fmt: skip
    lines = run_table(jobs)
    assert lines[0].count("|") == lines[1].count("|") == lines[2].count("|") == 17  # 16 columns
    rows = [line.split(" | ") for line in lines[2:]]
    assert len(rows) == 2  # the failed run is left out
    untouched, rkl = rows
    # untouched: the step-0 point of its seed's trained run, at end and best alike
    assert untouched[2:5] == ["–", "10", "1.200"] and untouched[5:8] == ["1.300", "1.800", "0.100"]
    assert untouched[10] == "0" and untouched[11] == "1.300"
    assert rkl[2] == "3e-05"
    assert rkl[5:9] == ["0.900", "1.400", "0.600", "0.300"] and rkl[9] == "–"  # the end
    assert rkl[10] == "5" and rkl[11:15] == ["0.400", "0.900", "0.700", "0.350"]  # the best


def test_trial_table_and_main(tmp_path, capsys):
    metrics = {"eval/kl_per_token": 0.8, "eval/kl_per_byte": 0.25, "eval/teacher_nll_per_byte": 1.0,
               "eval/repetition_rate": 0.5, "eval/truncated_share": 1.0}  # fmt: skip
    trials = [{"method": "reverse_kl", "lr": 1e-4, "start": "step80", "metrics": metrics},
              {"method": "reverse_kl", "lr": 1e-5, "start": "step80",
               "metrics": {**metrics, "eval/kl_per_token": 1.5}}]  # fmt: skip
    lines = trial_table(trials)
    assert lines[2] == "| reverse_kl | 1e-05 | 1.500 | 0.250 | 1.000 | 0.500 | 1.000 |"
    assert lines[3].startswith("| reverse_kl | 1e-04 | 0.800 |")
    path = tmp_path / "report.json"
    jobs = [_job("sft", 1e-4, [_point(0, 1.3, 0.1), _point(5, 1.1, 0.0)])]
    path.write_text(json.dumps({"jobs": jobs, "lr_trials": trials}))
    main([str(path)])
    out = capsys.readouterr().out.splitlines()
    assert out[:4] == lines and out[4] == "" and out[-1].startswith("| sft | 0 | 1e-04 | 10 |")


def test_groups_one_line_per_method_and_rate(tmp_path):
    curve = [_point(0, 1.3, 0.1), _point(5, 0.4, 0.7)]
    jobs = [_job("reverse_kl", 1e-5, curve), _job("reverse_kl", 1e-4, curve),
            _job("untouched", None, [])]  # fmt: skip
    g = groups(jobs)
    assert list(g) == ["seed 0"]
    assert list(g["seed 0"]) == ["reverse_kl lr 1e-05", "reverse_kl lr 1e-04"]
    (line,) = g["seed 0"]["reverse_kl lr 1e-04"]
    assert [p.flops_paid for p in line] == [0.0, 1e10] and line[1].repetition == 0.7
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"jobs": jobs}))
    main([str(path), "--plot", str(tmp_path / "c.png")])
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
