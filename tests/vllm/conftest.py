"""Shared fixtures of the vLLM lane (run with ``.venv-vllm/bin/python -m pytest tests/vllm``).

One in-process engine per module (started once, closed at module end); two ``vllm serve`` on
127.0.0.1 for the session (free ports, started together, bounded wait, killed at the end).
Without vllm every test module skips itself (``pytest.importorskip``); these fixtures import vllm
only when a test asks for them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

SERVER_START_TIMEOUT_S = float(os.environ.get("ONPOLICY_VLLM_START_S", "300"))  # loaded: raise


def teacher_path() -> Path:
    """A small pretrained model (bpe tokenizer): answers the corpus and ends its turns."""
    from onpolicy.tiny import tiny_model_dir

    return tiny_model_dir("small", "bpe", seed=1, pretrain_steps=300)


def char_model_path() -> Path:
    """A tiny model with the other (char, byte-fallback) tokenizer: the server's model."""
    from onpolicy.tiny import tiny_model_dir

    return tiny_model_dir("tiny", "char", seed=0)


@pytest.fixture(scope="session")
def tiny_teacher_path() -> Path:
    return teacher_path()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Servers:
    """Both test servers, started together on first use (their start-ups overlap), killed at the
    end of the session."""

    def __init__(self, log_dir: Path) -> None:
        from onpolicy.rollout.vllm_server import serve_command

        self.procs: dict[str, tuple[subprocess.Popen, str, Path]] = {}
        path = char_model_path()
        for name, rank in (("student", 8), ("teacher", None)):
            port = free_port()
            argv, env = serve_command(
                path,
                port,
                python=sys.executable,
                max_model_len=256,
                dtype="float32",
                max_lora_rank=rank,
            )
            log_path = log_dir / f"vllm-serve-{name}.log"
            with open(log_path, "w") as log:
                proc = subprocess.Popen(
                    argv, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
                )
            self.procs[name] = (proc, f"http://127.0.0.1:{port}", log_path)
        self.path = path

    def get(self, name: str) -> tuple[str, Path]:
        proc, url, log_path = self.procs[name]
        _wait_healthy(url, proc, log_path)
        return url, self.path

    def close(self) -> None:
        for proc, _, _ in self.procs.values():
            proc.terminate()
        for proc, _, _ in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)


@pytest.fixture(scope="session")
def _servers(tmp_path_factory):
    servers = _Servers(tmp_path_factory.mktemp("servers"))
    yield servers
    servers.close()


@pytest.fixture(scope="session")
def vllm_server(_servers):
    """``(url, model_path)`` of a student server: runtime LoRA loading and the dev-mode weight
    reload route enabled (tiny char-tokenizer model)."""
    return _servers.get("student")


@pytest.fixture(scope="session")
def vllm_teacher_server(_servers):
    """A teacher server, LoRA off: on vllm-cpu 0.32 ``prompt_logprobs`` for several requests on a
    LoRA-enabled engine crashes the engine (CPU punica ``add_lora_logits`` shape error)."""
    return _servers.get("teacher")


def _wait_healthy(url: str, proc: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text()[-3000:]
            raise RuntimeError(f"vllm serve exited with {proc.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"vllm serve not healthy after {SERVER_START_TIMEOUT_S} s; see {log_path}")
