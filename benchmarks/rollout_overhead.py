"""Per decode step host overhead of the engine's ``hf`` rollout vs plain ``model.generate``.

At a small model and batch a GPU decode step is launch-bound: its time is set by how many aten
ops (each one a kernel launch, views aside) and device->host syncs run per generated token, and the
Python around them. The ops a step dispatches outside the model, and the syncs, are the same on any
device, so a CPU run counts them exactly: a ``TorchDispatchMode`` counts every aten op, those
inside the model's forward separately, and the syncs (``_local_scalar_dense``: ``.item()``,
``bool(t)``, ``int(t)``; ``nonzero``, ``masked_select``, ``unique``, boolean indexing, ``equal``;
and the host reads ``.tolist()`` / ``.cpu()`` / ``.numpy()``, counted as Python calls because on a
CPU tensor they dispatch nothing).

Sides (same model, left-padded prompts, seed and length):
- ``engine``: ``HFRolloutBackend.generate`` as ``benchmarks/e2e.py`` calls it (temperature 1,
  top_p 1, top_k off; ``min_new_tokens = max_new_tokens`` in the ``equal`` setting).
- ``plain``: ``model.generate`` with the ``GenerationConfig`` TRL's ``DistillationTrainer`` builds
  (same sampling and stop ids; ``min_new_tokens`` as ``e2e.py --equal-lengths`` forces it in the
  ``equal`` setting), then TRL's completion mask and ``.tolist()``.
- ``plain+recorder``: ``plain`` + the engine's logprob recorder: what recording the rollout
  logprobs costs.

Settings: ``equal`` (lengths forced to the maximum, the e2e benchmark's) and ``free`` (no
minimum: TRL's own). Per decode step = (count at B tokens - count at A) / (B - A)
(``--count-tokens``): one more token for the whole batch, without the per-call work. Wall time:
the same difference between ``--short`` and ``--long`` per round, median over ``--rounds`` (sides
alternate within a round), without the dispatch mode. On the CPU use a tiny model, where the
model's compute is small next to the host overhead; on a GPU (``ONPOLICY_BENCH_DEVICE=cuda``) the
real shape, where the wall time is the launch-bound one.

    python benchmarks/rollout_overhead.py --out benchmarks/RESULTS-rollout-overhead.md
    ONPOLICY_BENCH_DEVICE=cuda python benchmarks/rollout_overhead.py --model smollm2-shape \\
        --layers 0 --settings equal --short 16 --long 80 --rounds 3 --threads 0
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import time
from pathlib import Path

if __name__ == "__main__":  # as a script: the repository root first, not this folder
    _HERE = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if p not in ("", _HERE)]
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks import device as bench

SYNC_OPS = {"aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select", "aten::equal",
            "aten::_unique2", "aten::unique_dim", "aten::unique_consecutive",
            "aten::repeat_interleave"}  # fmt: skip
HOST_READS = ("tolist", "cpu", "numpy")


class OpCounter(TorchDispatchMode):
    """Counts aten ops by name (``ops``), ops inside ``model``'s forward (``in_forward``), ops that
    launch work (not views: ``launches``) and syncs by name (``syncs``, host reads included)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.ops: collections.Counter[str] = collections.Counter()
        self.syncs: collections.Counter[str] = collections.Counter()
        self.in_forward = 0
        self.launches = 0
        self._depth = 0
        self._model = model
        self._hooks: list = []
        self._saved: dict[str, object] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.name()
        self.ops[name] += 1
        self.launches += not func.is_view
        self.in_forward += self._depth > 0
        bool_index = name == "aten::index.Tensor" and any(
            t is not None and t.dtype == torch.bool for t in args[1]
        )
        if name in SYNC_OPS or bool_index:
            self.syncs[name] += 1
        return func(*args, **(kwargs or {}))

    def __enter__(self):
        def enter(*_):
            self._depth += 1

        def leave(*_):
            self._depth -= 1

        self._hooks = [self._model.register_forward_pre_hook(enter),
                       self._model.register_forward_hook(leave)]  # fmt: skip
        for attr in HOST_READS:  # a CPU tensor's host read dispatches nothing: count the call
            self._saved[attr] = original = getattr(torch.Tensor, attr)
            setattr(torch.Tensor, attr, self._counted(attr, original))
        return super().__enter__()

    def __exit__(self, *exc):
        for attr, original in self._saved.items():
            setattr(torch.Tensor, attr, original)
        for h in self._hooks:
            h.remove()
        return super().__exit__(*exc)

    def _counted(self, attr: str, original):
        def wrapper(t, *a, **kw):
            self.syncs[f"Tensor.{attr}"] += 1
            return original(t, *a, **kw)

        return wrapper

    def totals(self) -> dict[str, float]:
        return {"ops": sum(self.ops.values()), "launches": self.launches,
                "in_forward": self.in_forward, "syncs": sum(self.syncs.values())}  # fmt: skip


def build(name: str, layers: int):
    """(model in eval mode on the bench device, tokenizer, stop ids, 8+ rendered prompts)."""
    from onpolicy.chat import render_prompts, stop_token_ids
    from onpolicy.models import load_model, load_tokenizer
    from onpolicy.tasks import make_task

    if name == "tiny":
        from onpolicy.tiny import tiny_model_dir

        path = tiny_model_dir("tiny", "bpe", seed=0)
        model, tok = load_model(path, device=bench.device()), load_tokenizer(path)
    else:  # SmolLM2-135M's shape, random weights, built in memory (``layers`` decoder layers)
        from transformers import GenerationConfig, LlamaForCausalLM

        from benchmarks.smollm2_shape import CONFIG, TOKENIZER_DIR, llama_config

        config = llama_config()
        config.num_hidden_layers = layers or config.num_hidden_layers
        torch.manual_seed(0)
        model = LlamaForCausalLM(config).float().to(bench.device())
        model.generation_config = GenerationConfig(
            bos_token_id=CONFIG["bos_token_id"], eos_token_id=CONFIG["eos_token_id"],
            pad_token_id=CONFIG["pad_token_id"],
        )  # fmt: skip
        tok = load_tokenizer(TOKENIZER_DIR)
    model.eval()
    task = make_task("chat_pair")
    prompts = list(task.train_prompts + task.eval_prompts)
    return model, tok, stop_token_ids(tok, model), render_prompts(tok, prompts)


def run_engine(model, tok, stops, rows, tokens: int, seed: int, forced: bool) -> list[list[int]]:
    """The engine's ``HFRolloutBackend.generate``, as ``benchmarks/e2e.py`` calls it."""
    from onpolicy.rollout.hf import HFRolloutBackend
    from onpolicy.types import SamplingParams

    backend = HFRolloutBackend(model, tok, stop_ids=stops)
    s = SamplingParams(max_new_tokens=tokens, min_new_tokens=tokens if forced else 0,
                       temperature=1.0, seed=seed)  # fmt: skip
    return backend.generate(rows, s).completion_ids_B


def run_plain(model, tok, stops, rows, tokens: int, seed: int, forced: bool, processors=None):
    """What TRL's ``DistillationTrainer`` runs per micro-batch (``_generate_on_policy``): its
    ``GenerationConfig`` (+ ``min_new_tokens`` as ``benchmarks/e2e.py`` forces it), ``generate``,
    the completion mask and ``.tolist()``. ``processors``: extra logits processors."""
    from transformers import GenerationConfig

    config = GenerationConfig(
        max_new_tokens=tokens, do_sample=True, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id, eos_token_id=list(stops), temperature=1.0, top_p=1.0,
        top_k=0, min_p=None, repetition_penalty=1.0, cache_implementation=None,
        min_new_tokens=tokens if forced else None, disable_compile=True,
    )  # fmt: skip
    device = next(model.parameters()).device
    P = max(len(r) for r in rows)
    ids = torch.tensor([[tok.pad_token_id] * (P - len(r)) + r for r in rows], device=device)
    mask = torch.tensor([[0] * (P - len(r)) + [1] * len(r) for r in rows], device=device)
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config,
                             logits_processor=processors)  # fmt: skip
    completion = out[:, P:]
    is_eos = torch.isin(completion, torch.tensor(list(stops), device=device))
    eos_idx = torch.full((is_eos.size(0),), is_eos.size(1), dtype=torch.long, device=device)
    eos_idx[is_eos.any(dim=1)] = is_eos.int().argmax(dim=1)[is_eos.any(dim=1)]
    keep = torch.arange(is_eos.size(1), device=device).expand(is_eos.size(0), -1)
    keep = keep <= eos_idx.unsqueeze(1)
    return [c[m].tolist() for c, m in zip(completion.cpu(), keep.cpu(), strict=True)]


def run_plain_recorded(model, tok, stops, rows, tokens: int, seed: int, forced: bool):
    """``run_plain`` + the engine's logprob recorder as a logits processor: the difference to
    ``run_plain`` is what recording the rollout logprobs costs."""
    from onpolicy.rollout.hf import _LogprobRecorder

    return run_plain(model, tok, stops, rows, tokens, seed, forced, [_LogprobRecorder()])


SIDES = {"engine": run_engine, "plain": run_plain, "plain+recorder": run_plain_recorded}


def count(side: str, setup, tokens: int, seed: int, forced: bool) -> OpCounter:
    """The ops and syncs of one call of ``side``."""
    with OpCounter(setup[0]) as counter:
        SIDES[side](*setup, tokens, seed, forced)
    return counter


def per_step(side: str, setup, short: int, long: int, forced: bool) -> dict:
    """Counts per decode step (marginal between ``short`` and ``long`` tokens) of ``side``:
    ``totals`` (see ``OpCounter.totals``) and ``names`` (per op / sync name)."""
    lo, hi = count(side, setup, short, 0, forced), count(side, setup, long, 0, forced)
    steps = long - short
    totals = {k: (v - lo.totals()[k]) / steps for k, v in hi.totals().items()}
    names = {n: (hi.ops[n] - lo.ops[n]) / steps for n in hi.ops}
    names.update({f"sync {n}": (hi.syncs[n] - lo.syncs[n]) / steps for n in hi.syncs})
    return {"totals": totals, "names": names, "per_call": hi.totals()}


def wall_ms(setup, short: int, long: int, rounds: int, forced: bool) -> dict:
    """Per side, per round (sides alternate within a round): ``step`` / ``cpu_step`` = wall / this
    process's CPU ms per decode step (marginal between ``short`` and ``long`` tokens);
    ``cpu_call`` = CPU ms of a 1-token call (the per-call work: padding, prefill, decoding).
    CPU time moves less than wall time when other jobs share the cores (1 thread: no spinning)."""
    times: dict = {(s, t): [] for s in SIDES for t in (1, short, long)}
    for r in range(rounds):
        for side in SIDES:
            for t in (1, short, long):
                bench.sync()
                t0, c0 = time.perf_counter(), time.process_time()
                SIDES[side](*setup, t, r, forced)
                bench.sync()
                times[side, t].append(
                    ((time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3)
                )
    out = {}
    for side in SIDES:
        pairs = list(zip(times[side, short], times[side, long], strict=True))
        step = [(b[0] - a[0]) / (long - short) for a, b in pairs]
        cpu = [(b[1] - a[1]) / (long - short) for a, b in pairs]
        call = [c for _, c in times[side, 1]]
        out[side] = {"step": step, "cpu_step": cpu, "cpu_call": call}
    return out


_MULTINOMIAL = torch.multinomial


def inverse_cdf(probs: torch.Tensor, num_samples: int, *args, **kwargs) -> torch.Tensor:
    """``[B, 1]`` draws from ``probs`` ``[B, V]`` by inverse CDF (float64 cumsum + searchsorted,
    one uniform per row): ``torch.multinomial``'s distribution for one sample, another random
    stream. ``sampler_whatif`` puts it in place of ``torch.multinomial`` (a what-if for a custom
    sampler; no engine code samples this way)."""
    if num_samples != 1 or probs.dim() != 2:
        return _MULTINOMIAL(probs, num_samples, *args, **kwargs)
    cdf = probs.double().cumsum(-1)
    u = torch.rand(probs.shape[0], 1, dtype=torch.float64, device=probs.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).clamp_(max=probs.shape[1] - 1)


def sampler_whatif(setup, short: int, long: int, rounds: int) -> dict[str, list[float]]:
    """CPU ms per decode step of ``plain`` (equal lengths) sampling with ``torch.multinomial`` and
    with ``inverse_cdf`` in its place, alternating within each round (one process)."""
    out: dict[str, list[float]] = {"multinomial": [], "inverse CDF": []}
    try:
        for r in range(rounds):
            for name in out:
                torch.multinomial = _MULTINOMIAL if name == "multinomial" else inverse_cdf
                cpu = []
                for t in (short, long):
                    bench.sync()
                    c0 = time.process_time()
                    run_plain(*setup, t, r, True)
                    bench.sync()
                    cpu.append(time.process_time() - c0)
                out[name].append((cpu[1] - cpu[0]) * 1e3 / (long - short))
    finally:
        torch.multinomial = _MULTINOMIAL
    return out


def sampling_ms(batch: int, vocab: int, reps: int = 30) -> dict[str, float]:
    """Median ms of one draw per row from ``[batch, vocab]`` probabilities: ``torch.multinomial``
    (what ``generate`` samples with, on both sides; for one sample it draws an exponential per
    vocabulary entry) vs an inverse-CDF draw (float64 cumsum + searchsorted: one uniform per row;
    the same distribution from another random stream). Not a side: a lever both sides leave."""
    probs = torch.softmax(torch.randn(batch, vocab, device=bench.device()), -1)
    out = {}
    for name, draw in (("multinomial", lambda: _MULTINOMIAL(probs, 1)),
                       ("inverse CDF", lambda: inverse_cdf(probs, 1))):  # fmt: skip
        times = []
        for _ in range(reps):
            bench.sync()
            t0 = time.perf_counter()
            draw()
            bench.sync()
            times.append((time.perf_counter() - t0) * 1e3)
        out[name] = statistics.median(times)
    return out


def measure(args, setup, forced: bool) -> dict:
    for side in SIDES:
        SIDES[side](*setup, args.count_tokens[0], 0, forced)  # warm-up (lazy imports, caches)
    a, b = args.count_tokens
    counts = {side: per_step(side, setup, a, b, forced) for side in SIDES}
    return {"counts": counts, "ms": wall_ms(setup, args.short, args.long, args.rounds, forced)}


LABELS = {"ops": "aten ops dispatched", "launches": "ops that launch work (not views)",
          "in_forward": "ops in the model's forward", "syncs": "device->host syncs"}  # fmt: skip


def table(res: dict) -> list[str]:
    """One setting's rows: per decode step counts and wall ms per side, ratios to ``plain``."""
    sides = list(SIDES)
    lines = ["| per decode step | " + " | ".join(sides) + " | engine / plain |",
             "|---|" + "---:|" * (len(sides) + 1)]  # fmt: skip
    c = {s: dict(res["counts"][s]["totals"]) for s in sides}
    for s in sides:
        c[s]["outside"] = c[s]["ops"] - c[s]["in_forward"]
    for key, label in {**LABELS, "outside": "ops outside the forward"}.items():
        e, p = c["engine"][key], c["plain"][key]
        ratio = f"{e / p:.3f}x" if p else ("=" if not e else "inf")
        lines.append(f"| {label} | " + " | ".join(f"{c[s][key]:.2f}" for s in sides)
                     + f" | {ratio} |")  # fmt: skip
    timed = (("step", "wall ms"), ("cpu_step", "CPU ms"),
             ("cpu_call", "CPU ms of a 1-token call (per-call work)"))  # fmt: skip
    for key, label in timed if res["ms"]["engine"]["step"] else ():  # --rounds 0: counts only
        ms = {s: res["ms"][s][key] for s in sides}
        med = {s: statistics.median(ms[s]) for s in sides}
        cells = [f"{med[s]:.3f} ({min(ms[s]):.3f}..{max(ms[s]):.3f})" for s in sides]
        lines.append(f"| {label}, median (range) | " + " | ".join(cells)
                     + f" | {med['engine'] / med['plain']:.3f}x |")  # fmt: skip
    lines += ["", "Per call (B tokens): " + "; ".join(
        f"{s} {int(res['counts'][s]['per_call']['ops'])} ops, "
        f"{int(res['counts'][s]['per_call']['syncs'])} syncs" for s in sides
    ) + ".", "", "Ops and syncs whose count per decode step differs between the sides:", "",
        "| op | " + " | ".join(sides) + " |", "|---|" + "---:|" * len(sides)]  # fmt: skip
    names = {s: res["counts"][s]["names"] for s in sides}
    for n in sorted(set().union(*names.values())):
        vals = [names[s].get(n, 0.0) for s in sides]
        if max(vals) - min(vals) > 1e-9:
            lines.append(f"| {n} | " + " | ".join(f"{v:.2f}" for v in vals) + " |")
    return lines


def report(args, results: dict, seconds: float, loads: tuple[str, str], sampling: dict,
           whatif: dict) -> str:  # fmt: skip
    lines = [
        f"Command: `python benchmarks/rollout_overhead.py {' '.join(sys.argv[1:])}` "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {seconds:.0f} s; load average "
        f"{loads[0]} at the start, {loads[1]} at the end)",
        "",
        f"Model {args.model}"
        + (f" ({args.layers or 30} layers)" if args.model != "tiny" else "")
        + f", batch {args.batch}, {bench.label()}, torch {torch.__version__}, torch threads "
        f"{torch.get_num_threads()}. Per decode step (one token for every row) = the marginal "
        f"cost between {args.count_tokens[0]} and {args.count_tokens[1]} generated tokens (op "
        f"counts), {args.short} and {args.long} (wall time, {args.rounds} rounds).",
    ]
    titles = {True: "Equal lengths (min_new_tokens = max_new_tokens, as benchmarks/e2e.py "
                    "--equal-lengths runs both sides)",
              False: "Free lengths (no min_new_tokens: TRL's own setting)"}  # fmt: skip
    for forced, res in results.items():
        lines += ["", f"### {titles[forced]}", "", *table(res)]
    if sampling:
        lines += ["", f"Sampling one token per row from [{args.batch}, {sampling['vocab']}] "
                  "probabilities (median of 30): `torch.multinomial` (inside `generate`, both "
                  f"sides) {sampling['multinomial']:.3f} ms, an inverse-CDF draw "
                  f"{sampling['inverse CDF']:.3f} ms."]  # fmt: skip
    if whatif:
        med = {k: statistics.median(v) for k, v in whatif.items()}
        lines += ["", "What-if, plain `generate` at equal lengths, CPU ms per decode step over "
                  f"{args.rounds} rounds (alternating): `torch.multinomial` "
                  + ", ".join(f"{v:.1f}" for v in whatif["multinomial"])
                  + f" (median {med['multinomial']:.1f}); inverse CDF in its place "
                  + ", ".join(f"{v:.1f}" for v in whatif["inverse CDF"])
                  + f" (median {med['inverse CDF']:.1f}): "
                  f"{med['multinomial'] / med['inverse CDF']:.3f}x."]  # fmt: skip
    return "\n".join(lines) + "\n"


def _load() -> str:
    """The 1/5/15-minute load averages, as ``uptime`` prints them."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=("tiny", "smollm2-shape"), default="tiny")
    ap.add_argument("--layers", type=int, default=2, help="smollm2-shape: decoder layers (0: 30)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--short", type=int, default=16)
    ap.add_argument("--long", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--count-tokens", type=int, nargs=2, default=(8, 24), metavar=("A", "B"),
                    help="op counts: the marginal between A and B generated tokens")  # fmt: skip
    ap.add_argument("--settings", nargs="+", choices=("equal", "free"), default=("equal", "free"))
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    ap.add_argument("--sampler-whatif", action="store_true",
                    help="also time plain generate with an inverse-CDF draw in place of "
                    "torch.multinomial, alternating with the real one (equal lengths)")  # fmt: skip
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    start, load0 = time.perf_counter(), _load()
    model, tok, stops, pool = build(args.model, args.layers)
    setup = (model, tok, stops, [pool[i % len(pool)] for i in range(args.batch)])
    results = {s == "equal": measure(args, setup, s == "equal") for s in args.settings}
    vocab = model.get_output_embeddings().weight.shape[0]
    sampling = {"vocab": vocab, **sampling_ms(args.batch, vocab)} if args.rounds else {}
    whatif = (
        sampler_whatif(setup, args.short, args.long, args.rounds) if args.sampler_whatif else {}
    )
    text = report(args, results, time.perf_counter() - start, (load0, _load()), sampling, whatif)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
