"""Run a list of independent calls, in spawned worker processes when asked (one torch thread
each: tiny models gain nothing from more, and oversubscribed cores slow torch down)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any


def run_calls(calls: list[tuple[Callable, tuple]], workers: int, progress: bool, desc: str) -> list:
    """``[fn(*args) for fn, args in calls]``, in ``workers`` spawned processes when > 1."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(calls), desc=desc, disable=not progress, unit="run")
    workers = min(workers, len(calls))
    if workers <= 1:
        out = []
        for fn, args in calls:
            out.append(fn(*args))
            bar.update()
            _plain_line(progress, desc, len(out), len(calls))
        bar.close()
        return out
    import multiprocessing as mp

    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(fn, *args): i for i, (fn, args) in enumerate(calls)}
        done: dict[int, Any] = {}
        for fut in as_completed(futures):
            done[futures[fut]] = fut.result()
            bar.update()
            _plain_line(progress, desc, len(done), len(calls))
    bar.close()
    return [done[i] for i in range(len(calls))]


def _plain_line(progress: bool, desc: str, finished: int, total: int) -> None:
    """Without a progress bar (``--no-progress``), one plain stderr line per finished job, so a
    long comparison is never silent."""
    if not progress:
        print(f"[onpolicy] {desc}: {finished}/{total} done", file=sys.stderr, flush=True)
