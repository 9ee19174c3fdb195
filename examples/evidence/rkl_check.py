"""The engine's on-policy reverse KL against a plain-PyTorch float64 reference, on real batches of
the ratio experiment (the large teacher, the warm student at its plateau).

    python examples/evidence/rkl_check.py --run outputs/compare/evidence-ratio --batches 3

Per batch: 32 of the student's own temperature-1 samples of training prompts; the engine's loss
(``ReverseKL`` through ``LocalTeacher``: sum over completion tokens / their count) and its
gradient, against ``mean over completion tokens of sum_v s_v (log s_v - log t_v)`` computed from
one plain forward of each model on ``prompt + completion`` (float64), its gradient by autograd.
Prints the largest differences; run when an on-policy result goes against on-policy.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from onpolicy.api import loss, make_objective, rollout
from onpolicy.models import load_model, load_saved_weights, load_tokenizer
from onpolicy.rollout.base import make_backend
from onpolicy.tasks.long_arithmetic import long_arithmetic_task
from onpolicy.teacher.local import LocalTeacher
from onpolicy.types import SamplingParams


def reference(student, teacher, ro) -> torch.Tensor:
    """Plain float64 reverse KL, mean over every completion token (EOS included) of the batch."""
    total, count = torch.zeros((), dtype=torch.float64), 0
    for p, c in zip(ro.prompt_ids_B, ro.completion_ids_B, strict=True):
        ids = torch.tensor([list(p) + list(c)])
        s = student(input_ids=ids).logits[0].double().log_softmax(-1)
        with torch.no_grad():
            t = teacher(input_ids=ids).logits[0].double().log_softmax(-1)
        at = slice(len(p) - 1, len(p) - 1 + len(c))  # the positions that predict the completion
        total = total + (s[at].exp() * (s[at] - t[at])).sum()
        count += len(c)
    return total / count


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=Path("outputs/compare/evidence-ratio"))
    p.add_argument("--batches", type=int, default=3)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    data = json.loads((a.run / "report.json").read_text())
    t_dir, s_dir = data["meta"]["models"]["teacher"], data["meta"]["models"]["student"]
    tok, teacher = load_tokenizer(t_dir), load_model(t_dir, trainable=False)
    student = load_model(s_dir, trainable=True)
    if data["warm_up"]:  # else the student folder is itself the warm start (a ``paths`` run)
        load_saved_weights(student, data["warm_up"][0]["branches"][-1]["path"])
    student.eval()  # no dropout in these models; eval for identical forwards
    scorer = LocalTeacher(teacher, tok, tok, mode="same")
    obj = make_objective("reverse_kl")
    prompts = list(long_arithmetic_task(digits=3).train_prompts)
    backend = make_backend("hf", model=student, tokenizer=tok, max_batch_size=256)
    for b in range(a.batches):
        sampling = SamplingParams(max_new_tokens=38, temperature=1.0, seed=b)
        ro = rollout(backend, prompts[32 * b : 32 * (b + 1)], tok, sampling)
        student.zero_grad()
        out = loss(obj, student, ro, scorer.score(ro))
        (out.loss_sum / out.num_tokens).backward()
        engine = {n: q.grad.clone() for n, q in student.named_parameters()}
        student.zero_grad()
        ref = reference(student, teacher, ro)
        ref.backward()
        value = float(out.loss_sum.detach()) / out.num_tokens
        grad = max(float((engine[n] - q.grad).abs().max()) for n, q in student.named_parameters())
        scale = max(float(q.grad.abs().max()) for q in student.parameters())
        print(
            f"batch {b}: engine {value:.8f}, reference {float(ref.detach()):.8f} "
            f"(|diff| {abs(value - float(ref.detach())):.1e}); tokens {out.num_tokens}; "
            f"max |grad diff| {grad:.1e} (max |grad| {scale:.1e})"
        )


if __name__ == "__main__":
    main()
