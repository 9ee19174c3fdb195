"""A user's own task (the one data format + a metric, an optional eval file), the shipped chat
prompts, and metrics from a local file only."""

from __future__ import annotations

import json

import pytest

from onpolicy.errors import ConfigError, DataError
from onpolicy.tasks import make_task
from onpolicy.tasks.dataset import contains, exact_match, resolve_metric
from onpolicy.types import Prompt


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_metrics_hand_checked():
    p = Prompt(text="q", reference="Paris")
    assert exact_match(" paris. ", p) == 1.0
    assert exact_match("Paris is it", p) == 0.0
    assert contains("The capital is PARIS!", p) == 1.0
    assert contains("Lyon", p) == 0.0
    assert contains("anything", Prompt(text="q")) == 0.0


def test_dataset_task_split_and_metric(tmp_path):
    rows = [{"prompt": f"q{i}", "reference": f"a{i}"} for i in range(20)]
    task = make_task(
        "dataset",
        path=str(_write(tmp_path / "d.jsonl", rows)),
        metric="exact_match",
        eval_fraction=0.25,
        seed=1,
        chat=False,
    )
    assert len(task.eval_prompts) == 5 and len(task.train_prompts) == 15
    assert not {p.text for p in task.eval_prompts} & {p.text for p in task.train_prompts}
    good = [p.reference for p in task.eval_prompts]
    assert task.mean_score(good, task.eval_prompts) == 1.0
    chat = make_task("dataset", path=str(tmp_path / "d.jsonl"), metric="none", chat=True)
    assert chat.score is None and chat.train_prompts[0].messages[0]["role"] == "user"
    assert chat.mean_score(["x"], chat.eval_prompts[:1]) is None
    assert task.train_references and chat.train_references


def test_eval_file_and_completion_field(tmp_path):
    train = _write(
        tmp_path / "t.jsonl", [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(6)]
    )
    held = _write(tmp_path / "e.jsonl", [{"prompt": "h", "completion": "x"}])
    task = make_task("dataset", path=str(train), eval_path=str(held), metric="exact_match")
    assert len(task.train_prompts) == 6 and task.eval_prompts[0] == Prompt(text="h", reference="x")


def test_custom_metric_from_a_local_file_only(tmp_path):
    (tmp_path / "my_metric.py").write_text(
        "def starts(text, prompt):\n    return float(text.startswith(prompt.reference))\n"
    )
    fn = resolve_metric(f"{tmp_path}/my_metric.py:starts")
    assert fn("abc", Prompt(text="q", reference="ab")) == 1.0
    assert (
        resolve_metric("my_metric.py:starts", base_dir=tmp_path)(
            "x", Prompt(text="q", reference="ab")
        )
        == 0.0
    )
    with pytest.raises(ConfigError, match="has no function 'nope'"):
        resolve_metric(f"{tmp_path}/my_metric.py:nope")
    with pytest.raises(ConfigError, match="unknown metric"):  # a module path is never imported
        resolve_metric("onpolicy.tasks.dataset:contains")
    with pytest.raises(ConfigError, match="unknown metric"):
        resolve_metric("bleu")
    with pytest.raises(ConfigError, match=r"metric file 'gone\.py' does not exist"):
        resolve_metric("gone.py:f")


def test_bad_files_are_one_line_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        make_task("dataset", path=str(tmp_path / "missing.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\nnot json\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: not valid JSON"):
        make_task("dataset", path=str(bad))
    nokey = _write(tmp_path / "nokey.jsonl", [{"question": "a"}, {"question": "b"}])
    with pytest.raises(DataError, match=r"nokey.jsonl:1: no `prompt` or `messages` field"):
        make_task("dataset", path=str(nokey))
    noref = _write(tmp_path / "noref.jsonl", [{"prompt": "a"}, {"prompt": "b"}])
    with pytest.raises(DataError, match="needs a `completion` on every held-out row"):
        make_task("dataset", path=str(noref), metric="contains")


def test_shipped_chat_prompts():
    task = make_task("chat_pair")
    prompts = task.train_prompts + task.eval_prompts
    assert len(prompts) >= 60 and all(p.reference for p in prompts)
    assert len({p.messages[0]["content"] for p in prompts}) == len(prompts)
    assert task.metric_name == "contains"
