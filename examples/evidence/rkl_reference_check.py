"""Rule out a bug before believing a result against on-policy: the engine's ``reverse_kl`` loss and
gradient on the 6-digit models, against a plain-PyTorch reference on the same inputs.

    python examples/evidence/rkl_reference_check.py --student DIR_OR_WEIGHTS --teacher DIR \
        [--rows 16 --offset 0]

The student samples 16 completions (temperature 1, up to 67 tokens) of training prompts with the
engine's rollout; the engine's loss (``onpolicy.api.loss``, token-normalized as ``api.step`` does)
and its gradient are compared with: one forward pass of each model over ``prompt + completion``,
the logits at positions ``p - 1 .. p + c - 2`` (those that predict the completion's tokens,
EOS included), ``KL(s || t) = sum_v s_v (log s_v - log t_v)`` per position in float64, mean over
all completion tokens. Prints the loss of both, the largest relative gradient difference, and the
reference KL by completion position (first / last tokens: no off-by-one at either end).
"""

from __future__ import annotations

import argparse

import torch

from onpolicy.api import loss, make_objective, rollout
from onpolicy.models import load_model, load_saved_weights, load_tokenizer
from onpolicy.rollout.base import make_backend
from onpolicy.tasks.long_arithmetic import long_arithmetic_task
from onpolicy.teacher.local import LocalTeacher
from onpolicy.types import SamplingParams


def reference(student, teacher, ro) -> tuple[torch.Tensor, list[float]]:
    """Mean reverse KL over the completion tokens (float64) and its per-position means."""
    total, count, by_pos = 0.0, 0, {}
    for p_ids, c_ids in zip(ro.prompt_ids_B, ro.completion_ids_B, strict=True):
        ids = torch.tensor([list(p_ids) + list(c_ids)])
        p, c = len(p_ids), len(c_ids)
        s = student(input_ids=ids).logits[0, p - 1 : p + c - 1].double()
        with torch.no_grad():
            t = teacher(input_ids=ids).logits[0, p - 1 : p + c - 1].double()
        log_s, log_t = torch.log_softmax(s, -1), torch.log_softmax(t, -1)
        kl_C = (log_s.exp() * (log_s - log_t)).sum(-1)
        total = total + kl_C.sum()
        count += c
        for j, v in enumerate(kl_C.detach().tolist()):
            by_pos.setdefault(j, []).append(v)
    return total / count, [sum(v) / len(v) for _, v in sorted(by_pos.items())]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--student", required=True, help="model folder (or base folder + --weights)")
    ap.add_argument("--weights", default=None, help="a warm-up branch folder to load")
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--offset", type=int, default=0, help="first training prompt of the batch")
    args = ap.parse_args()
    torch.manual_seed(0)
    student = load_model(args.student, trainable=True)
    if args.weights:
        load_saved_weights(student, args.weights)
    tok = load_tokenizer(args.student)
    teacher = load_model(args.teacher, trainable=False)
    task = long_arithmetic_task(digits=6, variants=4, num_train=8000)
    prompts = list(task.train_prompts[args.offset : args.offset + args.rows])
    backend = make_backend("hf", model=student, tokenizer=tok, max_batch_size=64)
    ro = rollout(backend, prompts, tok, SamplingParams(max_new_tokens=67, temperature=1.0, seed=0))
    scores = LocalTeacher(teacher, load_tokenizer(args.teacher), tok).score(ro)
    student.train(False)
    out = loss(make_objective("reverse_kl"), student, ro, scores)
    engine = out.loss_sum / out.num_tokens
    engine.backward()
    g_engine = [p.grad.clone() for p in student.parameters()]
    student.zero_grad(set_to_none=True)
    ref, by_pos = reference(student, teacher, ro)
    ref.backward()
    worst = max(
        float((p.grad.double() - g).abs().max() / (g.abs().max() + 1e-12))
        for p, g in zip(student.parameters(), g_engine, strict=True)
    )
    lens = [len(c) for c in ro.completion_ids_B]
    print(f"rows {len(lens)}, completion tokens {sum(lens)} (lengths {min(lens)}-{max(lens)})")
    e, r = float(engine.detach()), float(ref.detach())
    print(f"engine tokens {int(out.num_tokens)}; loss engine {e:.8f} reference {r:.8f}")
    print(f"largest relative gradient difference (per tensor, max-normalized): {worst:.2e}")
    print("reference KL by position, first 5:", [round(x, 4) for x in by_pos[:5]])
    print("reference KL by position, last 5:", [round(x, 4) for x in by_pos[-5:]])


if __name__ == "__main__":
    main()
