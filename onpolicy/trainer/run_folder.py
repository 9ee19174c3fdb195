"""Who may use a run folder, and whether a run in it continues, starts over or is refused.

- **Lock**: a run holds an exclusive ``flock`` on ``<output_dir>/.onpolicy.lock`` (main process)
  for its whole life; a second run on the same folder stops at once with a one-line error naming
  the holder (pid, host, start time). The kernel drops the lock when its process dies, so a run
  killed with ``kill -9`` leaves a file but no lock: the next run takes it over. (``flock`` on a
  network file system may not exclude processes on other hosts.)
- **Resume plan** (``plan_resume``), decided from ``trainer_state.json`` before any model loads:
  no checkpoint: a fresh start; a checkpoint below ``train.steps``: "resuming from step N of M"
  on stderr; a finished run (step == ``train.steps``): refused unless ``train.resume=true`` was
  asked for explicitly (then it is reloaded and re-evaluated) or ``fresh``; ``train.resume=false``
  over existing checkpoints: refused (a new run would prune the old one's checkpoints).
- **Fresh start** (``fresh``): nothing is deleted. The old folder is renamed to
  ``<output_dir>.old-<UTC time>`` (printed) and the run starts in an empty ``output_dir``.
- **Changed config**: every checkpoint records the config (``config_record``); on resume a
  difference in a key that changes training (anything outside ``SAFE_KEYS``) is refused with the
  differing keys and the ways out; differences in safe keys are printed and accepted.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onpolicy.config import Config
from onpolicy.errors import OnpolicyError, TrainingError

LOCK_FILE = ".onpolicy.lock"
# keys a resumed run may change: they decide how long, how often to log/evaluate/save, not what
# one step computes (a longer ``train.steps`` also stretches a decaying lr schedule)
SAFE_KEYS = (
    "train.steps",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.save_final",
    "train.max_nonfinite",
    "train.resume",
    "train.output_dir",
    "logging.",
    "eval.",
    "teacher.server_url",  # the served teacher moved (same model): a resume may follow it
    "teacher.vllm.",  # its timeouts and retries
)


@dataclass(frozen=True)
class ResumePolicy:
    """How ``train`` treats what is already in ``train.output_dir``.

    Attributes:
        fresh: start over; an existing folder is moved aside to ``<output_dir>.old-<time>``.
        explicit_resume: ``train.resume=true`` was asked for (not the default), so a finished run
            is reloaded and re-evaluated instead of refused.
        allow_changes: keys that change training whose difference from the checkpoint's config is
            accepted (the checkpoint's optimizer and scheduler state are restored as saved).
    """

    fresh: bool = False
    explicit_resume: bool = False
    allow_changes: tuple[str, ...] = ()


def _holder_line() -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": when})


def _describe_holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
        return f"pid {info['pid']} on {info['host']}, since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "an unknown process"


@contextlib.contextmanager
def folder_lock(output_dir: str | Path) -> Iterator[Path]:
    """Hold the exclusive lock of ``output_dir`` (created if missing) for the ``with`` body.

    Raises ``TrainingError`` naming the holder when another live process holds it."""
    from onpolicy.trainer.disk import disk_errors

    out = Path(output_dir)
    path = out / LOCK_FILE
    with disk_errors(path, "nothing of this run was written yet"):
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise TrainingError(
                f"train.output_dir {str(out)!r} is in use by another run "
                f"({_describe_holder(path)}); wait for it to end, or give another output_dir"
            ) from None
        with contextlib.suppress(OSError):  # who holds it is information only (disk full?)
            os.ftruncate(fd, 0)
            os.write(fd, _holder_line().encode())
            os.fsync(fd)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def move_aside(output_dir: str | Path) -> Path | None:
    """Rename an existing ``output_dir`` to ``<output_dir>.old-<UTC time>``; returns the new
    name (None when there was nothing). Call while holding its lock."""
    out = Path(output_dir)
    if not out.exists():
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    target = out.with_name(f"{out.name}.old-{stamp}")
    n = 1
    while target.exists():
        target = out.with_name(f"{out.name}.old-{stamp}-{n}")
        n += 1
    out.rename(target)
    return target


def config_record(config: Config) -> dict[str, Any]:
    """``{"fingerprint": sha256 of the training keys, "config": {flat key: value}}`` for a
    checkpoint's ``trainer_state.json``."""
    from onpolicy.trainer.metrics_log import flat_config

    flat = flat_config(config)
    training = {k: v for k, v in flat.items() if not _is_safe(k)}
    digest = hashlib.sha256(json.dumps(training, sort_keys=True).encode()).hexdigest()[:16]
    return {"fingerprint": digest, "config": flat}


def _is_safe(key: str) -> bool:
    return any(key == s or (s.endswith(".") and key.startswith(s)) for s in SAFE_KEYS)


def config_changes(saved: dict[str, Any], now: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{key: (saved value, current value)}`` for every flat key that differs. A key the saved
    record lacks (added to the config after the checkpoint was written) counts only when its
    current value is not the default (a default is what the older run trained with)."""
    from onpolicy.trainer.metrics_log import flat_config

    defaults = flat_config(Config())
    keys = sorted(set(saved) | set(now))
    return {
        k: (saved.get(k), now.get(k))
        for k in keys
        if saved.get(k) != now.get(k) and not (k not in saved and now.get(k) == defaults.get(k))
    }


def check_config(
    checkpoint: Path, saved: dict[str, Any], config: Config, allow: Sequence[str]
) -> list[str]:
    """Refuse (``TrainingError``) a resume whose config differs from ``saved`` (the checkpoint's
    flat config) in a key that changes training and is not in ``allow``; returns notes on the
    accepted differences. An old checkpoint without a record is accepted with a note."""
    if not saved:
        return [f"checkpoint {checkpoint.name} records no config; the config was not checked"]
    changes = config_changes(saved, config_record(config)["config"])
    refused = {k: v for k, v in changes.items() if not _is_safe(k) and k not in allow}
    if refused:
        listed = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in refused.items())
        flags = " ".join(f"--allow-change {k}" for k in refused)
        out = config.train.output_dir
        raise TrainingError(
            f"the checkpoint in {out!r} was trained with another config ({listed}); start over "
            f"with `onpolicy train --fresh` (moves the old folder aside), put the old values "
            f"back, or accept the change with `{flags}`"
        )
    return [f"{k} changed {a!r} -> {b!r} since {checkpoint.name}" for k, (a, b) in changes.items()]


def read_state(checkpoint: Path) -> dict[str, Any]:
    """A checkpoint's ``trainer_state.json`` as a dict (``TrainingError`` when unreadable)."""
    from onpolicy.trainer.checkpoint import STATE_FILE

    path = checkpoint / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TrainingError(f"checkpoint state {str(path)!r} is unreadable: {exc}") from exc
    if not isinstance(data, dict):
        raise TrainingError(f"checkpoint state {str(path)!r} is not a JSON object")
    return data


def plan_resume(config: Config, policy: ResumePolicy) -> Path | None:
    """The checkpoint to resume from (None: start fresh), after the checks of the module
    docstring; prints what it decided on stderr. Main process, lock held, before models load."""
    from onpolicy.trainer.checkpoint import latest_checkpoint

    t = config.train
    latest = latest_checkpoint(t.output_dir)
    if latest is None:
        return None
    state = read_state(latest)
    step = int(state.get("step", 0))
    if not t.resume:
        raise TrainingError(
            f"train.resume=false but {t.output_dir!r} holds checkpoints of an earlier run (step "
            f"{step}); start over with `onpolicy train --fresh` (moves the old folder aside) or "
            "give another train.output_dir"
        )
    if step >= t.steps and not policy.explicit_resume:
        raise TrainingError(
            f"{t.output_dir!r} holds a finished run (step {step} of {t.steps}); nothing to do. "
            "Raise train.steps to continue it, pass `--fresh` to start over (the old folder is "
            "moved aside), or train.resume=true to reload and re-evaluate it"
        )
    for note in check_config(latest, state.get("config") or {}, config, policy.allow_changes):
        print(f"[onpolicy] note: {note}", file=sys.stderr, flush=True)
    print(f"[onpolicy] resuming from step {step} of {t.steps} ({latest})", file=sys.stderr)
    return latest


def claim_output_dir(
    accelerator: Any, config: Config, policy: ResumePolicy, held: contextlib.ExitStack
) -> Path | None:
    """Lock ``train.output_dir`` for this run (into ``held``; main process), move an old run
    aside on ``policy.fresh``, drop partial checkpoints and decide what to resume from
    (``run_folder.plan_resume``). Every process gets the decision, or the same error."""
    from onpolicy.trainer.checkpoint import remove_partial

    out = Path(config.train.output_dir)
    error: Exception | None = None
    answer: list[Any] = [None, None]  # [error message, checkpoint to resume from]
    if accelerator.is_main_process:
        try:
            if policy.fresh:
                _start_over(out, held)
            else:
                held.enter_context(folder_lock(out))
            remove_partial(out)
            latest = plan_resume(config, policy)
            answer = [None, None if latest is None else str(latest)]
        except OnpolicyError as exc:
            error, answer = exc, [str(exc), None]
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        answer = broadcast_object_list(answer)
    if error is not None:
        raise error
    if answer[0] is not None:
        raise TrainingError(answer[0])
    return None if answer[1] is None else Path(answer[1])


def _start_over(out: Path, held: contextlib.ExitStack) -> None:
    """``--fresh``: an earlier run in ``out`` is renamed to ``<out>.old-<time>`` (nothing is
    deleted), then the new, empty ``out`` is locked into ``held``."""
    if not out.is_dir() or not any(p.name != LOCK_FILE for p in out.iterdir()):
        held.enter_context(folder_lock(out))
        return
    with folder_lock(out):  # no live run may be in it
        moved = move_aside(out)
        held.enter_context(folder_lock(out))
    print(f"[onpolicy] --fresh: the earlier run is now in {moved}", file=sys.stderr, flush=True)
