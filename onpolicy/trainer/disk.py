"""Write failures (disk full, read-only file system, quota, permissions) as one line.

``disk_errors(path, kept)`` turns an ``OSError`` (or the ``RuntimeError`` / ``SafetensorError``
torch and safetensors raise for a failed write) inside its body into a ``TrainingError`` that
names the file, the reason, and what earlier output is intact (``kept``). Everything written
before the failure was written atomically (checkpoints) or line by line (metrics), so nothing
earlier is lost.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
from collections.abc import Iterator
from pathlib import Path

from onpolicy.errors import OnpolicyError, TrainingError

_WRITE_HINTS = ("write", "disk", "space", "file too large", "read-only", "errno", "os error")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno is not None:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        return f"{exc.strerror or exc} ({name})"
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]


@contextlib.contextmanager
def disk_errors(path: str | Path, kept: str, cleanup: Path | None = None) -> Iterator[None]:
    """Raise a one-line ``TrainingError`` for a failed write to ``path`` in the body; ``kept``
    says what earlier output is intact; ``cleanup`` (a partial folder) is removed first."""
    try:
        yield
    except OnpolicyError:
        raise
    except OSError as exc:
        _raise(exc, path, kept, cleanup)
    except Exception as exc:  # torch's RuntimeError, safetensors' SafetensorError
        if not any(h in str(exc).lower() for h in _WRITE_HINTS):
            raise
        _raise(exc, path, kept, cleanup)


def _raise(exc: BaseException, path: str | Path, kept: str, cleanup: Path | None) -> None:
    if cleanup is not None:
        shutil.rmtree(cleanup, ignore_errors=True)
    where = getattr(exc, "filename", None) or path
    raise TrainingError(
        f"could not write {str(where)!r}: {_reason(exc)}; nothing written earlier was lost "
        f"({kept}); free space or fix permissions, then run the same command to resume"
    ) from exc
