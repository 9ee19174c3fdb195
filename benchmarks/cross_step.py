"""One cross-tokenizer training step of the engine, phase by phase: CPU time and peak RSS.

The e2e benchmark's cross setting (SmolLM2-135M student, the 151k-vocabulary Qwen2 teacher of
``benchmarks/e2e_models.py``, batch 8, completions of 128 tokens): one ``hf`` rollout (cached in
``--rollout-cache`` so repeated runs train on the same tokens), then score -> loss -> backward ->
AdamW step, each phase's CPU time and the process's peak RSS after it, at ``--threads`` torch
threads (default 1; ``default``: torch's own count). ``--profile`` prints a cProfile of the
score + loss + backward phases.

    python benchmarks/cross_step.py --objective gold
    python benchmarks/cross_step.py --objective gold reference_kl=0 matched=token --profile
    python benchmarks/cross_step.py --objective next_byte --student-layers 2
"""

from __future__ import annotations

import argparse
import os
import pickle
import resource
import sys
import time
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if p not in ("", _HERE)]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _rollout(args, student, stok):
    from benchmarks.e2e_models import prompts
    from onpolicy.api import rollout as do_rollout
    from onpolicy.rollout.base import make_backend
    from onpolicy.types import SamplingParams

    path = Path(args.rollout_cache)
    if path.exists():
        return pickle.loads(path.read_bytes())
    import torch

    n = args.max_new_tokens
    sampling = SamplingParams(max_new_tokens=n, min_new_tokens=n, temperature=1.0)
    backend = make_backend("hf", model=student, tokenizer=stok)
    with torch.no_grad():
        ro = do_rollout(backend, prompts("smollm2", args.batch), stok, sampling)
    path.write_bytes(pickle.dumps(ro))
    return ro


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--objective", nargs="+", default=["gold"], help="name [key=value ...]")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--rollout-cache", default="/tmp/onpolicy-cross-step-rollout.pkl")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--steps", type=int, default=1)
    p.add_argument(
        "--student-layers", type=int, default=0,
        help="keep only this many student layers (the regime where the backbone is cheap)",
    )  # fmt: skip
    p.add_argument("--threads", default="1", help="torch threads: a number or 'default'")
    args = p.parse_args(argv)
    import torch

    if args.threads != "default":
        torch.set_num_threads(int(args.threads))
    print(f"torch threads {torch.get_num_threads()} (--threads {args.threads})")
    torch.manual_seed(0)
    from benchmarks.e2e_models import model_pair
    from benchmarks.e2e_sides import _value, cut_layers
    from onpolicy.api import loss, make_objective, score
    from onpolicy.models import load_model, load_tokenizer
    from onpolicy.teacher.local import LocalTeacher

    pair = model_pair("smollm2")
    student, stok = load_model(pair.cross_student), load_tokenizer(pair.cross_student)
    cut_layers(student, args.student_layers)
    teacher, ttok = (
        load_model(pair.cross_teacher, trainable=False),
        load_tokenizer(pair.cross_teacher),
    )
    name, *opts = args.objective
    objective = make_objective(name, **{k: _value(v) for k, v in (o.split("=", 1) for o in opts)})
    scorer = LocalTeacher(teacher, ttok, stok, mode="cross")
    ro = _rollout(args, student, stok)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-5, weight_decay=0.0, fused=True)
    print(f"loaded + rollout: peak {peak_mb():,.0f} MB", flush=True)
    prof = None
    for step in range(args.steps):
        if args.profile and step == args.steps - 1:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
        times = {}
        c = time.process_time()
        sc = score(scorer, ro)
        times["score"] = (time.process_time() - c, peak_mb())
        c = time.process_time()
        out = loss(objective, student, ro, sc)
        times["loss"] = (time.process_time() - c, peak_mb())
        del sc  # as benchmarks/e2e.py's loop: the scores are not held through backward
        c = time.process_time()
        (out.loss_sum / max(out.num_tokens, 1)).backward()
        times["backward"] = (time.process_time() - c, peak_mb())
        if prof is not None:
            prof.disable()
        c = time.process_time()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times["optimizer"] = (time.process_time() - c, peak_mb())
        del out
        total = sum(t for t, _ in times.values())
        row = "  ".join(f"{k} {t:.2f}s/{m:,.0f}MB" for k, (t, m) in times.items())
        print(f"step {step}: {row}  total {total:.2f} CPU s", flush=True)
    if prof is not None:
        import pstats

        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        pstats.Stats(prof).sort_stats("cumulative").print_stats(45)
    return 0


if __name__ == "__main__":
    sys.exit(main())
