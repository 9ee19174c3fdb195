"""The on-disk format of cached teacher scores (written by ``onpolicy score``, read by a run with
``teacher.scores``).

A folder::

    manifest.json            format, teacher spec and weights fingerprint, tokenizer fingerprint,
                             vocab size V, top_k K, value dtype
    tokenizer/               the teacher's tokenizer (the run checks the student's against it)
    shards/00000.safetensors per completion token n of the shard's rows (row-major):
                               ids_N_K          int32   the teacher's top-K token ids
                               logprobs_N_K     float16 their log-probabilities (temperature 1)
                               tail_N           float16 log of the remaining mass (floored at 1e-8)
                               token_logprob_N  float16 log-probability of the completion token
                               offsets_R1       int64   row r: tokens offsets[r] .. offsets[r+1]
    shards/00000.json        the shard's R row keys, in order; written after the tensors (a shard
                             without it is the tail of a killed run and is ignored / overwritten)

Bytes per completion token: ``K * (4 + 2) + 2 + 2`` (``float32`` values: ``K * 8 + 8``), plus the
offsets and keys per row.

A row's key hashes the teacher's weights fingerprint, the tokenizer fingerprint, ``K``, the value
dtype and the row's exact token ids (prompt and completion): the text as the student tokenizes it.
A changed teacher gives other keys (a miss, never stale scores); the same teacher, tokenizer and
text give the same key (a hit).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from onpolicy.errors import ConfigError, DataError

FORMAT_VERSION = 1
VALUE_DTYPES = {"float16": torch.float16, "float32": torch.float32}


@dataclass(frozen=True)
class Manifest:
    """What a score folder holds: one teacher (weights fingerprint), one tokenizer, one ``K``."""

    teacher: str
    teacher_fingerprint: str
    tokenizer_fingerprint: str
    vocab_size: int
    top_k: int
    dtype: str = "float16"
    format: int = FORMAT_VERSION

    def same_scores(self, other: Manifest) -> bool:
        """Whether ``other`` describes the same scores (the teacher's spec string may differ)."""
        a, b = asdict(self), asdict(other)
        a.pop("teacher")
        b.pop("teacher")
        return a == b


@dataclass
class RowScores:
    """One row's cached scores (``T`` completion tokens), as stored."""

    ids_T_K: torch.Tensor
    logprobs_T_K: torch.Tensor
    tail_T: torch.Tensor
    token_logprob_T: torch.Tensor


def row_key(manifest: Manifest, prompt_ids: Sequence[int], completion_ids: Sequence[int]) -> str:
    """The cache key of one row (see the module docstring), 32 hex characters."""
    blob = [manifest.teacher_fingerprint, manifest.tokenizer_fingerprint, manifest.top_k,
            manifest.dtype, list(prompt_ids), list(completion_ids)]  # fmt: skip
    return hashlib.sha256(json.dumps(blob).encode()).hexdigest()[:32]


def read_manifest(folder: str | Path) -> Manifest:
    """The folder's manifest; a one-line ``ConfigError`` when it is not a score folder."""
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        raise ConfigError(
            f"{str(folder)!r} holds no manifest.json: it is not a folder written by "
            "`onpolicy score`; run onpolicy score --out there first"
        )
    try:
        raw = json.loads(path.read_text())
        manifest = Manifest(**raw)
    except (json.JSONDecodeError, TypeError) as exc:
        raise ConfigError(f"{str(path)!r} is not a valid score manifest ({exc})") from exc
    if manifest.format != FORMAT_VERSION or manifest.dtype not in VALUE_DTYPES:
        raise ConfigError(
            f"{str(path)!r} has format {manifest.format} / dtype {manifest.dtype!r}; this version "
            f"reads format {FORMAT_VERSION}: rerun onpolicy score"
        )
    return manifest


def write_manifest(folder: Path, manifest: Manifest) -> None:
    _write_atomic(folder / "manifest.json", json.dumps(asdict(manifest), indent=2).encode())


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def complete_shards(folder: str | Path) -> list[Path]:
    """The shards with their keys file (in order); a tensors file without one is ignored."""
    shards = Path(folder) / "shards"
    if not shards.is_dir():
        return []
    return sorted(p.with_suffix("") for p in shards.glob("*.json"))


def write_shard(
    folder: Path, index: int, keys: list[str], rows: list[RowScores], dtype: str
) -> None:
    """Shard ``index``: the tensors first, then the keys (what makes the shard count)."""
    from safetensors.torch import save_file

    shards = folder / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    lengths = torch.tensor([0] + [len(r.tail_T) for r in rows], dtype=torch.int64)
    value = VALUE_DTYPES[dtype]
    tensors = {
        "ids_N_K": torch.cat([r.ids_T_K for r in rows]).to(torch.int32).contiguous(),
        "logprobs_N_K": torch.cat([r.logprobs_T_K for r in rows]).to(value).contiguous(),
        "tail_N": torch.cat([r.tail_T for r in rows]).to(value).contiguous(),
        "token_logprob_N": torch.cat([r.token_logprob_T for r in rows]).to(value).contiguous(),
        "offsets_R1": lengths.cumsum(0),
    }
    base = shards / f"{index:05d}"
    tmp = base.with_name(base.name + ".safetensors.tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, base.with_suffix(".safetensors"))
    _write_atomic(base.with_suffix(".json"), json.dumps(keys).encode())


class ScoreReader:
    """Row lookups in a score folder: ``get(key) -> RowScores`` (float32 values, int64 ids);
    a shard is read on first use (the last 8 used are kept in memory)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.manifest = read_manifest(folder)
        self.where: dict[str, tuple[Path, int]] = {}
        for base in complete_shards(folder):
            for r, key in enumerate(json.loads(base.with_suffix(".json").read_text())):
                self.where[key] = (base, r)
        self._open: dict[Path, dict[str, torch.Tensor]] = {}

    def __contains__(self, key: str) -> bool:
        return key in self.where

    def __len__(self) -> int:
        return len(self.where)

    def get(self, key: str) -> RowScores:
        if key not in self.where:
            raise DataError(f"no cached teacher scores for row key {key} in {str(self.folder)!r}")
        base, r = self.where[key]
        shard = self._shard(base)
        a, b = int(shard["offsets_R1"][r]), int(shard["offsets_R1"][r + 1])
        return RowScores(
            ids_T_K=shard["ids_N_K"][a:b].long(),
            logprobs_T_K=shard["logprobs_N_K"][a:b].float(),
            tail_T=shard["tail_N"][a:b].float(),
            token_logprob_T=shard["token_logprob_N"][a:b].float(),
        )

    def _shard(self, base: Path) -> dict[str, torch.Tensor]:
        if base not in self._open:
            from safetensors.torch import load_file

            if len(self._open) >= 8:  # keep a few shards open: memory stays bounded
                self._open.pop(next(iter(self._open)))
            self._open[base] = load_file(str(base.with_suffix(".safetensors")))
        return self._open[base]
