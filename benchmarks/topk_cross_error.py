"""Error of the cross-tokenizer objectives fed a top-k teacher, against the full-vocabulary teacher.

Real pair: SmolLM2-135M-Instruct student (49,152 tokens) and Gemma-3-270M teacher (262,144
tokens), both shipped offline (``onpolicy.offline``). The student samples its own completions
(temperature 1, seeded) to a few chat prompts; the Gemma-3 teacher scores them across tokenizers
(``LocalTeacher(mode="cross")``, full logits). The top-k teacher is what a vLLM server returns
(``prompt_logprobs=k``: the top-k log-probabilities and the actual token's), rebuilt to the full
vocabulary by ``onpolicy.teacher.topk_dense.dense_from_topk`` (``uniform`` or ``renorm`` tail).

Per objective (``reference_kl: 0``, so only the teacher term is compared) and k, it prints the
loss's relative error ``|L_k - L| / |L|`` and the gradient's relative L2 error and cosine with
respect to the student's logits (the one tensor every objective differentiates).

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/topk_cross_error.py \
        [--ks 16,64,256] [--tails uniform,renorm] [--tokens 48] [--prompts 4]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "benchmarks"]
sys.path.insert(0, str(REPO))

OBJECTIVES = (
    ("next_byte", {"reference_kl": 0.0}),
    ("gold", {"reference_kl": 0.0}),
    ("gold", {"matched": "token", "reference_kl": 0.0}),
    ("uld", {"reference_kl": 0.0}),
)
QUESTIONS = (
    "Tell me a short story about a lighthouse.",
    "What is the capital of France, and why is it famous?",
    "Explain photosynthesis in two sentences.",
    "Write a haiku about autumn rain.",
    "How do I boil an egg?",
    "List three uses of copper.",
)


class LogitGrad:
    """Keeps the gradient of the student's LM-head output (its logits) on the next backward."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.outputs: list[torch.Tensor] = []
        model.get_output_embeddings().register_forward_hook(self._keep)

    def _keep(self, module, args, output) -> None:
        output.retain_grad()
        self.outputs.append(output)

    def take(self) -> torch.Tensor:
        grads = [o.grad.flatten() for o in self.outputs if o.grad is not None]
        self.outputs.clear()
        return torch.cat(grads).double()


def loss_and_grad(objective, student, rollout, scores, hook: LogitGrad):
    hook.outputs.clear()
    student.zero_grad(set_to_none=True)
    out = objective.loss(student, rollout, scores)
    out.loss_sum.backward()
    return float(out.loss_sum.detach()), hook.take()


def topk_scores(scores, k: int, tail: str):
    """The cross scores a top-k server would give, rebuilt to the full vocabulary."""
    from onpolicy.forward import spare_row_empty
    from onpolicy.teacher.topk_dense import dense_from_topk

    cross = scores.cross
    logp = torch.log_softmax(cross.logits_Nt_V.float(), dim=-1)
    top_lp, top_ids = logp.topk(k, dim=-1)
    targets = torch.tensor([t for c in cross.completion_ids_B for t in c], dtype=torch.long)
    token_lp = logp.gather(1, targets[:, None])[:, 0]
    dense = dense_from_topk(top_ids, top_lp, cross.vocab_size, targets, token_lp, tail=tail)
    room = spare_row_empty(*dense.shape, like=dense).copy_(dense)
    return dataclasses.replace(scores, cross=dataclasses.replace(cross, logits_Nt_V=room))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ks", default="16,64,256")
    p.add_argument("--tails", default="uniform,renorm")
    p.add_argument("--tokens", type=int, default=48)
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    from onpolicy.api import make_objective
    from onpolicy.chat import render_prompts
    from onpolicy.models import load_model, load_tokenizer
    from onpolicy.offline import gemma3_dir, smollm2_dir
    from onpolicy.quiet import quiet_libraries
    from onpolicy.rollout.base import make_backend
    from onpolicy.teacher.local import LocalTeacher
    from onpolicy.types import Prompt, SamplingParams

    quiet_libraries()
    torch.manual_seed(a.seed)
    stok, ttok = load_tokenizer(smollm2_dir()), load_tokenizer(gemma3_dir())
    student, teacher = load_model(smollm2_dir()), load_model(gemma3_dir(), trainable=False)
    prompts = [Prompt(messages=({"role": "user", "content": q},)) for q in QUESTIONS[: a.prompts]]
    sampling = SamplingParams(max_new_tokens=a.tokens, temperature=1.0, seed=a.seed)
    rollout = make_backend("hf", model=student, tokenizer=stok).generate(
        render_prompts(stok, prompts), sampling, prompts
    )
    full = LocalTeacher(teacher, ttok, stok, mode="cross").score(rollout)
    n_s = sum(len(c) for c in rollout.completion_ids_B)
    n_t = sum(full.cross.num_tokens_B)
    print(f"SmolLM2 student -> Gemma-3 teacher: {len(rollout)} completions, {n_s} student tokens, "
          f"{n_t} teacher tokens, seed {a.seed}")  # fmt: skip
    hook = LogitGrad(student)
    print("| objective | tail | k | loss rel. err | grad rel. L2 err | grad cosine |")
    print("|---|---|---|---|---|---|")
    for name, params in OBJECTIVES:
        objective = make_objective(name, **params)
        ref_loss, ref_grad = loss_and_grad(objective, student, rollout, full, hook)
        label = name + ("" if "matched" not in params else f" ({params['matched']})")
        for tail in a.tails.split(","):
            for k in (int(x) for x in a.ks.split(",")):
                start = time.perf_counter()
                loss, grad = loss_and_grad(
                    objective, student, rollout, topk_scores(full, k, tail), hook
                )
                rel = abs(loss - ref_loss) / max(abs(ref_loss), 1e-12)
                g_err = float((grad - ref_grad).norm() / ref_grad.norm().clamp(min=1e-30))
                cos = float(torch.nn.functional.cosine_similarity(grad, ref_grad, dim=0))
                print(f"| {label} | {tail} | {k} | {rel:.2e} | {g_err:.2e} | {cos:.4f} |"
                      f"  <!-- {time.perf_counter() - start:.0f}s -->", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
