"""CPU speed paths, in one place: one thread pool for the row kernels, thread-local buffers, huge
pages. Every choice here only changes speed: values are the same with or without it (tested).

**One pool.** PyTorch runs each CPU op on its OpenMP team (``torch.get_num_threads()`` threads);
after an op its worker threads spin for a while (libgomp's default wait policy) before they sleep.
A kernel that alternates short torch ops with numpy sorts run in a second pool of Python threads
made three threads fight for two cores: the sorting threads and the spinning OpenMP workers (the
mechanism alone, measured: the ``spin`` row of ``benchmarks/RESULTS-threads.md``).
``run_chunks`` instead runs a row kernel's chunks on ``torch.get_num_threads()`` threads (the
caller and ``n - 1`` helpers), each taking the next chunk when done with one (a descheduled
thread holds up one chunk, not a share fixed in advance), with torch's own team off in each:
``omp_set_num_threads(1)`` of that thread only (an OpenMP setting is per thread), restored in the
caller when the call returns. No process-wide setting or environment variable changes; other
threads' torch ops keep their team, and torch's workers sleep while the pool runs.
Where the OpenMP runtime is not found (a torch built without OpenMP) the chunks run in the calling
thread, one after another, with torch's team as usual.

**Thread-local buffers** (``buffer``): a fresh ``[chunk x V]`` temporary costs its page faults
each time the allocator has handed the memory back to the system; a buffer per (thread, slot,
dtype) up to ``BUFFER_MAX_BYTES`` is reused between calls.

**Huge pages** (``fresh_empty``): a large fresh tensor laid on transparent huge pages takes 512x
fewer page faults. Measured gains: ``benchmarks/RESULTS-alignment.md``.

**Freed memory kept** (``retain_freed_memory``, glibc): training on a CPU frees and allocates the
same large buffers every step; glibc hands each one back to the system (``munmap``, heap trim) and
the next step faults it in again. Measured gains: ``benchmarks/RESULTS-e2e.md``.
"""

from __future__ import annotations

import ctypes
import itertools
import math
import mmap
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

BUFFER_MAX_BYTES = 1 << 24  # per-thread buffers up to this size are kept between calls
HUGE_MIN_BYTES = 1 << 23  # fresh CPU tensors from this size on go on huge pages (fresh_empty)
_HUGE = 1 << 21
_MADV_HUGEPAGE = getattr(mmap, "MADV_HUGEPAGE", None)  # Linux only
_LOCAL = threading.local()  # .bufs: buffers; .in_pool: this thread runs a chunk of run_chunks
_POOL: list[ThreadPoolExecutor] = []  # [the helpers], grown on demand
_POOL_LOCK = threading.Lock()
os.register_at_fork(after_in_child=_POOL.clear)  # a forked child has none of the threads


def _find_openmp():
    """torch's OpenMP runtime (``omp_get_max_threads``, ``omp_set_num_threads``), or None."""
    lib_dir = Path(torch.__file__).parent / "lib"
    for pattern in ("libgomp*.so*", "libiomp*.so*", "libomp*.so*", "libomp*.dylib"):
        for path in sorted(lib_dir.glob(pattern)):
            try:
                lib = ctypes.CDLL(str(path))
                get, put = lib.omp_get_max_threads, lib.omp_set_num_threads
            except (OSError, AttributeError):
                continue
            get.restype, put.argtypes = ctypes.c_int, [ctypes.c_int]
            return get, put
    return None


_OMP = _find_openmp() if "parallel backend: OpenMP" in torch.__config__.parallel_info() else None


def _team_of_one():
    """Make torch's ops in this thread run on it alone; return the setting to restore (or None).

    torch reads its thread count from the thread's OpenMP setting (``at::get_num_threads``), set
    lazily per thread: asking for it first makes torch's own setting land before ours."""
    if _OMP is None:
        return None
    torch.get_num_threads()
    before = _OMP[0]()
    _OMP[1](1)
    return before


def _helper_init() -> None:
    _team_of_one()
    _LOCAL.in_pool = True


def _helpers(n: int) -> ThreadPoolExecutor:
    """The pool of helper threads, with at least ``n`` workers (helpers never wait on it)."""
    with _POOL_LOCK:
        if not _POOL or _POOL[0]._max_workers < n:
            old = _POOL[:]
            _POOL[:] = [
                ThreadPoolExecutor(n, thread_name_prefix="alignment-cpu", initializer=_helper_init)
            ]
            for pool in old:
                pool.shutdown(wait=False)
        return _POOL[0]


def threads_for(device: torch.device | str, n_chunks: int) -> int:
    """How many threads ``run_chunks`` uses for ``n_chunks`` chunks on ``device``."""
    if torch.device(device).type != "cpu" or _OMP is None or getattr(_LOCAL, "in_pool", False):
        return 1
    return max(1, min(torch.get_num_threads(), n_chunks))


def run_chunks(fn: Callable[[slice], None], n_rows: int, chunk_rows: int, device) -> None:
    """``fn(rows)`` for each chunk ``rows`` of ``range(n_rows)`` (``chunk_rows`` rows each).

    On CPU the chunks run on ``torch.get_num_threads()`` threads, torch's own team off in each
    (module docstring), so ``fn`` must write only its own rows' outputs. Elsewhere, in a nested
    call, or with one thread: in order in the calling thread. Exceptions are raised here.
    """
    starts = range(0, n_rows, max(1, chunk_rows))
    n = threads_for(device, len(starts))
    if n == 1:
        for s in starts:
            fn(slice(s, min(s + chunk_rows, n_rows)))
        return
    nxt = itertools.count()  # next() is atomic under the GIL: each chunk is taken once
    grad_mode = torch.is_grad_enabled()  # thread-local in torch: the helpers take the caller's

    def worker() -> None:
        with torch.set_grad_enabled(grad_mode):
            while (i := next(nxt)) < len(starts):
                fn(slice(starts[i], min(starts[i] + chunk_rows, n_rows)))

    futures = [_helpers(n - 1).submit(worker) for _ in range(n - 1)]
    before = _team_of_one()
    _LOCAL.in_pool = True
    try:
        worker()
    finally:
        _LOCAL.in_pool = False
        if before is not None and _OMP is not None:
            _OMP[1](before)
        for f in futures:
            f.result()


def buffer(
    slot: str, shape: tuple[int, ...], dtype, device, max_bytes: int = BUFFER_MAX_BYTES
) -> torch.Tensor:
    """Uninitialized ``shape``; on CPU one per (thread, slot, dtype), reused between calls up to
    ``max_bytes`` (fresh pages would be faulted in and zeroed on every call). Valid until the
    next call with the same slot in the same thread."""
    n = math.prod(shape)
    if torch.device(device).type != "cpu":  # the CUDA caching allocator already reuses blocks
        return torch.empty(shape, dtype=dtype, device=device)
    bufs = _LOCAL.__dict__.setdefault("bufs", {})
    key = (slot, dtype)
    buf = bufs.get(key)
    if buf is None or buf.numel() < n:
        buf = torch.empty(n, dtype=dtype)
        if n * buf.element_size() <= max_bytes:
            bufs[key] = buf
    return buf[:n].view(shape)


def fresh_empty(shape: tuple[int, ...], dtype, device) -> torch.Tensor:
    """``torch.empty(shape)``; a large CPU tensor is laid on transparent huge pages.

    A fresh tensor's memory is faulted in by the kernel one page at a time as it is first
    written (a 131 MB gradient: 32,000 faults, each zeroing 4 KiB). Mapped with
    ``madvise(MADV_HUGEPAGE)`` (honoured when the kernel's THP mode is ``always`` or
    ``madvise``), the same memory takes 64 faults of 2 MiB (the first such mapping of a process
    costs more: a training loop pays it once). The tensor is an ordinary contiguous tensor
    (``torch.frombuffer`` over a private anonymous mapping, unmapped when the tensor is freed); on
    other devices, below ``HUGE_MIN_BYTES``, or if mapping fails, plain ``torch.empty``.
    """
    n = math.prod(shape)
    nbytes = n * torch.empty((), dtype=dtype).element_size()
    if torch.device(device).type != "cpu" or nbytes < HUGE_MIN_BYTES or _MADV_HUGEPAGE is None:
        return torch.empty(shape, dtype=dtype, device=device)
    try:
        region = mmap.mmap(-1, nbytes + _HUGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        region.madvise(_MADV_HUGEPAGE)
        offset = -np.frombuffer(region, np.uint8, count=1).ctypes.data % _HUGE  # 2 MiB aligned
        return torch.frombuffer(region, dtype=dtype, count=n, offset=offset).view(shape)
    except (OSError, ValueError):
        return torch.empty(shape, dtype=dtype, device=device)


M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: keep up to ~2 GB free at the heap top
RETAIN_ENV = "ONPOLICY_RETAIN_FREED_MEMORY"


def retain_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of handing it back to the system.

    Sets ``M_MMAP_MAX = 0`` (every block from the heap: glibc serves a buffer above its mmap
    threshold, at most 32 MB, with a fresh ``mmap`` and frees it with ``munmap``) and a high
    ``M_TRIM_THRESHOLD`` (freed memory at the heap top stays mapped), so a training step that
    allocates the buffers of the step before page-faults nothing. The process keeps its
    high-water mark instead, and freed blocks can fragment (peak RSS a few % higher). It changes
    the whole process' allocator: the trainer applies it only when it trains on the CPU, and
    ``ONPOLICY_RETAIN_FREED_MEMORY=0`` turns it off. Returns whether it was applied (False off
    Linux/glibc or when turned off).
    """
    if os.environ.get(RETAIN_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    mallopt = _mallopt()
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def _mallopt():
    """glibc's ``mallopt(int, int) -> int``, or None where the C library has none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn
