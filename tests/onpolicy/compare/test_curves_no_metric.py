"""A task without a metric (``metric: none``, e.g. the real SmolLM2 pair on open chat prompts):
the learning-curve summary, the figure's panels and the warm-up view use the KL per byte to the
teacher (lower is better) instead of the missing score; hand-computed cases, no training."""

from __future__ import annotations

import pytest

from onpolicy.compare.curve_plot import curve_panels, plot_curves, plot_warm_up
from onpolicy.compare.curves import CurvePoint, MeanPoint, best, flops_to_reach, warm_metric
from onpolicy.compare.report_text import curve_table, warm_table


def _pts(*xy):
    return [MeanPoint(i, x, y, 0.0, 1) for i, (x, y) in enumerate(xy)]


def test_lower_is_better_best_and_reach():
    pts = _pts((0, 0.9), (10, 0.5), (20, 0.6), (30, 0.4))
    assert best(pts) == 0.9 and best(pts, lower=True) == 0.4
    assert flops_to_reach(pts, 0.5, lower=True) == 10
    assert flops_to_reach(pts, 0.45, lower=True) == 30
    assert flops_to_reach(pts, 0.3, lower=True) is None
    assert flops_to_reach(pts, 0.5) == 0  # higher is better: the first point already is


def _kl_curve(*kl, nll=1.0, scale=10.0):
    """Points at steps 0, 5, 10, ... with FLOPs ``scale`` per step, no score."""
    return [
        CurvePoint(5 * i, scale * 5 * i, scale * 5 * i + 7, float(i), None, None, v, nll - 0.1 * i)
        for i, v in enumerate(kl)
    ]


def test_kl_curve_table_by_hand():
    groups = {
        "step80": {
            "sft": [_kl_curve(1.0, 0.8, 0.7), _kl_curve(1.0, 0.6, 0.5)],  # mean 1.0, 0.7, 0.6
            "reverse_kl": [_kl_curve(1.0, 0.5, 0.4, scale=20)],  # x 0, 107, 207 (paid)
        }
    }
    text = curve_table(groups, None, "paid", "sft")
    assert "lowest KL/byte" in text and "best score" not in text
    rows = {line.split(" | ")[1]: line.split(" | ") for line in text.splitlines()[2:]}
    sft, rkl = rows["sft"], rows["reverse_kl"]
    assert sft[2] == "0.6000" and rkl[2] == "0.4000"
    # sft's lowest (0.6) is first reached by reverse KL at its step-5 point: paid x = 100 + 7
    assert rkl[3] == "1.07e+02" and sft[3] == "1.07e+02"  # sft reaches it at its step 10: 107
    # common range F = min of the last x: 107 (sft); sft's mean over [0, 107] in trapezoids:
    # points (7, 1.0), (57, 0.7), (107, 0.6): flat 1.0 over [0, 7], then trapezoids
    area = 7 * 1.0 + 50 * (1.0 + 0.7) / 2 + 50 * (0.7 + 0.6) / 2
    assert float(sft[4]) == pytest.approx(area / 107, abs=5e-5)
    assert sft[5] == "0.6000 ± 0.1414"  # the last evaluation, seed mean ± sd
    assert sft[6] == "0.8000" and rkl[6] == "0.8000"  # teacher NLL/byte 1.0 - 0.1 * 2
    assert sft[7].startswith("1.07e+02")


def test_panels_and_warm_view_without_a_score(tmp_path):
    no_score = {"plateau": {"sft": [_kl_curve(1.0, 0.8)]}}
    scored = {"cold": {"sft": [[CurvePoint(0, 0, 0, 0, 0.5, 0.1, 0.2, 0.3)]]}}
    assert [a for a, _ in curve_panels(no_score)] == ["kl_per_byte", "teacher_nll_per_byte"]
    assert [a for a, _ in curve_panels(scored)] == ["score", "kl_per_byte", "teacher_nll_per_byte"]
    record = {
        "seed": 0,
        "method": "sft",
        "curve": [vars(p) for p in _kl_curve(1.2, 0.9, 0.7)],
        "branches": [
            {
                "name": "step10",
                "step": 10,
                "flops": {"free": 100.0, "paid": 107.0},
                "reached": True,
            },
        ],
    }
    assert warm_metric([record]) == ("kl_per_byte", "KL/byte")
    table = warm_table([record])
    assert "| validation KL/byte |" in table and "| 0 | step10 | 10 | 0.7000 |" in table
    scored_record = {**record, "curve": [{**p, "score": 0.25} for p in record["curve"]]}
    assert warm_metric([scored_record]) == ("score", "score")
    assert "| 0 | step10 | 10 | 0.250 |" in warm_table([scored_record])
    pytest.importorskip("matplotlib")
    assert plot_curves(no_score, tmp_path / "c.png", None, "paid").stat().st_size > 1000
    assert plot_warm_up([record], tmp_path / "w.png", "paid").stat().st_size > 1000


def test_plateau_on_the_kl_when_there_is_no_score():
    from onpolicy.compare.curves import plateau_step
    from onpolicy.compare.warm import branch_steps, parse_warm

    # KL/byte 2.0 1.5 1.2 1.15 1.14 1.3: lowest so far 2.0 1.5 1.2 1.15 1.14 1.14; its fall over
    # 2 evaluations: .8 .35 .06 .01 -> flat (< 0.02) at the 6th evaluation, step 50
    curve = _kl_curve(2.0, 1.5, 1.2, 1.15, 1.14, 1.3)
    curve = [CurvePoint(10 * i, 0, 0, 0, None, None, p.kl_per_byte) for i, p in enumerate(curve)]
    assert plateau_step(curve, 2, 0.02, "kl_per_byte") == (50, True)
    assert plateau_step(curve, 2, 0.02) == (50, False)  # no score: the score rule finds nothing
    spec = parse_warm({"method": "sft", "steps": 50, "every": 10, "branch_at": [20, "plateau"],
                       "plateau": {"window": 2, "min_gain": 0.02}})  # fmt: skip
    assert branch_steps(spec, curve) == [("step20", 20, True), ("plateau", 50, True)]
    falling = [CurvePoint(10 * i, 0, 0, 0, None, None, 2.0 - 0.3 * i) for i in range(4)]
    assert branch_steps(spec, falling)[1] == ("plateau", 30, False)  # still falling
