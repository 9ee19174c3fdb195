"""Start the CLI under ``accelerate launch`` for the multi-process trainer tests.

(A module of its own, not conftest.py, so tests import it by a unique name.)
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from trainer_configs import REPO

ACCELERATE_CONFIGS = REPO / "configs" / "accelerate"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mpirun_available() -> bool:
    """MPICH's ``mpirun`` (``pip install mpich``) next to the interpreter or on PATH."""
    return (BIN / "mpirun").exists() or shutil.which("mpirun") is not None


def launch_env() -> dict[str, str]:
    """The environment: the venv's ``bin`` first on PATH (accelerate looks ``mpirun`` up there),
    one thread per process (2 processes share the 2 cores)."""
    path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, "OMP_NUM_THREADS": "1"}


def ddp_launch_args() -> list[str]:
    """Two data-parallel CPU processes: ``configs/accelerate/ddp_cpu.yaml`` (MULTI_CPU, started by
    ``mpirun``) where MPICH is installed, else accelerate's torchrun launcher (``--multi_gpu``),
    whose processes the trainer joins into a gloo group when there is no GPU."""
    if mpirun_available():
        return ["--config_file", str(ACCELERATE_CONFIGS / "ddp_cpu.yaml")]
    return ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]


def train_under_accelerate(launch: str | list[str], run_yaml: Path, timeout: int = 300) -> str:
    """``accelerate launch <launch> -m onpolicy.cli train --config <run_yaml>`` from the
    repository root, where ``launch`` is a file name in ``configs/accelerate/`` or launcher
    arguments; returns stderr; raises on a non-zero exit."""
    if isinstance(launch, str):
        launch = ["--config_file", str(ACCELERATE_CONFIGS / launch)]
    cmd = [
        str(BIN / "accelerate"),
        "launch",
        *launch,
        "--main_process_port",
        str(free_port()),
        "-m",
        "onpolicy.cli",
        "train",
        "--config",
        str(run_yaml),
    ]
    done = subprocess.run(
        cmd, cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{done.stderr[-4000:]}")
    return done.stderr


def losses(output_dir: Path) -> list[float]:
    """``train/loss`` of every logged step in ``output_dir/metrics.jsonl``."""
    lines = (output_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x)["train/loss"] for x in lines if "train/loss" in x]
