"""Where a next-byte call's CPU time goes at one torch thread count (issue 17): inside
``alignment.cpu.run_chunks`` (the byte-mass kernels' one pool), split into the chunks' own thread
CPU time (``time.thread_time`` around each chunk, summed over threads) and the rest of the pool
windows, and outside the pool (torch ops on torch's own team). Inputs: the SmolLM2 -> Gemma-3
case of ``benchmarks/cross_objectives.py`` (104 student tokens, 262,144-column teacher); forward
and backward; medians of ``CALLS`` calls after one warm-up. One JSON line per run; run it at 1 and
2 threads in alternating processes:

    for r in 1 2 3; do for t in 1 2; do
        .venv/bin/python benchmarks/next_byte_split.py $t 3; done; done
"""

import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import alignment.spans._row_chunks as rc
from benchmarks import cross_objectives as co

threads, calls = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)
acc = {"in_cpu": 0.0, "in_wall": 0.0, "chunk_cpu": 0.0, "chunks": 0}
orig = rc.run_chunks


def patched(fn, n, k, dev):
    def timed(sl):
        t0 = time.thread_time()
        fn(sl)
        acc["chunk_cpu"] += time.thread_time() - t0  # under the GIL; a rare lost update possible
        acc["chunks"] += 1

    c0, w0 = time.process_time(), time.perf_counter()
    orig(timed, n, k, dev)
    acc["in_cpu"] += time.process_time() - c0
    acc["in_wall"] += time.perf_counter() - w0


rc.run_chunks = patched
inp = co.make_inputs(104)
run = co._ours(inp, "next_byte")
base = inp["s"]["logits"]
rows = []
for i in range(calls + 1):
    for k in acc:
        acc[k] = 0
    x = base.clone().requires_grad_(True)
    c0, w0 = time.process_time(), time.perf_counter()
    run(x).backward()
    c, w = time.process_time() - c0, time.perf_counter() - w0
    if i:
        rows.append({"cpu": c, "wall": w, **acc})
print(json.dumps({k: statistics.median(r[k] for r in rows) for k in rows[0]}))
