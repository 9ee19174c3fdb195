"""The forward measure in the comparison (``eval: {forward_nll: true}``): the config switch reaches
the trainer only when on (other runs' configs and reuse keys unchanged), curve points carry the
logged values, and the report's table shows their seed means by hand."""

from __future__ import annotations

import pytest

from onpolicy.compare.config import parse_config
from onpolicy.compare.curves import account_run
from onpolicy.compare.methods import RunOptions, TrainSettings, method_spec, trainer_config
from onpolicy.compare.report_forward import forward_table
from onpolicy.errors import ConfigError
from onpolicy.trainer.step_metrics import ComputeBudget

RAW = {"task": {"name": "arithmetic"}, "models": {"kind": "arithmetic"}, "methods": ["sft"]}


def test_config_switch_is_opt_in_and_reaches_the_trainer(tmp_path):
    assert parse_config(RAW).eval_forward_nll is False
    on = parse_config({**RAW, "eval": {"every": 10, "forward_nll": True}})
    assert on.eval_forward_nll is True
    with pytest.raises(ConfigError, match="forward"):
        parse_config({**RAW, "eval": {"forward": True}})  # a typo names the known keys
    spec, settings = method_spec("sft"), TrainSettings()
    args = (spec, settings, 0, "student", "teacher", tmp_path)
    assert trainer_config(*args).eval.forward_nll is False
    assert trainer_config(*args, RunOptions(forward_nll=True)).eval.forward_nll is True


def _records(score, token, byte):
    return [
        {"step": 0, "eval/score": score[0], "eval/forward_nll_per_token": token[0],
         "eval/forward_nll_per_byte": byte[0]},
        {"step": 1, "train/student_train_tokens": 10, "train/teacher_tokens": 0},
        {"step": 1, "final": 1, "eval/score": score[1], "eval/forward_nll_per_token": token[1],
         "eval/forward_nll_per_byte": byte[1]},
    ]  # fmt: skip


def test_curve_points_carry_the_measure_and_the_table_shows_seed_means():
    runs = [
        account_run(_records((0.5, 0.6), (2.0, 1.0), (1.0, 0.5)), ComputeBudget(10), (1, 1),
                    ["dataset"], 1, 0),
        account_run(_records((0.7, 0.8), (4.0, 3.0), (2.0, 1.5)), ComputeBudget(10), (1, 1),
                    ["dataset"], 1, 0),
    ]  # fmt: skip
    assert [p.forward_nll_per_token for p in runs[0].curve] == [2.0, 1.0]
    assert [p.forward_nll_per_byte for p in runs[1].curve] == [2.0, 1.5]
    table = forward_table({"cold": {"sft": [r.curve for r in runs]}}, "paid")
    rows = [line for line in table.splitlines() if line.startswith("| cold")]
    # step 1: score (0.6 + 0.8) / 2, NLL/token (1 + 3) / 2 with sd sqrt(2), NLL/byte 1.0 ± 0.7071
    assert rows[1] == "| cold | sft | 1 | 6.00e+01 | 0.700 ± 0.141 | 2.0000 ± 1.4142 | " \
        "1.0000 ± 0.7071 |"  # fmt: skip
    assert rows[0].startswith("| cold | sft | 0 | 0.00e+00 | 0.600 ± 0.141 | 3.0000 ± 1.4142")
    no_measure = account_run(_records((0.5, 0.6), (None, None), (None, None)), ComputeBudget(10),
                             (1, 1), ["dataset"], 1, 0)  # fmt: skip
    assert forward_table({"cold": {"sft": [no_measure.curve]}}, "paid") is None
