"""The teacher that ``onpolicy score`` runs, by ``--backend``, opened and always closed.

- ``local``: transformers in this process (``LocalTeacher(top_k=K)``: one forward, full logits,
  then the top-K).
- ``vllm``: a vLLM engine in this process started on the teacher's folder (``VLLMTeacher``:
  ``prompt_logprobs=K``); its ``max_logprobs`` is raised to K. Shut down when the command ends,
  normally or on an error (``open_scorer`` is a context manager).
- ``vllm-server``: a running ``vllm serve`` at ``--server-url`` serving ``--teacher``'s weights
  (the folder's weights key the scores; the server must hold the same ones and allow
  ``--max-logprobs`` >= K). Nothing is started, so nothing is shut down.

Every backend returns the same sparse form (top-K ids and log-probs at temperature 1, tail mass,
the token's own log-prob), so the shards and their keys do not depend on the backend: the backend
is not part of a row's key (vLLM-made and transformers-made scores of one teacher agree to the
tolerance of ``tests/vllm/test_vllm_score.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import yaml

from onpolicy.errors import ConfigError

BACKENDS = ("local", "vllm", "vllm-server")


def parse_options(options: Sequence[str]) -> dict[str, Any]:
    """``["key=value", ...]`` (``--vllm``) as a dict, values read as YAML scalars."""
    out = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key:
            raise ConfigError(f"--vllm {option!r}: give key=value")
        out[key] = yaml.safe_load(value)
    return out


def check_backend(backend: str, server_url: str | None, options: Sequence[str]) -> None:
    """One-line ``ConfigError`` for a bad ``--backend`` / ``--server-url`` / ``--vllm``, before
    any model loads."""
    from onpolicy.rollout.http import RetryPolicy
    from onpolicy.teacher.backends import SERVER_KEYS, vllm_installed

    if backend not in BACKENDS:
        raise ConfigError(f"--backend={backend!r}; use one of {list(BACKENDS)}")
    if (backend == "vllm-server") != bool(server_url):
        raise ConfigError("--server-url goes with --backend vllm-server (and it needs one)")
    parsed = parse_options(options)
    if backend == "local" and parsed:
        raise ConfigError("--vllm options need --backend vllm or vllm-server")
    if backend == "vllm":
        if not vllm_installed():
            raise ConfigError(
                "--backend vllm needs the vllm package, which this Python does not have: on a "
                "CPU-only machine run `bash scripts/setup_vllm_venv.sh` and use "
                ".venv-vllm/bin/python; or use --backend local or vllm-server"
            )
        from onpolicy.rollout.vllm_engine import engine_options

        engine_options(**parsed)
    if backend == "vllm-server":
        unknown = sorted(set(parsed) - set(SERVER_KEYS))
        if unknown:
            raise ConfigError(f"unknown --vllm option(s) {unknown}; known: {list(SERVER_KEYS)}")
        RetryPolicy(**parsed)


@contextlib.contextmanager
def open_scorer(
    backend: str,
    teacher: str,
    render_tok: Any,
    top_k: int,
    *,
    dtype: str = "float32",
    gguf_file: str | None = None,
    server_url: str | None = None,
    options: Sequence[str] = (),
) -> Iterator[Any]:
    """A teacher with ``.score(rollout) -> TeacherScores`` (sparse, ``top_k``), closed on exit.

    Args:
        backend: ``local`` | ``vllm`` | ``vllm-server`` (module docstring).
        teacher: the teacher's spec (folder, ``.gguf`` folder or ``tiny:...``).
        render_tok: the tokenizer the rows were rendered with (the student's, same content).
        top_k: K.
        dtype: the teacher's weights dtype (``float32`` | ``bfloat16``); the engine's dtype.
        server_url: the server (``vllm-server``).
        options: ``key=value`` engine options (``vllm``) or retry options (``vllm-server``).
    """
    check_backend(backend, server_url, options)
    if backend == "local":
        from onpolicy.teacher.identity import load_teacher_model
        from onpolicy.teacher.local import LocalTeacher

        model, teacher_tok, _ = load_teacher_model(teacher, dtype, gguf_file)
        yield LocalTeacher(model, teacher_tok, render_tok, mode="same", top_k=top_k)
        return
    from onpolicy.models import load_tokenizer, resolve_model_path
    from onpolicy.teacher.vllm_teacher import VLLMTeacher

    folder = resolve_model_path(teacher)
    kw = {"top_k": top_k, "mode": "same", "tokenizer": load_tokenizer(folder, gguf_file)}
    if backend == "vllm-server":
        from onpolicy.rollout.http import RetryPolicy

        yield VLLMTeacher(str(server_url), retry=RetryPolicy(**parse_options(options)), **kw)
        return
    from onpolicy.rollout.vllm_engine import VLLMEngineBackend, engine_options

    settings = {"dtype": dtype, **parse_options(options)}
    settings["max_logprobs"] = max(int(settings.get("max_logprobs", 0)), top_k)
    engine = VLLMEngineBackend(folder, options=engine_options(**settings), stop_token_ids=())
    try:
        yield VLLMTeacher(engine.llm, **kw)
    finally:
        engine.close()
