"""Where the engine's same-tokenizer step goes (``benchmarks/e2e.py``'s ``engine_same:hf`` side),
and the step against its floor.

The step is run as ``benchmarks/e2e_sides.py:run_engine`` runs it (same models, objective,
teacher, optimizer, sampling, like-for-like settings: torch's default threads, freed memory kept),
with each phase timed by this process's CPU time and wall clock: rollout (``hf`` generate), teacher
scoring, student forward + loss, backward, clip + AdamW. After each step (not part of it) the
floor is measured on the same tokens: the student's plain forward + backward (its LM head at the
completion positions, loss = the logits' sum: no divergence, no optimizer) and the teacher's plain
forward. ``floor = rollout + student fwd+bwd + teacher fwd`` (issue 18); ``step / floor`` says
how much work the engine does beyond the models' own. With ``--ops N`` one more step runs under
``torch.profiler`` and the N ops with the most self CPU time are listed, with their share.

``--cross``: the same for ``e2e.py``'s ``engine_cross:hf`` side (``gold`` with ``--gold``'s
options, by default TRL GOLD's terms as in the like-for-like row); "teacher" is then the whole
cross scoring (the teacher's own rendering and tokenization, byte alignment, its forward), the
teacher's floor its plain forward on its own tokens, and the backward divides the summed gradient
by the step's aligned-span count, as ``e2e_sides._train_step_cross`` does.

Shares and ratios are what a loaded machine can measure; absolute seconds need a quiet one.

    python benchmarks/e2e_profile.py --pair arithmetic --batch 16 --max-new-tokens 40 --steps 3
    python benchmarks/e2e_profile.py --pair smollm2 --batch 4 --max-new-tokens 32 --steps 2 --ops 12
    python benchmarks/e2e_profile.py --pair smollm2 --batch 8 --max-new-tokens 128 --steps 3 --cross
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if p not in ("", str(Path(__file__).resolve().parent))]
sys.path.insert(0, str(ROOT))
from benchmarks.e2e_models import PAIRS  # noqa: E402

PHASES = ("rollout", "teacher", "student fwd + loss", "backward", "clip + AdamW")
FLOOR = ("floor: student fwd+bwd", "floor: teacher fwd")


class Phases:
    """Per-phase process CPU seconds and wall seconds, one list entry per step."""

    def __init__(self) -> None:
        self.cpu: dict[str, list[float]] = defaultdict(list)
        self.wall: dict[str, list[float]] = defaultdict(list)
        self.step: dict[str, list[float]] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        import torch

        c0, w0 = time.process_time(), time.perf_counter()
        with torch.profiler.record_function(name):
            yield
        self._now[name] = self._now.get(name, (0.0, 0.0))
        c, w = self._now[name]
        self._now[name] = (c + time.process_time() - c0, w + time.perf_counter() - w0)

    def begin(self) -> None:
        self._now: dict[str, tuple[float, float]] = {}

    def end(self) -> None:
        for name, (c, w) in self._now.items():
            self.cpu[name].append(c)
            self.wall[name].append(w)


def _floor(e, parts: list, teacher_batches: list, phase: Phases) -> None:
    """The models' own work on the step's tokens: student forward + backward of its LM head at
    the completion positions (loss: the logits' sum), teacher forward (no grad) on
    ``teacher_batches`` (its own tokens across tokenizers; ``None``: the student's)."""
    import torch

    from onpolicy.forward import forward_completions
    from onpolicy.objectives.common import PAD_ID

    Vs = e.student.get_output_embeddings().weight.shape[0]
    for part, t_batch in zip(parts, teacher_batches, strict=True):
        batch = part.to_padded(PAD_ID)
        with phase("floor: student fwd+bwd"):
            fwd = forward_completions(e.student, batch, Vs)
            fwd.logits_N_V.float().sum().backward()
        with phase("floor: teacher fwd"), torch.no_grad():
            forward_completions(
                e.teacher, batch if t_batch is None else t_batch, e.scorer.vocab_size
            )
    e.opt.zero_grad(set_to_none=True)


def run_step(e, args, batch, phase: Phases, floor: bool) -> None:
    """One engine step, phase by phase (``e2e_sides.run_engine``'s step: same tokenizer, or
    ``_train_step_cross``'s normalization with ``args.cross``)."""
    import torch

    from benchmarks.e2e_sides import _clip_and_step, _split, divide_grads
    from onpolicy.api import loss, score
    from onpolicy.api import rollout as do_rollout
    from onpolicy.types import PaddedBatch

    with phase("rollout"), torch.no_grad():
        ro = do_rollout(e.backend, batch, e.stok, e.sampling)
    parts = [ro] if args.micro_batches == 1 else _split(ro, args.micro_batches)
    total, spans, teacher_batches = sum(len(c) for c in ro.completion_ids_B), 0, []
    for part in parts:
        with phase("teacher"):
            sc = score(e.scorer, part)
        with phase("student fwd + loss"):
            out = loss(e.objective, e.student, part, sc)
        with phase("backward"):
            if args.cross:  # unnormalized; the summed gradient is divided below
                out.loss_sum.backward()
            else:
                (out.loss_sum / max(total, 1)).backward()
        spans += out.num_tokens
        if args.cross and floor:
            c, pad = sc.cross, e.scorer.tokenizer.pad_token_id
            teacher_batches.append(PaddedBatch.from_ragged(c.prompt_ids_B, c.completion_ids_B, pad))
        else:
            teacher_batches.append(None)
        del sc, out
    with phase("clip + AdamW"):
        if args.cross:
            divide_grads(e.student, spans)
        _clip_and_step(e.opt, e.student)
    e.backend.sync_weights(e.student, 1)
    if floor:
        _floor(e, parts, teacher_batches, phase)


def _med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def report(phase: Phases) -> str:
    cpu = {k: _med(v) for k, v in phase.cpu.items()}
    wall = {k: _med(v) for k, v in phase.wall.items()}
    step_cpu = sum(cpu.get(k, 0.0) for k in PHASES)
    step_wall = sum(wall.get(k, 0.0) for k in PHASES)
    out = [
        "| phase | CPU s/step | share of step CPU | wall s/step |",
        "|---|---:|---:|---:|",
    ]
    for k in (*PHASES, *FLOOR):
        share = f"{cpu.get(k, 0) / step_cpu:.1%}" if k in PHASES else ""
        out.append(f"| {k} | {cpu.get(k, 0):.3f} | {share} | {wall.get(k, 0):.3f} |")
    out.append(f"| **step** | {step_cpu:.3f} | 100% | {step_wall:.3f} |")
    train = step_cpu - cpu.get("rollout", 0.0)
    floor_train = sum(cpu.get(k, 0.0) for k in FLOOR)
    floor = floor_train + cpu.get("rollout", 0.0)
    out += [
        "",
        f"- step / floor (floor = rollout + student fwd+bwd + teacher fwd), by CPU time: "
        f"**{step_cpu / floor:.2f}x** ({step_cpu:.3f} / {floor:.3f} s)",
        f"- training part (step - rollout) / (student fwd+bwd + teacher fwd): "
        f"**{train / floor_train:.2f}x** ({train:.3f} / {floor_train:.3f} s)",
        f"- rollout share of the step: {cpu.get('rollout', 0) / step_cpu:.1%}",
    ]
    return "\n".join(out)


def op_table(prof, top: int) -> str:
    events = [e for e in prof.key_averages() if not e.key.startswith(PHASES + FLOOR)]
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    out = ["| op (torch.profiler, one step) | self CPU share | calls |", "|---|---:|---:|"]
    for e in events[:top]:
        out.append(f"| `{e.key}` | {e.self_cpu_time_total / total:.1%} | {e.count} |")
    return "\n".join(out)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pair", choices=PAIRS, default="arithmetic")
    p.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--micro-batches", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="0: torch's default thread count")
    p.add_argument("--ops", type=int, default=0, help="list the N ops with the most CPU time")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--cross", action="store_true", help="the engine_cross:hf side (gold)")
    p.add_argument(
        "--gold", nargs="*", default=["reference_kl=0", "matched=token"],
        help="with --cross: the gold objective's options (default: TRL GOLD's terms)",
    )  # fmt: skip
    args = p.parse_args(argv)
    args.min_new_tokens = args.max_new_tokens  # equal lengths, as the e2e like-for-like runs
    args.chunked, args.student_layers = True, 0
    return args


def main(argv: list[str] | None = None) -> int:
    import torch

    from alignment.cpu import retain_freed_memory
    from benchmarks.e2e_sides import build_engine

    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    retain_freed_memory()
    e = build_engine(args, cross=args.cross, rollout="hf")
    phase = Phases()
    for i in range(args.steps + 1):
        phase.begin()
        run_step(e, args, e.data[i * args.batch : (i + 1) * args.batch], phase, floor=True)
        if i:  # step 0 is the warm-up
            phase.end()
    side = "cross tokenizer, gold " + " ".join(args.gold) if args.cross else "same tokenizer"
    print(
        f"Pair {args.pair} ({side}), "
        f"batch {args.batch}, {args.max_new_tokens} tokens (equal lengths), "
        f"{args.micro_batches} micro-batch(es), {torch.get_num_threads()} torch thread(s), "
        f"{args.steps} timed steps (medians).\n"
    )
    print(report(phase))
    if args.ops:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            phase.begin()
            run_step(e, args, e.data[: args.batch], phase, floor=False)
        print()
        print(op_table(prof, args.ops))
    return 0


if __name__ == "__main__":
    sys.exit(main())
