"""``benchmarks/gpu_check.sh`` on a machine without CUDA: one line saying so, exit status 3, and
no benchmark run (no GPU report written). The GPU path itself needs a GPU (not run here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the script would run")
def test_without_cuda_it_stops_with_one_line():
    before = set(ROOT.glob("benchmarks/RESULTS-*-gpu.md"))
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: no CUDA device"), lines
    assert "torch.cuda.is_available() is False" in lines[0]
    assert proc.stdout == ""
    assert set(ROOT.glob("benchmarks/RESULTS-*-gpu.md")) == before


def test_a_python_without_torch_is_named():
    env = {**os.environ, "PYTHON": "/bin/false"}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 3
    assert proc.stderr.strip() == (
        "gpu_check: no CUDA device (/bin/false cannot import torch (set PYTHON)); nothing run"
    )
