"""The command line's output: full help texts, library noise silenced (only the known-harmless
messages), one progress line or none (``--no-progress``)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from onpolicy import cli, quiet

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("argv", "ends"),
    [
        ([], "exit status 2; nothing already saved is touched."),
        (["train"], "A JSON summary is printed on stdout at the end."),
        (["eval"], "the metrics are printed as JSON."),
        (["compare"], "quickstart (``onpolicy quickstart`` / ``examples/quickstart.py``)."),
    ],
)
def test_help_texts_are_whole(argv, ends, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([*argv, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert ends in out  # the description is printed to its last sentence, not cut
    for name in ("train", "eval", "doctor", "compare", "quickstart"):
        assert name in out or argv
    if argv == ["train"]:
        assert "--no-progress" in out and "examples:" in out


def test_quiet_drops_only_the_known_harmless_record(caplog, monkeypatch):
    monkeypatch.delenv(quiet.ENV, raising=False)
    quiet.quiet_libraries()
    assert os.environ[quiet.ENV] == "1" and os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    logger = logging.getLogger("accelerate.utils.other")
    with caplog.at_level(logging.WARNING):
        logger.warning("Removed shared tensor {'lm_head.weight'} while saving. This should be OK")
        logger.warning("[RANK 0] Removed shared tensor {'lm_head.weight'} while saving.")
        logger.warning("a real warning")
    assert [r.getMessage() for r in caplog.records] == ["a real warning"]


def _config(tmp_path) -> Path:
    data = tmp_path / "d.jsonl"
    rows = [{"prompt": f"reverse {w}:", "completion": f" {w[::-1]}"} for w in ("ab", "cd", "ef")]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    raw = {
        "student": {"path": "tiny:tiny,tokenizer=char", "max_length": 32},
        "objective": {"name": "sft", "params": {"source": "dataset"}},
        "data": {"path": str(data), "eval_size": 1},
        "rollout": {"max_new_tokens": 4},
        "train": {"steps": 2, "micro_batch_size": 2, "output_dir": str(tmp_path / "run"),
                  "checkpoint_every": 1},
        "eval": {"metric": "exact_match"},
    }  # fmt: skip
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_train_prints_no_library_noise(tmp_path):
    """A whole ``onpolicy train`` (model build, load, checkpoints, save) in a fresh process: stderr
    holds no library progress bars or notices, and nothing at all with ``--no-progress``."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop(quiet.ENV, None)
    cmd = [sys.executable, "-m", "onpolicy.cli", "train", "--config", str(_config(tmp_path))]
    done = subprocess.run([*cmd, "--no-progress"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["steps"] == 2
    noise = ("Loading weights", "Writing model shards", "Removed shared tensor", "Setting accel")
    assert not any(n in done.stderr + done.stdout for n in noise), done.stderr
    assert done.stderr.strip() == ""


def test_no_progress_prints_one_plain_line_per_finished_job(capsys):
    from onpolicy.compare.pool import run_calls

    out = run_calls([(abs, (-1,)), (abs, (-2,))], workers=1, progress=False, desc="runs")
    assert out == [1, 2]
    err = capsys.readouterr().err.splitlines()
    assert err == ["[onpolicy] runs: 1/2 done", "[onpolicy] runs: 2/2 done"]
