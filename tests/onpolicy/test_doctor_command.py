"""``onpolicy doctor``: ``--data`` read by the one prompt loader (``onpolicy.data``, as chat), and
bad input as one line on stderr before any tokenizer loads."""

from __future__ import annotations

import json

from onpolicy.cli import main
from onpolicy.doctor import read_conversations
from onpolicy.tiny import tiny_model_dir


def _write(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_rows_become_conversations_with_their_reply(tmp_path):
    data = _write(tmp_path / "conv.jsonl", [
        {"prompt": "2+2?", "completion": "4, of course."},
        {"prompt": "no reply here"},
        {"messages": [{"role": "user", "content": "hi"},
                      {"role": "assistant", "content": "Hello  there!"}]},
    ])  # fmt: skip
    assert read_conversations(data) == [
        [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4, of course."}],
        [{"role": "user", "content": "no reply here"}],  # a plain prompt is a user message
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello  there!"}],
    ]


def test_report_over_the_data(tmp_path, capsys):
    folder = str(tiny_model_dir("tiny"))
    data = _write(tmp_path / "c.jsonl", [{"prompt": "12+3=", "completion": "15"}] * 2)
    assert main(["doctor", "--teacher", folder, "--student", folder, "--data", str(data)]) == 0
    out = capsys.readouterr().out
    assert "same tokenizer (by content): yes" in out and "(2 conversations)" in out


def test_bad_inputs_are_one_line(tmp_path, capsys):
    folder = str(tiny_model_dir("tiny"))
    assert main(["doctor", "--teacher", str(tmp_path / "nope"), "--student", folder]) == 2
    err = capsys.readouterr().err
    assert err.startswith("onpolicy: error: --teacher") and "is not a folder" in err
    bad = _write(tmp_path / "bad.jsonl", [{"text": "x"}])
    assert main(["doctor", "--teacher", folder, "--student", folder, "--data", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:1: no `prompt` or `messages` field" in err and len(err.splitlines()) == 1
