"""Cross-tokenizer objective losses on the real SmolLM2 (49,152) -> Gemma-3 (262,144) pair.

One row per loss: the forward and backward of the loss alone on one completion of ``--tokens``
SmolLM2 tokens (English prose, real tokenizations by both tokenizers, spans aligned inside the
timed call), from the student logits to their gradient; random logits with the sampled token's
logit raised (the values do not change the work). Each row runs in a fresh subprocess with
``--threads`` torch threads (a list, default ``1,default``; ``default``: torch's own count;
``--rounds`` interleaved rounds of every thread count and loss): ``--warmup`` untimed
calls, then the median wall and CPU time of ``--repeats`` calls and the peak
RSS above the RSS before the first call (Linux: the peak is reset there, ``clear_refs``).
The peer is TRL's GOLD ``ULDLoss`` (extended ULD, "bayesian" merge: the ``uld`` row runs ours
with ``anchor="last"``, the same semantics; the ``uld`` objective's default anchor is
``first``) on the same inputs; TRL has no next-byte or
prefix-marginal loss. ``gold_token`` is ``alignment.gold_terms`` (TRL's GOLD semantics, anchor
first), ``gold_prefix`` the ``gold`` objective's default (``matched=prefix``).

    .venv/bin/python benchmarks/cross_objectives.py [--tokens 104] [--repeats 3] [--warmup 1]
        [--impls next_byte,gold_prefix,gold_token,uld,trl_uld] [--objectives]
        [--threads 1,default] [--rounds 1] [--out FILE]

``--objectives`` instead times each registered objective's ``loss`` + backward end to end with
the real models (the SmolLM2 student's forward and backward included; the Gemma-3 teacher scores
the completion once, untimed), in this process.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "benchmarks"]
sys.path.insert(0, str(REPO))

IMPLS = ("next_byte", "gold_prefix", "gold_token", "uld", "trl_uld")
PROMPT = 8
TEXT = (
    "The old lighthouse keeper climbed the spiral stairs every evening, counting each of the "
    "one hundred and twelve steps aloud. At the top he wiped the salt from the great lens, "
    "trimmed the wick, and watched the first beam sweep across the restless water. Ships he "
    "would never meet passed safely in the dark; that, he said, was the whole of the job. "
    "In 1987 a storm tore the railing away, and he rebuilt it himself with driftwood & rope. "
    "'Nobody asked me to,' he told the reporter, 'but the light doesn't care who pays for "
    "the nails.' "
    "He retired at 81, handing the keys to his niece, who still keeps the log in his hand."
)


def _tokenizers():
    from transformers import AutoTokenizer

    from onpolicy.offline import gemma3_dir, smollm2_dir

    return AutoTokenizer.from_pretrained(smollm2_dir()), AutoTokenizer.from_pretrained(gemma3_dir())


def make_inputs(tokens: int, seed: int = 0) -> dict:
    """alignment-benchmark style inputs (``benchmarks/alignment.py``): per side logits [1, T, V],
    ids, byte offsets (prompt tokens zero-width), TRL labels; matched pairs from the vocab map."""
    from alignment import build_vocab_map, byte_offsets

    s_tok, t_tok = _tokenizers()
    s_ids, s_off = byte_offsets(s_tok, TEXT, add_special_tokens=False)
    cut = int(s_off[tokens - 1, 1])
    part = TEXT.encode("utf-8")[:cut].decode("utf-8")
    t_ids, t_off = byte_offsets(t_tok, part, add_special_tokens=False)
    g = torch.Generator().manual_seed(seed)
    out = {}
    for side, ids, off, V in (
        ("s", s_ids[:tokens], s_off[:tokens], 49_152),
        ("t", t_ids, t_off, 262_144),
    ):
        T = PROMPT + len(ids)
        full_ids = torch.cat([torch.randint(0, V, (PROMPT,), generator=g), ids])[None]
        full_off = torch.zeros(1, T, 2, dtype=torch.long)
        full_off[0, PROMPT:] = off
        logits = torch.randn(1, T, V, generator=g) * 2
        logits[:, :-1].scatter_add_(-1, full_ids[:, 1:, None], torch.full((1, T - 1, 1), 8.0))
        labels = full_ids.clone()
        labels[:, :PROMPT] = -100
        out[side] = {"logits": logits, "ids": full_ids, "offsets": full_off, "labels": labels}
    vmap = build_vocab_map(s_tok, t_tok)
    out["ms"], out["mt"] = vmap.student_ids_M, vmap.teacher_ids_M
    out["tokenizers"] = (s_tok, t_tok)
    return out


def _ours(inp: dict, impl: str):
    from alignment import (
        SideLogits,
        align_spans_batch,
        byte_trie,
        gold_prefix_terms,
        gold_terms,
        next_byte_terms,
    )

    s, t = inp["s"], inp["t"]
    s_tok, t_tok = inp["tokenizers"]
    s_trie, t_trie = byte_trie(s_tok, 49_152), byte_trie(t_tok, 262_144)  # cached, built once

    def run(logits_s):
        aligned = align_spans_batch(s["offsets"], t["offsets"])
        student = SideLogits(logits_s, s["ids"], aligned.student_span_B_Ts)
        teacher = SideLogits(t["logits"], t["ids"], aligned.teacher_span_B_Tt)
        if impl == "next_byte":
            return next_byte_terms(student, teacher, s_trie, t_trie, 0.5).divergence_E.sum()
        if impl == "gold_prefix":
            terms = gold_prefix_terms(student, teacher, s_trie, t_trie, inp["ms"], inp["mt"])
        elif impl == "gold_token":
            terms = gold_terms(student, teacher, inp["ms"], inp["mt"], 0.5)
        else:
            terms = gold_terms(student, teacher, None, None, anchor="last")
        return (terms.matched_B_S + terms.unmatched_B_S)[terms.mask_B_S].sum()

    return run


def _alignment_bench():
    """benchmarks/alignment.py as a module (this folder is off ``sys.path``: its name would
    shadow the ``alignment`` package): TRL's loss call and the peak-RSS helpers."""
    spec = importlib.util.spec_from_file_location(
        "bench_alignment", REPO / "benchmarks/alignment.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _trl(inp: dict):
    return _alignment_bench()._trl_loss(inp, hybrid=False)


def _set_threads(threads: str) -> int:
    """``--threads``: a number, or ``default`` (torch's own count); returns the count used."""
    if threads != "default":
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


def worker(impl: str, tokens: int, repeats: int, warmup: int, threads: str = "1") -> dict:
    _set_threads(threads)
    inp = make_inputs(tokens)
    run = _trl(inp) if impl == "trl_uld" else _ours(inp, impl)
    base = inp["s"]["logits"]
    rss = _alignment_bench()
    rss0 = rss._reset_peak_kb()
    times, cpus, value = [], [], float("nan")
    for i in range(warmup + repeats):
        logits = base.clone().requires_grad_(True)
        t0, c0 = time.perf_counter(), time.process_time()
        loss = run(logits)
        loss.backward()
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        value = float(loss)
        if i >= warmup:
            times.append(dt)
            cpus.append(dc)
    peak = (rss._status_kb("VmHWM") - rss0) / 1024
    return {"impl": impl, "seconds": times, "cpu": cpus, "peak_mb": peak, "value": value,
            "tokens": tokens, "teacher_tokens": int(inp["t"]["ids"].shape[1] - PROMPT),
            "threads": torch.get_num_threads()}  # fmt: skip


OBJECTIVE_ROWS = (
    ("next_byte", {"reference_kl": 0.0}),
    ("next_byte", {"reference_kl": 0.1}),
    ("gold", {"reference_kl": 0.0}),
    ("gold", {"matched": "token", "reference_kl": 0.0}),
    ("uld", {"reference_kl": 0.0}),
)


def objective_rows(tokens: int, repeats: int, warmup: int, threads: str = "1") -> None:
    """Print each objective's loss + backward wall time (median) with the real models."""
    from onpolicy.api import completion_rollout, make_objective
    from onpolicy.models import load_model, load_tokenizer
    from onpolicy.offline import gemma3_dir, smollm2_dir
    from onpolicy.teacher.local import LocalTeacher
    from onpolicy.types import Prompt

    n = _set_threads(threads)
    stok, ttok = load_tokenizer(smollm2_dir()), load_tokenizer(gemma3_dir())
    student, teacher = load_model(smollm2_dir()), load_model(gemma3_dir(), trainable=False)
    text = stok.decode(stok(TEXT, add_special_tokens=False)["input_ids"][:tokens])
    prompts = [Prompt(messages=({"role": "user", "content": "Tell me a short story."},))]
    ro = completion_rollout(prompts, [text], stok)
    scores = LocalTeacher(teacher, ttok, stok, mode="cross").score(ro)
    print(f"objective loss + backward, SmolLM2 student ({len(ro.completion_ids_B[0])} tokens) "
          f"-> Gemma-3 teacher, {n} torch thread(s), median of {repeats}")  # fmt: skip
    print(f"{'objective':<10} {'params':<42} {'fwd+bwd s':>10}")
    for name, params in OBJECTIVE_ROWS:
        objective, times = make_objective(name, **params), []
        for i in range(warmup + repeats):
            student.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            objective.loss(student, ro, scores).loss_sum.backward()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        print(f"{name:<10} {json.dumps(params):<42} {statistics.median(times):>10.3f}")


def _spawn(impl: str, a: argparse.Namespace, threads: str) -> dict | None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if threads != "default":  # default: torch's own choice (the machine's cores)
        env["OMP_NUM_THREADS"] = threads
    cmd = [sys.executable, __file__, "--worker", impl, "--tokens", str(a.tokens), "--repeats",
           str(a.repeats), "--warmup", str(a.warmup), "--threads", threads]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        print(f"{impl} ({threads} threads): failed: {done.stderr.strip().splitlines()[-1:]}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def _table(rows: dict[str, dict]) -> list[str]:
    """One markdown table: per loss, median wall and CPU s per call over rounds x repeats, and
    TRL ``ULDLoss`` / that loss (how many times cheaper) by each."""
    med = {k: (statistics.median(r["seconds"]), statistics.median(r["cpu"])) for k, r in
           rows.items()}  # fmt: skip
    trl = med.get("trl_uld")
    lines = ["| loss | s tok | t tok | fwd+bwd s | CPU s | trl_uld / this (wall) | "
             "trl_uld / this (CPU) | peak MB | value |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for impl, r in rows.items():
        wall, cpu = med[impl]
        ratio = f"{trl[0] / wall:.2f}x | {trl[1] / cpu:.2f}x" if trl else "- | -"
        lines.append(f"| {impl} | {r['tokens']} | {r['teacher_tokens']} | {wall:.3f} | {cpu:.3f} | "
                     f"{ratio} | {r['peak_mb']:.0f} | {r['value']:.4f} |")  # fmt: skip
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=104)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--rounds", type=int, default=1, help="interleaved runs of every cell")
    p.add_argument("--impls", default=",".join(IMPLS))
    p.add_argument("--objectives", action="store_true", help="end-to-end objective timings")
    p.add_argument("--threads", default="1,default", help="torch thread counts (or 'default')")
    p.add_argument("--out", default="", help="also write the report (markdown) here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.objectives:
        for threads in a.threads.split(","):
            objective_rows(a.tokens, a.repeats, a.warmup, threads)
        return
    if a.worker:
        print(json.dumps(worker(a.worker, a.tokens, a.repeats, a.warmup, a.threads)))
        return
    load0, counts = _load(), a.threads.split(",")
    res: dict[str, dict[str, dict]] = {th: {} for th in counts}
    for _ in range(a.rounds):  # interleaved: a shared machine's load hits every cell alike
        for th in counts:
            for impl in a.impls.split(","):
                run = _spawn(impl, a, th)
                if run is not None:
                    old = res[th].get(impl)
                    res[th][impl] = run if old is None else {
                        **run, "seconds": old["seconds"] + run["seconds"],
                        "cpu": old["cpu"] + run["cpu"]}  # fmt: skip
    text = [
        f"# Cross-tokenizer losses on real SmolLM2 -> Gemma-3 logits "
        f"(benchmarks/cross_objectives.py)\n\nCommand: `nice -n 5 .venv/bin/python "
        f"benchmarks/cross_objectives.py --tokens {a.tokens} --repeats {a.repeats} --warmup "
        f"{a.warmup} --rounds {a.rounds} --threads {a.threads} --out FILE` "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average {load0} at the "
        f"start, {_load()} at the end; {os.cpu_count()} cores). Per loss and thread count: "
        f"median over {a.rounds} rounds x {a.repeats} calls after {a.warmup} warm-up(s), "
        f"each cell a fresh process, thread counts and losses interleaved in each round."
    ]
    for th in counts:
        n = next(iter(res[th].values()), {}).get("threads", th)
        text += [f"\n## torch threads: {th} ({n})\n", *_table(res[th])]
    print("\n".join(text), flush=True)
    if a.out:
        Path(a.out).write_text("\n".join(text) + "\n")


def _load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
