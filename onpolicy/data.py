"""Prompts from local datasets: JSON / JSONL / parquet files or a ``save_to_disk`` folder.

A row is prompt-only (``prompt``: text), conversational (``messages``: a list of
``{"role", "content"}``), and may carry a reference completion (``completion``). In a conversation
whose last message is the assistant's, that message is the reference and is cut from the prompt.
Field names come from ``DataConfig``. Each becomes a ``Prompt``; each model renders it with its own
chat template later (``onpolicy.chat``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from onpolicy.config import DataConfig
from onpolicy.errors import DataError
from onpolicy.types import Prompt

_SUFFIX_FORMAT = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def load_rows(path: str | Path, split: str = "train") -> Any:
    """A ``datasets.Dataset`` from a local file (by suffix) or a ``save_to_disk`` folder."""
    import datasets

    p = Path(path)
    if not p.exists():
        raise DataError(
            f"dataset {str(p)!r} does not exist; give a JSON/JSONL/parquet file or folder"
        )
    if p.is_dir():
        try:
            loaded = datasets.load_from_disk(str(p))
        except FileNotFoundError as exc:
            raise DataError(f"{str(p)!r} is not a folder written by Dataset.save_to_disk") from exc
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise DataError(
                    f"dataset {str(p)!r} has no split {split!r}; splits: {list(loaded)}"
                )
            loaded = loaded[split]
        return loaded
    fmt = _SUFFIX_FORMAT.get(p.suffix.lower())
    if fmt is None:
        raise DataError(
            f"dataset {str(p)!r}: unknown suffix {p.suffix!r}; use {sorted(_SUFFIX_FORMAT)}"
        )
    try:
        return datasets.load_dataset(fmt, data_files=str(p), split="train")
    except Exception as exc:  # datasets raises many types for a malformed file
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"dataset {str(p)!r} could not be read as {fmt}: {first}") from exc


def rows_to_prompts(rows: Any, cfg: DataConfig, source: str = "dataset") -> list[Prompt]:
    """One ``Prompt`` per row (see the module docstring). Raises ``DataError`` for a dataset with no
    prompt column, a row without a prompt, or an empty reference completion."""
    columns = list(getattr(rows, "column_names", None) or (rows[0].keys() if len(rows) else []))
    if not len(rows):
        raise DataError(f"{source} has no rows; give at least one prompt")
    if cfg.prompt_field not in columns and cfg.messages_field not in columns:
        raise DataError(
            f"{source} has no prompts: neither a {cfg.prompt_field!r} nor a {cfg.messages_field!r} "
            f"column (columns: {columns}); rename a column or set data.prompt_field"
        )
    return [_row_to_prompt(row, i, cfg, source) for i, row in enumerate(rows)]


def _row_to_prompt(row: dict[str, Any], i: int, cfg: DataConfig, source: str) -> Prompt:
    reference = row.get(cfg.completion_field)
    messages = row.get(cfg.messages_field)
    if messages:
        msgs = tuple({"role": str(m["role"]), "content": str(m["content"])} for m in messages)
        if msgs[-1]["role"] == "assistant":
            if reference is None:
                reference = msgs[-1]["content"]
            msgs = msgs[:-1]
        if not msgs:
            raise DataError(f"{source} row {i}: `messages` has no turn before the assistant's")
        prompt = Prompt(messages=msgs, reference=_check_reference(reference, i, source))
    else:
        text = row.get(cfg.prompt_field)
        if text is None or not str(text).strip():
            raise DataError(f"{source} row {i} has an empty prompt; fix or drop the row")
        prompt = Prompt(text=str(text), reference=_check_reference(reference, i, source))
    return prompt


def _check_reference(reference: Any, i: int, source: str) -> str | None:
    if reference is None:
        return None
    if not str(reference).strip():
        raise DataError(
            f"{source} row {i} has an empty completion; drop the row or remove the completion field"
        )
    return str(reference)


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


def load_prompts(
    cfg: DataConfig, seed: int = 0, base_dir: Path | None = None
) -> tuple[list[Prompt], list[Prompt]]:
    """``(train_prompts, eval_prompts)`` from ``cfg.path`` (and ``cfg.eval_path`` when set, else
    ``cfg.eval_size`` rows held out after a shuffle seeded by ``seed``)."""
    from onpolicy.config_checks import resolve_path

    if cfg.path is None:
        raise DataError("data.path is not set; point it at a JSON/JSONL/parquet file of prompts")
    path = resolve_path(cfg.path, base_dir)
    train = rows_to_prompts(load_rows(path, cfg.split), cfg, source=str(path))
    if cfg.shuffle:
        random.Random(seed).shuffle(train)
    if cfg.eval_path is not None:
        eval_path = resolve_path(cfg.eval_path, base_dir)
        held_out = rows_to_prompts(load_rows(eval_path, cfg.split), cfg, source=str(eval_path))
        return train, held_out
    n_eval = min(cfg.eval_size, len(train) - 1)
    return train[n_eval:], train[:n_eval]


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
