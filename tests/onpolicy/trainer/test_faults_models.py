"""Broken model folders are found before anything loads, with a line saying what is missing, in
``onpolicy train`` and ``onpolicy doctor``; ``student.max_length`` above the model's positions is
refused (onpolicy.models)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from trainer_configs import make_config

from onpolicy.cli import main
from onpolicy.errors import ConfigError
from onpolicy.models import check_run_models, load_model, load_tokenizer
from onpolicy.tiny import tiny_model_dir


@pytest.fixture
def model_copy(tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(tiny_model_dir("tiny"), dst)
    return dst


def _break(folder: Path, kind: str) -> str:
    """Damage ``folder`` one way; returns a phrase the error must hold."""
    if kind == "no tokenizer":
        for f in ("tokenizer.json", "tokenizer_config.json"):
            (folder / f).unlink()
        return "has no tokenizer"
    if kind == "corrupt tokenizer.json":
        (folder / "tokenizer.json").write_text('{"version": "1.0", "model": {')
        return "tokenizer.json .* is damaged"
    if kind == "not a model":
        for f in folder.iterdir():
            if f.name not in ("tokenizer.json", "tokenizer_config.json"):
                f.unlink()
        (folder / "README.md").write_text("notes")
        return "is not a model folder: no config.json"
    if kind == "no weights":
        (folder / "model.safetensors").unlink()
        return "has no weights"
    raise KeyError(kind)


KINDS = ["no tokenizer", "corrupt tokenizer.json", "not a model", "no weights"]


@pytest.mark.parametrize("kind", KINDS)
def test_train_checks_the_student_folder_first(tmp_path, model_copy, kind):
    phrase = _break(model_copy, kind)
    cfg = make_config(tmp_path / "run", f"student.path={model_copy}")
    with pytest.raises(ConfigError, match=phrase):
        check_run_models(cfg)


@pytest.mark.parametrize("kind", KINDS)
def test_teacher_folder_checked_too(tmp_path, model_copy, kind):
    phrase = _break(model_copy, kind)
    cfg = make_config(tmp_path / "run", f"teacher.path={model_copy}")
    with pytest.raises(ConfigError, match=phrase):
        check_run_models(cfg)


def test_loaders_check_before_transformers(model_copy):
    _break(model_copy, "corrupt tokenizer.json")
    with pytest.raises(ConfigError, match="is damaged"):
        load_tokenizer(model_copy)
    (model_copy / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="has no model_type"):
        load_model(model_copy)


def test_max_length_above_the_positions_is_refused(tmp_path):
    cfg = make_config(tmp_path, "student.max_length=100000")
    with pytest.raises(ConfigError, match=r"student.max_length=100000 exceeds the 256 positions"):
        check_run_models(cfg)


@pytest.mark.parametrize("kind", ["no tokenizer", "corrupt tokenizer.json"])
def test_doctor_names_what_is_missing(model_copy, capsys, kind):
    _break(model_copy, kind)
    good = str(tiny_model_dir("tiny"))
    assert main(["doctor", "--teacher", good, "--student", str(model_copy)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("onpolicy: error: --student") and len(err.splitlines()) == 1
