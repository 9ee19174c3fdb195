"""The harness's ``models: {kind: paths}`` resolved by ``onpolicy.models`` (the one home of
``tiny:``/``offline:`` specs): the same folders as the trainer, the same one-line errors."""

from __future__ import annotations

import pytest

from onpolicy.compare.config import parse_config
from onpolicy.compare.run import resolve_models
from onpolicy.errors import ConfigError
from onpolicy.tiny import tiny_model_dir


def _config(models: dict) -> object:
    return parse_config(
        {"task": {"name": "arithmetic"}, "models": {"kind": "paths", **models}, "methods": ["sft"]}
    )


def test_tiny_spec_and_folder_resolve_as_in_the_trainer():
    folder = str(tiny_model_dir("tiny"))
    dirs = resolve_models(_config({"teacher": "tiny:tiny", "student": folder}), log=lambda _: None)
    assert dirs.teacher == folder and dirs.student == folder and dirs.cross_student is None


@pytest.mark.parametrize(
    ("models", "match"),
    [
        ({"teacher": "offline:nope"}, r"models.teacher='offline:nope' is not an offline model"),
        ({"teacher": "tiny:huge"}, r"tiny model 'huge' in 'tiny:huge' is unknown"),
        ({"teacher": "tiny:tiny", "student": "/no/such/dir"}, r"models.student='/no/such/dir'"),
    ],
)
def test_bad_paths_are_one_line_errors(models, match):
    with pytest.raises(ConfigError, match=match):
        resolve_models(_config(models), log=lambda _: None)
