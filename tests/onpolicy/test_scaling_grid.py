"""The tiny grid driver of `onpolicy scaling` (a few steps on tiny models)."""

from __future__ import annotations

from pathlib import Path

import pytest

from onpolicy.errors import ConfigError
from onpolicy.scaling import runs_from_rows
from onpolicy.scaling.grid import GridConfig, load_grid, run_grid

REPO = Path(__file__).resolve().parents[2]
TEACHER = "tiny:tiny,seed=2,pretrain_steps=100"


def test_grid_rows_are_a_runs_table():
    cfg = GridConfig(
        teachers=[TEACHER], student_hidden=[32, 64], steps=[1, 3],
        data=str(REPO / "configs" / "data" / "tiny_chat.jsonl"), batch_size=4, eval_rows=6,
    )  # fmt: skip
    rows = run_grid(cfg, log=lambda _: None)
    assert len(rows) == 4
    runs = runs_from_rows(rows)
    small, big = runs.student_params[0], runs.student_params[2]
    assert 0 < small < big  # non-embedding parameters grow with the hidden size
    assert runs.tokens[1] > runs.tokens[0] > 0  # tokens accumulate along a run
    assert (runs.tokens[:2] == runs.tokens[2:]).all()  # every student reads the same batches
    assert len(set(runs.teacher_loss)) == 1 and (runs.student_loss > 0).all()
    assert (runs.supervised_loss > 0).all()


def test_the_shipped_grid_config_loads_and_bad_grids_are_config_errors(tmp_path):
    cfg = load_grid(REPO / "configs" / "scaling" / "tiny_grid.yaml")
    assert Path(cfg.data).is_file() and len(cfg.teachers) == 3
    with pytest.raises(ConfigError, match="increasing"):
        GridConfig(teachers=[TEACHER], student_hidden=[32], steps=[3, 1], data="x")
    with pytest.raises(ConfigError, match="multiples of heads"):
        GridConfig(teachers=[TEACHER], student_hidden=[33], steps=[1], data="x")
    (tmp_path / "g.yaml").write_text("teachers: [a]\nstudent_hidden: [32]\nsteps: [1]\nlr_x: 1\n")
    with pytest.raises(ConfigError, match=r"unknown grid keys \['lr_x'\] in .*g\.yaml; known"):
        load_grid(tmp_path / "g.yaml")
