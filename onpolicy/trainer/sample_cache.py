"""A disk cache for the fixed teacher samples (``teacher.samples=fixed``), opt-in.

Every run with fixed teacher samples draws one sample per training prompt before step 0
(``sources.draw_teacher_samples``). The samples depend only on the teacher's weights, the prompts
(in order), the sampling settings, the seed and the process layout, so runs that share those (a
warm-up, learning-rate trials and the runs of one seed in a comparison) draw the same samples.
With ``ONPOLICY_TEACHER_SAMPLES_CACHE=<folder>`` in the environment the first such run saves its
draw there and the others load it: identical samples and identical counted teacher tokens (the
FLOPs accounting does not change), without the teacher's generation wall time. Unset (the
default), nothing is cached.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from onpolicy.trainer.step_metrics import ComputeBudget

ENV = "ONPOLICY_TEACHER_SAMPLES_CACHE"


def weights_digest(model: torch.nn.Module) -> str:
    """A hash of every parameter and buffer of ``model`` (names, shapes, dtypes, values)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def draw_key(teacher: torch.nn.Module | None, prompt_keys: Sequence[Any], **settings: Any) -> str:
    """The cache key of a draw: the teacher's weights, the prompts in order and ``settings``."""
    teacher_part = "none" if teacher is None else weights_digest(teacher)
    text = repr((teacher_part, list(prompt_keys), sorted(settings.items())))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def cached_draw(
    key: str, draw: Callable[[], tuple[Any, ComputeBudget]], folder: str | Path | None = None
) -> tuple[Any, ComputeBudget]:
    """``draw()``'s result, loaded from ``<folder>/<key>.pkl`` when present, else drawn and saved
    there. ``folder``: default ``$ONPOLICY_TEACHER_SAMPLES_CACHE``; without one, just ``draw()``.
    A loaded draw reports its teacher tokens and 0 seconds (nothing was generated)."""
    folder = folder or os.environ.get(ENV)
    if not folder or not key:
        return draw()
    path = Path(folder) / f"{key}.pkl"
    if path.is_file():
        samples, tokens = pickle.loads(path.read_bytes())
        return samples, ComputeBudget(teacher_tokens=tokens)
    samples, spent = draw()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(pickle.dumps((samples, spent.teacher_tokens)))
    tmp.replace(path)  # atomic: a concurrent run never reads half a file
    return samples, spent
