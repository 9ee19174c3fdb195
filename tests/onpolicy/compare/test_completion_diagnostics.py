"""The compare report's collapse diagnostics: the greedy held-out completions' repetition rate
(share of token trigrams already seen earlier in the same completion) and share cut at the length
limit, per run, per method (mean ± sd over seeds), on the curves and in their summary; hand-made
cases, no training (the tiny-model run is in test_real_pair_shape_e2e.py)."""

from __future__ import annotations

import pytest

from onpolicy.compare.curve_plot import curve_panels
from onpolicy.compare.curves import CurvePoint
from onpolicy.compare.evaluate import completion_diagnostics
from onpolicy.compare.report import aggregate, markdown
from onpolicy.compare.report_text import curve_table, diagnostics_at, per_seed_table
from onpolicy.compare.run import JobResult


def test_completion_diagnostics_by_hand():
    # trigrams of the loop: 123, 231, 312, 123 (seen) -> 1 of 4; [5, 6] has none; [7, 7, 7, 7]:
    # 777, 777 (seen) -> 1 of 2; pooled over completions: 2 of 6
    ids = [[1, 2, 3, 1, 2, 3], [5, 6], [7, 7, 7, 7]]
    rep, cut = completion_diagnostics(ids, ["length", "stop", "length"])
    assert rep == pytest.approx(2 / 6) and cut == pytest.approx(2 / 3)
    assert completion_diagnostics([[1, 2, 3, 4]], ["stop"]) == (0.0, 0.0)
    assert completion_diagnostics([], []) == (0.0, 0.0)
    assert completion_diagnostics([[1, 2, 1, 2]], ["length"], n=2) == (pytest.approx(1 / 3), 1.0)


def _job(method, seed, rep, cut):
    return JobResult(
        method=method, seed=seed, status="ok", kl_per_char=1.0, start="step80",
        repetition=rep, cut_share=cut, steps=3, flops_free=1.0, flops_paid=2.0,
    )  # fmt: skip


def test_rows_tables_carry_repetition_and_cut_share():
    teacher = JobResult(method="teacher", seed=0, status="ok", latency_s=0.1, repetition=0.01,
                        cut_share=0.0)  # fmt: skip
    jobs = [_job("sft", 0, 0.1, 0.25), _job("sft", 1, 0.3, 0.5), _job("reverse_kl", 0, 0.7, 1.0)]
    rows = {r.method: r for r in aggregate(teacher, jobs)}
    assert rows["sft"].repetition == pytest.approx(0.2)
    assert rows["sft"].repetition_std == pytest.approx(0.1414, abs=1e-4)  # sample sd of 0.1, 0.3
    assert rows["sft"].cut_share == pytest.approx(0.375)
    lines = markdown(list(rows.values())).splitlines()
    assert lines[0].endswith("| repetition (± sd) | cut at limit |")
    cells = {line.split(" | ")[0][2:]: line.split(" | ") for line in lines[2:]}
    assert cells["sft"][-2:] == ["0.200 ± 0.141", "38% |"]
    assert cells["reverse_kl"][-2:] == ["0.700 ± 0.000", "100% |"]
    assert cells["teacher"][-2:] == ["0.010 ± 0.000", "0% |"]
    per_seed = per_seed_table(jobs).splitlines()
    assert per_seed[0].endswith("| repetition | cut at limit |")
    assert per_seed[4].endswith("| 0.700 | 100% |")
    # a record stored before the fields existed (reuse) still renders, with dashes
    old = JobResult(method="gkd", seed=0, status="ok", kl_per_char=1.0, start="step80")
    row = next(r for r in aggregate(teacher, [old]) if r.method == "gkd")
    assert markdown([row]).splitlines()[2].endswith("| – | – |")


def _curve(kl, rep, cut):
    """Points at steps 0, 5, 10, ... (FLOPs 10 per step), no score."""
    return [
        CurvePoint(5 * i, 50.0 * i, 50.0 * i, float(i), None, None, k, 1.0, r, c)
        for i, (k, r, c) in enumerate(zip(kl, rep, cut, strict=True))
    ]


def test_curve_summary_shows_the_collapse_at_the_lowest_kl():
    # reverse KL's KL/byte falls to 0.4 at step 5 while repetition jumps to 0.7 and every
    # completion is cut; by its end the KL is back up, still looping
    rkl = _curve([1.0, 0.4, 0.9], [0.1, 0.7, 0.6], [0.25, 1.0, 1.0])
    sft = [_curve([1.0, 0.9, 0.8], [0.1, 0.0, 0.1], [0.25, 0.0, 0.5]),
           _curve([1.0, 0.8, 0.9], [0.1, 0.2, 0.1], [0.25, 0.5, 0.0])]  # fmt: skip
    groups = {"step80": {"sft": sft, "reverse_kl": [rkl]}}
    assert diagnostics_at([rkl], "paid", 5) == "0.700 / 100%"
    assert diagnostics_at(sft, "paid", 10) == "0.100 / 25%"  # seed means
    assert diagnostics_at([rkl], "paid", 99) == "– / –"
    text = curve_table(groups, None, "paid", "sft")
    head, rows = text.splitlines()[0], text.splitlines()[2:]
    assert head.endswith("| repetition, cut at the lowest KL/byte | repetition, cut at the last "
                         "evaluation |")  # fmt: skip
    cells = {line.split(" | ")[1]: line.split(" | ") for line in rows}
    assert cells["reverse_kl"][-2:] == ["0.700 / 100%", "0.600 / 100% |"]
    # sft's seed-mean KL is lowest (0.85) at step 5 and at step 10 (0.85): the first is taken
    assert cells["sft"][-2:] == ["0.100 / 25%", "0.100 / 25% |"]
    assert [a for a, _ in curve_panels(groups)] == [
        "kl_per_byte", "teacher_nll_per_byte", "repetition", "cut_share",
    ]  # fmt: skip
