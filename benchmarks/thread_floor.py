"""The machine's floor for two busy threads: what CPU time per unit of work costs at 2 threads when
nothing is shared and nothing waits (issue 17).

Each job is a set of independent pieces of work, run either one after another on one thread
(torch at 1 thread) or split over ``alignment.cpu.run_chunks``'s pool of 2 threads, torch's own
team off in each (no OpenMP barrier, no spinning worker, no shared output). Whatever extra CPU
time the 2-thread run takes is the cost of two threads running at once on this machine (shared
caches and memory bandwidth, the hypervisor, per-call overheads), not of a kernel's threading.
Rounds alternate the two ways; medians.

Second table: what entering the pool costs right after an op on torch's own team. 36 chunks of a
log_softmax over [4 x 262,144] on the pool, with or without a softmax of [64 x 50,000] on torch's
team just before: after a team op torch's OpenMP workers spin for a while before they sleep; does
that CPU time land in the pool's window? Compare wall with CPU in the first table: where they are
equal at 2 threads the process got about one core (the machine busy), and the 2-thread figures
then time-share a core instead of running in parallel.

    .venv/bin/python benchmarks/thread_floor.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alignment.cpu import run_chunks


def _jobs() -> dict:
    g = torch.Generator().manual_seed(0)
    h, w = torch.randn(256, 1536, generator=g), torch.randn(16_384, 1536, generator=g)
    out = torch.empty(256, 16_384)
    z = torch.randn(64, 4, 262_144, generator=g)
    x = torch.randn(64, 128, 128, generator=g)
    xb = x[:, None].expand(64, 20, 128, 128).contiguous()
    s = torch.randn(64)

    def half(i):  # columns [i * 8192, (i + 1) * 8192) of the chunked loss's teacher matmul
        cols = slice(i * 8192, (i + 1) * 8192)
        torch.mm(h, w[cols].t(), out=out[:, cols])

    return {
        "matmul [256 x 1536] @ [1536 x 16,384], 2 column halves": (2, half),
        "log_softmax of [4 x 262,144], 64 times (memory-bound)": (
            64, lambda i: torch.log_softmax(z[i], -1)),
        "matmul 128^3, 64 x 20 calls (cache-resident, 56 us each)": (
            64, lambda i: [torch.mm(x[i], x[i]) for _ in range(20)]),
        "the same matmuls as 64 bmm calls of 20": (64, lambda i: torch.bmm(xb[i], xb[i])),
        "add on [64], 64 x 200 calls (per-call overhead)": (
            64, lambda i: [torch.add(s, 1.0) for _ in range(200)]),
    }  # fmt: skip


def _series(n, f):
    torch.set_num_threads(1)
    for i in range(n):
        f(i)


def _pool(n, f):
    torch.set_num_threads(2)
    run_chunks(lambda sl: [f(i) for i in range(sl.start, sl.stop)], n, 1, "cpu")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    print(f"load average at the start: {os.getloadavg()}")
    print(
        "| job | CPU ms, 1 thread | CPU ms, 2 threads | x CPU | wall ms, 1 | wall ms, 2 | x wall |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, (n, f) in _jobs().items():
        cpu: dict = {"1": [], "2": []}
        wall: dict = {"1": [], "2": []}
        for r in range(args.rounds + 1):
            for key, run in (("1", _series), ("2", _pool)):
                c0, w0 = time.process_time(), time.perf_counter()
                run(n, f)
                if r:  # round 0 warms up
                    cpu[key].append(time.process_time() - c0)
                    wall[key].append(time.perf_counter() - w0)
        c1, c2 = (statistics.median(cpu[k]) * 1e3 for k in "12")
        w1, w2 = (statistics.median(wall[k]) * 1e3 for k in "12")
        print(f"| {name} | {c1:.1f} | {c2:.1f} | {c2 / c1:.2f}x | {w1:.1f} | {w2:.1f} | "
              f"{w2 / w1:.2f}x |", flush=True)  # fmt: skip
    _pool_entry(args.rounds)
    print(f"load average at the end: {os.getloadavg()}")


def _pool_entry(rounds: int) -> None:
    z = torch.randn(64, 50_000, generator=torch.Generator().manual_seed(0))

    def piece(_sl):
        torch.log_softmax(torch.randn(4, 262_144), -1)

    print()
    print("| torch threads | team op just before | CPU ms of the pool call (36 chunks) |")
    print("|---:|---|---:|")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for before in (False, True):
            cpu = []
            for _ in range(rounds):
                if before:
                    torch.softmax(z, -1)
                c0 = time.process_time()
                run_chunks(piece, 36, 1, "cpu")
                cpu.append(time.process_time() - c0)
            ms = statistics.median(cpu) * 1e3
            print(f"| {threads} | {'yes' if before else 'no'} | {ms:.1f} |")


if __name__ == "__main__":
    main()
