"""Thread scaling: per-call CPU and wall time of the CPU kernels at 1, 2 and 4 torch threads, with
and without another CPU-bound process on the machine, next to TRL GOLD's ``ULDLoss``.

Kernels (forward + backward to the student logits where there is one):

- ``trl-uld``: TRL's ``ULDLoss`` (extended ULD, "bayesian" merge) on the real-text case of
  ``benchmarks/alignment.py`` (``--case``, default ``real1``: one stdlib passage of 256 SmolLM2
  tokens, 49,152 student / 50,257 GPT-2 teacher logits);
- ``ours-uld``: exact span ULD on the same inputs (``alignment.span_uld_loss``: the ULD sort path),
  spans aligned inside the call as TRL does;
- ``ours-gold``: the GOLD-style hybrid on the same inputs (the GOLD row kernel);
- ``next-byte``: ``alignment.next_byte_terms`` on the same inputs (the next-byte marginals);
- ``chunked``: ``onpolicy.losses.chunked_divergence`` (GKD's JSD, beta 0.5, 256 tokens, V 16,384,
  hidden 896/1536: the ``small`` shape of ``benchmarks/losses.py``);
- ``chunked-rows``: the same loss with hidden size 64 on both sides: the matmuls shrink ~20x and
  the row-wise part (log-softmaxes, divergence and its gradient) is most of the call;
- ``align``: ``alignment.align_spans_batch`` on the real case's offsets, 50 times per call;
- ``spin``: no project code, torch's threads alone: 20 times a softmax of [64, 50,000] followed
  by ~10 ms of single-threaded numpy sorting in the calling thread (the pattern of a kernel that
  alternates torch ops with other work): what torch's OpenMP workers burn while they wait;
- ``KERNEL@before``: the same kernel with the packages of another checkout (``--before DIR``,
  e.g. ``git archive fca4bc7 | tar -x -C DIR``: the code before the one-pool fix).

Each (kernel, threads, load) runs in a fresh subprocess: ``--warmup`` untimed calls, then
``--repeats`` timed calls; process CPU time and wall time per call, and the peak RSS during the
calls above the RSS before them. ``--rounds`` repeats the whole grid, interleaved (round, then
threads, then load, then kernel), so a load that comes and goes on a shared machine hits every
cell alike; the report takes medians over rounds x repeats and states the load average at the
start and end of the run. "loaded": one extra process spinning in pure Python (``while True``)
for the length of the subprocess: a CPU-bound neighbour taking one core.

    .venv/bin/python benchmarks/threads.py [--threads 1,2,4] [--loads none,busy]
        [--kernels trl-uld,ours-uld,...] [--rounds 2] [--repeats 1] [--warmup 1] [--case real1]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "benchmarks"]
sys.path.insert(0, str(REPO))

KERNELS = (
    "trl-uld", "ours-uld", "ours-gold", "next-byte", "chunked", "chunked-rows", "align", "spin",
)  # fmt: skip
OUT = REPO / "benchmarks" / "RESULTS-threads.md"
HEADER = (
    "# Thread scaling of the CPU kernels, and TRL GOLD `ULDLoss` (benchmarks/threads.py)\n\n"
    "Each section below holds one run and its command; a run rewrites only its own section "
    "(`--section`).\n"
)


def _alignment_bench():
    """benchmarks/alignment.py as a module (its name would shadow the ``alignment`` package)."""
    path = REPO / "benchmarks/alignment.py"
    spec = importlib.util.spec_from_file_location("bench_alignment", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _inputs(bench, case: str) -> dict:
    """``bench.make_inputs(case)``, built once and kept in the temporary folder (loading the
    tokenizers and matching the vocabularies takes longer than the calls timed)."""
    path = Path(tempfile.gettempdir()) / f"onpolicy-bench-threads-{case}.pt"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}")
        torch.save(bench.make_inputs(case), tmp)
        tmp.replace(path)
    return torch.load(path)


def _next_byte(inp: dict):
    from transformers import AutoTokenizer

    from alignment import SideLogits, align_spans_batch, byte_trie, next_byte_terms
    from onpolicy.offline import gpt2_tokenizer_dir, smollm2_dir

    s, t = inp["s"], inp["t"]
    s_trie = byte_trie(AutoTokenizer.from_pretrained(smollm2_dir()), s["logits"].shape[-1])
    t_trie = byte_trie(AutoTokenizer.from_pretrained(gpt2_tokenizer_dir()), t["logits"].shape[-1])

    def run(x):
        aligned = align_spans_batch(s["offsets"], t["offsets"])
        student = SideLogits(x, s["ids"], aligned.student_span_B_Ts)
        teacher = SideLogits(t["logits"], t["ids"], aligned.teacher_span_B_Tt)
        return next_byte_terms(student, teacher, s_trie, t_trie, 0.5).divergence_E.sum()

    return run


def _chunked(hidden_s: int = 896, hidden_t: int = 1536):
    from onpolicy.losses import LMHead, chunked_divergence

    g = torch.Generator().manual_seed(0)
    h_s = torch.randn(1, 256, hidden_s, generator=g).requires_grad_()
    h_t = torch.randn(1, 256, hidden_t, generator=g)
    w_s = (torch.randn(16_384, hidden_s, generator=g) * 0.1).requires_grad_()
    w_t = torch.randn(16_384, hidden_t, generator=g) * 0.1
    mask = torch.ones(1, 256, dtype=torch.bool)

    def run(_x):
        h_s.grad = w_s.grad = None
        return chunked_divergence(h_s, LMHead(w_s), h_t, LMHead(w_t), "generalized_jsd", 0.5,
                                  mask=mask)  # fmt: skip

    return run


def _spin():
    import numpy as np

    z = torch.randn(64, 50_000, generator=torch.Generator().manual_seed(0))
    keys = np.random.default_rng(0).random((3, 50_000))

    def run(_x):
        for _ in range(20):
            torch.softmax(z, -1)
            np.sort(keys, -1)  # one thread, GIL released: torch's workers are idle meanwhile

    return run


def _call(kernel: str, case: str):
    """``(fn(x) -> scalar loss or None, x)``: one call of the kernel (backward included)."""
    if kernel == "spin":
        return _spin(), torch.zeros(1, requires_grad=True)
    bench = _alignment_bench()
    inp = _inputs(bench, case)
    x = inp["s"]["logits"].requires_grad_()
    if kernel == "trl-uld":
        loss = bench._trl_loss(inp, hybrid=False)
    elif kernel in ("ours-uld", "ours-gold"):
        run, span = bench._our_loss(inp, kernel)
        loss = lambda x: bench._trl_normalized(run(x), span)  # noqa: E731
    elif kernel == "next-byte":
        loss = _next_byte(inp)
    elif kernel == "chunked":
        loss = _chunked()
    elif kernel == "chunked-rows":
        loss = _chunked(64, 64)
    else:
        from alignment import align_spans_batch

        s_off, t_off = inp["s"]["offsets"], inp["t"]["offsets"]
        return (lambda _x: [align_spans_batch(s_off, t_off) for _ in range(50)] and None), x
    return loss, x


def worker(kernel: str, threads: int, case: str, repeats: int, warmup: int) -> dict:
    torch.set_num_threads(threads)
    kernel = kernel.split("@")[0]  # ``@before``: the same kernel, imported from --before
    bench = _alignment_bench()
    fn, x = _call(kernel, case)
    rss_before = bench._reset_peak_kb()
    cpu, wall = [], []
    for i in range(warmup + repeats):
        x.grad = None
        c0, w0 = time.process_time(), time.perf_counter()
        loss = fn(x)
        if loss is not None:
            loss.backward()
        if i >= warmup:
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
    return {"cpu": cpu, "wall": wall, "threads": torch.get_num_threads(),
            "loss_mb": (bench._status_kb("VmHWM") - rss_before) / 1024}  # fmt: skip


def _spawn(kernel: str, threads: int, load: str, args) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["TRL_EXPERIMENTAL_SILENCE"] = "1"
    cmd = [sys.executable, __file__, "--worker", kernel, "--threads", str(threads), "--case",
           args.case, "--repeats", str(args.repeats), "--warmup", str(args.warmup)]  # fmt: skip
    if kernel.endswith("@before"):  # the packages from the checkout given as --before
        env["PYTHONPATH"] = os.pathsep.join([args.before, env.get("PYTHONPATH", "")])
        cmd += ["--before", args.before]
    busy = None
    if load == "busy":  # a CPU-bound neighbour for the length of the run
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"], env=env)
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cell(runs: list[dict]) -> dict:
    return {
        "cpu": statistics.median([c for r in runs for c in r["cpu"]]),
        "wall": statistics.median([w for r in runs for w in r["wall"]]),
        "mb": max(r["loss_mb"] for r in runs),
        "n": sum(len(r["cpu"]) for r in runs),
    }


def _tables(res: dict, threads: list[int], loads: list[str], kernels: list[str]) -> list[str]:
    base_t, base_l = threads[0], loads[0]
    lines = [
        f"Per-call median CPU s and wall s; `x CPU`, `x wall`: that cell / the same kernel at "
        f"{base_t} thread(s), load `{base_l}` (1.00 = no change; above 1 = more time).",
        "",
        "| kernel | threads | load | CPU s | wall s | x CPU | x wall | loss RSS MB | calls |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for k in kernels:
        ref = res[(k, base_t, base_l)]
        for t in threads:
            for load in loads:
                c = res[(k, t, load)]
                lines.append(
                    f"| {k} | {t} | {load} | {c['cpu']:.3f} | {c['wall']:.3f} | "
                    f"{c['cpu'] / ref['cpu']:.2f} | {c['wall'] / ref['wall']:.2f} | "
                    f"{c['mb']:.0f} | {c['n']} |"
                )
    ours = [k for k in kernels if k.startswith("ours-uld")]
    if "trl-uld" not in kernels or not ours:
        return lines
    lines += [
        "",
        "TRL `ULDLoss` / ours (exact span ULD), same cell: how many times ours is cheaper.",
        "",
        "| ours | threads | load | CPU ratio | wall ratio | TRL loss RSS MB | ours loss RSS MB |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for k in ours:
        for t in threads:
            for load in loads:
                a, b = res[("trl-uld", t, load)], res[(k, t, load)]
                lines.append(
                    f"| {k} | {t} | {load} | {a['cpu'] / b['cpu']:.1f}x | "
                    f"{a['wall'] / b['wall']:.1f}x | {a['mb']:.0f} | {b['mb']:.0f} |"
                )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2,4")
    ap.add_argument("--loads", default="none,busy")
    ap.add_argument("--kernels", default=",".join(KERNELS))
    ap.add_argument("--case", default="real1")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--before", default="", help="checkout the KERNEL@before kernels import")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(OUT), help="report: only --section is rewritten")
    ap.add_argument("--section", default="main", help="the report section this run writes")
    args = ap.parse_args()
    if args.worker:
        if args.worker.endswith("@before"):
            sys.path.insert(0, args.before)
        out = worker(args.worker, int(args.threads), args.case, args.repeats, args.warmup)
        print(json.dumps(out))
        return
    threads = [int(t) for t in args.threads.split(",")]
    loads, kernels = args.loads.split(","), args.kernels.split(",")
    load_start, start = os.getloadavg(), time.time()
    runs: dict[tuple, list[dict]] = {}
    for r in range(args.rounds):  # interleaved: round, threads, load, kernel
        for t in threads:
            for load in loads:
                for k in kernels:
                    runs.setdefault((k, t, load), []).append(_spawn(k, t, load, args))
                    print(k, t, load, runs[(k, t, load)][-1]["cpu"], flush=True)
        _report(args, runs, r + 1, load_start, start)  # after each round: a run cut short counts


def _report(args, runs: dict, done: int, load_start, start: float) -> None:
    threads = [int(t) for t in args.threads.split(",")]
    loads, kernels = args.loads.split(","), args.kernels.split(",")
    res = {key: _cell(v) for key, v in runs.items()}
    command = (
        f"`nice -n 5 .venv/bin/python benchmarks/threads.py --threads {args.threads} --loads "
        f"{args.loads} --kernels {args.kernels} --case {args.case} --rounds {args.rounds} "
        f"--repeats {args.repeats} --warmup {args.warmup} --section {args.section}"
        + (f" --before {args.before}" if args.before else "")
        + "`"
    )
    load_end = os.getloadavg()
    body = "\n".join([
        f"## {args.section}",
        "",
        f"Command: {command} ({time.strftime('%Y-%m-%d %H:%M', time.gmtime(start))} UTC, "
        f"{(time.time() - start) / 60:.0f} min, {done} of {args.rounds} rounds done). Machine: "
        f"{os.cpu_count()} cores, torch {torch.__version__}, torch's default thread count here "
        f"{torch.get_num_threads()}. Load average (1, 5, 15 min) at the start "
        f"{tuple(round(x, 1) for x in load_start)}, at the end "
        f"{tuple(round(x, 1) for x in load_end)}: a shared machine; only the ratios within this "
        "run (interleaved) mean anything.",
        "",
        *_tables(res, threads, loads, kernels),
    ])  # fmt: skip
    out = Path(args.out)
    text = out.read_text() if out.exists() else HEADER
    out.write_text(_alignment_bench().merge_sections(text, {args.section: body}))
    print(body, flush=True)


if __name__ == "__main__":
    main()
