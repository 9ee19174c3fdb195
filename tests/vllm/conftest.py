"""Shared fixtures of the vLLM lane (run with ``.venv-vllm/bin/python -m pytest tests/vllm``).

One in-process engine per module (started once, closed at module end); one ``vllm serve`` per
session on 127.0.0.1 (a free port, bounded wait, killed at the end). Without vllm every test module
skips itself (``pytest.importorskip``); these fixtures import vllm only when a test asks for them.
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

SERVER_START_TIMEOUT_S = 180.0


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


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory):
    """``(base_url, model_path)`` of a real ``vllm serve`` on the char-tokenizer tiny model, with
    runtime LoRA loading and the dev-mode weight reload route enabled."""
    from onpolicy.rollout.vllm_server import serve_command

    path = char_model_path()
    port = free_port()
    argv, env = serve_command(
        path, port, python=sys.executable, max_model_len=256, dtype="float32", max_lora_rank=8
    )
    log_path = tmp_path_factory.mktemp("server") / "vllm-serve.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            argv, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log_path)
        yield url, path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


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
