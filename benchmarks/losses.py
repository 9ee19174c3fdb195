"""Forward + backward time and peak memory of the chunked divergence, side by side with the dense
form and TRL's ``DistillationTrainer`` chunked loss, on the same inputs.

Time: one subprocess per (shape, beta) runs the three methods round-robin on the same inputs
(load from other jobs hits each alike); the median of ``repeats`` forward + backward passes
(gradients for the student's hidden states and LM-head weight), wall clock, and in parentheses the
ratio of median CPU times. Memory: a fresh subprocess per (method, shape, beta), one pass; its peak
RSS (``resource.getrusage(...).ru_maxrss``) and the same minus the RSS once the inputs exist and
the libraries are imported (``extra``: what the loss itself needs, gradients included).
Every position counts (TRL's non-Triton path projects all positions anyway). Prints a Markdown
table and writes it, with the command, to ``benchmarks/RESULTS-losses.md``.

    python benchmarks/losses.py            # both shapes, betas 0, 0.5, 1
    python benchmarks/losses.py --quick    # the small shape only, 2 repeats
    python benchmarks/losses.py --threads 1  # at 1 torch thread (default: torch's own count)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks.device
from benchmarks import device as bench  # ONPOLICY_BENCH_DEVICE: cpu or cuda

METHODS = ("ours", "trl", "dense")
SHAPES = {  # name: (tokens, vocab, student hidden, teacher hidden, repeats)
    "small": (256, 16_384, 896, 1536, 5),
    "large": (1024, 65_536, 896, 1536, 3),
}
BETAS = (0.0, 0.5, 1.0)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _inputs(n: int, v: int, hs: int, ht: int):
    import torch

    g, dev = torch.Generator().manual_seed(0), bench.device()
    h_s = torch.randn(1, n, hs, generator=g).to(dev).requires_grad_()
    h_t = torch.randn(1, n, ht, generator=g).to(dev)
    w_s = (torch.randn(v, hs, generator=g) * 0.1).to(dev).requires_grad_()
    w_t = (torch.randn(v, ht, generator=g) * 0.1).to(dev)
    mask = torch.ones(1, n, dtype=torch.bool, device=dev)
    return h_s, h_t, w_s, w_t, mask


def _loss_fn(method: str, beta: float, h_s, h_t, w_s, w_t, mask):
    import torch

    if method == "ours":
        from onpolicy.losses import LMHead, chunked_divergence

        return lambda: chunked_divergence(
            h_s, LMHead(w_s), h_t, LMHead(w_t), "generalized_jsd", beta, mask=mask
        )
    if method == "dense":
        from onpolicy.losses import generalized_jsd

        def dense():
            with torch.no_grad():
                teacher_logits = h_t @ w_t.t()
            return generalized_jsd(h_s @ w_s.t(), teacher_logits, beta, mask=mask)

        return dense
    from trl.trainer.distillation_trainer import _chunked_divergence_loss

    return lambda: _chunked_divergence_loss(h_s, h_t, w_s, w_t, mask, beta)[0]


def run_memory(method: str, shape: str, beta: float) -> dict:
    """One forward + backward in this (fresh) process: peak RSS, extra RSS, loss value."""
    n, v, hs, ht, _ = SHAPES[shape]
    inputs = _inputs(n, v, hs, ht)
    fn = _loss_fn(method, beta, *inputs)  # imports done before the baseline
    if bench.on_gpu():  # peak CUDA allocation, above what the inputs hold
        import torch

        bench.reset_peak()
        base = torch.cuda.memory_allocated() / 2**20
        loss = fn()
        loss.backward()
        peak = bench.peak_mb()
        return {"peak_mb": peak, "extra_mb": peak - base, "loss": float(loss)}
    base = _rss_mb()
    loss = fn()
    loss.backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"peak_mb": peak, "extra_mb": peak - base, "loss": float(loss)}


def run_timing(shape: str, beta: float, repeats: int) -> dict:
    """All methods on the same inputs, round-robin (so load from other jobs hits each alike):
    wall and CPU seconds of each forward + backward."""
    n, v, hs, ht, _ = SHAPES[shape]
    inputs = _inputs(n, v, hs, ht)
    fns = {m: _loss_fn(m, beta, *inputs) for m in METHODS}
    out = {m: {"wall": [], "cpu": []} for m in METHODS}
    for _ in range(repeats):
        for m, fn in fns.items():
            inputs[0].grad = inputs[2].grad = None
            bench.sync()
            wall, cpu = time.perf_counter(), time.process_time()
            fn().backward()
            bench.sync()
            out[m]["wall"].append(time.perf_counter() - wall)
            out[m]["cpu"].append(time.process_time() - cpu)
    return out


THREADS = ["default"]  # --threads: torch threads of the child processes (a number or default)


def _spawn(*args: object) -> dict:
    cmd = [sys.executable, __file__, "--child", *map(str, args)]
    env = dict(os.environ, TRL_EXPERIMENTAL_SILENCE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("OMP_NUM_THREADS", None)
    if THREADS[0] != "default":
        env["OMP_NUM_THREADS"] = THREADS[0]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{args} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _row(shape: str, beta: float, timing: dict, mem: dict) -> str:
    n, v, hs, ht, _ = SHAPES[shape]
    t = {m: statistics.median(timing[m]["wall"]) for m in METHODS}
    c = {m: statistics.median(timing[m]["cpu"]) for m in METHODS}
    peak = {m: mem[m]["peak_mb"] for m in METHODS}
    extra = {m: mem[m]["extra_mb"] for m in METHODS}
    diff = abs(mem["ours"]["loss"] - mem["trl"]["loss"])
    return (
        f"| {n}x{v} ({hs}/{ht}) | {beta} | {t['ours']:.2f} | {t['trl']:.2f} | {t['dense']:.2f} "
        f"| **{t['trl'] / t['ours']:.2f}x** ({c['trl'] / c['ours']:.2f}x) "
        f"| {peak['ours']:.0f} / {extra['ours']:.0f} "
        f"| {peak['trl']:.0f} / {extra['trl']:.0f} | {peak['dense']:.0f} / {extra['dense']:.0f} "
        f"| **{peak['ours'] / peak['trl']:.2f}** / {extra['ours'] / extra['trl']:.2f} "
        f"| **{peak['ours'] / peak['dense']:.2f}** / {extra['ours'] / extra['dense']:.2f} "
        f"| {diff:.1e} |"
    )


HEADER = (
    "| tokens x vocab (H_s/H_t) | beta | ours s | TRL s | dense s | TRL/ours time (CPU time) "
    "| ours MB peak / extra | TRL MB | dense MB | ours/TRL mem (peak / extra) "
    "| ours/dense mem (peak / extra) | abs(loss - TRL) |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shape only, 2 repeats")
    parser.add_argument("--threads", default="default", help="torch threads: a number or default")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(Path(__file__).with_name("RESULTS-losses.md")))
    args = parser.parse_args()
    THREADS[0] = args.threads
    if args.child and args.child[0] == "memory":
        print(json.dumps(run_memory(args.child[1], args.child[2], float(args.child[3]))))
        return
    if args.child:
        print(json.dumps(run_timing(args.child[1], float(args.child[2]), int(args.child[3]))))
        return
    shapes = ["small"] if args.quick else list(SHAPES)
    rows = []
    print(HEADER, flush=True)
    for shape in shapes:
        repeats = 2 if args.quick else SHAPES[shape][4]
        for beta in BETAS:
            mem = {m: _spawn("memory", m, shape, beta) for m in METHODS}
            timing = _spawn("timing", shape, beta, repeats)
            rows.append(_row(shape, beta, timing, mem))
            print(rows[-1], flush=True)
    import torch

    if args.threads != "default":
        torch.set_num_threads(int(args.threads))
    command = "python benchmarks/losses.py" + (" --quick" if args.quick else "")
    command += f" --threads {args.threads}"
    text = (
        "# Divergence losses: forward + backward, chunked vs TRL vs dense\n\n"
        f"Command: `{command}` (run by `make bench`). Machine: {platform.processor() or 'cpu'}, "
        f"{os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"{bench.label()} float32, shared with other jobs (medians of round-robin repeats; "
        "CPU-time ratio in parentheses). Generalized JSD, every position counted, gradients "
        "for student hidden states and LM-head weight. Memory: peak RSS of a fresh process per "
        "case / peak minus the RSS with inputs allocated and libraries imported.\n\n"
        f"{HEADER}\n" + "\n".join(rows) + "\n"
    )
    if bench.on_gpu():
        text += "\nOn the GPU, memory is torch's peak CUDA allocation (peak / above the inputs).\n"
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
