"""Next-byte marginals: a vocabulary-free view of a language model's next-token distribution.

A model that has just written a token boundary gives a distribution over its next *token*
``P(w)``. Projected onto the token's first byte it becomes a distribution over the next *byte*:

    q(c) = sum_{w : bytes(w)[0] = c} P(w)  (c in 0..255),   q(256) = sum_{w : bytes(w) = b""} P(w)

(class 256, ``STOP``, collects the tokens with no bytes: EOS, end of turn, other specials, padded
ids). This is the exact marginal of the model's next-token distribution over the next byte. Two
models with different vocabularies can be compared on it directly wherever both have a token
boundary at the same byte position: a span start of ``alignment.align_spans``.

Inside a token (``ell`` bytes ``u`` of the current token written, ``ell >= 1``) a model has no
distribution of its own; from the row that predicted the current token this module reads the mass
of the tokens extending ``u + c`` for every byte ``c`` and the mass of the tokens that are exactly
``u`` (``class_logprobs``: columns 0..255, ``STOP`` at depth 0, ``END`` at depth >= 1). How the
two sides are compared from these (and what stands in for the forward passes a model never made)
is ``alignment.byte_loss``; ``gjsd_log`` is the generalized JSD in GKD's/TRL's convention
(``beta = 0``: KL(teacher || student), ``1``: KL(student || teacher), else
``beta KL(t || m) + (1 - beta) KL(s || m)``, ``m = beta t + (1 - beta) s``).

Computation: per tokenizer a ``ByteTrie`` (token ids sorted by bytes; the byte at each depth; for
every token and depth the sorted range sharing its first bytes) is built once. An event's class
masses are a ``scatter`` of its logits row (log-sum-exp per class, no underflow) onto 259
columns (257 classes, ``END``, a dump column for tokens outside the range); rows are processed a
chunk at a time under activation checkpointing: no more than one chunk of ``[rows, V]`` at once.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.checkpoint import checkpoint

from alignment.errors import AlignmentError
from alignment.offsets import token_bytes_table
from alignment.types import SideLogits

STOP = 256  # class of the tokens without bytes (EOS, end of turn, specials, padded ids)
NUM_CLASSES = 257
END = 257  # column of the tokens that end exactly at the bytes already written (depth >= 1)
_DUMP = 258  # scatter column of tokens outside an event's range (dropped)
CHUNK_ELEMS = 1 << 22  # rows per chunk = CHUNK_ELEMS // V
Reduction = Literal["mean", "sum", "none"]


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


@dataclass(frozen=True)
class ByteEvents:
    """One side's next-byte events, in the order shared by both sides (row, span, byte).

    Attributes:
        row_E: flat logits row (``b * T + t - 1``) that predicted the current token.
        token_E: the current token's id.
        depth_E: bytes of the current token already written (0: at a token boundary).
        batch_E, span_E: the event's sequence and span.
    """

    row_E: torch.Tensor
    token_E: torch.Tensor
    depth_E: torch.Tensor
    batch_E: torch.Tensor
    span_E: torch.Tensor


def side_events(
    side: SideLogits, trie: ByteTrie, num_spans: int
) -> tuple[ByteEvents, torch.Tensor]:
    """One event per completion byte (and one per byte-less token of a byte-less span: the stop).

    Returns ``(events, count_B_S)``: the events in (row, span, byte) order and the number of
    events per span. Tokens outside spans (``-1``) give none.
    """
    ids, span = side.input_ids_B_T.long(), side.span_B_T.long()
    B, T = ids.shape
    S, device = num_spans, ids.device
    length = trie.length_V.to(device)[ids.clamp(0, trie.vocab_size - 1)]
    length = torch.where(span >= 0, length, 0)
    flat_span = torch.where(span >= 0, torch.arange(B, device=device)[:, None] * S + span, B * S)
    span_bytes = torch.zeros(B * S + 1, dtype=torch.long, device=device)
    span_bytes.index_add_(0, flat_span.reshape(-1), length.reshape(-1))
    stop_tok = (span >= 0) & (length == 0) & (span_bytes[flat_span] == 0)
    n_tok = torch.where(stop_tok, 1, length)  # events per token
    b, t = n_tok.nonzero(as_tuple=True)
    reps = n_tok[b, t]
    first = torch.cumsum(reps, 0) - reps
    depth = torch.arange(int(reps.sum()), device=device) - torch.repeat_interleave(first, reps)
    b, t = torch.repeat_interleave(b, reps), torch.repeat_interleave(t, reps)
    count = torch.zeros(B * S + 1, dtype=torch.long, device=device)
    count.index_add_(0, flat_span[b, t], torch.ones_like(b))
    events = ByteEvents(b * T + t - 1, ids[b, t], depth, b, span[b, t])
    return events, count[: B * S].reshape(B, S)


def _select(events: ByteEvents, keep_E: torch.Tensor) -> ByteEvents:
    return ByteEvents(*(getattr(events, f)[keep_E] for f in ByteEvents.__dataclass_fields__))


def class_logprobs(
    logits_N_V: torch.Tensor,
    events: ByteEvents,
    trie: ByteTrie,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logp_E_K, support_E_K)`` for ``K = 258`` columns, one chunk of rows at a time.

    For an event at depth ``ell`` of token ``w*`` (``u = bytes(w*)[:ell]``), with ``P`` the
    softmax of its logits row at ``temperature``: column ``c < 256`` holds
    ``log sum P(w)`` over the tokens extending ``u + c`` (at depth 0: starting with byte ``c``),
    column ``STOP`` (256) the tokens without bytes (depth 0 only), column ``END`` (257) the tokens
    whose bytes are exactly ``u`` (depth >= 1 only). ``support`` is True where at least one token
    falls in the column. Differentiable in ``logits_N_V`` (checkpointed per chunk).
    """
    if logits_N_V.shape[-1] != trie.vocab_size:
        raise AlignmentError(
            f"logits have {logits_N_V.shape[-1]} columns but the byte trie {trie.vocab_size}; "
            "build it with byte_trie(tokenizer, vocab_size=<logit width>)"
        )
    E, V = events.row_E.shape[0], trie.vocab_size
    chunk = max(1, CHUNK_ELEMS // max(V, 1))
    dev = logits_N_V.device
    perm, rank = trie.perm_V.to(dev), trie.rank_V.to(dev)
    byte_L_V, lo_L_V, hi_L_V = trie.byte_L_V.to(dev), trie.lo_L_V.to(dev), trie.hi_L_V.to(dev)
    out, sup = [], []
    for s in range(0, max(E, 1), chunk):  # no events: one empty chunk, still on the graph
        sl = slice(s, s + chunk)
        r, d = rank[events.token_E[sl]], events.depth_E[sl]
        label = _labels(byte_L_V, lo_L_V[d, r], hi_L_V[d, r], d)
        args = (logits_N_V, events.row_E[sl], perm, label, temperature)
        fn = _chunk_logprobs
        out.append(
            checkpoint(fn, *args, use_reentrant=False) if logits_N_V.requires_grad else fn(*args)
        )
        here = torch.zeros(label.shape[0], _DUMP + 1, dtype=torch.bool, device=dev)
        sup.append(here.scatter_(1, label, True)[:, :_DUMP])
    return torch.cat(out), torch.cat(sup)


def _dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def _labels(byte_L_V, lo_n, hi_n, depth_n) -> torch.Tensor:
    """int64 [n, V] column of each sorted token for each event, ``_DUMP`` outside its range."""
    V = byte_L_V.shape[1]
    cls = byte_L_V.index_select(0, depth_n).long()  # [n, V]
    pos = torch.arange(V, device=cls.device)
    keep = (pos >= lo_n[:, None]) & (pos < hi_n[:, None])
    cls = torch.where((cls == STOP) & (depth_n[:, None] > 0), END, cls)  # ends exactly at u
    return torch.where(keep, cls, _DUMP)


def _chunk_logprobs(logits_N_V, rows, perm, label, temperature: float) -> torch.Tensor:
    """[n, 258] log of the column masses of ``softmax(logits[rows] / tau)``."""
    z = logits_N_V.index_select(0, rows).to(_dtype(logits_N_V)).index_select(1, perm)
    if temperature != 1.0:
        z = z / temperature
    lse = torch.logsumexp(z, dim=-1, keepdim=True)
    z = z.masked_fill(label == _DUMP, float("-inf"))
    n = z.shape[0]
    cmax = torch.full((n, _DUMP + 1), float("-inf"), dtype=z.dtype, device=z.device)
    cmax = cmax.scatter_reduce(1, label, z.detach(), reduce="amax", include_self=True)
    cmax = torch.where(torch.isfinite(cmax), cmax, torch.zeros((), dtype=z.dtype))
    e = torch.exp(z - cmax.gather(1, label))  # 0 outside the range
    mass = torch.zeros_like(cmax).scatter_add(1, label, e)
    return (torch.log(mass) + cmax - lse)[:, :_DUMP]


def restricted_logprobs(logmass_E_C: torch.Tensor, keep_E_C: torch.Tensor) -> torch.Tensor:
    """log of the distribution renormalized over the kept classes (``-inf`` elsewhere)."""
    lm = logmass_E_C.masked_fill(~keep_E_C, float("-inf"))
    lse = torch.logsumexp(lm, dim=-1, keepdim=True)
    return lm - torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))


def gjsd_log(ls_E_C: torch.Tensor, lt_E_C: torch.Tensor, beta: float) -> torch.Tensor:
    """[E] generalized JSD between distributions given as log-probs (``-inf``: zero mass).

    ``beta = 0``: KL(t || s); ``1``: KL(s || t); else ``beta KL(t||m) + (1-beta) KL(s||m)``,
    ``m = beta t + (1 - beta) s``. Terms with zero mass count 0 (``0 log 0 = 0``), with finite
    gradients."""
    s_pos, t_pos = torch.isfinite(ls_E_C), torch.isfinite(lt_E_C)
    ls = torch.where(s_pos, ls_E_C, torch.zeros((), dtype=ls_E_C.dtype))
    lt = torch.where(t_pos, lt_E_C, torch.zeros((), dtype=lt_E_C.dtype))
    zero = torch.zeros((), dtype=ls.dtype)
    if beta == 0.0:
        return torch.where(t_pos, lt.exp() * (lt - ls), zero).sum(-1)
    if beta == 1.0:
        return torch.where(s_pos, ls.exp() * (ls - lt), zero).sum(-1)
    lm = torch.logaddexp(
        torch.where(t_pos, lt + float(np.log(beta)), -torch.inf),
        torch.where(s_pos, ls + float(np.log1p(-beta)), -torch.inf),
    )
    lm = torch.where(s_pos | t_pos, lm, zero)
    kl_t = torch.where(t_pos, lt.exp() * (lt - lm), zero).sum(-1)
    kl_s = torch.where(s_pos, ls.exp() * (ls - lm), zero).sum(-1)
    return beta * kl_t + (1 - beta) * kl_s
