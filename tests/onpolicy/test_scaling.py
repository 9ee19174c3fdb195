"""`onpolicy scaling`: the distillation scaling-law fit on synthetic runs from known laws."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from onpolicy.cli import main as cli_main
from onpolicy.errors import DataError
from onpolicy.scaling import analyse, capacity_gap, fit_law, get_law, read_runs, synthetic_runs
from onpolicy.scaling.fit import kfold, largest_out
from onpolicy.scaling.laws import internal

N_S = [1e6, 3e6, 1e7, 3e7, 1e8]
D_S = [2e7, 1e8, 5e8, 2e9]
ADDITIVE = {"E": 1.2, "B": 400.0, "a": 0.35, "C": 60.0, "b": 0.3, "g": 0.4, "A": 1.0, "d": 0.25}
BUSBRIDGE = {
    "c0": 2.5, "c1": 0.6, "f1": 1.0, "d1": 1.1, "A": 30.0, "alpha": 0.3, "B": 80.0,
    "beta": 0.3, "gamma": 0.6,
}  # fmt: skip
SUPERVISED = {"E": 1.7, "A": 30.0, "alpha": 0.3, "B": 80.0, "beta": 0.3, "gamma": 1.0}


def _additive_runs(noise=0.0, seed=0):
    return synthetic_runs(
        get_law("additive"), ADDITIVE, N_S, D_S, [2.0, 2.5, 3.0], noise=noise, seed=seed
    )


def _busbridge_runs(noise=0.0):
    law = get_law("busbridge")
    return synthetic_runs(
        law, BUSBRIDGE, N_S, D_S, [1.5, 2.0, 2.5, 3.0, 3.5], noise=noise, supervised=SUPERVISED
    )


@pytest.mark.parametrize(("form", "truth"), [("additive", ADDITIVE), ("busbridge", BUSBRIDGE)])
def test_recovers_known_coefficients_from_noise_free_runs(form, truth):
    runs = _additive_runs() if form == "additive" else _busbridge_runs()
    fit = fit_law(get_law(form), runs)
    assert fit.rmse < 1e-8
    for key, value in truth.items():
        assert fit.coefficients[key] == pytest.approx(value, rel=1e-4), key


def test_noisy_runs_held_out_error_and_bootstrap_intervals():
    sigma = 0.005  # loss units, ~0.2% of a student loss here
    runs = _additive_runs(noise=sigma)
    report = analyse(runs, "additive", samples=40, folds=5)
    kf, largest = report.held_out
    # stated error: k-fold held-out RMSE within 1.5 sigma (the noise floor is sigma itself), the
    # extrapolation to a 3.3x larger student within 4 sigma at every run
    assert kf.kind == "kfold" and len(kf.observed) == len(runs)
    assert kf.rmse < 1.5 * sigma and kf.mean_rel < 0.005
    assert largest.kind == "largest" and len(largest.observed) == len(D_S) * 3
    assert largest.max_abs < 4 * sigma
    covered = [
        report.intervals[k].low <= v <= report.intervals[k].high for k, v in ADDITIVE.items()
    ]
    assert sum(covered) >= 7, report.intervals  # 95% intervals: 8 coefficients, one may miss
    for k, v in ADDITIVE.items():  # and the fit is close to the truth
        assert report.fit.coefficients[k] == pytest.approx(v, rel=0.1, abs=0.02), k


def test_busbridge_held_out_runs_on_noisy_data():
    law = get_law("busbridge")
    runs = _busbridge_runs(noise=0.005)
    fit = fit_law(law, runs)
    assert kfold(law, runs, fit).rmse < 0.0075
    assert largest_out(law, runs, fit).max_abs < 0.03


def test_capacity_gap_curve():
    runs = _busbridge_runs()
    law = get_law("busbridge")
    sup = float(runs.supervised_loss[-1])
    teacher = np.linspace(0.8, 4.0, 200)
    curve = capacity_gap(law, internal(law, BUSBRIDGE), 1e8, 2e9, teacher, sup)
    best = int(np.argmin(curve))
    assert 0 < best < len(teacher) - 1  # an interior minimum: too strong a teacher hurts
    assert np.all(curve >= teacher)  # the published form never predicts L_S < L_T
    report = analyse(runs, "busbridge", samples=0)
    assert report.gap.best_teacher_loss < report.gap.teacher_losses[-1]
    additive = get_law("additive")
    line = capacity_gap(additive, internal(additive, ADDITIVE), 1e8, 2e9, teacher)
    assert np.all(np.diff(line) > 0)  # the additive form is monotone: no gap possible
    slope = ADDITIVE["g"] * (2e9 / 1e8) ** -ADDITIVE["d"]
    np.testing.assert_allclose(np.diff(line) / np.diff(teacher), slope, rtol=1e-9)


def _write(runs, path, kind):
    rows = [
        {"name": n, "student_params": a, "tokens": b, "teacher_loss": c, "student_loss": d}
        for n, a, b, c, d in zip(
            runs.names, runs.student_params, runs.tokens, runs.teacher_loss, runs.student_loss,
            strict=True,
        )
    ]  # fmt: skip
    if kind == "csv":
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_tables_and_cli(tmp_path, capsys):
    runs = _additive_runs(noise=0.005)
    _write(runs, tmp_path / "runs.csv", "csv")
    _write(runs, tmp_path / "runs.jsonl", "jsonl")
    a, b = read_runs(tmp_path / "runs.csv"), read_runs(tmp_path / "runs.jsonl")
    np.testing.assert_array_equal(a.student_loss, b.student_loss)
    assert a.names == runs.names and np.isnan(a.supervised_loss).all()
    argv = ["scaling", "--runs", str(tmp_path / "runs.csv"), "--bootstrap", "5"]
    assert cli_main([*argv, "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "| g |" in out and "largest student" in out
    saved = json.loads((tmp_path / "out" / "scaling.json").read_text())
    assert saved["fit"]["coefficients"]["g"] == pytest.approx(0.4, rel=0.05)
    assert (tmp_path / "out" / "scaling.md").is_file() and (
        tmp_path / "out" / "scaling.png"
    ).is_file()
    # the published form needs the supervised column: a one-line error, exit status 2
    assert cli_main([*argv, "--form", "busbridge"]) == 2
    assert "supervised_loss" in capsys.readouterr().err


def test_bad_tables(tmp_path):
    (tmp_path / "bad.csv").write_text("student_params,tokens,student_loss\n1,2,3\n")
    with pytest.raises(DataError, match="lacks columns"):
        read_runs(tmp_path / "bad.csv")
    (tmp_path / "nan.csv").write_text(
        "student_params,tokens,teacher_loss,student_loss\n1e6,1e8,two,3\n"
    )
    with pytest.raises(DataError, match="not a number"):
        read_runs(tmp_path / "nan.csv")
    few = _additive_runs().subset(np.arange(8))
    with pytest.raises(DataError, match="cannot fit the 8 coefficients"):
        fit_law(get_law("additive"), few)
    with pytest.raises(DataError, match="does not exist"):
        read_runs(tmp_path / "nothing.csv")
