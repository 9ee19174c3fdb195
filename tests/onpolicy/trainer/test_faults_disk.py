"""Disk faults: a full disk (a small tmpfs), a read-only file system, a file-size limit: one line
naming the file, nothing earlier lost, and the same command resumes once space is back
(disk.py, checkpoint.py, metrics_log.py, run_folder.py)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import pytest
import yaml
from trainer_configs import REPO, base_raw, make_config

from onpolicy.errors import TrainingError
from onpolicy.trainer import checkpoint as ckpt
from onpolicy.trainer import train
from onpolicy.trainer.metrics_log import read_metrics

QUICK = ("eval.num_prompts=0", "train.micro_batch_size=2", "train.save_final=false")


@contextlib.contextmanager
def _tmpfs(folder, size="16m"):
    """A small tmpfs mounted at ``folder`` (needs root and mount rights; else the test skips)."""
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(folder):
    """Fill the file system of ``folder`` to the last byte (unbuffered writes)."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 20, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)


@pytest.mark.slow  # three short runs
def test_full_disk_is_one_line_and_loses_nothing(tmp_path):
    with _tmpfs(tmp_path / "disk") as disk:
        out = disk / "run"
        train(make_config(out, *QUICK, "train.steps=2", "train.checkpoint_every=1"))
        metrics = (out / "metrics.jsonl").read_text()
        _fill(disk)
        with pytest.raises(TrainingError) as err:
            train(make_config(out, *QUICK, "train.steps=4", "train.checkpoint_every=1"))
        msg = str(err.value)
        assert (
            "No space left on device (ENOSPC)" in msg and "nothing written earlier was lost" in msg
        )
        assert len(msg.splitlines()) == 1 and str(out) in msg
        assert ckpt.latest_checkpoint(out).name == "step-00000002"
        assert not any(p.name.startswith(".tmp-") for p in ckpt.checkpoint_root(out).iterdir())
        assert (out / "metrics.jsonl").read_text().startswith(metrics.splitlines()[0])
        (disk / "filler").unlink()  # space is back: the same command resumes
        result = train(make_config(out, *QUICK, "train.steps=4", "train.checkpoint_every=1"))
        assert result.resumed_from == 2 and result.steps == 4
        assert [r["step"] for r in read_metrics(out) if "train/loss" in r] == [1, 2, 3, 4]


def test_read_only_file_system_is_one_line(tmp_path):
    with _tmpfs(tmp_path / "disk") as disk:
        out = disk / "run"
        train(make_config(out, *QUICK, "train.steps=1"))
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        with pytest.raises(TrainingError, match=r"Read-only file system \(EROFS\)"):
            train(make_config(out, *QUICK, "train.steps=2"))
        assert ckpt.latest_checkpoint(out).name == "step-00000001"


_LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
from onpolicy.cli import main
sys.exit(main(["train", "--config", sys.argv[1]]))
"""


def test_file_size_limit_is_one_line_not_a_traceback(tmp_path):
    """Runs anywhere (no root): the kernel refuses writes past RLIMIT_FSIZE (the tiny student's
    weights are 0.5 MB), as it refuses them on a full disk."""
    raw = base_raw(tmp_path / "run")
    raw["train"].update(steps=1, micro_batch_size=2)
    raw["eval"].update(num_prompts=0)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", _LIMITED, str(cfg)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert "Traceback" not in done.stderr
    assert last.startswith("onpolicy: error: could not write") and "File too large" in last
    assert not list(ckpt.checkpoint_root(tmp_path / "run").iterdir())  # no partial checkpoint
