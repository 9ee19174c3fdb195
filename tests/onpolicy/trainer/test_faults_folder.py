"""Faults around the run folder: two runs on one folder, a stale lock of a killed run, a finished
run rerun, ``--fresh``, ``train.resume=false`` over checkpoints (run_folder.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import yaml
from trainer_configs import REPO, base_raw, make_config

from onpolicy.cli import main
from onpolicy.errors import TrainingError
from onpolicy.trainer import checkpoint as ckpt
from onpolicy.trainer import train
from onpolicy.trainer.run_folder import LOCK_FILE, ResumePolicy, folder_lock

QUICK = ("train.steps=2", "eval.num_prompts=0", "train.micro_batch_size=2")

_HOLDER = """
import sys, time
from onpolicy.trainer.run_folder import folder_lock
with folder_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def _hold(folder):
    """A live process holding the folder's lock (as a running ``onpolicy train`` does)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(folder)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_run_on_a_held_folder_is_refused_naming_the_holder(tmp_path):
    holder = _hold(tmp_path / "run")
    try:
        with pytest.raises(TrainingError, match=rf"in use by another run \(pid {holder.pid} on "):
            train(make_config(tmp_path / "run", *QUICK))
        assert not (tmp_path / "run" / "metrics.jsonl").exists()  # nothing touched
    finally:
        holder.kill()
        holder.wait()


def test_lock_of_a_killed_run_is_taken_over(tmp_path):
    holder = _hold(tmp_path / "run")
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (tmp_path / "run" / LOCK_FILE).is_file()  # the file stays, the lock does not
    with folder_lock(tmp_path / "run"):
        assert str(os.getpid()) in (tmp_path / "run" / LOCK_FILE).read_text()


def test_lock_is_exclusive_within_one_process_too(tmp_path):
    with folder_lock(tmp_path), pytest.raises(TrainingError, match="in use by another run"):
        folder_lock(tmp_path).__enter__()


def _yaml(tmp_path, name, **train):
    raw = base_raw(tmp_path / name)
    raw["train"].update(steps=2, micro_batch_size=2, **train)
    raw["eval"].update(num_prompts=0)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_finished_run_is_refused_with_the_ways_out(tmp_path):
    train(make_config(tmp_path, *QUICK))
    with pytest.raises(TrainingError, match=r"holds a finished run \(step 2 of 2\).*--fresh"):
        train(make_config(tmp_path, *QUICK))


@pytest.mark.slow
def test_finished_run_refused_then_explicit_resume_then_fresh(tmp_path, capsys):
    cfg = _yaml(tmp_path, "run")
    assert main(["train", "--config", str(cfg)]) == 0
    capsys.readouterr()
    # the same command again: a finished run is not silently "resumed" for 0 steps
    assert main(["train", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "holds a finished run (step 2 of 2)" in err and "--fresh" in err
    assert len(err.strip().splitlines()) == 1
    # asked for explicitly: reloaded and re-evaluated
    assert main(["train", "--config", str(cfg), "train.resume=true"]) == 0
    assert "resuming from step 2 of 2" in capsys.readouterr().err
    # --fresh: the old run is moved aside, not deleted
    assert main(["train", "--config", str(cfg), "--fresh"]) == 0
    err = capsys.readouterr().err
    old = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(old) == 1 and f"now in {old[0]}" in err
    assert ckpt.latest_checkpoint(old[0]).name == "step-00000002"
    assert ckpt.latest_checkpoint(tmp_path / "run").name == "step-00000002"


def test_longer_run_resumes_and_says_so(tmp_path, capsys):
    train(make_config(tmp_path, *QUICK))
    capsys.readouterr()
    result = train(make_config(tmp_path, *QUICK, "train.steps=3"))
    err = capsys.readouterr().err
    assert result.resumed_from == 2 and result.steps == 3
    assert "resuming from step 2 of 3" in err
    assert "train.steps changed 2 -> 3" in err  # a safe key: accepted, and said


def test_resume_false_over_checkpoints_is_refused(tmp_path):
    train(make_config(tmp_path, *QUICK))
    with pytest.raises(TrainingError, match=r"train.resume=false but .* holds checkpoints"):
        train(make_config(tmp_path, *QUICK, "train.resume=false", "train.steps=3"))
    fresh = train(make_config(tmp_path, *QUICK, "train.resume=false"), policy=ResumePolicy(True))
    assert fresh.resumed_from is None
