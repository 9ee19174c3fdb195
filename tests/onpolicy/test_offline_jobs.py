"""``onpolicy.jobs``: the checks and the main shared by ``onpolicy generate`` and ``onpolicy
score`` (one-line errors before any model loads; a JSON summary or exit status 2)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from onpolicy.errors import ConfigError, DataError
from onpolicy.jobs import check_job, run_job


def test_check_job_names_the_bad_flag(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("{}\n")
    out = str(tmp_path / "out.jsonl")
    check_job("tiny:tiny", ("--data", str(data)), out, {"--n": 1})  # all fine: no error
    cases = [
        (("offline:nope", ("--data", str(data)), out, {}), r"--teacher='offline:nope'"),
        (("tiny:tiny", ("--prompts", str(tmp_path / "x")), out, {}), r"--prompts .* not exist"),
        (("tiny:tiny", ("--data", str(data)), str(tmp_path / "a" / "b"), {}), r"--out .*folder"),
        (("tiny:tiny", ("--data", str(data)), out, {"--n": 1, "--top-k": 0}), r"--top-k=0 must"),
    ]
    for args, match in cases:
        with pytest.raises(ConfigError, match=match):
            check_job(*args)


@dataclass
class _Summary:
    rows: int


@dataclass
class _Spec:
    out: str


def test_run_job_prints_the_summary_or_one_error_line(capsys):
    assert run_job(lambda spec: _Summary(3), _Spec("o")) == 0
    assert json.loads(capsys.readouterr().out) == {"rows": 3, "out": "o"}

    def bad(spec):
        raise DataError("row 2 is broken; fix it")

    assert run_job(bad, _Spec("o")) == 2
    captured = capsys.readouterr()
    assert captured.err == "onpolicy: error: row 2 is broken; fix it\n" and captured.out == ""
