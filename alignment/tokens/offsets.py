"""Byte offsets of tokens, derived from each token's bytes, never from decoded text.

``offsets[i] = (start, end)`` are positions in ``text.encode("utf-8")``. Over the tokens that carry
text, offsets partition the bytes: consecutive, ``end > start``, first start 0, last end ``len``.
Tokens that carry no text (BOS/EOS/chat markers the tokenizer *adds*, a SentencePiece dummy-prefix
"▁" that is alone in its token) have ``end == start``.

How the bytes of a token are known (``token_bytes_table``, built once per tokenizer and cached):

- byte-level BPE (GPT-2, Qwen, SmolLM2, Llama-3): each character of the token string stands for one
  byte through GPT-2's ``bytes_to_unicode`` table (``Ġ`` = space).
- SentencePiece-style (Gemma, Llama-2): ``▁`` is a space, ``<0xNN>`` byte-fallback tokens are the
  single byte ``NN``, other characters are their UTF-8 bytes.
- WordPiece (BERT): a ``##`` prefix is dropped; tokens are not byte-exact (lowercasing, accents
  stripped, whitespace dropped), so offsets come from the tokenizer's character offsets (below).
- Added tokens: the bytes of their content; special ones are zero-width markers when added by the
  tokenizer (the encoding's ``special_tokens_mask``), but cover their text when they appear in it.

Text path (``byte_offsets``): the token byte lengths are summed (vectorised ``cumsum``) and the
concatenation of the tokens' bytes is checked against the text's bytes. If the tokenizer prepended a
dummy-prefix space, that one byte is removed from the first text token. When the tokenizer's
normalizer changed the text (NFC in Qwen, NFKC, lowercasing in WordPiece, unknown tokens), the bytes
cannot match; then boundaries come from the tokenizer's character offsets into the original text,
converted to byte positions, with gaps (dropped whitespace) given to the following token and a
character shared by several tokens split by their byte lengths (``_offsets_from_chars``).

Token-id path (``token_offsets``): for generated ids there is no text; offsets are the cumulative
byte lengths, so invalid UTF-8 (a character cut by sampling) shifts nothing. Special tokens are
zero-width there.
"""

from __future__ import annotations

import contextlib
import itertools
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from alignment.errors import AlignmentError


@dataclass(frozen=True)
class TokenBytes:
    """Per-tokenizer table: token id -> the bytes it stands for.

    Attributes:
        bytes_V: the bytes of each id (``b""`` for ids with no entry in the vocabulary).
        length_V: int64 [V] ``len(bytes_V[i])``.
        special_V: bool [V] special tokens (zero-width markers when generated or added).
        added_V: bool [V] added tokens (special or not): matched literally in text.
        byte_fallback_V: bool [V] SentencePiece byte-fallback pieces ``<0xNN>``.
        byte_exact: False for tokenizers whose tokens do not spell the text (WordPiece).
        prefix_space: True if the tokenizer prepends a dummy "▁" to the text (SentencePiece).
    """

    bytes_V: list[bytes]
    length_V: np.ndarray
    special_V: np.ndarray
    added_V: np.ndarray
    byte_fallback_V: np.ndarray
    byte_exact: bool
    prefix_space: bool


def _bytes_to_unicode() -> dict[str, int]:
    """GPT-2's reversible byte <-> printable-character table, as character -> byte."""
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    chars, n = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(keep, chars, strict=True)}


_BYTE_OF_CHAR = _bytes_to_unicode()
_CACHE: Any = weakref.WeakKeyDictionary()


def _backend(tokenizer: Any) -> Any:
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(
        tokenizer, "_tokenizer", None
    )
    if backend is None or not hasattr(backend, "get_vocab"):
        raise AlignmentError(
            f"{type(tokenizer).__name__} has no fast (Rust `tokenizers`) backend; "
            "load it with AutoTokenizer.from_pretrained(..., use_fast=True)"
        )
    return backend


def _kind(backend: Any) -> str:
    """'bytelevel', 'sentencepiece' or 'wordpiece', read from the tokenizer's components."""
    parts = " ".join(repr(getattr(backend, a)) for a in ("normalizer", "pre_tokenizer", "decoder"))
    if type(backend.model).__name__ == "WordPiece":
        return "wordpiece"
    if "ByteLevel" in parts:
        return "bytelevel"
    if "▁" in parts or "Metaspace" in parts or "ByteFallback" in parts:
        return "sentencepiece"
    raise AlignmentError(
        f"cannot tell how tokens of this tokenizer map to bytes (components: {parts[:200]}); "
        "supported: byte-level BPE, SentencePiece-style, WordPiece"
    )


def _prefix_space(backend: Any, kind: str) -> bool:
    """Does the tokenizer prepend a space the text doesn't have (SentencePiece's dummy prefix,
    byte-level ``add_prefix_space=True``)?"""
    parts = repr(backend.normalizer) + repr(backend.pre_tokenizer)
    if kind == "bytelevel":
        return "add_prefix_space=True" in repr(backend.pre_tokenizer)
    if "Prepend" in parts and "▁" in parts:
        return True
    return "Metaspace" in parts and "prepend_scheme=never" not in parts.replace('"', "")


def _piece_bytes(piece: str, kind: str, wp_prefix: str) -> bytes:
    if kind == "bytelevel":
        try:
            return bytes(_BYTE_OF_CHAR[c] for c in piece)
        except KeyError:  # not a byte-level string (rare added token kept verbatim)
            return piece.encode("utf-8")
    if kind == "sentencepiece":
        if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            try:
                return bytes([int(piece[3:5], 16)])
            except ValueError:
                pass
        return piece.replace("▁", " ").encode("utf-8")
    if wp_prefix and piece.startswith(wp_prefix):
        piece = piece[len(wp_prefix) :]
    return piece.encode("utf-8")


def token_bytes_table(tokenizer: Any, min_size: int = 0) -> TokenBytes:
    """The (cached) table of every token id's bytes for a Hugging Face fast tokenizer.

    Cached per tokenizer object (weakly). Ids of tokens added later are beyond the cached table:
    callers pass ``min_size = max id + 1`` and the table is rebuilt if it is smaller."""
    with contextlib.suppress(KeyError, TypeError):
        cached = _CACHE[tokenizer]
        if len(cached.bytes_V) >= min_size:
            return cached
    backend = _backend(tokenizer)
    kind = _kind(backend)
    vocab: dict[str, int] = backend.get_vocab(with_added_tokens=True)
    added = backend.get_added_tokens_decoder()
    V = max(max(vocab.values(), default=-1), max(added, default=-1)) + 1
    wp_prefix = getattr(backend.model, "continuing_subword_prefix", "") or ""
    table = [b""] * V
    fallback = np.zeros(V, dtype=bool)
    for piece, i in vocab.items():
        table[i] = _piece_bytes(piece, kind, wp_prefix)
        fallback[i] = kind == "sentencepiece" and len(piece) == 6 and piece.startswith("<0x")
    special, is_added = np.zeros(V, dtype=bool), np.zeros(V, dtype=bool)
    for i, tok in added.items():
        table[i] = tok.content.encode("utf-8")
        is_added[i], special[i] = True, bool(tok.special)
    for i in getattr(tokenizer, "all_special_ids", []) or []:
        if 0 <= i < V:
            special[i] = True
    result = TokenBytes(
        bytes_V=table,
        length_V=np.fromiter((len(b) for b in table), dtype=np.int64, count=V),
        special_V=special,
        added_V=is_added,
        byte_fallback_V=fallback & ~is_added,
        byte_exact=kind != "wordpiece",
        prefix_space=kind != "wordpiece" and _prefix_space(backend, kind),
    )
    with contextlib.suppress(TypeError):  # not weak-referenceable: rebuilt on each call
        _CACHE[tokenizer] = result
    return result


def token_bytes(tokenizer: Any, token_ids: Any) -> list[bytes]:
    """The bytes of each id (special tokens give ``b""``: they are markers, not text)."""
    ids = _as_ids(token_ids)
    table = token_bytes_table(tokenizer, min_size=int(ids.max()) + 1 if ids.size else 0)
    _check_range(ids, len(table.bytes_V))
    return [b"" if table.special_V[i] else table.bytes_V[i] for i in ids.tolist()]


def _as_ids(token_ids: Any) -> np.ndarray:
    ids = np.asarray(token_ids.cpu() if isinstance(token_ids, torch.Tensor) else token_ids)
    return ids.astype(np.int64, copy=False).reshape(-1)


def _check_range(ids: np.ndarray, V: int) -> None:
    if ids.size and (ids.min() < 0 or ids.max() >= V):
        bad = int(ids[(ids < 0) | (ids >= V)][0])
        raise AlignmentError(f"token id {bad} is outside the tokenizer's vocabulary [0, {V})")


def _cumulative(lengths_T: np.ndarray, base: int = 0) -> np.ndarray:
    """int64 [T, 2] (start, end) from byte lengths: end = base + cumsum, start = end - length."""
    ends = np.cumsum(lengths_T) + base
    return np.stack([ends - lengths_T, ends], axis=1)


def token_offsets(tokenizer: Any, token_ids: Any, base: int = 0) -> tuple[torch.Tensor, bytes]:
    """Offsets of generated ids, from the tokens' bytes alone (no text, no decoding).

    Args:
        tokenizer: a Hugging Face fast tokenizer.
        token_ids: int [T] ids (list, array or tensor).
        base: byte position of the first token (e.g. where the completion starts).

    Returns:
        (offsets_T2, data): int64 [T, 2] ``(start, end)``, with special tokens zero-width; and
        the concatenated bytes ``data`` (possibly invalid UTF-8): token ``i``'s bytes are
        ``data[start - base : end - base]``.
    """
    ids = _as_ids(token_ids)
    table = token_bytes_table(tokenizer, min_size=int(ids.max()) + 1 if ids.size else 0)
    _check_range(ids, len(table.bytes_V))
    lengths = np.where(table.special_V[ids], 0, table.length_V[ids])
    data = b"".join([table.bytes_V[i] for i in ids[lengths > 0].tolist()])
    return torch.from_numpy(_cumulative(lengths, base)), data


def byte_offsets(
    tokenizer: Any, text: str, add_special_tokens: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize ``text`` and return each token's byte span in ``text.encode("utf-8")``.

    Returns:
        (token_ids_T, offsets_T2): int64 [T] ids as the tokenizer produces them (with the special
        tokens it adds if ``add_special_tokens``) and int64 [T, 2] ``(start, end)`` byte offsets.
        Text-carrying tokens partition the bytes with ``end > start``; added markers have
        ``end == start`` (at the position where they sit).
    """
    encoding = _backend(tokenizer).encode(text, add_special_tokens=add_special_tokens)
    return offsets_from_encoding(tokenizer, text, encoding)


def offsets_from_encoding(
    tokenizer: Any, text: str, encoding: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """``byte_offsets`` for a ``tokenizers.Encoding`` of ``text`` you already have (e.g. from
    ``backend_tokenizer.encode_batch``): the ids and the byte offsets, same conventions."""
    ids = np.array(encoding.ids, dtype=np.int64)
    table = token_bytes_table(tokenizer, min_size=int(ids.max()) + 1 if ids.size else 0)
    # tokens the post-processor added (BOS, EOS, ...): zero-width markers
    added = np.array(encoding.special_tokens_mask, dtype=bool)
    data = text.encode("utf-8")
    offsets = _offsets_from_table(table, ids, added, data) if table.byte_exact else None
    if offsets is None:  # fetched only here: converting offsets to Python tuples is slow
        flat = itertools.chain.from_iterable(encoding.offsets)
        chars = np.fromiter(flat, dtype=np.int64, count=2 * len(ids)).reshape(-1, 2)
        offsets = _offsets_from_chars(table, ids, chars, text, data)
    return torch.from_numpy(ids), torch.from_numpy(offsets)


def _offsets_from_table(
    table: TokenBytes, ids: np.ndarray, marker: np.ndarray, data: bytes
) -> np.ndarray | None:
    """Exact offsets from the tokens' byte lengths, or None if their bytes don't spell ``data``."""
    lengths = np.where(marker, 0, table.length_V[ids])
    text_pos = np.flatnonzero(lengths > 0)
    spelled = b"".join([table.bytes_V[i] for i in ids[text_pos].tolist()])
    if spelled == data:
        return _cumulative(lengths)
    if table.prefix_space and spelled[:1] == b" " and spelled[1:] == data:
        lengths[text_pos[0]] -= 1  # the dummy "▁" the tokenizer prepended is no byte of the text
        return _cumulative(lengths)
    return None


def _offsets_from_chars(
    table: TokenBytes, ids: np.ndarray, chars: np.ndarray, text: str, data: bytes
) -> np.ndarray:
    """Offsets from the tokenizer's character offsets into the original text (normalizing
    tokenizers, unknown tokens). A token starts where the previous one ended, and ends where the
    next token's first character starts: whitespace the tokenizer dropped goes to the following
    token, the last token takes the tail. Tokens that share a character split it by their own byte
    lengths, capped by their character span, each keeping >= 1 byte. A SentencePiece dummy-prefix
    "▁" alone in its token is zero-width."""
    char_to_byte = np.zeros(len(text) + 1, dtype=np.int64)
    char_to_byte[1:] = np.cumsum([len(c.encode("utf-8")) for c in text])
    starts = char_to_byte[np.clip(chars[:, 0], 0, len(text))]
    ends = char_to_byte[np.clip(chars[:, 1], 0, len(text))]
    lengths = table.length_V[ids].copy()
    marker = chars[:, 0] == chars[:, 1]
    text_pos = np.flatnonzero(~marker)
    if table.prefix_space and text_pos.size and table.bytes_V[ids[text_pos[0]]][:1] == b" ":
        lengths[text_pos[0]] -= 1  # the dummy "▁" is no byte of the text
        marker[text_pos[0]] = lengths[text_pos[0]] == 0
    offsets = np.zeros((len(ids), 2), dtype=np.int64)
    text_tokens = np.flatnonzero(~marker).tolist()
    pos = 0
    for n, i in enumerate(text_tokens):
        s = pos
        if n + 1 < len(text_tokens):
            nxt = max(int(starts[text_tokens[n + 1]]), s)
            if nxt == s:  # the next token starts inside this token's characters: split them
                nxt = s + min(max(1, int(lengths[i])), max(1, int(ends[i]) - s))
            remaining = len(text_tokens) - n - 1
            e = max(min(nxt, len(data) - remaining), s)
        else:
            e = len(data)
        offsets[i] = (s, e)
        pos = e
    marker_pos = np.maximum.accumulate(np.where(marker, 0, offsets[:, 1]))
    offsets[marker] = np.stack([marker_pos[marker]] * 2, axis=1)
    return offsets


def _single_byte_ids(tokenizer: Any) -> dict[int, int]:
    """byte value -> id of a token that is exactly that byte (non-special)."""
    table = token_bytes_table(tokenizer)
    out: dict[int, int] = {}
    for i in np.flatnonzero((table.length_V == 1) & ~table.special_V).tolist():
        out.setdefault(table.bytes_V[i][0], i)
    return out


def encode_bytes(tokenizer: Any, data: bytes) -> tuple[list[int], np.ndarray]:
    """Tokenize raw bytes (possibly invalid UTF-8): valid runs by the tokenizer, each invalid byte
    as the tokenizer's single-byte token. Returns (ids, int64 [T, 2] byte offsets into ``data``)."""
    text = data.decode("utf-8", errors="surrogateescape")  # invalid byte b -> "\udc00" + b
    ids: list[int] = []
    offsets: list[np.ndarray] = []
    pos, run, single = 0, [], None

    def flush() -> None:
        nonlocal pos
        piece = "".join(run)
        if piece:
            piece_ids, off = byte_offsets(tokenizer, piece, add_special_tokens=False)
            ids.extend(piece_ids.tolist())
            offsets.append(off.numpy() + pos)
            pos += len(piece.encode("utf-8"))
        run.clear()

    for ch in text:
        if "\udc80" <= ch <= "\udcff":
            flush()
            single = single if single is not None else _single_byte_ids(tokenizer)
            byte = ord(ch) - 0xDC00
            if byte not in single:
                raise AlignmentError(
                    f"the teacher tokenizer has no token for the invalid UTF-8 byte {byte:#04x}; "
                    "use a byte-level or byte-fallback teacher tokenizer"
                )
            ids.append(single[byte])
            offsets.append(np.array([[pos, pos + 1]], dtype=np.int64))
            pos += 1
        else:
            run.append(ch)
    flush()
    return ids, np.concatenate(offsets) if offsets else np.zeros((0, 2), dtype=np.int64)
