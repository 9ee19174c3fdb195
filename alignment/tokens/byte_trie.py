"""A tokenizer's vocabulary sorted by bytes: a trie in array form (``ByteTrie``).

Token ids sorted byte-lexicographically; the byte of each sorted token at each depth; for every
token and depth the sorted range of tokens sharing its first bytes. Built once per tokenizer
(cached) and used where a model's next-token distribution is read as masses over byte prefixes:
the next-byte loss (``alignment.spans.next_byte``) and the prefix marginals of the GOLD-style loss
(``alignment.spans.gold``).
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from alignment.tokens.offsets import token_bytes_table

STOP = 256  # "no byte": the tokens without bytes (EOS, end of turn, specials, padded ids)


@dataclass(frozen=True)
class ByteTrie:
    """One tokenizer's vocabulary sorted by bytes (a trie in array form), for ``V`` logit columns.

    Attributes:
        perm_V: int64 [V] token ids in byte-lexicographic order (tokens without bytes first).
        rank_V: int64 [V] position of each id in that order (``perm_V[rank_V[i]] == i``).
        length_V: int64 [V] bytes per id (0: special, empty, or an id past the tokenizer).
        byte_L_V: int16 [L + 1, V] byte ``ell`` of the ``i``-th sorted token, ``STOP`` (256) where
            the token has ``<= ell`` bytes; ``L`` = the longest token.
        lo_L_V, hi_L_V: int32 [L + 1, V] the sorted range ``[lo, hi)`` of tokens sharing the first
            ``ell`` bytes of the ``i``-th sorted token (``ell = 0``: the whole vocabulary).
    """

    perm_V: torch.Tensor
    rank_V: torch.Tensor
    length_V: torch.Tensor
    byte_L_V: torch.Tensor
    lo_L_V: torch.Tensor
    hi_L_V: torch.Tensor

    @property
    def vocab_size(self) -> int:
        return int(self.perm_V.shape[0])


_TRIES: Any = weakref.WeakKeyDictionary()


def byte_trie(tokenizer: Any, vocab_size: int | None = None) -> ByteTrie:
    """The (cached) ``ByteTrie`` of a Hugging Face fast tokenizer for ``vocab_size`` logit columns
    (default: the tokenizer's size; ids past it are tokens without bytes)."""
    table = token_bytes_table(tokenizer)
    V = len(table.bytes_V) if vocab_size is None else vocab_size
    with contextlib.suppress(KeyError, TypeError):
        if V in _TRIES[tokenizer]:
            return _TRIES[tokenizer][V]
    data = [b"" if table.special_V[i] else table.bytes_V[i] for i in range(len(table.bytes_V))]
    trie = trie_from_bytes((data + [b""] * V)[:V])
    with contextlib.suppress(TypeError):
        _TRIES.setdefault(tokenizer, {})[V] = trie
    return trie


def trie_from_bytes(bytes_V: list[bytes]) -> ByteTrie:
    """A ``ByteTrie`` from each id's bytes (``b""`` for ids without bytes)."""
    V = len(bytes_V)
    perm = np.array(sorted(range(V), key=bytes_V.__getitem__), dtype=np.int64).reshape(V)
    length = np.fromiter((len(b) for b in bytes_V), dtype=np.int64, count=V)
    L = int(length.max()) if V else 0
    sorted_len = length[perm]
    grid = np.full((V, L + 1), STOP, dtype=np.int64)  # [V, L + 1] sorted tokens' bytes
    flat = np.frombuffer(b"".join(bytes_V[i] for i in perm.tolist()), dtype=np.uint8)
    rows = np.repeat(np.arange(V), sorted_len)
    cols = np.arange(flat.shape[0]) - np.repeat(np.cumsum(sorted_len) - sorted_len, sorted_len)
    grid[rows, cols] = flat
    # lcp[i] = common prefix length of sorted tokens i - 1 and i (lcp[0] = 0)
    same = (grid[1:] == grid[:-1]) & (grid[1:] != STOP)
    lcp = np.concatenate([[0], np.cumprod(same, axis=1).sum(axis=1)]).astype(np.int64)
    idx = np.arange(V)
    lo, hi = np.zeros((L + 1, V), np.int64), np.full((L + 1, V), V, np.int64)
    for ell in range(1, L + 1):  # a new group starts where the shared prefix is shorter than ell
        start = (lcp < ell) | (idx == 0)
        lo[ell] = np.maximum.accumulate(np.where(start, idx, 0))
        nxt = np.where(np.concatenate([start[1:], [True]]), idx + 1, V)
        hi[ell] = np.minimum.accumulate(nxt[::-1])[::-1]
    rank = np.empty(V, dtype=np.int64)
    rank[perm] = idx
    return ByteTrie(
        perm_V=torch.from_numpy(perm),
        rank_V=torch.from_numpy(rank),
        length_V=torch.from_numpy(length),
        byte_L_V=torch.from_numpy(np.ascontiguousarray(grid.T).astype(np.int16)),
        lo_L_V=torch.from_numpy(lo.astype(np.int32)),
        hi_L_V=torch.from_numpy(hi.astype(np.int32)),
    )
