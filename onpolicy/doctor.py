"""``onpolicy doctor --teacher PATH --student PATH [--data FILE]``: the command of the
compatibility doctor (``alignment.doctor`` writes the report).

``--data`` is read by the one prompt loader (``onpolicy.data``) as chat (``data.chat: true``):
each row is a conversation (a plain ``prompt`` is one user message) and its completion (or final
assistant message) the reply that gets aligned; the doctor's built-in conversations otherwise.
Bad input (a folder without a readable tokenizer, a bad row) is one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from onpolicy.errors import OnpolicyError

Conversation = list[dict[str, str]]


def read_conversations(path: str | Path) -> list[Conversation]:
    """Every row of ``path`` (``onpolicy.data.read_prompts`` with ``chat=True``) as messages, the
    reference answer appended as the assistant's reply when the row has one."""
    from onpolicy.config import DataConfig
    from onpolicy.data import read_prompts

    out = []
    for prompt in read_prompts(path, DataConfig(chat=True)):
        reply = [] if prompt.reference is None else [
            {"role": "assistant", "content": prompt.reference}
        ]
        out.append([*(prompt.messages or ()), *reply])
    return out


def _check_folder(flag: str, path: str) -> None:
    """``ConfigError`` unless ``path`` is a folder with a readable tokenizer (before loading)."""
    from onpolicy.errors import ConfigError
    from onpolicy.models import check_tokenizer_folder

    if not Path(path).is_dir():
        raise ConfigError(f"--{flag} {path} is not a folder; give a model or tokenizer folder")
    try:
        check_tokenizer_folder(path)
    except ConfigError as exc:
        raise ConfigError(f"--{flag}: {exc}") from exc


def main(argv: list[str] | None = None) -> int:
    """``onpolicy doctor``: prints the report; returns the exit status."""
    from alignment.doctor import __doc__ as doc
    from alignment.doctor import run_doctor

    parser = argparse.ArgumentParser(prog="onpolicy doctor", description=doc.splitlines()[0])
    parser.add_argument("--teacher", required=True, help="teacher model or tokenizer folder")
    parser.add_argument("--student", required=True, help="student model or tokenizer folder")
    parser.add_argument("--data", default=None, help="prompts (onpolicy.data format), as chat")
    args = parser.parse_args(argv)
    try:
        _check_folder("teacher", args.teacher)
        _check_folder("student", args.student)
        conversations = None if args.data is None else read_conversations(args.data)
    except OnpolicyError as exc:
        print(f"onpolicy: error: {exc}", file=sys.stderr)
        return 2
    print(run_doctor(args.teacher, args.student, conversations))
    return 0
