"""``onpolicy score``: a teacher's top-k scores of every completion token of a dataset, cached.

    onpolicy score --teacher tiny:small,seed=1,pretrain_steps=300 \\
        --data runs/teacher_answers.jsonl --out runs/teacher_scores --top-k 64

Each row (``prompt``/``messages`` + ``completion``, the ``onpolicy.data`` format) becomes exactly
the token ids a run's ``dataset`` batch holds (the student's chat template, the completion tokenized
by the student + its end of turn), the teacher scores them in one forward pass (temperature 1), and
its top-k ids, log-probs, tail mass and the completion token's log-prob are written in shards
(format and keys: ``onpolicy.scores.store``). ``--backend`` says where the teacher runs:
transformers here (``local``), a vLLM engine here (``vllm``, shut down at the end) or a running
vLLM server (``vllm-server --server-url URL``); see ``onpolicy.scores.scorers``. Same tokenizer
only: the student's tokenizer (``--student``, default the teacher's) must match the teacher's by
content.

A rerun scores only rows whose key is missing (a killed run resumes at its last whole shard; a
finished one is all hits). A changed teacher (weights), tokenizer, ``--top-k`` or ``--dtype``
invalidates the folder: its shards are deleted and everything is scored again.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onpolicy.errors import ConfigError, TokenizerMismatchError
from onpolicy.jobs import check_job, run_job, teacher_parser
from onpolicy.scores.store import (
    VALUE_DTYPES,
    Manifest,
    RowScores,
    ScoreReader,
    complete_shards,
    read_manifest,
    row_key,
    write_manifest,
    write_shard,
)
from onpolicy.types import Rollout


@dataclass(frozen=True)
class ScoreSpec:
    """One ``onpolicy score`` job (the command's flags)."""

    teacher: str
    data: str
    out: str
    top_k: int = 64
    student: str | None = None
    chat: bool = False
    batch_size: int = 16
    rows_per_shard: int = 256
    dtype: str = "float16"
    teacher_dtype: str = "float32"
    gguf_file: str | None = None
    backend: str = "local"  # local | vllm | vllm-server (``onpolicy.scores.scorers``)
    server_url: str | None = None
    vllm: tuple[str, ...] = ()  # ``key=value`` engine (vllm) or retry (vllm-server) options


@dataclass
class ScoreSummary:
    """What a ``score`` call did and what the folder holds (``bytes_per_token``: the shard files
    on disk, tensors and keys, over the completion tokens they hold)."""

    rows: int = 0
    cache_hits: int = 0
    rows_scored: int = 0
    tokens_scored: int = 0
    invalidated: bool = False
    tokens_stored: int = 0
    bytes_per_token: float = 0.0


def check_spec(spec: ScoreSpec) -> None:
    """One-line ``ConfigError`` for a bad flag or file, before any model loads."""
    from onpolicy.models import check_model_path

    counts = {"--top-k": spec.top_k, "--batch-size": spec.batch_size,
              "--rows-per-shard": spec.rows_per_shard}  # fmt: skip
    check_job(spec.teacher, ("--data", spec.data), spec.out, counts)
    if spec.student is not None:
        check_model_path("--student", spec.student)
    if spec.dtype not in VALUE_DTYPES:
        raise ConfigError(f"--dtype={spec.dtype!r}; use one of {sorted(VALUE_DTYPES)}")
    from onpolicy.scores.scorers import check_backend

    check_backend(spec.backend, spec.server_url, spec.vllm)
    if spec.gguf_file and spec.backend == "vllm":
        raise ConfigError("--gguf-file with --backend vllm: the engine loads a Hugging Face folder")


def dataset_rollout(data: str, tokenizer: Any, chat: bool) -> Rollout:
    """The dataset's rows as a run's ``dataset`` batch builds them (``reference_rollout``)."""
    from alignment.tokens.chat import turn_end_id
    from onpolicy.chat import render_prompts
    from onpolicy.config import DataConfig
    from onpolicy.data import read_prompts
    from onpolicy.trainer.sources import reference_rollout

    prompts = read_prompts(data, DataConfig(chat=chat))
    ids = render_prompts(tokenizer, prompts)
    return reference_rollout(prompts, ids, tokenizer, turn_end_id(tokenizer))


def _tokenizers(spec: ScoreSpec, folder: str) -> tuple[Any, Any]:
    """``(teacher tokenizer, the tokenizer that renders rows)``; they must match by content."""
    from alignment.tokens.vocab_map import same_tokenizer
    from onpolicy.models import load_tokenizer, resolve_model_path

    teacher_tok = load_tokenizer(folder, spec.gguf_file)
    if spec.student is None:
        return teacher_tok, teacher_tok
    student_tok = load_tokenizer(resolve_model_path(spec.student))
    if not same_tokenizer(teacher_tok, student_tok):
        raise TokenizerMismatchError(
            f"--student {spec.student!r} tokenizes differently from --teacher {spec.teacher!r}; "
            "cached scores are for a shared tokenizer (distill across tokenizers live)"
        )
    return teacher_tok, student_tok


def _prepare_folder(out: Path, manifest: Manifest, teacher_tok: Any) -> bool:
    """Create or check ``out``; returns True when older scores (another teacher, tokenizer, K or
    dtype) were deleted."""
    invalidated = False
    if (out / "manifest.json").is_file() and not read_manifest(out).same_scores(manifest):
        for stale in ("shards", "tokenizer"):  # a tokenizer of another kind leaves other files
            shutil.rmtree(out / stale, ignore_errors=True)
        invalidated = True
    elif out.exists() and any(out.iterdir()) and not (out / "manifest.json").is_file():
        raise ConfigError(f"--out {str(out)!r} is a non-empty folder without a score manifest")
    out.mkdir(exist_ok=True)
    write_manifest(out, manifest)
    teacher_tok.save_pretrained(str(out / "tokenizer"))
    return invalidated


def score_dataset(spec: ScoreSpec) -> ScoreSummary:
    """Score ``spec.data`` into ``spec.out`` (see the module docstring); returns what it did."""
    from onpolicy.models import resolve_model_path
    from onpolicy.teacher.identity import tokenizer_fingerprint, weights_fingerprint

    check_spec(spec)
    folder = resolve_model_path(spec.teacher)
    teacher_tok, render_tok = _tokenizers(spec, folder)
    vocab = len(teacher_tok)
    manifest = Manifest(
        teacher=spec.teacher, teacher_fingerprint=weights_fingerprint(folder, spec.gguf_file),
        tokenizer_fingerprint=tokenizer_fingerprint(teacher_tok), vocab_size=vocab,
        top_k=min(spec.top_k, vocab), dtype=spec.dtype,
    )  # fmt: skip
    rollout = dataset_rollout(spec.data, render_tok, spec.chat)
    out = Path(spec.out)
    invalidated = _prepare_folder(out, manifest, teacher_tok)
    summary = ScoreSummary(rows=len(rollout), invalidated=invalidated)
    reader = ScoreReader(out)
    todo: dict[str, int] = {}  # key -> first row with it (duplicate rows are scored once)
    for b, (p, c) in enumerate(zip(rollout.prompt_ids_B, rollout.completion_ids_B, strict=True)):
        key = row_key(manifest, p, c)
        if key in reader:
            summary.cache_hits += 1
        else:
            todo.setdefault(key, b)
    if todo:
        _score_rows(spec, render_tok, manifest, rollout, todo, summary)
    summary.tokens_stored, nbytes = _stored(out)
    summary.bytes_per_token = nbytes / max(summary.tokens_stored, 1)
    return summary


def _score_rows(
    spec: ScoreSpec,
    render_tok: Any,
    manifest: Manifest,
    rollout: Rollout,
    todo: dict[str, int],
    summary: ScoreSummary,
) -> None:
    """Score the ``todo`` rows (key -> row) in batches; one shard per ``rows_per_shard`` rows
    (the teacher: ``--backend``, closed at the end or on an error)."""
    from onpolicy.scores.scorers import open_scorer

    with open_scorer(
        spec.backend, spec.teacher, render_tok, manifest.top_k, dtype=spec.teacher_dtype,
        gguf_file=spec.gguf_file, server_url=spec.server_url, options=spec.vllm,
    ) as teacher:  # fmt: skip
        _score_shards(spec, teacher, manifest, rollout, todo, summary)


def _score_shards(
    spec: ScoreSpec,
    teacher: Any,
    manifest: Manifest,
    rollout: Rollout,
    todo: dict[str, int],
    summary: ScoreSummary,
) -> None:
    index = len(complete_shards(spec.out))
    items = list(todo.items())
    for s in range(0, len(items), spec.rows_per_shard):
        shard = items[s : s + spec.rows_per_shard]
        rows: list[RowScores] = []
        for i in range(0, len(shard), spec.batch_size):
            batch = [b for _, b in shard[i : i + spec.batch_size]]
            rows += _score_batch(teacher, rollout.select(batch))
        write_shard(Path(spec.out), index, [k for k, _ in shard], rows, manifest.dtype)
        index += 1
        summary.rows_scored += len(shard)
        summary.tokens_scored += sum(len(r.tail_T) for r in rows)


def _score_batch(teacher: Any, rollout: Rollout) -> list[RowScores]:
    sc = teacher.score(rollout)
    n = sc.num_tokens_B
    parts = (sc.topk_ids_N_K, sc.topk_logprobs_N_K, sc.tail_logprob_N, sc.token_logprobs_N)
    split = [t.cpu().split(n) for t in parts]  # per row: [T, K], [T, K], [T], [T]
    return [RowScores(*row) for row in zip(*split, strict=True)]


def _stored(out: Path) -> tuple[int, int]:
    """(completion tokens, bytes of shard tensors + keys) of the folder's complete shards."""
    from safetensors import safe_open

    tokens = nbytes = 0
    for base in complete_shards(out):
        tensors = base.with_suffix(".safetensors")
        with safe_open(str(tensors), framework="pt") as f:
            tokens += int(f.get_slice("tail_N").get_shape()[0])
        nbytes += tensors.stat().st_size + base.with_suffix(".json").stat().st_size
    return tokens, nbytes


def _parser() -> argparse.ArgumentParser:
    p = teacher_parser(
        "onpolicy score", __doc__,
        "then: onpolicy train --config configs/kd_cached_scores.yaml (teacher.scores: the --out "
        "folder)",
    )  # fmt: skip
    p.add_argument("--data", required=True, help="JSONL/parquet rows with a completion")
    p.add_argument("--out", required=True, help="score folder (created; reused as a cache)")
    p.add_argument("--top-k", type=int, default=64, help="teacher log-probs kept per token")
    p.add_argument("--student", default=None, help="the student (its tokenizer and template)")
    p.add_argument("--batch-size", type=int, default=16, help="rows per teacher forward")
    p.add_argument("--rows-per-shard", type=int, default=256)
    p.add_argument("--dtype", default="float16", choices=sorted(VALUE_DTYPES), help="log-probs")
    p.add_argument("--teacher-dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument(
        "--backend",
        default="local",
        choices=["local", "vllm", "vllm-server"],
        help="where the teacher runs: transformers here, a vLLM engine here, a server",
    )
    p.add_argument("--server-url", default=None, help="vllm-server: http://host:port")
    p.add_argument(
        "--vllm",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="engine option (vllm) or retry option (vllm-server); repeatable",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """``onpolicy score``: prints a JSON summary; a bad input is one line and exit status 2."""
    args = _parser().parse_args(argv)
    return run_job(score_dataset, ScoreSpec(**{**vars(args), "vllm": tuple(args.vllm)}))
