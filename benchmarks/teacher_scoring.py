"""Teacher scoring throughput and memory: vLLM (engine; server) vs the transformers teacher.

SmolLM2-135M-Instruct scores a batch of 32 rows (the chat_pair task's prompts rendered with its
chat template + a fixed 128-token completion cut from this repository's README, so every side sees
the same tokens) and returns its top-64 log-probs + tail at every completion position, the sparse
form the trainer and ``onpolicy score`` store:

- ``hf``: ``LocalTeacher(top_k=64)``, one transformers forward (float32) over the padded batch;
- ``vllm``: ``VLLMTeacher`` on an in-process ``vllm.LLM`` (float32, ``prompt_logprobs=64``);
- ``server``: ``VLLMTeacher`` on a ``vllm serve`` child process (float32), over HTTP.

Time: all sides live in this process (the server in its child) and are called in turn, round
after round, after one warm-up call each (a load change on the shared machine hits every side);
medians of completion tokens scored per second. Memory: each side again in a fresh process: its
peak RSS (libraries, weights, vLLM's KV cache of ``VLLM_CPU_KVCACHE_SPACE`` GiB, the call) and the
scoring call's own peak above the RSS before it (Linux ``VmHWM``, reset through
``/proc/self/clear_refs``); for ``server`` that process is the client (what the trainer's process
holds with a served teacher: tokenizer, torch, the answer), and the ``vllm serve`` process and its
engine core are reported apart. ``--memory-only``: no timing, the memory of ``hf`` and ``server``
only. Runs in the vLLM venv:

    .venv-vllm/bin/python benchmarks/teacher_scoring.py [--rounds 3] [--no-server] [--memory-only]
        [--out benchmarks/RESULTS-teacher-scoring.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if p not in ("", _HERE)]  # benchmarks/alignment.py shadows
sys.path.insert(0, str(ROOT))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

K = 64
SIDES = ("hf", "vllm", "server")


def batch(tok, rows: int, completion: int):
    """``rows`` rows: a chat_pair prompt (rendered) + ``completion`` README tokens each."""
    from benchmarks.e2e_models import prompts
    from onpolicy.chat import render_prompts
    from onpolicy.types import Rollout

    text = (ROOT / "README.md").read_text()
    ids = tok(text, add_special_tokens=False)["input_ids"]
    comps = [ids[(b * completion) % (len(ids) - completion) :][:completion] for b in range(rows)]
    ps = prompts("smollm2", rows)
    return Rollout(
        ps, list(range(rows)), render_prompts(tok, ps), comps,
        [[0.0] * completion for _ in comps], ["length"] * rows, [""] * rows,
    )  # fmt: skip


def make_side(side: str, path: str, tok, url: str | None):
    """``(scorer, close)`` of ``side``."""
    from onpolicy.teacher.vllm_teacher import VLLMTeacher

    if side == "hf":
        from onpolicy.models import load_model
        from onpolicy.teacher.local import LocalTeacher

        model = load_model(path, trainable=False)
        return LocalTeacher(model, tok, tok, mode="same", top_k=K), lambda: None
    if side == "server":  # a loaded CPU can take longer than the client's default 30 s a call
        from onpolicy.rollout.http import RetryPolicy

        retry = RetryPolicy(timeout_s=600, max_retries=0)
        return VLLMTeacher(url, top_k=K, tokenizer=tok, retry=retry), lambda: None
    from onpolicy.rollout.vllm_engine import VLLMEngineBackend, engine_options

    options = engine_options(dtype="float32", max_logprobs=K, max_model_len=1024)
    engine = VLLMEngineBackend(path, options=options, stop_token_ids=())
    return VLLMTeacher(engine.llm, top_k=K, tokenizer=tok), engine.close


def _hwm_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as f:
        return int(next(x for x in f if x.startswith("VmHWM:")).split()[1]) / 1024.0


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_side(side: str, args, url: str | None) -> dict:
    """In this fresh process: load ``side``, warm it up, then one measured call."""
    from onpolicy.models import load_tokenizer
    from onpolicy.offline import smollm2_dir

    path = str(smollm2_dir())
    tok = load_tokenizer(path)
    ro = batch(tok, args.rows, args.completion)
    scorer, close = make_side(side, path, tok, url)
    scorer.score(ro)
    loaded_peak = _hwm_mb()  # start-up, weights, KV cache, a first call
    before = _rss_mb()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # peak RSS := current RSS
    scorer.score(ro)
    call_peak = _hwm_mb()
    close()
    return {"side": side, "call_mb": call_peak - before,
            "process_peak_mb": max(loaded_peak, call_peak)}  # fmt: skip


def start_server(path: str, log: Path) -> tuple[subprocess.Popen, str]:
    """A ``vllm serve`` of ``path`` on a free port, once healthy (``--max-logprobs 256``)."""
    import socket
    import urllib.request

    from onpolicy.rollout.vllm_server import serve_command

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv, env = serve_command(path, port, python=sys.executable, max_model_len=1024,
                              dtype="float32")  # fmt: skip
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vllm serve exited ({proc.returncode}); see {log}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return proc, url
        except OSError:
            time.sleep(1)
    proc.kill()
    raise RuntimeError(f"vllm serve not healthy after 900 s; see {log}")


def _server_peak_mb(proc: subprocess.Popen) -> float:
    """The server's peak RSS: its process and its children (the engine core)."""
    import psutil

    procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    return sum(_hwm_mb(p.pid) for p in procs)


def time_sides(sides: list[str], args, url: str | None) -> dict[str, list[float]]:
    """Completion tokens/s of each side per round (interleaved, after a warm-up each)."""
    from onpolicy.models import load_tokenizer
    from onpolicy.offline import smollm2_dir

    path = str(smollm2_dir())
    tok = load_tokenizer(path)
    ro = batch(tok, args.rows, args.completion)
    n = sum(len(c) for c in ro.completion_ids_B)
    made = {s: make_side(s, path, tok, url) for s in sides}
    rates: dict[str, list[float]] = {s: [] for s in sides}
    try:
        for scorer, _ in made.values():
            scorer.score(ro)
        for r in range(args.rounds):
            for side, (scorer, _) in made.items():
                start = time.perf_counter()
                scorer.score(ro)
                rates[side].append(n / (time.perf_counter() - start))
                print(f"round {r} {side}: {rates[side][-1]:.1f} tok/s", file=sys.stderr)
    finally:
        for _, close in made.values():
            close()
    return rates


def _spawn_memory(side: str, args, url: str | None) -> dict:
    cmd = [sys.executable, __file__, "--memory-side", side, "--rows", str(args.rows),
           "--completion", str(args.completion), *(["--url", url] if url else [])]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode or not lines:
        error = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        print(f"memory side {side} failed: {error[0]}", file=sys.stderr)
        return {"error": error}
    return json.loads(lines[-1])


def table(rates, memory, server_mb, args, load: str) -> str:
    import torch

    med = {s: statistics.median(v) for s, v in rates.items()}
    lines = [
        f"SmolLM2-135M-Instruct, float32, top-{K} + tail, batch {args.rows} rows x "
        f"{args.completion} completion tokens (+ the rendered prompt), one call per batch; "
        f"CPU ({platform.machine()}, {os.cpu_count()} cores shared with other jobs; load "
        f"average {load} at the start), torch threads {torch.get_num_threads()}, vllm-cpu "
        f"in-process engine (enforce_eager, KV cache {os.environ['VLLM_CPU_KVCACHE_SPACE']} GiB);"
        f" {args.rounds} interleaved rounds after a warm-up, medians. A CPU figure: on a GPU "
        "vLLM's kernels and batching differ.",
        "",
        "| side | tok/s (median) | / hf | per round tok/s | process peak MB | call peak MB |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for side, rate in med.items():
        m = memory.get(side, {})
        proc, call = m.get("process_peak_mb"), m.get("call_mb")
        lines.append(
            f"| {side} | {rate:,.1f} | {rate / med['hf']:.2f}x | "
            + ", ".join(f"{x:,.0f}" for x in rates[side])
            + f" | {_mb(proc)} | {_mb(call)} |"
        )
    return "\n".join([*lines, "", _server_note(server_mb)])


def _mb(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def _server_note(server_mb: float | None) -> str:
    return (
        "server: process peak and call peak are the client's (the trainer's process holding a "
        f"`VLLMTeacher` on the URL); the `vllm serve` process and its engine core peaked at "
        f"{_mb(server_mb)} MB, outside the trainer."
    )


def memory_table(memory: dict, server_mb: float | None, args) -> str:
    """The trainer-side memory of each side (``--memory-only``)."""
    lines = [
        f"SmolLM2-135M-Instruct, float32, top-{K} + tail, batch {args.rows} rows x "
        f"{args.completion} completion tokens; each side in a fresh process: load, one warm-up "
        "call, one measured call.",
        "",
        "| side | trainer-process peak MB | call peak above its start MB |",
        "|---|---:|---:|",
    ]
    for side, m in memory.items():
        lines.append(f"| {side} | {_mb(m.get('process_peak_mb'))} | {_mb(m.get('call_mb'))} |")
    return "\n".join([*lines, "", _server_note(server_mb)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--rows", type=int, default=32)
    p.add_argument("--completion", type=int, default=128)
    p.add_argument("--no-server", action="store_true", help="engine and hf only")
    p.add_argument("--memory-only", action="store_true",
                   help="no timing: the trainer-side memory of hf and server")  # fmt: skip
    p.add_argument("--out", default=None, help="also write the table (Markdown) here")
    p.add_argument("--memory-side", choices=SIDES, help="(internal)")
    p.add_argument("--url", default=None, help="(internal) the server")
    args = p.parse_args(argv)
    if args.memory_side:
        print(json.dumps(memory_side(args.memory_side, args, args.url)))
        return 0
    from onpolicy.offline import smollm2_dir

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    sides = ["hf", "vllm"] if args.no_server else list(SIDES)
    if args.memory_only:
        sides = ["hf", "server"]
    proc = url = None
    server_mb = None
    try:
        if "server" in sides:
            proc, url = start_server(str(smollm2_dir()), Path("/tmp/onpolicy-bench-serve.log"))
        rates = None if args.memory_only else time_sides(sides, args, url)
        memory = {s: _spawn_memory(s, args, url) for s in sides}
        if proc is not None:
            server_mb = _server_peak_mb(proc)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)
    if args.memory_only:
        print(memory_table(memory, server_mb, args))
        return 0
    text = table(rates, memory, server_mb, args, load)
    print(text)
    if args.out:
        cmd = ".venv-vllm/bin/python benchmarks/teacher_scoring.py " + " ".join(
            argv if argv is not None else sys.argv[1:]
        )
        Path(args.out).write_text(
            f"# Teacher scoring: vLLM vs transformers\n\nCommand: `{cmd}`\n\n{text}\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
