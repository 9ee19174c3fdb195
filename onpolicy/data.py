"""The one prompt loader (``onpolicy train``, ``onpolicy eval`` and the harness's ``dataset`` task).

A dataset is a JSON Lines file (also a JSON list, parquet, CSV or a ``save_to_disk`` folder), one
row per example::

    {"prompt": "Reverse the word: cat", "completion": "tac"}
    {"messages": [{"role": "user", "content": "Reverse: dog"}], "completion": "god"}
    {"messages": [{"role": "user", "content": "sun"}, {"role": "assistant", "content": "nus"}]}

- ``prompt`` (text) or ``messages`` (a list of ``{"role", "content"}``): what the model sees.
- ``completion``: the gold answer (``reference`` is accepted as another name for it). Gold SFT and
  supervised KD train on it; the task metric compares a completion with it. In ``messages`` whose
  last turn is the assistant's, that turn is the completion and is cut from the prompt.

One rule for plain ``prompt`` rows: they are raw text, tokenized as is (with the tokenizer's BOS),
unless ``chat`` is true; then each is one user message, rendered by each model's own chat template.
``messages`` always go through the chat template. Field names come from ``DataConfig``.

Every bad row is a one-line ``DataError`` naming the file, the line (or row) and the field.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from onpolicy.config import DataConfig
from onpolicy.errors import DataError
from onpolicy.types import Prompt

_SUFFIX_FORMAT = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
REFERENCE_ALIAS = "reference"  # another name for the completion field (the harness's old name)

Row = tuple[str, dict[str, Any]]
"""``(where, fields)``: ``where`` names the row in errors (``file.jsonl:12`` or ``file row 3``)."""


def read_rows(path: str | Path, split: str = "train") -> list[Row]:
    """The rows of a local file (by suffix) or a ``save_to_disk`` folder, each with where it is.

    JSON / JSON Lines are read here, line by line (non-UTF-8 bytes, a malformed line, a line that
    is not an object: one-line errors with the line number); parquet, CSV and folders by
    ``datasets``. A file without rows is an error."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"dataset {str(p)!r} does not exist; give a JSONL/parquet file or folder")
    if p.is_dir():
        rows = [(f"{p} row {i + 1}", dict(r)) for i, r in enumerate(_saved_dataset(p, split))]
    else:
        fmt = _SUFFIX_FORMAT.get(p.suffix.lower())
        if fmt is None:
            raise DataError(
                f"dataset {str(p)!r}: unknown suffix {p.suffix!r}; use {sorted(_SUFFIX_FORMAT)}"
            )
        rows = list(_json_rows(p)) if fmt == "json" else _table_rows(p, fmt)
    if not rows:
        raise DataError(f"dataset {str(p)!r} has no rows; give at least one row per line")
    return rows


def _saved_dataset(p: Path, split: str) -> Any:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(p))
    except FileNotFoundError as exc:
        raise DataError(f"{str(p)!r} is not a folder written by Dataset.save_to_disk") from exc
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise DataError(f"dataset {str(p)!r} has no split {split!r}; splits: {list(loaded)}")
        loaded = loaded[split]
    return loaded


def _table_rows(p: Path, fmt: str) -> list[Row]:
    import datasets

    try:
        table = datasets.load_dataset(fmt, data_files=str(p), split="train")
    except Exception as exc:  # datasets raises many types for a malformed file
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"dataset {str(p)!r} could not be read as {fmt}: {first}") from exc
    return [(f"{p} row {i + 1}", dict(r)) for i, r in enumerate(table)]


def _json_rows(p: Path) -> Iterator[Row]:
    """A JSON list of objects, or one object per line (JSON Lines; blank lines skipped)."""
    raw = p.read_bytes()
    if raw.lstrip()[:1] == b"[":
        try:
            rows = json.loads(_decode(raw, f"{p}"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{p}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
        for i, row in enumerate(rows):
            yield f"{p} row {i + 1}", _object(row, f"{p} row {i + 1}")
        return
    for n, line in enumerate(raw.splitlines(), 1):
        text = _decode(line, f"{p}:{n}")
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{p}:{n}: not valid JSON ({exc.msg} at column {exc.colno}); write one JSON "
                "object per line"
            ) from exc
        yield f"{p}:{n}", _object(row, f"{p}:{n}")


def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{where}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1}); "
            "save the file as UTF-8"
        ) from exc


def _object(row: Any, where: str) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise DataError(f"{where}: a row must be a JSON object, got {type(row).__name__}")
    return row


def row_to_prompt(where: str, row: dict[str, Any], cfg: DataConfig) -> Prompt:
    """One ``Prompt`` from a row (see the module docstring); a ``DataError`` names ``where`` and
    the field for a missing prompt, a malformed ``messages`` list or an empty completion."""
    reference = _reference(where, row, cfg)
    teacher = row.get(cfg.teacher_field)
    if teacher is not None and (not isinstance(teacher, str) or not teacher):
        raise DataError(f"{where}: `{cfg.teacher_field}` must name a teacher, got {teacher!r}")
    messages = row.get(cfg.messages_field)
    if messages is not None:
        msgs = _messages(where, messages, cfg.messages_field)
        if msgs[-1]["role"] == "assistant":
            if reference is None:
                reference = _text(where, msgs[-1]["content"], f"{cfg.messages_field}[-1].content")
            msgs = msgs[:-1]
        if not msgs:
            raise DataError(f"{where}: `{cfg.messages_field}` has no turn before the assistant's")
        return Prompt(messages=msgs, reference=reference, teacher=teacher)
    if cfg.prompt_field not in row:
        raise DataError(
            f"{where}: no `{cfg.prompt_field}` or `{cfg.messages_field}` field (fields: "
            f"{sorted(row)}); rename a field or set data.prompt_field"
        )
    text = row[cfg.prompt_field]
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{where}: `{cfg.prompt_field}` must be non-empty text, got {text!r}")
    if cfg.chat:
        return Prompt(
            messages=({"role": "user", "content": text},), reference=reference, teacher=teacher
        )
    return Prompt(text=text, reference=reference, teacher=teacher)


def _reference(where: str, row: dict[str, Any], cfg: DataConfig) -> str | None:
    names = [n for n in dict.fromkeys((cfg.completion_field, REFERENCE_ALIAS)) if n in row]
    values = {row[n] for n in names if isinstance(row[n], str)}
    if len(values) > 1:
        raise DataError(f"{where}: `{names[0]}` and `{names[1]}` differ; give one of them")
    if not names or row[names[0]] is None:
        return None
    return _text(where, row[names[0]], names[0])


def _text(where: str, value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"{where}: `{field}` must be text, got {type(value).__name__} {value!r}")
    if not value.strip():
        raise DataError(f"{where}: `{field}` is empty; drop the row or the field")
    return value


def _messages(where: str, value: Any, field: str) -> tuple[dict[str, str], ...]:
    if not isinstance(value, list) or not value:
        raise DataError(
            f'{where}: `{field}` must be a non-empty list of {{"role", "content"}} objects, '
            f"got {type(value).__name__} {str(value)[:40]!r}"
        )
    out = []
    for k, m in enumerate(value):
        if not isinstance(m, dict):
            raise DataError(f"{where}: `{field}[{k}]` must be an object, got {m!r}")
        for key in ("role", "content"):
            if not isinstance(m.get(key), str):
                got = "is missing" if key not in m else f"is {type(m[key]).__name__}"
                raise DataError(f"{where}: `{field}[{k}].{key}` {got}; give it as text")
        out.append({"role": m["role"], "content": m["content"]})
    return tuple(out)


def read_prompts(path: str | Path, cfg: DataConfig) -> list[Prompt]:
    """Every row of ``path`` as a ``Prompt`` (``read_rows`` then ``row_to_prompt``)."""
    return [row_to_prompt(where, row, cfg) for where, row in read_rows(path, cfg.split)]


def held_out_split(
    prompts: Sequence[Prompt], n_eval: int, seed: int, shuffle: bool = True, where: str = "data"
) -> tuple[list[Prompt], list[Prompt]]:
    """``(train, held_out)``: ``n_eval`` prompts held out after a shuffle seeded by ``seed``.
    Refuses a split that leaves no training prompt."""
    if n_eval >= len(prompts):
        raise DataError(
            f"{where} has {len(prompts)} rows and eval_size={n_eval} leaves none to train on; "
            "lower the eval size or give a separate eval file (eval_path)"
        )
    order = list(prompts)
    if shuffle:
        random.Random(seed).shuffle(order)
    return order[n_eval:], order[:n_eval]


def load_prompts(
    cfg: DataConfig, seed: int = 0, base_dir: Path | None = None
) -> tuple[list[Prompt], list[Prompt]]:
    """``(train_prompts, eval_prompts)`` from ``cfg.path``; the eval prompts are ``cfg.eval_path``
    when set, else ``cfg.eval_size`` rows held out of ``cfg.path`` (``held_out_split``)."""
    from onpolicy.config_checks import resolve_path

    if cfg.path is None:
        raise DataError("data.path is not set; point it at a JSON/JSONL/parquet file of prompts")
    path = resolve_path(cfg.path, base_dir)
    train = read_prompts(path, cfg)
    if cfg.eval_path is not None:
        if cfg.shuffle:
            random.Random(seed).shuffle(train)
        return train, read_prompts(resolve_path(cfg.eval_path, base_dir), cfg)
    return held_out_split(train, cfg.eval_size, seed, cfg.shuffle, where=str(path))


def filter_by_length(
    prompts: Sequence[Prompt],
    render: Callable[[Prompt], list[int]],
    max_prompt_tokens: int,
    on_too_long: str = "skip",
) -> tuple[list[Prompt], int]:
    """Drop prompts whose rendering (``render(prompt) -> ids``) exceeds ``max_prompt_tokens``.

    Returns ``(kept, num_skipped)``; with ``on_too_long="error"`` the first long prompt raises.
    Raises ``DataError`` when nothing is left.
    """
    kept: list[Prompt] = []
    for i, prompt in enumerate(prompts):
        n = len(render(prompt))
        if n <= max_prompt_tokens:
            kept.append(prompt)
        elif on_too_long == "error":
            raise DataError(
                f"prompt {i} has {n} tokens, more than the {max_prompt_tokens} the context leaves "
                "(student.max_length - rollout.max_new_tokens); shorten it or set "
                "data.on_too_long=skip"
            )
    if not kept:
        raise DataError(
            f"all {len(prompts)} prompts are longer than {max_prompt_tokens} tokens; raise "
            "student.max_length or lower rollout.max_new_tokens"
        )
    return kept, len(prompts) - len(kept)


class PromptStream:
    """An endless, resumable stream of prompts: epochs of a seeded shuffle, read by position.

    ``position`` (prompts consumed) is all that a checkpoint needs to resume it exactly; every
    process reads the same stream and takes its own slice of each step's prompts.
    """

    def __init__(self, prompts: Sequence[Prompt], seed: int, position: int = 0) -> None:
        if not prompts:
            raise DataError("no training prompts; give a dataset with at least one prompt")
        self.prompts = list(prompts)
        self.seed = seed
        self.position = position
        self._orders: dict[int, list[int]] = {}

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            order = list(range(len(self.prompts)))
            random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
            self._orders = {epoch: order}  # keep one epoch: memory stays O(prompts)
        return self._orders[epoch]

    def take(self, n: int) -> list[Prompt]:
        """The next ``n`` prompts (wrapping over epochs); advances ``position``."""
        out = []
        for k in range(self.position, self.position + n):
            epoch, i = divmod(k, len(self.prompts))
            out.append(self.prompts[self._order(epoch)[i]])
        self.position += n
        return out
