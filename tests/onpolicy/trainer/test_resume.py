"""kill -9 in the middle of a run, then resume: the losses equal the uninterrupted run's, exactly.

Sampled rollouts (temperature 1) make every step depend on the RNG state, so this checks that the
model, optimizer, scheduler, RNG states and data position are all restored.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from trainer_configs import REPO, base_raw

from onpolicy.trainer import checkpoint as ckpt

STEPS = 8


def _write_config(tmp_path, name):
    raw = base_raw(tmp_path / name)
    raw["train"].update(steps=STEPS, checkpoint_every=2, keep_checkpoints=2, micro_batch_size=2)
    raw["optim"].update(scheduler="cosine", warmup_steps=2)
    raw["eval"].update(num_prompts=2, every=3)  # evaluation must not disturb the RNG stream
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _cmd(path):
    return [sys.executable, "-m", "onpolicy.cli", "train", "--config", str(path)]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _losses(output_dir):
    rows = [json.loads(x) for x in (output_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


@pytest.mark.slow
def test_kill_then_resume_reproduces_losses(tmp_path):
    full = _write_config(tmp_path, "full")
    done = subprocess.run(
        _cmd(full), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]

    killed = _write_config(tmp_path, "killed")
    proc = subprocess.Popen(
        _cmd(killed), cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    target = ckpt.checkpoint_root(tmp_path / "killed") / "step-00000004" / ckpt.STATE_FILE
    deadline = time.time() + 240
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    # a checkpoint being written when the kill came: left as .tmp-*, never used, then removed
    partial = ckpt.checkpoint_root(tmp_path / "killed") / ".tmp-step-00000006"
    partial.mkdir(exist_ok=True)
    (partial / "model.safetensors").write_bytes(b"half")
    assert ckpt.latest_checkpoint(tmp_path / "killed").name == "step-00000004"

    resumed = subprocess.run(
        _cmd(killed), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads(resumed.stdout[resumed.stdout.index("{") :])["resumed_from"] == 4
    assert not partial.exists()
    expected, got = _losses(tmp_path / "full"), _losses(tmp_path / "killed")
    assert sorted(got) == list(range(1, STEPS + 1))
    assert got == expected  # exact: same floats, not approximately
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "killed")] == [
        "step-00000006",
        "step-00000008",
    ]
