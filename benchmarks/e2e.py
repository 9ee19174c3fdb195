"""End-to-end training throughput and peak memory: this engine vs TRL, side by side.

Same tokenizer: the engine's on-policy reverse KL (``hf`` rollout backend) vs TRL's
``DistillationTrainer`` (beta = 1: reverse KL, on-policy). Cross tokenizer: the engine's ``gold``
objective vs TRL's ``GOLDTrainer`` (ULD + hybrid loss, lambda = 1: on-policy). Same student,
teacher, prompts, batch, completion length, optimizer (AdamW, same lr), float32, no gradient
checkpointing. Each side runs in its own process (peak RSS = that process's ``ru_maxrss``), one
warm-up step then ``--steps`` timed optimizer steps; throughput = student completion tokens
(sampled and trained) per second of optimizer step, rollout included; medians over steps.

    python benchmarks/e2e.py                       # arithmetic task models (tiny Llamas, CPU)
    python benchmarks/e2e.py --steps 5 --batch 16 --out benchmarks/RESULTS-e2e.md
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

# run as a script, this folder is sys.path[0] and its alignment.py would shadow the package
_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if p not in ("", _HERE)]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
SIDES = ("engine_same", "trl_distillation", "engine_cross", "trl_gold")


def _models(args) -> tuple[str, str, str]:
    """(same-tokenizer teacher, student, cross-tokenizer teacher) folders; the cross student is
    ``student`` for the real pair, the BPE student for the arithmetic models."""
    if args.pair == "real":  # SmolLM2-135M-Instruct distilled from itself / from Gemma-3-270M
        from onpolicy.offline import gemma3_dir, smollm2_dir

        return str(smollm2_dir()), str(smollm2_dir()), str(gemma3_dir())
    from onpolicy.tasks.arith_models import arithmetic_models

    m = arithmetic_models(log=lambda s: print(s, file=sys.stderr))
    return str(m.teacher_dir), str(m.student_dir), str(m.teacher_dir)


def _cross_student(args) -> str:
    if args.pair == "real":
        return _models(args)[1]
    from onpolicy.tasks.arith_models import arithmetic_models

    return str(arithmetic_models(log=lambda s: print(s, file=sys.stderr)).cross_student_dir)


def _prompts(args, n: int):
    if args.pair == "real":
        from onpolicy.tasks import make_task

        task = make_task("chat_pair")
        pool = list(task.train_prompts + task.eval_prompts)
        return [pool[i % len(pool)] for i in range(n)]
    from onpolicy.tasks.arithmetic import make_prompts

    return make_prompts(n, 3, seed=123)


def _prompt_row(p, completion: str | None = None) -> dict:
    if p.messages is not None:
        row = {"prompt": list(p.messages)}
        if completion is not None:
            row["completion"] = [{"role": "assistant", "content": completion}]
        return row
    return {"prompt": p.text, **({"completion": completion} if completion is not None else {})}


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_engine(args, cross: bool) -> dict:
    """The engine's explicit loop: rollout -> score -> loss -> step."""
    import torch

    from onpolicy.api import loss, make_objective, rollout, score, step
    from onpolicy.models import load_model, load_tokenizer
    from onpolicy.rollout.base import make_backend
    from onpolicy.teacher.local import LocalTeacher
    from onpolicy.types import SamplingParams

    teacher_dir, student_dir, cross_teacher = _models(args)
    sdir = _cross_student(args) if cross else student_dir
    tdir = cross_teacher if cross else teacher_dir
    student, stok = load_model(sdir), load_tokenizer(sdir)
    teacher, ttok = load_model(tdir, trainable=False), load_tokenizer(tdir)
    objective = make_objective("gold" if cross else "reverse_kl")
    backend = make_backend("hf", model=student, tokenizer=stok)
    scorer = LocalTeacher(teacher, ttok, stok, mode="cross" if cross else "same")
    opt = torch.optim.AdamW(student.parameters(), lr=args.lr, weight_decay=0.0)
    sampling = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=1.0)
    prompts = _prompts(args, args.batch * (args.steps + 1))
    times, tokens = [], []
    for i in range(args.steps + 1):
        batch = prompts[i * args.batch : (i + 1) * args.batch]
        t0 = time.perf_counter()
        with torch.no_grad():
            ro = rollout(backend, batch, stok, sampling)
        sc = score(scorer, ro)
        out = loss(objective, student, ro, sc)
        step(opt, out, model=student, max_grad_norm=1.0)
        backend.sync_weights(student, i + 1)
        if i:  # step 0 is the warm-up
            times.append(time.perf_counter() - t0)
            tokens.append(sum(len(c) for c in ro.completion_ids_B))
    return _result(times, tokens)


def _result(times: list[float], tokens: list[float]) -> dict:
    return {
        "step_s": statistics.median(times),
        "tokens_per_step": statistics.median(tokens),
        "tokens_per_s": statistics.median(t / s for t, s in zip(tokens, times, strict=True)),
        "peak_mb": _peak_mb(),
    }


class _Timer:
    """A TrainerCallback timing each optimizer step as the gap between consecutive step ends (so
    generation done while fetching the batch, before ``on_step_begin``, is counted)."""

    def __init__(self) -> None:
        from transformers import TrainerCallback

        timer = self

        class CB(TrainerCallback):
            def on_train_begin(self, a, state, control, **kw):
                timer.last = time.perf_counter()

            def on_step_end(self, a, state, control, **kw):
                now = time.perf_counter()
                timer.times.append(now - timer.last)
                timer.last = now

        self.times: list[float] = []
        self.last = 0.0
        self.callback = CB()


def _trl_common(args) -> dict:
    return {
        "output_dir": "/tmp/onpolicy-e2e-trl",
        "max_steps": args.steps + 1,
        "per_device_train_batch_size": args.batch,
        "learning_rate": args.lr,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "weight_decay": 0.0,
        "max_grad_norm": 1.0,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": [],
        "use_cpu": True,
        "bf16": False,
        "fp16": False,
        "gradient_checkpointing": False,
        "temperature": 1.0,
        "max_completion_length": args.max_new_tokens,
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
        "seed": 0,
    }


def _trl_lengths(trainer, key_options: tuple[str, ...]) -> list[float]:
    out = []
    for h in trainer.state.log_history:
        for key in key_options:
            if key in h:
                out.append(h[key])
                break
    return out


def run_trl_distillation(args) -> dict:
    from datasets import Dataset
    from trl import DistillationConfig, DistillationTrainer

    from onpolicy.models import load_model, load_tokenizer

    teacher_dir, student_dir, _ = _models(args)
    student, stok = load_model(student_dir), load_tokenizer(student_dir)
    teacher = load_model(teacher_dir, trainable=False)
    prompts = _prompts(args, args.batch * (args.steps + 1))
    data = Dataset.from_list([_prompt_row(p) for p in prompts])
    timer = _Timer()
    cfg = DistillationConfig(**_trl_common(args), beta=1.0, shuffle_dataset=False)
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=cfg,
        train_dataset=data,
        processing_class=stok,
        callbacks=[timer.callback],
    )
    trainer.train()
    lengths = _trl_lengths(trainer, ("completions/mean_length",))
    tokens = [args.batch * n for n in lengths][1 : args.steps + 1]
    return _result(timer.times[1:], tokens or [float("nan")] * args.steps)


def run_trl_gold(args) -> dict:
    from datasets import Dataset
    from trl.experimental.gold import GOLDConfig, GOLDTrainer

    from onpolicy.models import load_model, load_tokenizer

    _, _, teacher_dir = _models(args)
    cross_dir = _cross_student(args)
    student, stok = load_model(cross_dir), load_tokenizer(cross_dir)
    teacher = load_model(teacher_dir, trainable=False)
    prompts = _prompts(args, args.batch * (args.steps + 1))
    data = Dataset.from_list([_prompt_row(p, p.reference or "") for p in prompts])
    timer = _Timer()
    cfg = GOLDConfig(
        **_trl_common(args),
        lmbda=1.0,
        beta=1.0,
        use_uld_loss=True,
        uld_use_hybrid_loss=True,
        teacher_tokenizer_name_or_path=teacher_dir,
        uld_crossentropy_weight=0.0,
        uld_distillation_weight=1.0,
    )
    trainer = GOLDTrainer(
        model=student,
        teacher_model=teacher,
        args=cfg,
        train_dataset=data,
        processing_class=stok,
        callbacks=[timer.callback],
    )
    trainer.train()
    lengths = _trl_lengths(trainer, ("completions/mean_length", "completion_length"))
    if lengths:
        tokens = [args.batch * n for n in lengths][1 : args.steps + 1]
    else:  # GOLD logs no completion length: use the engine's measured length (same student)
        tokens = [args.batch * args.assumed_length] * args.steps
    return _result(timer.times[1:], tokens)


def run_side(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fn = {
        "engine_same": lambda: run_engine(args, cross=False),
        "engine_cross": lambda: run_engine(args, cross=True),
        "trl_distillation": lambda: run_trl_distillation(args),
        "trl_gold": lambda: run_trl_gold(args),
    }[args.side]
    return fn()


def _spawn(args, side: str, extra: list[str] = ()) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--side",
        side,
        "--pair",
        args.pair,
        "--steps",
        str(args.steps),
        "--batch",
        str(args.batch),
        "--max-new-tokens",
        str(args.max_new_tokens),
        "--lr",
        str(args.lr),
        "--threads",
        str(args.threads),
        *extra,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": err[:200]}
    return json.loads(lines[-1])


def _fmt(res: dict, key: str, spec: str) -> str:
    return "failed" if "error" in res else format(res[key], spec)


def table(results: dict[str, dict], args) -> str:
    rows = [
        ("same tokenizer", "engine_same", "trl_distillation", "1.5x"),
        ("cross tokenizer", "engine_cross", "trl_gold", "5x"),
    ]
    out = [
        f"Models: {args.pair}. Student tokens/s per optimizer step (rollout included) and "
        f"peak RSS; batch {args.batch}, max completion {args.max_new_tokens} tokens, "
        f"{args.steps} timed steps "
        f"(medians) after 1 warm-up, {args.threads} torch thread(s), CPU.",
        "",
        "| case | engine tok/s | TRL tok/s | speed ratio | target | engine step s | "
        "TRL step s | engine peak MB | TRL peak MB | memory ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, ours, theirs, target in rows:
        a, b = results.get(ours, {"error": "not run"}), results.get(theirs, {"error": "not run"})
        speed = mem = "–"
        if "error" not in a and "error" not in b:
            speed = f"{a['tokens_per_s'] / b['tokens_per_s']:.2f}x"
            mem = f"{a['peak_mb'] / b['peak_mb']:.2f}x"
        out.append(
            f"| {name} | {_fmt(a, 'tokens_per_s', ',.0f')} | {_fmt(b, 'tokens_per_s', ',.0f')} | "
            f"{speed} | {target} | {_fmt(a, 'step_s', '.2f')} | {_fmt(b, 'step_s', '.2f')} | "
            f"{_fmt(a, 'peak_mb', ',.0f')} | {_fmt(b, 'peak_mb', ',.0f')} | {mem} |"
        )
    errors = [f"- {k}: {v['error']}" for k, v in results.items() if "error" in v]
    return "\n".join(out + (["", "Failed sides:", *errors] if errors else []))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--side", choices=SIDES)
    p.add_argument("--only", nargs="*", choices=SIDES, default=list(SIDES))
    p.add_argument(
        "--pair",
        choices=("arithmetic", "real"),
        default="arithmetic",
        help="arithmetic: the task's tiny Llamas; real: SmolLM2-135M-Instruct student, "
        "itself (same tokenizer) / Gemma-3-270M (cross) as teacher",
    )
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--assumed-length", type=float, default=35.0)
    p.add_argument("--timeout", type=int, default=1200)
    p.add_argument("--out", default=None, help="also write the table (Markdown) to this file")
    args = p.parse_args(argv)
    if args.side:
        print(json.dumps(run_side(args)))
        return 0
    _models(args)  # build/cache once, before the timed processes
    results = {}
    for side in args.only:
        extra = []
        if side == "trl_gold" and "error" not in results.get("engine_cross", {"error": 1}):
            e = results["engine_cross"]
            extra = ["--assumed-length", str(e["tokens_per_step"] / args.batch)]
        results[side] = _spawn(args, side, extra)
        print(f"{side}: {results[side]}", file=sys.stderr)
    text = table(results, args)
    print(text)
    if args.out:
        cmd = "python benchmarks/e2e.py " + " ".join(argv if argv is not None else sys.argv[1:])
        Path(args.out).write_text(f"# End-to-end benchmark\n\nCommand: `{cmd}`\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
