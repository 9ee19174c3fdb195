"""Cached teacher scores (``onpolicy score``): bytes per token, and training from the cache against
training with the live teacher.

1. Storage: the bytes per completion token of the score folders on disk (tensors + keys), for
   several ``K``, next to the formula of the format (``K * 6 + 4`` in float16) and DistillKit's
   published compressed top-k format (README of arcee-ai/DistillKit: ids bit-packed at
   ``ceil(log2 V)`` bits, ``exact_k`` values at ``exact_dtype``, polynomial terms at
   ``term_dtype``; its ``DistributionQuantizationConfig.total_bits``), computed from its two
   published configurations at the same ``V`` and at Qwen's ``V = 151,936``.
2. Training: supervised KD (forward KL, the dataset's completions, AdamW lr 3e-3, clip 1.0) of
   ``tiny:tiny`` (seed 2, 100 pretraining steps) from ``tiny:small`` (seed 1, 300 steps), 4 rows
   a step, ``--steps`` steps, with the live dense teacher, the live top-V teacher, and cached
   scores at several ``K`` / dtypes; per variant the largest relative loss difference to the
   dense run over the steps and the relative difference of the weight update
   ``|dw - dw_dense| / |dw_dense|``.

    .venv/bin/python benchmarks/cached_scores.py [--steps 8] [--pair tiny|smollm2] [--out FILE]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # before benchmarks/: its alignment.py would shadow the package

from onpolicy.api import step  # noqa: E402
from onpolicy.models import load_model, load_tokenizer  # noqa: E402
from onpolicy.objectives.supervised_kd import SupervisedKD  # noqa: E402
from onpolicy.scores.cached import CachedTeacher  # noqa: E402
from onpolicy.scores.command import ScoreSpec, dataset_rollout, score_dataset  # noqa: E402
from onpolicy.scores.store import ScoreReader  # noqa: E402
from onpolicy.teacher.local import LocalTeacher  # noqa: E402
from onpolicy.tiny import tiny_model_dir  # noqa: E402

DISTILLKIT = {  # name: (k, exact_k, exact bits, polynomial terms, term bits) from its README
    "DistillKit recommended (k 128)": (128, 16, 16, 6, 32),
    "DistillKit budget (k 50)": (50, 1, 16, 3, 32),
    "DistillKit recommended layout at k 64": (64, 16, 16, 6, 32),
}


def distillkit_bytes(vocab: int, k: int, exact_k: int, exact_bits: int, terms: int,
                     term_bits: int) -> int:  # fmt: skip
    """Bytes per token of DistillKit's compressed top-k row (no residual bins): logprob bits
    rounded up to a byte, plus the ids bit-packed at ``ceil(log2 vocab)`` bits, rounded up."""
    logprob_bits = exact_k * exact_bits + terms * term_bits
    logprob_bits += -logprob_bits % 8
    index_bytes = (k * math.ceil(math.log2(vocab)) + 7) // 8
    return logprob_bits // 8 + index_bytes


def ours_bytes(k: int, dtype: str = "float16") -> int:
    """Bytes per token of the tensors alone: int32 ids, K values, tail and token log-prob."""
    value = 2 if dtype == "float16" else 4
    return k * (4 + value) + 2 * value


def run(student_dir, rollout, teacher, steps: int) -> tuple[list[float], torch.Tensor]:
    torch.manual_seed(0)
    student = load_model(student_dir)
    start = torch.cat([p.detach().flatten() for p in student.parameters()])
    optimizer = torch.optim.AdamW(student.parameters(), lr=3e-3)
    objective = SupervisedKD(source="dataset")
    losses = []
    for s in range(steps):
        ro = rollout.select(list(range(4 * s, 4 * s + 4)))
        out = objective.loss(student, ro, teacher.score(ro))
        losses.append(step(optimizer, out, model=student, max_grad_norm=1.0)["loss"])
    end = torch.cat([p.detach().flatten() for p in student.parameters()])
    return losses, end - start


def models(pair: str, tmp: Path) -> tuple[Path, Path]:
    """``(teacher folder, student folder)``: the tiny pair, or SmolLM2-135M-Instruct (V = 49,152)
    and a student cut from it (every 6th of its 30 layers, ``onpolicy init-student``)."""
    if pair == "tiny":
        return (tiny_model_dir("small", seed=1, pretrain_steps=300),
                tiny_model_dir("tiny", seed=2, pretrain_steps=100))  # fmt: skip
    from onpolicy.init_student import init_student
    from onpolicy.offline import smollm2_dir

    teacher = smollm2_dir()
    init_student(teacher, tmp / "student", every=6)
    return teacher, tmp / "student"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--pair", choices=["tiny", "smollm2"], default="tiny")
    parser.add_argument("--out", default=None, help="write the tables to this markdown file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cached-scores-") as folder:  # K = V folders are big
        text = measure(args.pair, args.steps, Path(folder))
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return text


def measure(pair: str, steps: int, tmp: Path) -> str:
    """Score the data at each K / dtype, train every variant, and return the report."""
    data = tmp / "rows.jsonl"
    lines = (REPO / "configs" / "data" / "tiny_chat.jsonl").read_text().splitlines(True)
    data.write_text("".join(lines[: 4 * steps]))
    teacher_dir, student_dir = models(pair, tmp)
    tok = load_tokenizer(student_dir)
    vocab = len(tok)
    teacher_model = load_model(teacher_dir, trainable=False)
    teacher_tok = load_tokenizer(teacher_dir)
    rollout = dataset_rollout(str(data), tok, chat=False)
    variants = [(vocab, "float32"), (vocab, "float16"), (256, "float16"), (64, "float32"),
                (64, "float16"), (16, "float16")]  # fmt: skip
    stored = {}
    for k, dtype in variants:
        spec = ScoreSpec(teacher=str(teacher_dir), data=str(data), out=str(tmp / f"k{k}-{dtype}"),
                         top_k=k, dtype=dtype, batch_size=4, rows_per_shard=4)  # fmt: skip
        stored[k, dtype] = score_dataset(spec).bytes_per_token
    dense = run(student_dir, rollout, LocalTeacher(teacher_model, teacher_tok, tok, "same"),
                steps)  # fmt: skip
    runs = {"live, top-V": run(student_dir, rollout, LocalTeacher(
        teacher_model, teacher_tok, tok, "same", top_k=vocab), steps)}  # fmt: skip
    for k, dtype in variants:
        teacher = CachedTeacher(ScoreReader(tmp / f"k{k}-{dtype}"))
        runs[f"cached, K={k}, {dtype}"] = run(student_dir, rollout, teacher, steps)
    return report(vocab, variants, stored, dense, runs, steps)


def report(vocab, variants, stored, dense, runs, steps) -> str:
    out = [
        f"### Storage (V = {vocab}; bytes per completion token)",
        "",
        "| format | K | bytes/token on disk | formula | at V = 151,936 |",
        "|---|---|---|---|---|",
    ]
    for k, dtype in variants:
        out.append(f"| onpolicy score, {dtype} | {k} | {stored[k, dtype]:.1f} | "
                   f"{ours_bytes(k, dtype)} | {ours_bytes(k, dtype)} |")  # fmt: skip
    for name, cfg in DISTILLKIT.items():
        out.append(f"| {name} | {cfg[0]} | - | {distillkit_bytes(vocab, *cfg)} | "
                   f"{distillkit_bytes(151_936, *cfg)} |")  # fmt: skip
    out += ["", f"### Training from the cache vs the live dense teacher ({steps} steps)", "",
            "| teacher | max relative loss difference | relative update difference | "
            "bitwise equal to live top-V |", "|---|---|---|---|"]  # fmt: skip
    live_v = runs["live, top-V"]
    for name, (losses, update) in runs.items():
        rel = max(abs(a - b) / abs(b) for a, b in zip(losses, dense[0], strict=True))
        upd = float((update - dense[1]).norm() / dense[1].norm())
        same = losses == live_v[0] and torch.equal(update, live_v[1])
        out.append(f"| {name} | {rel:.2e} | {upd:.2e} | {'yes' if same else 'no'} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
