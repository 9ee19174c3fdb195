"""Build a teacher from its config block: where it runs (``backend``) and what it returns.

- ``local``: a transformers model in this process (``LocalTeacher``); its samples come from the
  ``hf`` rollout backend on the same model.
- ``vllm``: a vLLM engine in this process started on ``path`` (no LoRA; ``VLLMTeacher``); its
  samples come from the same engine (``VLLMEngineBackend(llm=...)``).
- ``vllm-server``: a running ``vllm serve`` at ``server_url`` (``path`` gives the tokenizer only);
  its samples come from the same server (``VLLMServerBackend``, no weight sync).

A vLLM teacher returns top-k log-probabilities: ``teacher_top_k`` says how many for what the
objective declares (``onpolicy.objectives.base.TeacherOutput``).
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass
from typing import Any

from onpolicy.config import TeacherConfig
from onpolicy.errors import ConfigError, TokenizerMismatchError

SERVER_KEYS = ("timeout_s", "max_retries", "backoff_s", "backoff_max_s")
"""``teacher.vllm`` keys of a ``vllm-server`` teacher (its ``RetryPolicy``)."""


@dataclass
class BuiltTeacher:
    """A teacher ready to use.

    Attributes:
        scorer: ``.score(rollout) -> TeacherScores`` (``LocalTeacher`` or ``VLLMTeacher``).
        sampler: a rollout backend sampling the teacher (the SFT baseline's and GKD's teacher
            samples), None for ``mode: self``.
        tokenizer: the teacher's tokenizer.
        model: the local model (``local`` backend), else None.
    """

    scorer: Any
    sampler: Any
    tokenizer: Any
    model: Any = None

    def close(self) -> None:
        """Shut down an engine the teacher started (``vllm``)."""
        close = getattr(self.sampler, "close", None)
        if close is not None:
            close()


def vllm_installed() -> bool:
    """Whether this Python has the vllm package (a folder named ``vllm`` on the path, such as
    ``tests/vllm``, is a namespace package without an origin: not it)."""
    spec = importlib.util.find_spec("vllm")
    return spec is not None and spec.origin is not None


def teacher_top_k(t: TeacherConfig, output: str, mode: str = "same") -> int:
    """Top-k a vLLM teacher asks for: ``t.top_k`` when set, else none when the objective needs
    only the sampled tokens' log-probabilities (``output == "token"``), else ``DEFAULT_TOP_K``
    (same tokenizer) or ``DEFAULT_CROSS_TOP_K`` (the rebuilt distribution of the cross-tokenizer
    objectives: docs/results/topk-cross-teacher.md)."""
    from onpolicy.teacher.vllm_teacher import DEFAULT_CROSS_TOP_K, DEFAULT_TOP_K

    if t.top_k > 0:
        return t.top_k
    if output == "token":
        return 0
    return DEFAULT_CROSS_TOP_K if mode == "cross" else DEFAULT_TOP_K


def check_backend(key: str, t: TeacherConfig, output: str, objective: Any) -> None:
    """Up-front checks of a teacher's backend (``key``: ``teacher`` or ``teachers.<name>``)."""
    if t.backend == "local":
        if t.server_url or t.vllm:
            raise ConfigError(
                f"{key}.server_url / {key}.vllm are set but {key}.backend=local; set backend to "
                "vllm or vllm-server, or drop them"
            )
        return
    if t.mode == "self":
        raise ConfigError(
            f"{key}.mode=self reads the student's own base in this process; use {key}.backend=local"
        )
    if t.path is None:
        raise ConfigError(
            f"{key}.path is missing: a {t.backend} teacher needs its model folder "
            "(vllm-server: at least its tokenizer)"
        )
    if t.backend == "vllm" and not vllm_installed():
        raise ConfigError(
            f"{key}.backend=vllm needs the vllm package, which this Python does not have: on a "
            "CPU-only machine run `bash scripts/setup_vllm_venv.sh` and use .venv-vllm/bin/python; "
            f"on a GPU, pip install vllm; or use {key}.backend=vllm-server or local"
        )
    if t.backend == "vllm-server":
        if not t.server_url:
            raise ConfigError(
                f"{key}.backend=vllm-server needs {key}.server_url (http://host:port)"
            )
        unknown = sorted(set(t.vllm) - set(SERVER_KEYS))
        if unknown:
            raise ConfigError(f"unknown {key}.vllm option(s) {unknown}; known: {list(SERVER_KEYS)}")
    else:
        if t.server_url:
            raise ConfigError(f"{key}.server_url is set but {key}.backend=vllm; use vllm-server")
        from onpolicy.rollout.vllm_engine import engine_options

        engine_options(**t.vllm)  # unknown or bad engine options: one line now
    _check_objective(key, t, output, objective)


def _check_objective(key: str, t: TeacherConfig, output: str, objective: Any) -> None:
    """What a top-k teacher cannot give: full logits, other temperatures. (A chunked objective,
    ``output == "hidden"``, gets top-k scores and takes the chunked top-k loss.)"""
    name = getattr(objective, "name", "?")
    if getattr(objective, "alpha", 0.0):
        raise ConfigError(
            f"objective {name!r} with alpha > 0 needs the teacher's full logits; a {t.backend} "
            "teacher returns top-k log-probs: set alpha: 0 or backend: local"
        )
    temps = (getattr(objective, "temperature", 1.0), getattr(objective, "teacher_temperature", 1.0))
    if any(x not in (None, 1.0) for x in temps):
        raise ConfigError(
            f"objective {name!r}: a {t.backend} teacher's log-probs are at temperature 1; set "
            "temperature: 1.0 (and teacher_temperature: null) or use backend: local"
        )


def build_teacher(
    t: TeacherConfig,
    student: Any,
    student_tok: Any,
    device: Any,
    output: str = "logits",
    hidden_layers: tuple[int, ...] = (),
) -> BuiltTeacher:
    """The teacher of block ``t`` for a student (``output``: what the objective declares;
    ``hidden_layers``: intermediate hidden states to return, local teachers only)."""
    if t.backend == "local":
        return _local(t, student, student_tok, device, output == "hidden", hidden_layers)
    if hidden_layers:
        raise ConfigError(
            f"hidden-state distillation needs the teacher's hidden states; teacher.backend="
            f"{t.backend!r} returns log-probabilities only: use backend local or hidden.weight=0"
        )
    from onpolicy.models import load_tokenizer, resolve_model_path
    from onpolicy.teacher.vllm_teacher import VLLMTeacher

    path = resolve_model_path(t.path or "")
    tokenizer = load_tokenizer(path, t.gguf_file)
    mode = _mode(t, tokenizer, student_tok)
    k = teacher_top_k(t, output, mode)
    kw = {"top_k": k, "mode": mode, "tokenizer": tokenizer, "student_tokenizer": student_tok}
    stops = _stops(tokenizer)
    if t.backend == "vllm":
        from onpolicy.rollout.vllm_engine import VLLMEngineBackend, engine_options

        options = engine_options(**t.vllm)
        if options.max_logprobs < k:  # the engine refuses requests above its max_logprobs
            options = dataclasses.replace(options, max_logprobs=k)
        sampler = VLLMEngineBackend(path, options=options, stop_token_ids=stops)
        return BuiltTeacher(VLLMTeacher(sampler.llm, **kw), sampler, tokenizer)
    from onpolicy.rollout.http import RetryPolicy
    from onpolicy.rollout.vllm_server import VLLMServerBackend, VLLMServerOptions

    retry = RetryPolicy(**t.vllm)
    url = str(t.server_url)
    scorer = VLLMTeacher(url, served_model=t.served_model, retry=retry, **kw)
    options = VLLMServerOptions(sync="none", **t.vllm)
    sampler = VLLMServerBackend(url, model=scorer.served_model, stop_token_ids=stops,
                                options=options)  # fmt: skip
    return BuiltTeacher(scorer, sampler, tokenizer)


def _local(
    t: TeacherConfig,
    student: Any,
    student_tok: Any,
    device: Any,
    chunked: bool,
    hidden_layers: tuple[int, ...] = (),
):
    from onpolicy.models import load_model, load_tokenizer, resolve_model_path
    from onpolicy.rollout.hf import HFRolloutBackend
    from onpolicy.teacher.local import LocalTeacher

    hidden = chunked and not t.top_k  # a top-k teacher: top-k scores, the chunked top-k loss
    kw = {"hidden": hidden, "token_logprobs": not hidden, "top_k": t.top_k,
          "hidden_layers": hidden_layers}  # fmt: skip
    if t.mode == "self":
        scorer = LocalTeacher(student, student_tok, student_tok, mode="self", **kw)
        return BuiltTeacher(scorer, None, student_tok, student)
    path = resolve_model_path(t.path or "")
    dtype = "float32" if t.dtype == "auto" else t.dtype
    tokenizer = load_tokenizer(path, t.gguf_file)
    model = load_model(path, dtype=dtype, device=device, gguf_file=t.gguf_file, trainable=False)
    scorer = LocalTeacher(model, tokenizer, student_tok, mode=t.mode, **kw)
    return BuiltTeacher(scorer, HFRolloutBackend(model, tokenizer), tokenizer, model)


def _mode(t: TeacherConfig, tokenizer: Any, student_tok: Any) -> str:
    """``same`` or ``cross`` for a vLLM teacher, as ``LocalTeacher`` decides it."""
    from alignment import same_tokenizer

    same = same_tokenizer(tokenizer, student_tok)
    if t.mode == "same" and not same:
        raise TokenizerMismatchError(
            f"teacher tokenizer {t.path!r} differs from the student's; set mode: cross (or auto)"
        )
    return "same" if t.mode == "same" or (t.mode == "auto" and same) else "cross"


def _stops(tokenizer: Any) -> tuple[int, ...]:
    from onpolicy.chat import stop_token_ids

    return tuple(stop_token_ids(tokenizer))
