"""The device a benchmark runs on, for the few benchmarks ``benchmarks/gpu_check.sh`` runs on a GPU.

``ONPOLICY_BENCH_DEVICE`` (``cpu``, the default, or ``cuda``) picks it; the benchmarks then put
their inputs and models there, time with the device synchronized, and report memory as torch's
peak CUDA allocation (``max_memory_allocated``) instead of the process's peak RSS.
"""

from __future__ import annotations

import os

ENV = "ONPOLICY_BENCH_DEVICE"


def name() -> str:
    """``cpu`` or ``cuda`` (``ENV``); anything else is an error naming the choices."""
    value = os.environ.get(ENV, "cpu")
    if value not in ("cpu", "cuda"):
        raise SystemExit(f"{ENV}={value!r}: use cpu or cuda")
    return value


def on_gpu() -> bool:
    return name() == "cuda"


def device():
    import torch

    return torch.device(name())


def sync() -> None:
    """Wait for the device's queued work (timings on a GPU measure the work, not its launch)."""
    if on_gpu():
        import torch

        torch.cuda.synchronize()


def reset_peak() -> None:
    if on_gpu():
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_mb() -> float:
    """Peak CUDA memory allocated by torch since ``reset_peak`` (MB); 0 on the CPU."""
    if not on_gpu():
        return 0.0
    import torch

    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


def label() -> str:
    """The device in words, for a report's settings line."""
    if not on_gpu():
        return "CPU"
    import torch

    return f"GPU ({torch.cuda.get_device_name(0)}, torch {torch.__version__})"
