"""The command line's quiet mode drops vLLM's INFO records (dozens per engine) and keeps the rest:
importing vllm in a quiet process logs nothing at INFO, and vLLM's logger still passes warnings."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("vllm")

pytestmark = [pytest.mark.vllm]

_PROBE = """
import logging, sys
if sys.argv[1] == "quiet":
    from onpolicy.quiet import quiet_libraries
    quiet_libraries()
import vllm  # noqa: F401
from vllm.config.logging import LoggingConfig
from vllm.logger import configure_logging_if_needed, init_logger
configure_logging_if_needed(LoggingConfig())  # what an engine does when it starts
log = init_logger("vllm.probe")
log.info("probe-info")
log.warning("probe-warning")
"""


def _run(mode: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("VLLM_LOGGING_LEVEL", "ONPOLICY_QUIET")}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout + done.stderr


def test_quiet_drops_vllm_info_and_keeps_its_warnings():
    loud, quiet = _run("loud"), _run("quiet")
    assert "probe-info" in loud  # the probe can see INFO when nothing quiets it
    assert "probe-warning" in quiet
    assert "probe-info" not in quiet
    assert not [line for line in quiet.splitlines() if " INFO " in line or line.startswith("INFO")]
