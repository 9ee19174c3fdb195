"""The engine's on-policy reverse KL against a plain-PyTorch float64 reference, on real batches:
the ratio experiment's (the large teacher, the warm student at its plateau), or any compare
config's warm-up branch (e.g. the real SmolLM2 pair of ``configs/compare/real_pair_cut.yaml``).

    python examples/evidence/rkl_check.py --run outputs/compare/evidence-ratio --batches 3
    python examples/evidence/rkl_check.py --config configs/compare/real_pair_cut.yaml \\
        --batches 1 --float64

Per batch: the student's own temperature-1 samples of training prompts; the engine's loss
(``ReverseKL`` through ``LocalTeacher``: sum over completion tokens / their count) and its
gradient, against ``mean over completion tokens of sum_v s_v (log s_v - log t_v)`` computed from
one plain unpadded forward of each model per row on ``prompt + completion``, its gradient by
autograd. The reference takes the float32 logits to float64; ``--float64`` runs it on float64
copies of both models instead (every operation in float64). Prints the largest differences; run
when an on-policy result goes against on-policy.
"""

from __future__ import annotations

import argparse
import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from onpolicy.api import loss, make_objective, rollout
from onpolicy.models import load_model, load_saved_weights, load_tokenizer
from onpolicy.rollout.base import make_backend
from onpolicy.teacher.local import LocalTeacher
from onpolicy.types import SamplingParams


def reference(student, teacher, ro, dtype=torch.float64) -> torch.Tensor:
    """Plain reverse KL in ``dtype`` (float64), mean over every completion token (EOS included)
    of the batch."""
    total, count = torch.zeros((), dtype=dtype), 0
    for p, c in zip(ro.prompt_ids_B, ro.completion_ids_B, strict=True):
        ids = torch.tensor([list(p) + list(c)])
        s = student(input_ids=ids).logits[0].to(dtype).log_softmax(-1)
        with torch.no_grad():
            t = teacher(input_ids=ids).logits[0].to(dtype).log_softmax(-1)
        at = slice(len(p) - 1, len(p) - 1 + len(c))  # the positions that predict the completion
        total = total + (s[at].exp() * (s[at] - t[at])).sum()
        count += len(c)
    return total / count


@dataclass
class Setting:
    """What a check runs on: the model folders, the warm weights, prompts and sampling."""

    teacher: str
    student: str
    init_from: str
    prompts: list[Any]
    max_new_tokens: int
    batch_size: int


def from_run(run: Path, batch_size: int | None) -> Setting:
    """The ratio experiment's finished run: its report names the models and the warm branch."""
    from onpolicy.tasks.long_arithmetic import long_arithmetic_task

    data = json.loads((run / "report.json").read_text())
    models = data["meta"]["models"]
    prompts = list(long_arithmetic_task(digits=3).train_prompts)
    # no warm-up stage (a ``paths`` run): the student folder is itself the warm start
    init = data["warm_up"][0]["branches"][-1]["path"] if data["warm_up"] else models["student"]
    return Setting(models["teacher"], models["student"], init, prompts, 38, batch_size or 32)


def from_config(path: str, batch_size: int | None, seed: int) -> Setting:
    """A compare config whose warm-up of ``seed`` has run (read from its cache; trains nothing)."""
    from onpolicy.compare.config import load_config
    from onpolicy.compare.model_dirs import resolve_models
    from onpolicy.compare.training import split_prompts
    from onpolicy.compare.warm import cache_folder
    from onpolicy.tasks.base import make_task

    cfg = load_config(path)
    dirs = resolve_models(cfg, log=lambda _: None)
    split = split_prompts(cfg, make_task(**cfg.task))
    record = cache_folder(cfg, dirs, seed, split.train) / "warm.json"
    if not record.is_file():
        raise SystemExit(f"no warm-up of seed {seed} at {record}; run the comparison first")
    init = json.loads(record.read_text())["branches"][-1]["path"]
    batch = batch_size or cfg.train.batch_size
    return Setting(dirs.teacher, dirs.student, init, list(split.train), cfg.train.max_new_tokens,
                   batch)  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=Path("outputs/compare/evidence-ratio"))
    p.add_argument("--config", help="a compare config with a warm_start (instead of --run)")
    p.add_argument("--seed", type=int, default=0, help="with --config: whose warm-up")
    p.add_argument("--batches", type=int, default=3)
    p.add_argument("--batch-size", type=int, help="default: 32 (--run), train.batch_size")
    p.add_argument("--float64", action="store_true", help="reference on float64 model copies")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    s = from_config(a.config, a.batch_size, a.seed) if a.config else from_run(a.run, a.batch_size)
    tok, teacher = load_tokenizer(s.teacher), load_model(s.teacher, trainable=False)
    student = load_model(s.student, trainable=True)
    load_saved_weights(student, s.init_from)
    student.eval()  # no dropout in these models; eval for identical forwards
    scorer = LocalTeacher(teacher, tok, tok, mode="same")
    obj = make_objective("reverse_kl")
    backend = make_backend("hf", model=student, tokenizer=tok, max_batch_size=256)
    for b in range(a.batches):
        sampling = SamplingParams(max_new_tokens=s.max_new_tokens, temperature=1.0, seed=b)
        ro = rollout(backend, s.prompts[s.batch_size * b : s.batch_size * (b + 1)], tok, sampling)
        check_batch(student, teacher, scorer, obj, ro, a.float64, b)


def check_batch(student, teacher, scorer, obj, ro, float64: bool, b: int) -> None:
    """Print the engine's loss and gradient against the reference's on one rollout batch."""
    student.zero_grad()
    out = loss(obj, student, ro, scorer.score(ro))
    (out.loss_sum / out.num_tokens).backward()
    engine = {n: q.grad.clone() for n, q in student.named_parameters()}
    student.zero_grad()
    ref_student, ref_teacher = student, teacher
    if float64:
        ref_student, ref_teacher = copy.deepcopy(student).double(), copy.deepcopy(teacher).double()
    ref = reference(ref_student, ref_teacher, ro)
    ref.backward()
    ref_grads = dict(ref_student.named_parameters())
    value, ref = float(out.loss_sum.detach()) / out.num_tokens, ref.detach()
    with torch.no_grad():  # the same plain reference with the softmax in float32, as the engine's
        ref32 = float(reference(student, teacher, ro, torch.float32))
    grad = max(float((engine[n] - ref_grads[n].grad).abs().max()) for n in engine)
    scale = max(float(g.grad.abs().max()) for g in ref_grads.values())
    lengths = [len(c) for c in ro.completion_ids_B]
    print(
        f"batch {b}: engine {value:.8f}, reference {float(ref):.8f} "
        f"(|diff| {abs(value - float(ref)):.1e}, rel {abs(value / float(ref) - 1):.1e}); "
        f"tokens {out.num_tokens} (lengths {lengths}); max |grad diff| {grad:.1e} "
        f"(max |grad| {scale:.1e}){' [float64 models]' if float64 else ''}; the reference "
        f"with a float32 softmax: {ref32:.8f} (|diff| to the engine {abs(value - ref32):.1e})",
        flush=True,
    )


if __name__ == "__main__":
    main()
