"""``retain_freed_memory``: a freed large buffer is reused without page faults; opt-out by env."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# Allocates and frees a 64 MB float32 tensor (filled: every page touched) five times and prints the
# fewest minor page faults of one of the last three rounds (the first rounds map the memory in
# either way; the least of three, since a round now and then maps its buffer afresh).
SCRIPT = """
import resource, sys, torch
from alignment.cpu import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "1" else False
faults = []
for i in range(5):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(16 * 1024 * 1024)
    del x
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, min(faults[2:]))
"""


def _run(apply: bool, env: dict[str, str] | None = None) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, "1" if apply else "0"],
        capture_output=True, text=True, check=True, env={**os.environ, **(env or {})},
    )  # fmt: skip
    applied, faults = out.stdout.split()
    return applied, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_freed_buffers_are_reused_without_page_faults():
    applied, faults = _run(apply=True)
    assert applied == "True"
    assert faults < 1_000, faults  # the 64 MB buffer stays mapped: no page is faulted in again
    _, default_faults = _run(apply=False)
    # glibc's default: munmap + mmap every round, ~16k page faults per round (or 32 when the kernel
    # backs the fresh mapping with transparent huge pages)
    assert default_faults > max(faults, 16), (default_faults, faults)


def test_env_turns_it_off():
    applied, _ = _run(apply=True, env={"ONPOLICY_RETAIN_FREED_MEMORY": "0"})
    assert applied == "False"
