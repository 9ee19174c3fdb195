"""Cross-tokenizer losses: onpolicy's `alignment.spans.gold` side by side with TRL's GOLD `ULDLoss`.

Both sides get the same student/teacher logits, token ids and byte offsets (a prompt, then a
completion cut into student and teacher tokens at different random byte boundaries; the sampled
token's logit is raised so it has a realistic probability). TRL runs its extended ULD with the
"bayesian" merge (the one with the correct logit shift), which is our ``anchor="last"``; the
values are checked to agree (TRL's per-sequence normalization recomputed from our per-span
losses). Each (implementation, case) runs in a fresh subprocess with ``--threads`` torch
threads (a list, default ``1,default``; ``default``: torch's own count, the machine's cores;
each round runs every thread count, then every implementation, in turn): ``--warmup``
untimed calls, then forward and backward wall time and process CPU time (median over
``--repeats``; CPU time is the steadier figure on a shared machine) and peak RSS (ru_maxrss)
minus the RSS before the first call. Both sides are timed on the same work: one call from byte
offsets to the reduced loss, its backward to the student logits (ours aligns the spans inside
the timed call, as TRL's ``ULDLoss`` does).

    .venv/bin/python benchmarks/alignment.py [--cases base,large] [--repeats 3] [--warmup 1]
        [--rounds 1] [--impls trl-uld,ours-uld,...] [--threads 1,default] [--out FILE]

The report (``--out``, default ``RESULTS-alignment.md``) keeps one section per case; a run
rewrites only the sections of the cases it ran, with the command that made them.

``--rounds N`` runs every implementation N times in turn (A B A B ...) and takes the medians
over all of them, so a load that comes and goes on a shared machine hits both sides alike. The
"ULD rows" column is the CPU time ours spends in ``alignment.spans.uld``'s row kernels (the sorts).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import torch

# this file is named like the package it measures: drop its folder from the import path
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))
from benchmarks import device as bench  # noqa: E402  (ONPOLICY_BENCH_DEVICE: cpu or cuda)

CASES = {  # name: (B, T, V_student, V_teacher)
    "base": (4, 256, 32_000, 50_000),
    "large": (4, 512, 49_152, 64_000),
    # real tokenizations: SmolLM2 student, GPT-2 teacher, stdlib source text (T: student side)
    "real": (4, 256, 49_152, 50_257),
    "real1": (1, 256, 49_152, 50_257),  # the first passage of "real" (benchmarks/threads.py)
}
REAL_TEXTS = ("textwrap", "difflib", "argparse", "json.decoder")
PROMPT, MATCHED, TOP_K = 8, 20_000, 256
IMPLS = ("trl-uld", "ours-uld", "ours-uld-top256", "trl-hybrid", "ours-gold")


def _offsets(lengths_B_N: torch.Tensor) -> torch.Tensor:
    """[B, N, 2] (start, end) of consecutive tokens with the given byte lengths."""
    end = lengths_B_N.cumsum(-1)
    return torch.stack([end - lengths_B_N, end], dim=-1)


def _side(ids_B_T: torch.Tensor, off_B_T2: torch.Tensor, V: int, g: torch.Generator) -> dict:
    """Random logits (the sampled token's logit raised) and TRL-style labels for one side."""
    B, T = ids_B_T.shape
    logits = torch.randn(B, T, V, generator=g) * 2
    logits[:, :-1].scatter_add_(-1, ids_B_T[:, 1:, None], torch.full((B, T - 1, 1), 8.0))
    labels = torch.where(off_B_T2[..., 1] > off_B_T2[..., 0], ids_B_T, -100)
    return {"logits": logits, "ids": ids_B_T, "offsets": off_B_T2, "labels": labels}


def _real_inputs(seed: int, case: str = "real") -> dict:
    """Stdlib source text tokenized by SmolLM2 (student) and GPT-2 (teacher), real offsets."""
    import importlib

    from transformers import AutoTokenizer

    from alignment import build_vocab_map, byte_offsets
    from onpolicy.offline import gpt2_tokenizer_dir, smollm2_dir

    B, T, Vs, Vt = CASES[case]
    s_tok = AutoTokenizer.from_pretrained(smollm2_dir())
    t_tok = AutoTokenizer.from_pretrained(gpt2_tokenizer_dir())
    g = torch.Generator().manual_seed(seed)
    rows = []
    for name in REAL_TEXTS[:B]:
        text = Path(importlib.import_module(name).__file__).read_text()[:8000]
        s_ids, s_off = byte_offsets(s_tok, text, add_special_tokens=False)
        cut = int(s_off[T - PROMPT - 1, 1])  # bytes of the first T - PROMPT student tokens
        part = text.encode("utf-8")[:cut].decode("utf-8")
        t_ids, t_off = byte_offsets(t_tok, part, add_special_tokens=False)
        rows.append((s_ids[: T - PROMPT], s_off[: T - PROMPT], t_ids, t_off))
    Tt = PROMPT + max(len(r[2]) for r in rows)
    ids = {"s": torch.zeros(B, T, dtype=torch.long), "t": torch.zeros(B, Tt, dtype=torch.long)}
    off = {
        "s": torch.zeros(B, T, 2, dtype=torch.long),
        "t": torch.zeros(B, Tt, 2, dtype=torch.long),
    }
    for b, (si, so, ti, to) in enumerate(rows):  # prompt: random ids, zero-width
        ids["s"][b, :PROMPT] = torch.randint(0, Vs, (PROMPT,), generator=g)
        ids["t"][b, :PROMPT] = torch.randint(0, Vt, (PROMPT,), generator=g)
        ids["s"][b, PROMPT:], off["s"][b, PROMPT:] = si, so
        ids["t"][b, PROMPT : PROMPT + len(ti)], off["t"][b, PROMPT : PROMPT + len(ti)] = ti, to
    vmap = build_vocab_map(s_tok, t_tok)
    return {
        "s": _side(ids["s"], off["s"], Vs, g),
        "t": _side(ids["t"], off["t"], Vt, g),
        "ms": vmap.student_ids_M,
        "mt": vmap.teacher_ids_M,
    }


def make_inputs(case: str, seed: int = 0) -> dict:
    if case.startswith("real"):
        return _real_inputs(seed, case)
    B, T, Vs, Vt = CASES[case]
    g = torch.Generator().manual_seed(seed)
    n = T - PROMPT  # completion tokens per side
    s_off = _offsets(torch.randint(1, 5, (B, n), generator=g))
    total = s_off[:, -1, 1]
    t_rows = []
    for b in range(B):  # the teacher cuts the same bytes at other boundaries
        cuts = torch.randperm(int(total[b]) - 1, generator=g)[: n - 1].sort().values + 1
        lengths = torch.diff(cuts, prepend=torch.tensor([0]), append=total[b : b + 1])
        t_rows.append(_offsets(lengths))
    t_off = torch.stack(t_rows)
    out = {}
    for side, V, off in (("s", Vs, s_off), ("t", Vt, t_off)):
        ids = torch.randint(0, V, (B, T), generator=g)
        logits = torch.randn(B, T, V, generator=g) * 2
        logits[:, :-1].scatter_add_(-1, ids[:, 1:, None], torch.full((B, T - 1, 1), 8.0))
        full_off = torch.zeros(B, T, 2, dtype=torch.long)
        full_off[:, PROMPT:] = off
        labels = ids.clone()
        labels[:, :PROMPT] = -100
        out[side] = {"logits": logits, "ids": ids, "offsets": full_off, "labels": labels}
    perm = torch.Generator().manual_seed(seed + 1)
    out["ms"] = torch.randperm(Vs, generator=perm)[:MATCHED]
    out["mt"] = torch.randperm(Vt, generator=perm)[:MATCHED]
    return out


def _trl_loss(inp: dict, hybrid: bool):
    from trl.experimental.gold.gold_trainer import ULDLoss

    cfg = types.SimpleNamespace(  # the GOLDConfig fields ULDLoss reads
        uld_crossentropy_weight=0.0, uld_distillation_weight=1.0,
        uld_student_temperature=1.0, uld_teacher_temperature=1.0,
        uld_skip_student_eos=False, uld_skip_teacher_eos=False,
        use_extended_uld=True, uld_token_merge_strategy="bayesian",
        uld_use_hybrid_loss=hybrid, uld_hybrid_matched_weight=1.0,
        uld_hybrid_unmatched_weight=1.0, beta=0.5,
    )  # fmt: skip
    s_vocab, t_vocab = _vocabs(inp)
    fn = ULDLoss(cfg, s_vocab, t_vocab)
    s, t = inp["s"], inp["t"]

    def run(logits_s):
        return fn(logits_s, t["logits"], s["labels"], t["labels"], s["ids"], t["ids"],
                  s["offsets"], t["offsets"])  # fmt: skip

    return run


def _vocabs(inp: dict):
    """Objects with ``get_vocab()`` whose equal strings are exactly the matched id pairs."""
    Vs, Vt = inp["s"]["logits"].shape[-1], inp["t"]["logits"].shape[-1]
    s_names = {i: f"s{i}" for i in range(Vs)}
    t_names = {i: f"t{i}" for i in range(Vt)}
    for k, (i, j) in enumerate(zip(inp["ms"].tolist(), inp["mt"].tolist(), strict=True)):
        s_names[i] = t_names[j] = f"m{k}"
    make = lambda names: types.SimpleNamespace(get_vocab=lambda: {v: k for k, v in names.items()})  # noqa: E731
    return make(s_names), make(t_names)


def _our_loss(inp: dict, impl: str):
    from alignment import SideLogits, align_spans_batch, gold_loss, span_uld_loss

    s, t = inp["s"], inp["t"]
    span_s = align_spans_batch(s["offsets"], t["offsets"]).student_span_B_Ts  # for the reduction

    def run(logits_s):  # aligns inside the timed call, as TRL's ULDLoss does
        aligned = align_spans_batch(s["offsets"], t["offsets"])  # prompt tokens are zero-width
        student = SideLogits(logits_s, s["ids"], aligned.student_span_B_Ts)
        teacher = SideLogits(t["logits"], t["ids"], aligned.teacher_span_B_Tt)
        if impl == "ours-gold":
            return gold_loss(student, teacher, inp["ms"], inp["mt"], beta=0.5, anchor="last",
                             reduction="none")  # fmt: skip
        top_k = TOP_K if impl == "ours-uld-top256" else None
        return span_uld_loss(student, teacher, anchor="last", top_k=top_k, reduction="none")

    return run, span_s


def _trl_normalized(per_span_B_S: torch.Tensor, span_B_T: torch.Tensor) -> torch.Tensor:
    """TRL's reduction: mean over a sequence's spans, then mean over sequences."""
    count_B = (span_B_T.max(1).values + 1).clamp(min=1)
    return (per_span_B_S.sum(1) / count_B).mean()


def _time_uld_rows() -> list[float]:
    """Make ``alignment.spans._gold_rows`` count the CPU time of its ULD row kernels (the sorts)."""
    import alignment.spans._gold_rows as gold

    spent = [0.0]

    def timed(fn):
        def wrapper(*args, **kwargs):
            c0 = time.process_time()
            out = fn(*args, **kwargs)
            spent[0] += time.process_time() - c0
            return out

        return wrapper

    gold.sorted_l1_rows = timed(gold.sorted_l1_rows)
    gold.topk_l1_rows = timed(gold.topk_l1_rows)
    return spent


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _reset_peak_kb() -> int:
    """Reset the peak RSS (Linux: ``clear_refs`` 5) and return the RSS now, in KiB: building
    the inputs peaks higher than a loss call, so without the reset the loss would read 0."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    return _status_kb("VmRSS")


def worker(impl: str, case: str, repeats: int, warmup: int, threads: str = "1") -> dict:
    if threads != "default":
        torch.set_num_threads(int(threads))
    inp = _on_device(make_inputs(case))
    logits_s = inp["s"]["logits"].requires_grad_()
    spent = [float("nan")]  # CPU time in the ULD row kernels (ours only)
    if impl.startswith("trl"):
        run, span = _trl_loss(inp, hybrid=impl == "trl-hybrid"), None
    else:
        run, span = _our_loss(inp, impl)
        spent = _time_uld_rows()
    rss_before = _reset_peak_kb()
    bench.reset_peak()
    gpu_before = torch.cuda.memory_allocated() / 2**20 if bench.on_gpu() else 0.0
    for _ in range(warmup):  # first-call costs (lazy imports, allocator, dispatch) not timed
        logits_s.grad = None
        loss = run(logits_s)
        (loss if span is None else _trl_normalized(loss, span)).backward()
    fwd, bwd, cpu, uld, value = [], [], [], [], None
    for _ in range(repeats):
        logits_s.grad = None
        if not math.isnan(spent[0]):
            spent[0] = 0.0
        bench.sync()
        c0 = time.process_time()
        t0 = time.perf_counter()
        loss = run(logits_s)
        scalar = loss if span is None else _trl_normalized(loss, span)
        bench.sync()
        t1 = time.perf_counter()
        scalar.backward()
        bench.sync()
        t2 = time.perf_counter()
        cpu.append(time.process_time() - c0)
        uld.append(spent[0])
        fwd.append(t1 - t0)
        bwd.append(t2 - t1)
        value = float(scalar.detach())
    peak = _status_kb("VmHWM")
    if bench.on_gpu():  # torch's peak CUDA allocation, and above the inputs
        gpu_peak = bench.peak_mb()
        return {"fwd": fwd, "bwd": bwd, "cpu": cpu, "uld": uld, "value": value,
                "matched": len(inp["ms"]), "threads": torch.get_num_threads(),
                "peak_mb": gpu_peak, "loss_mb": gpu_peak - gpu_before}  # fmt: skip
    return {"fwd": fwd, "bwd": bwd, "cpu": cpu, "uld": uld, "value": value,
            "matched": len(inp["ms"]), "threads": torch.get_num_threads(),
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "loss_mb": (peak - rss_before) / 1024}  # fmt: skip


def _on_device(tree):
    """``make_inputs``'s dict with every tensor on the benchmark's device."""
    if isinstance(tree, dict):
        return {k: _on_device(v) for k, v in tree.items()}
    return tree.to(bench.device()) if isinstance(tree, torch.Tensor) else tree


def _spawn(impl: str, case: str, repeats: int, warmup: int, threads: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["TRL_EXPERIMENTAL_SILENCE"] = "1"
    if threads != "default":  # default: torch's own choice (the machine's cores)
        env["OMP_NUM_THREADS"] = threads
    cmd = [sys.executable, __file__, "--worker", impl, "--cases", case]
    cmd += ["--repeats", str(repeats), "--warmup", str(warmup), "--threads", threads]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:  # the worker's own error, not only its exit status
        tail = "\n".join(out.stderr.strip().splitlines()[-8:])
        raise SystemExit(f"alignment worker {impl} ({case}) failed ({out.returncode}):\n{tail}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _pooled(acc: dict | None, run: dict) -> dict:
    """Per-repeat lists of two runs of one implementation joined (one run: itself)."""
    if acc is None:
        return run
    joined = {k: acc[k] + run[k] for k in ("fwd", "bwd", "cpu", "uld")}
    peaks = {k: max(acc[k], run[k]) for k in ("peak_mb", "loss_mb")}
    return {**run, **joined, **peaks}


def _table(case: str, res: dict[str, dict]) -> list[str]:
    B, T, Vs, Vt = CASES[case]
    keys = ("fwd", "bwd", "cpu", "uld")
    med = {k: {m: statistics.median(v[m]) for m in keys} for k, v in res.items()}
    low = {k: min(v["cpu"]) for k, v in res.items()}  # the least disturbed call
    first = next(iter(res.values()))
    lines = [
        f"### {case}: B={B}, T={T}, V_student={Vs:,}, V_teacher={Vt:,}, "
        f"matched={first['matched']:,}, torch threads {first.get('threads', 1)}",
        "| implementation | fwd s | bwd s | fwd+bwd s | speedup | CPU s | CPU speedup | "
        "CPU min s | min speedup | of which ULD rows CPU s | peak RSS MB | loss RSS MB | value | "
        "value - TRL |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for impl, r in res.items():
        peer = "trl-hybrid" if impl in ("trl-hybrid", "ours-gold") else "trl-uld"
        m, p = med[impl], med.get(peer, med[impl])
        wall, peer_wall = m["fwd"] + m["bwd"], p["fwd"] + p["bwd"]
        peer_value = res.get(peer, r)["value"]
        uld_cell = "-" if math.isnan(m["uld"]) else f"{m['uld']:.3f}"
        lines.append(
            f"| {impl} | {m['fwd']:.3f} | {m['bwd']:.3f} | {wall:.3f} | "
            f"{peer_wall / wall:.1f}x | {m['cpu']:.3f} | {p['cpu'] / m['cpu']:.1f}x | "
            f"{low[impl]:.3f} | {low[peer if peer in low else impl] / low[impl]:.1f}x | "
            f"{uld_cell} | "
            f"{r['peak_mb']:.0f} | {r['loss_mb']:.0f} | {r['value']:.6f} | "
            f"{r['value'] - peer_value:+.2e} |"
        )
    return lines


HEADER = (
    "# Cross-tokenizer loss: alignment.spans.gold vs TRL GOLD ULDLoss (CPU)\n\n"
    "Each case's section below holds its latest table and the command that made it, at 1 torch "
    "thread unless its title says otherwise (`--threads default`: torch's default, the "
    "machine's cores; thread scaling and load: `RESULTS-threads.md`); "
    "`benchmarks/alignment.py` rewrites only the sections of the cases it runs. Per "
    "(implementation, case): the median over rounds x repeats timed calls, each round every "
    "implementation in a fresh subprocess with the warm-up calls first. 'loss RSS' = peak RSS "
    "during the calls (warm-up included; Linux: the peak is reset with `clear_refs` after the "
    "inputs are built) minus the RSS before the first call; 'peak RSS' = the whole process's "
    "peak, inputs included. ours-uld-top256 is the top-k bound, "
    "not exact ULD.\n\n"
    "Setup: TRL `ULDLoss` with extended ULD, `bayesian` merge, no EOS skipping; hybrid: fixed "
    "weights 1/1, beta 0.5, vocabularies whose equal strings are the matched pairs. Ours: "
    '`span_uld_loss` / `gold_loss` with `anchor="last"` on spans from `align_spans_batch`. '
    "base/large: offsets cut the same bytes at random places on each side: ~20% of spans are "
    "1:1 and a span holds ~2.6 tokens per side (real tokenizer pairs are mostly 1:1), the "
    "harder case for the chain-rule scale. real: stdlib source text tokenized by SmolLM2 "
    "(student) and GPT-2 (teacher) via `alignment.byte_offsets`, ~90% of spans 1:1, "
    "matched pairs from `alignment.build_vocab_map`. `value - TRL` for GOLD: ours compares "
    "vocabulary pairs only on spans whose two anchor tokens are a matched pair (elsewhere the "
    "anchors are the pair, the rest goes to ULD; commit 7aa2350), TRL on every span; TRL also "
    "clamps probabilities at 1e-8 in its JSD. Timings come from a shared 2-core VM (other jobs "
    "running): CPU time is the steadier column.\n"
)


def _load() -> str:
    """The 1/5/15-minute load average (the machine is shared: a loaded run must say so)."""
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def merge_sections(text: str, sections: dict[str, str]) -> str:
    """``text`` with each case's section (between ``<!-- case:NAME -->`` and
    ``<!-- /case:NAME -->``) replaced by the new one, or appended when the case has none yet;
    everything else in ``text`` is kept as it is."""
    for case, body in sections.items():
        start, end = f"<!-- case:{case} -->", f"<!-- /case:{case} -->"
        block = f"{start}\n{body.strip(chr(10))}\n{end}"
        i, j = text.find(start), text.find(end)
        if i >= 0 and j > i:
            text = text[:i] + block + text[j + len(end) :]
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="base,large")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls before the timed ones")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved runs of every impl")
    ap.add_argument("--impls", default=",".join(IMPLS))
    ap.add_argument(
        "--threads", default="1,default", help="torch thread counts (a number or 'default'), a list"
    )
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument(
        "--out",
        default=str(Path(__file__).with_name("RESULTS-alignment.md")),
        help="report to update: only the sections of the cases run are rewritten",
    )
    args = ap.parse_args()
    if args.worker:
        out = worker(args.worker, args.cases, args.repeats, args.warmup, args.threads)
        print(json.dumps(out))
        return
    sections, counts = {}, args.threads.split(",")
    for case in args.cases.split(","):
        impls, res = args.impls.split(","), {th: {} for th in counts}
        for _ in range(args.rounds):  # interleaved: a shared machine's load hits every cell
            for th in counts:
                for impl in impls:
                    run = _spawn(impl, case, args.repeats, args.warmup, th)
                    print(f"{case} threads {th} {impl}: CPU {run['cpu']}", file=sys.stderr)
                    res[th][impl] = _pooled(res[th].get(impl), run)
        for th in counts:
            table = _table(case, res[th])
            print("\n".join(table), flush=True)
            command = (
                f"Command: `nice -n 5 .venv/bin/python benchmarks/alignment.py --cases {case} "
                f"--impls {args.impls} --repeats {args.repeats} --warmup {args.warmup} "
                f"--rounds {args.rounds} --threads {args.threads}` "
                f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {bench.label()}, "
                f"load average {_load()}): median of {args.rounds} x {args.repeats} timed "
                f"calls per implementation, thread counts {args.threads} interleaved per round."
            )
            name = case if th == "1" else f"{case}-threads-{th}"
            sections[name] = "\n".join([table[0], "", command, "", *table[1:]])
    out = Path(args.out)
    text = out.read_text() if out.exists() else HEADER
    out.write_text(merge_sections(text, sections))
    print(f"\nupdated {', '.join(sections)} in {out}")


if __name__ == "__main__":
    main()
