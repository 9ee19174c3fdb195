"""The ``onpolicy`` command line: train/eval on tiny models, one-line errors, dispatchers."""

from __future__ import annotations

import json
import sys

import yaml

from onpolicy import cli
from onpolicy.tiny import tiny_model_dir

DATA = "configs/data/tiny_chat.jsonl"


def _config(tmp_path) -> str:
    tiny_model_dir("tiny")
    tiny_model_dir("small", seed=1, pretrain_steps=300)
    raw = {
        "student": {"path": "tiny:tiny", "max_length": 96},
        "teacher": {"path": "tiny:small,seed=1,pretrain_steps=300"},
        "rollout": {"max_new_tokens": 8},
        "data": {"path": str(cli.Path(__file__).resolve().parents[2] / DATA), "eval_size": 4},
        "train": {"steps": 2, "micro_batch_size": 2, "output_dir": str(tmp_path / "run")},
        "eval": {"num_prompts": 4},
        "logging": {"progress_bar": False, "tensorboard": True},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_train_then_eval(tmp_path, capsys):
    path = _config(tmp_path)
    assert cli.main(["train", "--config", path, "optim.lr=1e-3"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 2 and summary["eval_after"]["eval/kl_per_token"] > 0
    assert list((tmp_path / "run").glob("**/events.out.tfevents*"))  # TensorBoard tracker wrote
    final = summary["final_dir"]
    assert cli.main(["eval", "--config", path, "--student", final]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["eval/kl_per_token"] == summary["eval_after"]["eval/kl_per_token"]


def test_bad_input_is_one_line_and_status_2(tmp_path, capsys):
    path = _config(tmp_path)
    cases = {
        "train.stepz=3": "unknown config key 'train.stepz'; did you mean train.steps?",
        "data.path=/nope.jsonl": "data.path='/nope.jsonl' does not exist",
        "objective.name=revers_kl": "did you mean 'reverse_kl'?",
    }
    for override, fragment in cases.items():
        assert cli.main(["train", "--config", path, override]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("onpolicy: error: ") and fragment in err and "\n" not in err
    # a teacher whose tokenizer differs, in same-tokenizer mode: the message names the fix
    mismatch = ["student.path='tiny:tiny,tokenizer=char'", "teacher.mode=same"]
    assert cli.main(["train", "--config", path, *mismatch]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("onpolicy: error: ") and "set teacher.mode=cross" in err
    assert cli.main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing was saved


def test_dispatchers_pass_argv(tmp_path, monkeypatch, capsys):
    (tmp_path / "fake_tool.py").write_text(
        "def main(argv):\n    print('got', argv)\n    return 3\n"
        "def quickstart_main(argv):\n    print('quick', argv)\n    return 0\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli._DISPATCH, "doctor", ("fake_tool", "main"))
    monkeypatch.setitem(cli._DISPATCH, "quickstart", ("fake_tool", "quickstart_main"))
    monkeypatch.setitem(cli._DISPATCH, "compare", ("fake_tool", "main"))
    assert cli.main(["doctor", "a", "--b"]) == 3
    assert cli.main(["quickstart", "--fast"]) == 0
    assert cli.main(["compare", "x"]) == 3
    assert capsys.readouterr().out.splitlines() == [
        "got ['a', '--b']",
        "quick ['--fast']",
        "got ['x']",
    ]
    monkeypatch.setitem(cli._DISPATCH, "scaling", ("fake_tool", "scaling_main"))
    assert cli.main(["scaling"]) == 2
    assert "fake_tool has no scaling_main" in capsys.readouterr().err
    monkeypatch.setitem(cli._DISPATCH, "doctor", ("no_such_module_xyz", "main"))
    assert cli.main(["doctor"]) == 2
    assert "`doctor` is unavailable" in capsys.readouterr().err
    del sys.modules["fake_tool"]
