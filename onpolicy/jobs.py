"""The shape the offline teacher commands share (``onpolicy generate``, ``onpolicy score``): the
flags that name the teacher, the checks before any model loads, and ``run_job`` (the summary as
JSON on stdout, or a bad input as one line on stderr and exit status 2). Loading the teacher and
its fingerprint: ``onpolicy.teacher.identity``; what each command writes (a resumable JSONL file,
score shards) stays with the command: the two formats share no logic."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from onpolicy.errors import ConfigError, OnpolicyError, check_at_least


def teacher_parser(prog: str, doc: str, epilog: str) -> argparse.ArgumentParser:
    """A parser with the shared flags: ``--teacher``, ``--gguf-file`` and ``--chat``."""
    p = argparse.ArgumentParser(
        prog=prog, description=doc.split("\n\n")[0], epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("--teacher", required=True, help="model folder, .gguf folder or tiny:<size>")
    p.add_argument("--gguf-file", default=None, help="the .gguf file inside --teacher's folder")
    p.add_argument("--chat", action="store_true", help="plain `prompt` rows are user messages")
    return p


def check_job(
    teacher: str, data: tuple[str, str], out: str, at_least_one: Mapping[str, int]
) -> None:
    """One-line ``ConfigError`` before any model loads: ``teacher`` is a model path
    (``onpolicy.models.check_model_path``), the data file ``data = (flag, path)`` exists, ``out``'s
    folder exists, and each ``at_least_one`` flag is >= 1."""
    from onpolicy.models import check_model_path

    check_model_path("--teacher", teacher)
    flag, path = data
    if not Path(path).exists():
        raise ConfigError(f"{flag} {path!r} does not exist; give a JSONL/parquet file")
    parent = Path(out).parent
    if not parent.is_dir():
        raise ConfigError(f"--out {out!r}: folder {str(parent)!r} does not exist; create it first")
    check_at_least(at_least_one, 1)


def run_job(job: Callable[[Any], Any], spec: Any) -> int:
    """``job(spec)``; prints its summary (a dataclass) and ``spec.out`` as JSON and returns 0, or
    prints an ``OnpolicyError`` as one line ``onpolicy: error: ...`` and returns 2."""
    try:
        summary = job(spec)
    except OnpolicyError as exc:
        print(f"onpolicy: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({**asdict(summary), "out": spec.out}, indent=2))
    return 0
