"""The project's error hierarchy: one-line messages that name the bad value and the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping


class OnpolicyError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(OnpolicyError, ValueError):
    """A config value is missing, unknown or out of range (raised before any model loads)."""


class DataError(OnpolicyError, ValueError):
    """A dataset row or file cannot be used (no prompts, prompt longer than the context, ...)."""


class TokenizerMismatchError(OnpolicyError, ValueError):
    """Teacher and student tokenizers differ where the run assumes they are the same."""


class BackendError(OnpolicyError, RuntimeError):
    """A rollout or scoring backend failed (server down, engine error) after its retries."""


class TrainingError(OnpolicyError, RuntimeError):
    """Training cannot go on (too many non-finite losses, checkpoint unreadable, ...)."""


def check_known_keys(block: str, raw: Iterable[str], known: Iterable[str], where: str = "") -> None:
    """A one-line ``ConfigError`` naming the keys of the ``block`` mapping ``raw`` that are not
    ``known`` (``where``: the file or entry they came from), the known ones, and the known key
    closest to the first unknown one when there is a close one."""
    known = sorted(known)
    unknown = sorted(set(raw) - set(known))
    if unknown:
        at = f" in {where}" if where else ""
        close = difflib.get_close_matches(str(unknown[0]), known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown {block} keys {unknown}{at}; known {known}{hint}")


def check_at_least(values: Mapping[str, float], low: float) -> None:
    """A one-line ``ConfigError`` naming the first ``key=value`` of ``values`` below ``low``."""
    for key, value in values.items():
        if value < low:
            raise ConfigError(f"{key}={value} must be >= {low}")
