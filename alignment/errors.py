"""Errors of the cross-tokenizer layer (``alignment`` never imports ``onpolicy``).

Messages are one line: what was wrong and what to do.
"""

from __future__ import annotations


class AlignmentError(ValueError):
    """Two tokenizations cannot be aligned (they do not cover the same bytes, offsets are not a
    partition, a tokenizer's vocabulary cannot be read as bytes, ...)."""
