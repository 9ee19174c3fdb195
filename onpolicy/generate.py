"""``onpolicy generate``: a teacher-made dataset (the teacher answers prompts; SFT / supervised KD
train a student on the answers).

    onpolicy generate --teacher tiny:small,seed=1,pretrain_steps=300 \\
        --prompts configs/data/tiny_chat.jsonl --out runs/teacher_answers.jsonl --n 4

Each prompt is rendered with the TEACHER's own chat template (never the student's) and sampled
``n`` times (transformers ``generate`` with the KV cache, or a vLLM engine with ``--backend vllm``).
The output is the project's data format (``onpolicy.data``), one row per sample::

    {"messages": [...], "completion": "...", "prompt_hash": "9f2c...", "sample": 0,
     "finish_reason": "stop", "teacher": "tiny:small,..."}

(``prompt`` instead of ``messages`` for raw-text prompts), so ``data.path`` of ``onpolicy train``
reads it directly (``configs/sft_teacher_data.yaml``). A sample that is empty text is dropped (the
data format refuses empty completions); one cut at ``--max-new-tokens`` is kept with
``finish_reason: length`` and counted (a run trains on it as a finished answer, end of turn
included: ``--drop-truncated`` drops such samples instead).

Resumable: prompts are keyed by a hash of what the teacher sees (text or messages). After each
batch the rows are written and flushed first, then ``<out>.progress.jsonl`` records the batch's
prompt hashes. A rerun reads the record, cuts ``<out>`` back to the rows of recorded prompts (a kill
can leave an unrecorded tail), and samples only the prompts not yet recorded: nothing is
duplicated. The record's first line holds the teacher's weights fingerprint and the sampling
settings; a rerun with other ones is refused (another ``--out``, or delete both files). Duplicate
prompts in the input are sampled once.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onpolicy.errors import ConfigError, DataError
from onpolicy.jobs import check_job, run_job, teacher_parser
from onpolicy.types import Prompt, SamplingParams

FORMAT_VERSION = 1


@dataclass(frozen=True)
class GenerateSpec:
    """One ``onpolicy generate`` job (the command's flags)."""

    teacher: str
    prompts: str
    out: str
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    backend: str = "hf"
    seed: int = 0
    batch_size: int = 16
    chat: bool = False
    dtype: str = "float32"
    gguf_file: str | None = None
    vllm: tuple[str, ...] = ()  # ``key=value`` engine options (``onpolicy.rollout.vllm_engine``)
    drop_truncated: bool = False  # drop samples cut at max_new_tokens (they never ended)


@dataclass
class GenerateSummary:
    """What a ``generate`` call did: prompts sampled now, prompts already done before (resume),
    rows written now, samples dropped as empty, samples cut at the token limit."""

    prompts_sampled: int = 0
    prompts_already_done: int = 0
    rows_written: int = 0
    dropped_empty: int = 0
    truncated: int = 0


def prompt_hash(prompt: Prompt) -> str:
    """sha256 (16 hex) of what the teacher sees of ``prompt``: its text or its messages."""
    what = {"text": prompt.text, "messages": [dict(m) for m in prompt.messages or ()]}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def check_spec(spec: GenerateSpec) -> None:
    """One-line ``ConfigError`` for a bad flag or file, before any model loads."""
    counts = {"--n": spec.n, "--max-new-tokens": spec.max_new_tokens,
              "--batch-size": spec.batch_size}  # fmt: skip
    check_job(spec.teacher, ("--prompts", spec.prompts), spec.out, counts)
    if spec.temperature < 0 or not 0 < spec.top_p <= 1:
        raise ConfigError(
            f"--temperature={spec.temperature} must be >= 0 and --top-p={spec.top_p} in (0, 1]"
        )
    if spec.backend not in ("hf", "vllm"):
        raise ConfigError(f"--backend={spec.backend!r}; use hf or vllm")
    for option in spec.vllm:
        if "=" not in option or spec.backend != "vllm":
            raise ConfigError(f"--vllm {option!r}: give key=value, with --backend vllm")


def _header(spec: GenerateSpec, fingerprint: str) -> dict[str, Any]:
    """What must match for a rerun to continue the same file."""
    return {
        "format": FORMAT_VERSION,
        "teacher_fingerprint": fingerprint,
        "sampling": {k: getattr(spec, k) for k in ("n", "temperature", "top_p",
                                                   "max_new_tokens", "seed", "chat",
                                                   "drop_truncated")},
    }  # fmt: skip


def _progress_path(out: Path) -> Path:
    return out.with_name(out.name + ".progress.jsonl")


def read_progress(out: Path, header: dict[str, Any]) -> dict[str, int]:
    """``{prompt hash: rows written}`` of the prompts already done, after cutting ``out`` back to
    those rows. A record made with another teacher or other settings is a ``ConfigError``."""
    record = _progress_path(out)
    if not record.exists():
        if out.exists() and out.stat().st_size > 0:
            raise ConfigError(
                f"--out {str(out)!r} exists but has no {record.name}; it was not written by "
                "onpolicy generate: choose another --out"
            )
        return {}
    lines = _complete_lines(record)
    if not lines and not (out.exists() and out.stat().st_size > 0):
        _cut_bytes(record, 0)  # killed before the header was durable: start over
        return {}
    if not lines or json.loads(lines[0]) != header:
        raise ConfigError(
            f"{str(out)!r} was generated with another teacher or other sampling settings "
            f"(see {record.name}); choose another --out or delete both files to start over"
        )
    done: dict[str, int] = {}
    for line in lines[1:]:
        entry = json.loads(line)
        done[entry["hash"]] = entry["rows"]
    _cut_rows(out, sum(done.values()))
    _cut_bytes(record, sum(len(x.encode()) + 1 for x in lines))
    return done


def _complete_lines(path: Path) -> list[str]:
    """The newline-terminated lines of ``path`` (a torn last line is left out)."""
    raw = path.read_bytes()
    return raw.decode("utf-8").split("\n")[:-1] if raw else []


def _cut_rows(out: Path, keep: int) -> None:
    """Keep the first ``keep`` lines of ``out`` (rows of an unrecorded batch are dropped)."""
    if not out.exists():
        if keep:
            raise DataError(f"{str(out)!r} is missing but its progress record lists rows")
        return
    lines = _complete_lines(out)
    if len(lines) < keep:
        raise DataError(
            f"{str(out)!r} has {len(lines)} rows but its progress record lists {keep}; the file "
            "was edited: delete it and its .progress.jsonl to start over"
        )
    _cut_bytes(out, sum(len(x.encode()) + 1 for x in lines[:keep]))


def _cut_bytes(path: Path, size: int) -> None:
    if path.stat().st_size != size:
        with open(path, "r+b") as f:
            f.truncate(size)


def _append(path: Path, lines: list[str]) -> None:
    """Append whole lines and make them durable before returning."""
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))
        f.flush()
        os.fsync(f.fileno())


def _row(prompt: Prompt, text: str, h: str, j: int, reason: str, teacher: str) -> dict[str, Any]:
    where = {"prompt": prompt.text} if prompt.text is not None else {
        "messages": [dict(m) for m in prompt.messages or ()]}  # fmt: skip
    return {**where, "completion": text, "prompt_hash": h, "sample": j, "finish_reason": reason,
            "teacher": teacher}  # fmt: skip


def _sampler(spec: GenerateSpec, model: Any, tokenizer: Any, folder: str) -> Any:
    from onpolicy.rollout.base import make_backend

    if spec.backend == "vllm":
        import yaml

        options = {k: yaml.safe_load(v) for k, _, v in (o.partition("=") for o in spec.vllm)}
        return make_backend("vllm", tokenizer=tokenizer, model_path=folder, **options)
    return make_backend("hf", model=model, tokenizer=tokenizer)


def generate_dataset(spec: GenerateSpec) -> GenerateSummary:
    """Sample the teacher's answers to ``spec.prompts`` into ``spec.out`` (see the module
    docstring); resumes a file this function began. Returns what this call did."""
    from onpolicy.chat import render_prompt
    from onpolicy.config import DataConfig
    from onpolicy.data import read_prompts
    from onpolicy.models import load_tokenizer, resolve_model_path
    from onpolicy.teacher.identity import load_teacher_model, weights_fingerprint

    check_spec(spec)
    prompts = read_prompts(spec.prompts, DataConfig(chat=spec.chat))
    distinct: dict[str, Prompt] = {}
    for p in prompts:
        distinct.setdefault(prompt_hash(p), p)
    folder = resolve_model_path(spec.teacher)
    out = Path(spec.out)
    header = _header(spec, weights_fingerprint(folder, spec.gguf_file))
    done = read_progress(out, header)
    if not _progress_path(out).exists() or _progress_path(out).stat().st_size == 0:
        _append(_progress_path(out), [json.dumps(header)])
    todo = [(h, p) for h, p in distinct.items() if h not in done]
    summary = GenerateSummary(prompts_already_done=len(distinct) - len(todo))
    if not todo:
        return summary
    if spec.backend == "vllm":  # the engine loads the weights itself
        model, tokenizer = None, load_tokenizer(folder, spec.gguf_file)
    else:
        model, tokenizer, folder = load_teacher_model(spec.teacher, spec.dtype, spec.gguf_file)
    sampler = _sampler(spec, model, tokenizer, folder)
    try:
        for i in range(0, len(todo), spec.batch_size):
            batch = todo[i : i + spec.batch_size]
            seed = spec.seed * 1_000_003 + int(batch[0][0][:7], 16)  # fixed per batch of prompts
            sampling = SamplingParams(
                max_new_tokens=spec.max_new_tokens, temperature=spec.temperature,
                top_p=spec.top_p, n=spec.n, seed=seed,
            )  # fmt: skip
            ids = [render_prompt(tokenizer, p) for _, p in batch]  # the teacher's own template
            ro = sampler.generate(ids, sampling, [p for _, p in batch])
            _write_batch(out, batch, ro, spec, summary)
    finally:
        sampler.close()
    return summary


def _write_batch(out: Path, batch: list[tuple[str, Prompt]], ro: Any, spec: GenerateSpec,
                 summary: GenerateSummary) -> None:  # fmt: skip
    """Rows first (durable), then the progress record of the batch's prompts."""
    teacher, drop_truncated = spec.teacher, spec.drop_truncated
    rows: list[str] = []
    counts = {h: 0 for h, _ in batch}
    sample = {h: 0 for h, _ in batch}
    for i, text, reason in zip(ro.prompt_index_B, ro.texts_B, ro.finish_reason_B, strict=True):
        h, prompt = batch[i]
        j = sample[h]
        sample[h] += 1
        if not text.strip():
            summary.dropped_empty += 1
            continue
        summary.truncated += reason == "length"
        if reason == "length" and drop_truncated:
            continue
        rows.append(json.dumps(_row(prompt, text, h, j, reason, teacher), ensure_ascii=False))
        counts[h] += 1
    _append(out, rows)
    _append(_progress_path(out), [json.dumps({"hash": h, "rows": counts[h]}) for h, _ in batch])
    summary.prompts_sampled += len(batch)
    summary.rows_written += len(rows)


def _parser() -> argparse.ArgumentParser:
    p = teacher_parser(
        "onpolicy generate", __doc__,
        "example: onpolicy generate --teacher tiny:small,seed=1,pretrain_steps=300 "
        "--prompts configs/data/tiny_chat.jsonl --out runs/answers.jsonl --n 4",
    )  # fmt: skip
    p.add_argument("--prompts", required=True, help="JSONL/parquet prompts (onpolicy.data format)")
    p.add_argument("--out", required=True, help="output JSONL (resumed when it exists)")
    p.add_argument("--n", type=int, default=1, help="samples per prompt")
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--backend", default="hf", choices=["hf", "vllm"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16, help="prompts per sampling call")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--drop-truncated", action="store_true",
                   help="drop samples cut at --max-new-tokens (kept by default, marked)")
    p.add_argument("--vllm", action="append", default=[], metavar="KEY=VALUE",
                   help="vLLM engine option, e.g. gpu_memory_utilization=0.8 (repeatable)")
    return p


def main(argv: list[str] | None = None) -> int:
    """``onpolicy generate``: prints a JSON summary; a bad input is one line and exit status 2."""
    args = _parser().parse_args(argv)
    spec = GenerateSpec(**{**vars(args), "vllm": tuple(args.vllm)})
    return run_job(generate_dataset, spec)
