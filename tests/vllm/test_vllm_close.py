"""The vLLM engine a run or ``onpolicy score`` starts is shut down at the end and on an error.

Each case runs ``engine_close_probe.py`` in a fresh process with the engine core in child
processes (``in_process: false``): the probe sees the ``VLLM::EngineCore`` / ``VLLM::Worker``
children while the teacher scores, and none of them may be left once the command returns or
raises (the error: a ``max_model_len`` below the rows' length, hit after the engine started).
Without the close, both children were still alive 30 s after the run raised.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm")
pytest.importorskip("psutil")

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

PROBE = Path(__file__).with_name("engine_close_probe.py")
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("case", ["score", "score-error", "train", "train-error"])
def test_engine_children_are_gone_after_the_command(tmp_path, case):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VLLM_CPU_KVCACHE_SPACE": "1"}
    proc = subprocess.run(
        [sys.executable, str(PROBE), case, str(tmp_path)],
        capture_output=True, text=True, timeout=600, env=env, cwd=ROOT,
    )  # fmt: skip
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    report = json.loads(lines[-1])
    assert any("VLLM::EngineCore" in p for p in report["during"]), report  # it ran out of process
    assert report["engines_alive_after_30s"] == 0, report
    assert not [p for p in report["after"] if "VLLM" in p], report
    if case.endswith("error"):
        assert "maximum context length" in str(report["error"]), report
    else:
        assert report["error"] is None, report
