"""GOLD's ``matched=token`` (TRL's semantics, which collapsed the student on the arithmetic cross
pair) is a parity option, not a training choice: choosing it warns, once, already when the config
is validated (before any model loads, where a bad option value also fails); the default
``prefix`` is silent."""

from __future__ import annotations

import warnings

import pytest

from onpolicy.api import make_objective
from onpolicy.config import from_dict
from onpolicy.config_checks import validate
from onpolicy.errors import ConfigError
from onpolicy.objectives.gold import TOKEN_SEMANTICS_WARNING


def test_token_semantics_warn_and_prefix_is_silent():
    with pytest.warns(UserWarning, match="matched=token is TRL's GOLD semantics") as seen:
        objective = make_objective("gold", matched="token")
    assert objective.matched == "token" and str(seen[0].message) == TOKEN_SEMANTICS_WARNING
    assert "docs/results/compare-arithmetic-cross.md" in TOKEN_SEMANTICS_WARNING
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert make_objective("gold").matched == "prefix"
        assert make_objective("gold", matched="prefix").matched == "prefix"


def test_a_config_with_token_semantics_warns_at_validation():
    params = {"matched": "token", "reference_kl": 0.0}
    config = from_dict(
        {
            "student": {"path": "tiny:tiny"},
            "teacher": {"path": "tiny:tiny,tokenizer=char", "mode": "cross"},
            "objective": {"name": "gold", "params": params},
        }
    )
    with pytest.warns(UserWarning, match="train with the default matched=prefix"):
        validate(config)
    config.objective.params = {"matched": "tokens"}  # a bad value, not only a bad key, fails here
    with pytest.raises(ConfigError, match="gold option matched='tokens'; use 'prefix' or 'token'"):
        validate(config)
