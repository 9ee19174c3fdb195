"""examples/evidence/regime_map.py: the committed data file is complete and agrees with itself
(per-seed differences against the printed mean ± sd, arm and SFT scores against the difference,
the computed verdicts against the reports' words), the two verdict rules by hand, and the tables
and the figure render."""

from __future__ import annotations

import json
import re

import pytest

from examples.evidence.regime_map import (
    DATA,
    compare_verdict,
    diff_stats,
    figure,
    load,
    main,
    paired_verdict,
    update,
)
from examples.evidence.report import paired_rule, verdict

RESULTS = DATA.parent


@pytest.fixture(scope="module")
def data():
    return load(DATA)


def _arms(data):
    for cell in data["cells"]:
        for arm in cell["arms"]:
            yield cell, arm


def test_every_cell_complete_and_its_report_committed(data):
    ids = [c["id"] for c in data["cells"]]
    assert len(ids) == len(set(ids))
    for cell in data["cells"]:
        if cell.get("pending"):
            assert cell["arms"] == [] and cell.get("branch")
            continue
        assert cell["arms"], cell["id"]
        for report in cell["reports"]:
            assert (RESULTS / report).is_file(), f"{cell['id']}: {report} is not committed"


def test_per_seed_differences_match_the_printed_mean_and_sd(data):
    checked = 0
    for cell, arm in _arms(data):
        text, xs = arm.get("text", ""), arm.get("per_seed")
        m = re.match(r"([+-]?\d\.\d{3}) ± (\d\.\d{3})", text)
        if not (xs and m):
            continue
        mean, sd, n = diff_stats(arm)
        assert n == arm["n"] == len(xs), cell["id"]
        # both the printed mean ± sd and the per-seed values are rounded to 3 decimals
        assert abs(mean - float(m.group(1))) <= 0.0011, (cell["id"], arm["name"], mean)
        assert abs(sd - float(m.group(2))) <= 0.0011, (cell["id"], arm["name"], sd)
        checked += 1
    assert checked >= 15


def test_arm_and_sft_scores_agree_with_the_difference(data):
    checked = 0
    for cell, arm in _arms(data):
        a, s, stats = arm.get("arm"), arm.get("sft"), diff_stats(arm)
        if not (a and s and stats):
            continue
        if "per_seed" in a and "per_seed" in s:
            got = [x - y for x, y in zip(a["per_seed"], s["per_seed"], strict=True)]
            assert got == pytest.approx(arm["per_seed"], abs=1e-9), (cell["id"], arm["name"])
        else:  # three numbers rounded to 3 decimals
            assert abs((a["mean"] - s["mean"]) - stats[0]) <= 0.0015, (cell["id"], arm["name"])
        checked += 1
    assert checked >= 25


def test_computed_verdicts_match_the_reports_but_one(data):
    differ = set()
    for cell, arm in _arms(data):
        said = arm.get("report_verdict")
        if said is not None and said != paired_verdict(arm, cell["higher_is_better"]):
            differ.add((cell["id"], arm["name"], arm["accounting"]))
    # evidence-ratio-large.md reads its 5-seed free gap with a 2-sd rule, not 2 standard errors
    assert differ == {("short-ratio-large", "reverse_kl", "free")}


def test_paired_rule_by_hand():
    assert paired_rule(0.070, 0.043, 3) == "win"  # 2 se = 0.0497
    assert paired_rule(0.071, 0.062, 5) == "win"  # 2 se = 0.0555
    assert paired_rule(0.052, 0.062, 3) == "tie"  # 2 se = 0.0716
    assert paired_rule(-0.047, 0.012, 3) == "loss"
    assert paired_rule(0.0, 0.0, 3) == "tie"
    assert paired_rule(-0.12, 0.0, 1) == "?"
    assert verdict([0.08, 0.13, 0.10, 0.11, 0.095]) == "**wins**"
    assert verdict([-0.03, -0.075, 0.03]) == "ties"
    lower = {"per_seed": [-0.2, -0.3], "n": 2}  # KL/char: lower is better, so negative wins
    assert paired_verdict(lower, higher_is_better=False) == "win"
    assert paired_verdict({"text": "not measured"}, True) == "–"


def test_compare_rule_by_hand():
    arm = {"arm": {"mean": 0.935, "sd": 0.035}, "sft": {"mean": 0.832, "sd": 0.044}, "n": 3}
    assert compare_verdict(arm, True) == "win"  # 0.103 > 2 x 0.044
    arm["arm"]["mean"] = 0.900  # 0.068 < 0.088
    assert compare_verdict(arm, True) == "tie"
    kl = {"arm": {"mean": 0.5, "sd": 0.01}, "sft": {"mean": 0.9, "sd": 0.02}, "n": 2}
    assert compare_verdict(kl, False) == "win" and compare_verdict(kl, True) == "loss"
    assert compare_verdict({"per_seed": [0.1], "arm": kl["arm"], "sft": kl["sft"]}, True) == "?"
    assert compare_verdict({"mean": 0.1, "sd": 0.0, "n": 3}, True) == "–"


def test_load_names_a_cell_that_lacks_a_field(tmp_path):
    raw = json.loads(DATA.read_text())
    del next(c for c in raw["cells"] if c["id"] == "short-cold")["wall"]
    bad = tmp_path / "map.json"
    bad.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"'short-cold' lacks wall"):
        load(bad)


def test_tables_and_figure_render(data, tmp_path, capsys):
    out = tmp_path / "map.png"
    main(["--figure", str(out)])
    printed = capsys.readouterr().out
    for cell in data["cells"]:
        assert f"**{cell['id']}**" in printed
    assert "+0.075 ± 0.060 **win**" in printed  # ratio-large GKD, paid, 5 seeds
    assert out.read_bytes()[:4] == b"\x89PNG"
    figure(data, tmp_path / "again.png")
    assert (tmp_path / "again.png").stat().st_size > 10_000


def test_committed_report_tables_are_current(data, tmp_path):
    report = RESULTS / "regime-map.md"
    copy = tmp_path / "regime-map.md"
    copy.write_text(report.read_text())
    update(copy, data)
    assert copy.read_text() == report.read_text(), "rerun regime_map.py --update"
    (tmp_path / "bare.md").write_text("no marker\n")
    with pytest.raises(ValueError, match="has no line"):
        update(tmp_path / "bare.md", data)
