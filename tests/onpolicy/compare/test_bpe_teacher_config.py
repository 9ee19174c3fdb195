"""``models.teacher_tokenizer`` (the same-tokenizer reference of the cross pair,
``onpolicy.tasks.bpe_teacher``): the config checks, one line each, before anything loads."""

from __future__ import annotations

import pytest

from onpolicy.compare import parse_config
from onpolicy.errors import ConfigError

TASK = {"name": "arithmetic", "digits": 3}


def _raw(models, methods):
    return {"task": TASK, "models": models, "methods": methods}


def test_bpe_teacher_accepted_with_same_tokenizer_methods():
    cfg = parse_config(_raw({"kind": "arithmetic", "teacher_tokenizer": "bpe"}, ["reverse_kl"]))
    assert cfg.models["teacher_tokenizer"] == "bpe"


@pytest.mark.parametrize(
    ("models", "methods", "message"),
    [
        ({"kind": "arithmetic", "teacher_tokenizer": "wordpiece"}, ["sft"],
         r"teacher_tokenizer='wordpiece'; use 'char' \(default\) or 'bpe'"),
        ({"kind": "arithmetic", "teacher_tokenizer": "bpe"}, ["sft", "gold"],
         r"drop the cross-tokenizer methods \['gold'\]"),
        ({"kind": "paths", "teacher": "x", "teacher_tokenizer": "bpe"}, ["sft"],
         r"needs models.kind: arithmetic"),
    ],
)  # fmt: skip
def test_bad_teacher_tokenizer_configs(models, methods, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(_raw(models, methods))
