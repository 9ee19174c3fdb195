"""Memory of one training step at Qwen's vocabulary (V = 151,936): a top-64 teacher vs full logits.

Tiny Qwen2-shaped student and teacher (hidden 64, 2 layers, untied 151,936-row heads, random
weights: at this vocabulary the [tokens x V] tensors dominate, whatever the backbone), B rows of
random prompt + completion ids, supervised KD (forward KL, ``onpolicy.objectives.supervised_kd``)
and one AdamW step. Each side runs in its own fresh process, alternating (``--rounds``):

- ``full``: a local teacher with full logits in the trainer's process (``LocalTeacher``, top_k 0):
  its forward makes the float32 [N, V] logits the loss reads;
- ``top64``: the teacher's top-64 log-probs + tail + token log-prob, made beforehand (as
  ``onpolicy score`` caches them or a vLLM teacher returns them) and read from a file: no teacher
  model and no [N, V] teacher tensor in the trainer's process; the sparse loss on the student's
  full [N, V] logits (``chunked: false``);
- ``top64_chunked``: the same scores, ``chunked: true``: the chunked top-k loss
  (``onpolicy.losses.chunked_topk``) projects the student's hidden states through its LM head a
  block of positions at a time, so the student's [N, V] logits never exist at once either.

Reported per side: the bytes of the teacher-score tensors the loss reads (``TeacherScores``), and
the step's peak resident memory above the resident memory just before it (Linux ``VmHWM`` after
resetting it through ``/proc/self/clear_refs``): scores + student forward/backward + optimizer.
Memory does not depend on the load of the machine (time is not measured here).

    python benchmarks/topk_memory.py [--rows 4] [--prompt 32] [--completion 256] [--rounds 2]
        [--out benchmarks/RESULTS-topk-memory.md]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if p not in ("", _HERE)]  # benchmarks/alignment.py shadows
sys.path.insert(0, str(ROOT))

V = 151_936
K = 64
SIDES = ("full", "top64", "top64_chunked")


def _model(seed: int):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=2048,
        tie_word_embeddings=False, pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config).float()


def _rollout(rows: int, prompt: int, completion: int):
    import torch

    from onpolicy.types import Rollout

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, V, (rows, prompt + completion), generator=g).tolist()
    return Rollout(
        [], list(range(rows)), [r[:prompt] for r in ids], [r[prompt:] for r in ids],
        [[0.0] * completion for _ in ids], ["length"] * rows, [""] * rows,
    )  # fmt: skip


def _full_scores(teacher, rollout):
    """What ``LocalTeacher`` (same tokenizer, top_k 0) returns: float32 [N, V] logits."""
    import torch

    from onpolicy.forward import forward_completions
    from onpolicy.losses import token_logprobs
    from onpolicy.teacher.types import DenseScores

    with torch.no_grad():
        fwd = forward_completions(teacher.eval(), rollout.to_padded(0), V)
        return DenseScores(
            vocab_size=V, num_tokens_B=fwd.num_tokens_B, logits_N_V=fwd.logits_N_V,
            token_logprobs_N=token_logprobs(fwd.logits_N_V, fwd.targets_N),
        )  # fmt: skip


def _top_k(scores):
    """The sparse form ``LocalTeacher(top_k=K)`` / a vLLM teacher / the score cache hand over."""
    import torch

    from onpolicy.losses import teacher_tail_logprob
    from onpolicy.teacher.types import TopKScores

    top_lp, top_ids = torch.log_softmax(scores.logits_N_V, dim=-1).topk(K, dim=-1)
    return TopKScores(
        vocab_size=V, num_tokens_B=scores.num_tokens_B,
        token_logprobs_N=scores.token_logprobs_N, topk_ids_N_K=top_ids,
        topk_logprobs_N_K=top_lp, tail_logprob_N=teacher_tail_logprob(top_lp),
    )  # fmt: skip


def _hwm_mb() -> float:
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024.0


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _score_bytes(scores) -> int:
    fields = ("logits_N_V", "token_logprobs_N", "topk_ids_N_K", "topk_logprobs_N_K",
              "tail_logprob_N")  # fmt: skip
    return sum(
        t.nelement() * t.element_size()
        for f in fields
        if (t := getattr(scores, f, None)) is not None
    )


def run_side(side: str, args) -> dict:
    """One step in this (fresh) process; returns the measurements."""
    import gc

    import torch

    from onpolicy.objectives.supervised_kd import SupervisedKD

    torch.set_num_threads(1)
    student = _model(1)
    rollout = _rollout(args.rows, args.prompt, args.completion)
    teacher = _model(2) if side == "full" else None
    sparse = torch.load(args.scores, weights_only=False) if side != "full" else None
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4)
    gc.collect()
    before = _rss_mb()
    with open("/proc/self/clear_refs", "w") as f:  # peak RSS := current RSS
        f.write("5")
    scores = _full_scores(teacher, rollout) if side == "full" else sparse
    out = SupervisedKD(source="dataset", chunked=side == "top64_chunked").loss(
        student, rollout, scores
    )
    (out.loss_sum / out.num_tokens).backward()
    opt.step()
    peak = _hwm_mb()
    return {"side": side, "step_extra_mb": peak - before, "score_bytes": _score_bytes(scores),
            "tokens": out.num_tokens}  # fmt: skip


def _spawn(side: str, args) -> dict:
    sizes = ["--rows", str(args.rows), "--prompt", str(args.prompt),
             "--completion", str(args.completion)]  # fmt: skip
    cmd = [sys.executable, __file__, "--side", side, "--scores", args.scores, *sizes]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode or not lines:
        raise RuntimeError(f"side {side} failed:\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def _prepare(args) -> None:
    """The top-64 scores of the teacher (the ``full`` side's teacher, same rows), to a file."""
    import torch

    rollout = _rollout(args.rows, args.prompt, args.completion)
    torch.save(_top_k(_full_scores(_model(2), rollout)), args.scores)


def table(runs: dict[str, list[dict]], args) -> str:
    med = {s: statistics.median(r["step_extra_mb"] for r in runs[s]) for s in SIDES}
    score_mb = {s: runs[s][0]["score_bytes"] / 2**20 for s in SIDES}
    n = runs["full"][0]["tokens"]
    per_token = {s: runs[s][0]["score_bytes"] / n for s in SIDES}
    rounds = "; ".join(
        f"{s}: " + ", ".join(f"{r['step_extra_mb']:,.0f}" for r in runs[s]) for s in SIDES
    )
    setting = (
        f"V = {V:,}, {args.rows} rows x ({args.prompt} prompt + {args.completion} completion) "
        f"tokens, N = {n:,} completion positions; tiny Qwen2-shaped student and teacher "
        "(hidden 64, 2 layers, untied heads, random weights); supervised KD (forward KL) + one "
        "AdamW step, float32, 1 torch thread; each side in a fresh process, "
        f"{args.rounds} round(s) alternating; medians."
    )
    full, sp, ch = (score_mb[s] for s in SIDES)
    return "\n".join([
        setting,
        "",
        "| | full logits (local teacher) | top-64, sparse loss on the student's logits | "
        "top-64, chunked top-k loss | top-64 / full (sparse, chunked) |",
        "|---|---:|---:|---:|---:|",
        f"| teacher-score memory (MB; target top-64 <= 0.1x) | {full:,.1f} | {sp:,.2f} | "
        f"{ch:,.2f} | {sp / full:.4f}x, {ch / full:.4f}x |",
        f"| teacher-score bytes per completion token | {per_token['full']:,.0f} | "
        f"{per_token['top64']:,.0f} | {per_token['top64_chunked']:,.0f} | |",
        f"| step peak above its start (MB) | {med['full']:,.0f} | {med['top64']:,.0f} | "
        f"{med['top64_chunked']:,.0f} | {med['top64'] / med['full']:.2f}x, "
        f"{med['top64_chunked'] / med['full']:.2f}x |",
        "",
        f"Per round (step peak above its start, MB): {rounds}.",
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--side", choices=SIDES, help="(internal) one side, prints its JSON")
    p.add_argument("--scores", default=None, help="(internal) the top-64 scores file")
    p.add_argument("--rows", type=int, default=4)
    p.add_argument("--prompt", type=int, default=32)
    p.add_argument("--completion", type=int, default=256)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", default=None, help="also write the table (Markdown) here")
    args = p.parse_args(argv)
    if args.side:
        print(json.dumps(run_side(args.side, args)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        args.scores = str(Path(tmp) / "top64.pt")
        _prepare(args)
        runs: dict[str, list[dict]] = {s: [] for s in SIDES}
        for r in range(args.rounds):
            for side in SIDES:
                runs[side].append(_spawn(side, args))
                print(f"round {r} {side}: {runs[side][-1]}", file=sys.stderr, flush=True)
    text = table(runs, args)
    print(text)
    if args.out:
        cmd = "python benchmarks/topk_memory.py " + " ".join(
            argv if argv is not None else sys.argv[1:]
        )
        Path(args.out).write_text(f"# Step memory at V = 151,936: top-64 teacher vs full logits\n\n"
                                  f"Command: `{cmd}`\n\n{text}\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
