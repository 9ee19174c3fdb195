"""Learning curves and the two compute accountings on hand-computed cases (no training): a run's
curve points at the FLOPs of the steps before them, teacher samples free or paid as first used,
the seed-mean curve, FLOPs to reach a score, the area under the curve and the plateau rule."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from onpolicy.compare.accounting import teacher_rows
from onpolicy.compare.curves import (
    CurvePoint,
    MeanPoint,
    account_run,
    auc,
    flops_to_reach,
    mean_curve,
    plateau_step,
)
from onpolicy.compare.lr_search import choose, parse_lr_search
from onpolicy.compare.warm import parse_warm
from onpolicy.errors import ConfigError
from onpolicy.trainer.step_metrics import ComputeBudget

REPO = Path(__file__).resolve().parents[3]

N_S, N_T = 10, 100


def _step(step, train, gen=0, teacher=0, seconds=1.0):
    return {
        "step": step,
        "train/student_train_tokens": train,
        "train/student_gen_tokens": gen,
        "train/teacher_tokens": teacher,
        "train/step_seconds": seconds,
    }


def test_sft_run_free_and_paid_by_hand():
    # SFT: 3 steps of 4 rows, 6 distinct prompts whose fixed teacher samples were drawn up front
    # (60 teacher positions = 10 per sample); the trainer evaluated at steps 0, 2 and 3 (final)
    records = [
        {"step": 0, "eval/score": 0.1, "eval/kl_per_token": 0.9},
        _step(1, train=40),
        _step(2, train=40),
        {"step": 2, "eval/score": 0.3, "eval/kl_per_token": 0.5},
        _step(3, train=40),
        {"step": 3, "final": 1, "eval/score": 0.4, "eval/teacher_nll_per_byte": 0.2},
    ]
    total = ComputeBudget(student_train_tokens=120, teacher_tokens=60, seconds=3.5)
    out = account_run(records, total, (N_S, N_T), ["teacher"] * 3, 4, 6)
    sample = 2 * N_T * 10  # 2000: the teacher generating one sample of 10 positions
    assert out.up_front_flops == 6 * sample
    assert [p.step for p in out.curve] == [0, 2, 3]
    assert [p.flops_free for p in out.curve] == [0, 2 * 6 * N_S * 40, 3 * 6 * N_S * 40]
    # paid: 4 new samples at step 1, the last 2 at step 2, none at step 3
    assert [p.flops_paid for p in out.curve] == [0, 4800 + 6 * sample, 7200 + 6 * sample]
    assert [p.seconds for p in out.curve] == [0, 2.0, 3.0]
    assert out.curve[1].score == 0.3 and out.curve[2].teacher_nll_per_byte == 0.2
    assert out.flops.free == 7200 and out.flops.paid == 7200 + 6 * sample


def test_on_policy_run_pays_no_teacher_data():
    records = [_step(1, 20, gen=20, teacher=30), {"step": 1, "eval/score": 0.5}]
    total = ComputeBudget(20, 20, 30, 1.0)
    out = account_run(records, total, (N_S, N_T), ["student"], 2, 8)
    expected = 6 * N_S * 20 + 2 * N_S * 20 + 2 * N_T * 30  # scoring counts in both
    assert out.flops.free == out.flops.paid == expected == out.curve[0].flops_paid


def test_teacher_rows_count_only_teacher_steps():
    assert teacher_rows(["teacher", "student", "teacher"], 5) == [0, 5, 5, 10]


def _pts(*xy):
    return [MeanPoint(i, x, y, 0.0, 1) for i, (x, y) in enumerate(xy)]


def test_mean_curve_reach_and_area():
    a = [CurvePoint(0, 0, 0, 0, 0.2), CurvePoint(5, 10, 20, 1, 0.4)]
    b = [CurvePoint(0, 0, 0, 0, 0.4), CurvePoint(5, 30, 40, 1, 0.6), CurvePoint(9, 50, 60, 2, 0.7)]
    mean = mean_curve([a, b], "paid")
    assert [(p.step, p.x) for p in mean] == [(0, 0), (5, 30)]
    assert [p.y for p in mean] == pytest.approx([0.3, 0.5])
    assert mean[1].sd == pytest.approx(0.1414213, rel=1e-5)  # step 9: one seed only, left out
    assert mean_curve([a, b], "free")[1].x == 20
    pts = _pts((0, 0.2), (10, 0.6), (20, 0.6))
    assert flops_to_reach(pts, 0.6) == 10 and flops_to_reach(pts, 0.7) is None
    assert flops_to_reach(pts, None) is None
    # trapezoids over [0, 20]: (0.2 + 0.6) / 2 * 10 + 0.6 * 10 = 10 -> mean 0.5
    assert auc(pts, 20) == pytest.approx(0.5)
    # cut inside a segment: over [0, 5], 0.2 -> 0.4 linearly: mean 0.3
    assert auc(pts, 5) == pytest.approx(0.3)
    assert auc(pts, 40) == pytest.approx((10 + 0.6 * 20) / 40)  # held flat past the end


def test_plateau_rule():
    def curve(*scores):
        return [CurvePoint(10 * i, 0, 0, 0, s) for i, s in enumerate(scores)]

    # best so far: .1 .3 .5 .55 .56 .56; gains over 2 evaluations: .4 .25 .06 .01 -> step 50
    assert plateau_step(curve(0.1, 0.3, 0.5, 0.55, 0.56, 0.52), 2, 0.02) == (50, True)
    assert plateau_step(curve(0.1, 0.3, 0.5, 0.7), 2, 0.02) == (30, False)  # still climbing
    assert plateau_step(curve(0.1, 0.2, 0.2), 1, 0.02) == (20, True)
    # not yet climbing is not a plateau: the rule waits for a gain of min_gain over the start
    assert plateau_step(curve(0.1, 0.1, 0.1, 0.3, 0.3), 1, 0.02) == (40, True)
    assert plateau_step(curve(0.1, 0.1), 1, 0.02) == (10, False)


def test_warm_and_lr_config_errors():
    assert parse_warm(None) is None
    w = parse_warm({"method": "sft", "steps": 100, "every": 25, "branch_at": [50, "plateau"]})
    assert w.branch_at == (50, "plateau") and w.window == 3 and w.cold
    for bad, match in (
        ({"method": "sft"}, "needs a method"),
        ({"method": "untouched", "steps": 10}, "trains nothing"),
        ({"method": "sft", "steps": 100, "every": 25, "branch_at": [30]}, "multiple of"),
        ({"method": "sft", "steps": 10, "plateu": {}}, "unknown warm_start keys"),
    ):
        with pytest.raises(ConfigError, match=match):
            parse_warm(bad)
    spec = parse_lr_search({"grid": [1e-3, 1e-4]}, ["sft"])
    assert spec.grid == (1e-4, 1e-3)
    with pytest.raises(ConfigError, match="not among the methods"):
        parse_lr_search({"grid": [1e-3, 1e-4], "methods": ["gkd"]}, ["sft"])
    with pytest.raises(ConfigError, match=">= 2 positive"):
        parse_lr_search({"grid": [1e-3]}, ["sft"])


def test_shipped_warm_start_config_parses():
    from pathlib import Path

    from onpolicy.compare import load_config

    path = Path(__file__).resolve().parents[3] / "configs" / "compare" / "warm_start.yaml"
    cfg = load_config(path, ["warm_start.every=50"])
    assert cfg.warm_start.branch_at == (200, "plateau") and cfg.warm_start.every == 50
    assert cfg.budget.teacher_data == "paid" and cfg.eval_every == 25
    assert cfg.validation_size == 200 and cfg.lr_search.grid == (1e-4, 3e-4, 1e-3)


def test_lr_choice_best_validation_value_smaller_on_ties():
    trials = [
        {"method": "m", "start": "cold", "lr": 1e-3, "metrics": {"eval/score": 0.5}},
        {"method": "m", "start": "cold", "lr": 1e-4, "metrics": {"eval/score": 0.5}},
        {"method": "m", "start": "plateau", "lr": 1e-3, "metrics": {"eval/kl_per_token": 0.1}},
        {"method": "m", "start": "plateau", "lr": 1e-4, "metrics": {"eval/kl_per_token": 0.2}},
    ]
    assert choose(trials) == {("m", "cold"): 1e-4, ("m", "plateau"): 1e-3}


def test_the_long_regime_config_parses_and_its_models_block_is_checked_up_front():
    import yaml

    from onpolicy.compare.config import parse_config

    raw = yaml.safe_load((REPO / "configs/compare/evidence_long.yaml").read_text())
    cfg = parse_config(raw)
    assert cfg.models == {"kind": "long_arithmetic", "student": "medium", "teacher_steps": 2500}
    for bad, words in (
        ({"kind": "long_arithmetic", "student": "large"}, "use 'small'"),
        ({"kind": "long_arithmetic", "teacher": "x"}, "models.teacher='x'; use one of"),
        ({"kind": "long_arithmetic", "size": "x"}, "unknown models keys ['size'] in kind long"),
    ):
        with pytest.raises(ConfigError, match=re.escape(words)):
            parse_config({**raw, "models": bad})
    with pytest.raises(ConfigError, match=re.escape("needs task.name: long_arithmetic")):
        parse_config({**raw, "task": {"name": "arithmetic"}})


def test_plateau_min_share_waits_out_a_slow_climb():
    """The measured mid-climb case (docs/results/evidence-long-gpu.md): a 6-digit warm-up evaluated
    every 200 steps (validation exact match below, steps 200..2600), where the fixed window 3 with
    min_gain 0.03 fired at 2600 while the student went on climbing; a window of 40% of the run
    does not fire there, and finds the real plateau once it has lasted that long."""
    rise = [0.0, 0.0, 0.0, 0.0, 0.0, 0.045, 0.125, 0.115, 0.180, 0.200, 0.200, 0.220, 0.180]
    slow = [CurvePoint(200 * (i + 1), 0, 0, 0, s) for i, s in enumerate(rise)]
    assert plateau_step(slow, 3, 0.03) == (2600, True)  # the fixed window: fired mid-climb
    assert plateau_step(slow, 3, 0.03, min_share=0.25) == (2600, True)  # ceil(.25 * 12) = 3
    assert plateau_step(slow, 3, 0.03, min_share=0.4) == (2600, False)  # window 5: +0.095
    top = [*rise, 0.5, 0.75, 0.85, 0.94, *[0.93, 0.94] * 6]
    full = [CurvePoint(200 * (i + 1), 0, 0, 0, s) for i, s in enumerate(top)]
    # best 0.94 from index 16; at index i the window is ceil(0.4 i): i - ceil(0.4 i) first reaches
    # 16 at i = 27 (window 11), step 5600
    assert plateau_step(full, 3, 0.03, min_share=0.4) == (5600, True)
    assert plateau_step(full, 3, 0.03) == (2600, True)


def test_plateau_min_share_in_the_config():
    w = parse_warm({"method": "sft", "steps": 100, "every": 25, "plateau": {"min_share": 0.25}})
    assert w.min_share == 0.25 and w.window == 3
    assert parse_warm({"method": "sft", "steps": 100}).min_share == 0.0
    with pytest.raises(ConfigError, match=r"min_share=1\.5"):
        parse_warm({"method": "sft", "steps": 100, "plateau": {"min_share": 1.5}})
    with pytest.raises(ConfigError, match="takes window, min_gain, min_share"):
        parse_warm({"method": "sft", "steps": 100, "plateau": {"patience": 2}})
