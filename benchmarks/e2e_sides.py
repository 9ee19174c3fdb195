"""One side of ``benchmarks/e2e.py``, run in its own process: the engine's loop or a TRL trainer.

Every side times each optimizer step (rollout included) by wall clock and by this process's CPU
time (all its threads; an in-process vLLM engine included), counts the student completion tokens
it sampled and trained on, and reports its peak RSS. The first step is a warm-up and is dropped.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from typing import Any

from benchmarks import device as bench
from benchmarks.e2e_models import model_pair, prompt_row, prompts


def peak_mb() -> float:
    """This process's peak resident memory (``ru_maxrss``) in MB; on a GPU
    (``ONPOLICY_BENCH_DEVICE=cuda``) torch's peak CUDA allocation instead."""
    if bench.on_gpu():
        return bench.peak_mb()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _result(wall: list[float], cpu: list[float], tokens: list[float], **extra: Any) -> dict:
    return {"wall_s": wall, "cpu_s": cpu, "tokens": tokens, "peak_mb": peak_mb(), **extra}


@dataclass
class EngineSide:
    """The engine's pieces for one side (``build_engine``): models, scorer, objective, backend,
    optimizer, sampling settings and the prompts of every step (warm-up first)."""

    student: Any
    stok: Any
    teacher: Any
    scorer: Any
    objective: Any
    backend: Any
    opt: Any
    sampling: Any
    data: list


def build_engine(args, cross: bool, rollout: str) -> EngineSide:
    """Load and set up the engine's side as ``run_engine`` runs it.

    Same tokenizer: ``reverse_kl`` with the chunked LM-head loss (the teacher returns hidden
    states; neither model's [tokens x V] logits exist). Cross tokenizer: ``gold``.
    """
    import torch

    from onpolicy.api import make_objective
    from onpolicy.models import load_model, load_tokenizer
    from onpolicy.rollout.base import make_backend
    from onpolicy.teacher.local import LocalTeacher
    from onpolicy.types import SamplingParams

    pair = model_pair(args.pair, cross=cross)
    sdir, tdir = (pair.cross_student, pair.cross_teacher) if cross else (pair.student, pair.teacher)
    student, stok = load_model(sdir, device=bench.device()), load_tokenizer(sdir)
    if cross:
        cut_layers(student, args.student_layers)
    student = with_precision(student, getattr(args, "precision", "fp32"))
    teacher, ttok = load_model(tdir, trainable=False, device=bench.device()), load_tokenizer(tdir)
    chunked = not cross and args.chunked
    if cross:  # --gold key=value ...: the engine's gold options (default: its defaults)
        gold = {k: _value(v) for k, v in (kv.split("=", 1) for kv in args.gold)}
        objective = make_objective("gold", **gold)
    else:
        objective = make_objective("reverse_kl", chunked=chunked)
    scorer = LocalTeacher(
        teacher, ttok, stok, mode="cross" if cross else "same", hidden=chunked,
        token_logprobs=not chunked,  # the chunked divergence needs the hidden states only
    )  # fmt: skip
    if rollout == "vllm":
        backend = make_backend(
            "vllm", model=student, tokenizer=stok, dtype="float32", max_model_len=1024
        )
    else:
        backend = make_backend("hf", model=student, tokenizer=stok)
    # fused AdamW: TRL's default optimizer (adamw_torch_fused); 4-5x faster than the loop form
    opt = torch.optim.AdamW(student.parameters(), lr=args.lr, weight_decay=0.0, fused=True)
    sampling = SamplingParams(
        max_new_tokens=args.max_new_tokens, min_new_tokens=args.min_new_tokens, temperature=1.0
    )
    data = prompts(args.pair, args.batch * (args.steps + 1))
    return EngineSide(student, stok, teacher, scorer, objective, backend, opt, sampling, data)


def run_engine(args, cross: bool, rollout: str) -> dict:
    """The engine's explicit loop (``onpolicy.api``): rollout -> score -> loss -> step -> sync."""
    import torch

    from onpolicy.api import loss, score
    from onpolicy.api import rollout as do_rollout

    e = build_engine(args, cross, rollout)
    wall, cpu, tokens, rollout_s, skipped = [], [], [], [], 0
    for i in range(args.steps + 1):
        batch = e.data[i * args.batch : (i + 1) * args.batch]
        bench.sync()
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.no_grad():
            ro = do_rollout(e.backend, batch, e.stok, e.sampling)
        t1 = time.perf_counter()
        step_fn = _train_step_cross if cross else _train_step
        skipped += step_fn(
            e.opt, e.student, ro, args.micro_batches,
            lambda r: loss(e.objective, e.student, r, score(e.scorer, r)),
        )  # fmt: skip
        e.backend.sync_weights(e.student, i + 1)
        bench.sync()
        if i:  # step 0 is the warm-up
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            rollout_s.append(t1 - t0)
            tokens.append(float(sum(len(c) for c in ro.completion_ids_B)))
    return _result(wall, cpu, tokens, rollout_s=rollout_s, nonfinite_steps=skipped)


def with_precision(student, precision: str):
    """``student`` as ``onpolicy.trainer`` prepares it for ``train.mixed_precision``: bf16 wraps
    its forward in accelerate's autocast (rollouts and losses; the head of a chunked loss, applied
    outside the forward, stays float32), as TRL's ``bf16=True`` does through its accelerator."""
    if precision == "fp32":
        return student
    from accelerate import Accelerator

    from onpolicy.trainer.setup import mixed_precision

    accelerator = Accelerator(cpu=not bench.on_gpu(), mixed_precision=mixed_precision(precision))
    return accelerator.prepare_model(student)


def cut_layers(model, layers: int) -> None:
    """Keep only the first ``layers`` decoder layers of a Llama-style ``model`` (0: all), in
    place: the cross benchmark's extra regime, a student whose backbone is cheap next to the
    151k-vocabulary loss (hf rollouts only: vLLM would load the full checkpoint)."""
    if layers and layers < model.config.num_hidden_layers:
        model.model.layers = model.model.layers[:layers]
        model.config.num_hidden_layers = layers


def _value(text: str):
    """``"0"`` -> 0.0, ``"token"`` -> ``"token"`` (option values given on the command line)."""
    try:
        return float(text)
    except ValueError:
        return text


def _split(ro, parts: int) -> list:
    """``ro``'s rows in ``parts`` consecutive micro-batches (they share ``ro.prompts``)."""
    from onpolicy.types import Rollout

    B = len(ro.completion_ids_B)
    size = -(-B // parts)
    return [
        Rollout(
            ro.prompts,
            ro.prompt_index_B[a : a + size],
            ro.prompt_ids_B[a : a + size],
            ro.completion_ids_B[a : a + size],
            ro.sampling_logprobs_B[a : a + size],
            ro.finish_reason_B[a : a + size],
            ro.texts_B[a : a + size],
            ro.policy_version,
        )
        for a in range(0, B, size)
    ]


def _train_step(opt, student, ro, parts: int, loss_of) -> int:
    """The trainer's step: loss / tokens, backward (per micro-batch when ``parts > 1``: the
    activations of one micro-batch at a time, the same update), clip to 1.0, and (as
    ``onpolicy.trainer`` does) no update when the gradient is not finite. 1 for a skipped step."""

    if parts == 1:
        out = loss_of(ro)
        (out.loss_sum / max(out.num_tokens, 1)).backward()
    else:  # global normalization: every micro-batch divides by the whole step's token count
        total = sum(len(c) for c in ro.completion_ids_B)
        for part in _split(ro, parts):
            (loss_of(part).loss_sum / max(total, 1)).backward()
    return _clip_and_step(opt, student)


def _train_step_cross(opt, student, ro, parts: int, loss_of) -> int:
    """``_train_step`` for a cross-tokenizer objective, whose counted units (aligned spans) are
    known only once each part's loss is computed: every part's unnormalized ``loss_sum`` is
    backpropagated, then the summed gradient is divided by the step's total count (the same
    update as one batch, ``loss_sum / num_tokens``; with ``parts > 1`` one micro-batch's
    activations, teacher logits and loss tensors at a time)."""

    if parts == 1:
        return _train_step(opt, student, ro, 1, loss_of)
    total = 0
    for part in _split(ro, parts):
        out = loss_of(part)
        out.loss_sum.backward()
        total += out.num_tokens
    divide_grads(student, total)
    return _clip_and_step(opt, student)


def divide_grads(student, count: int) -> None:
    """Divide the summed gradient of unnormalized per-part losses by the step's ``count`` of
    trained units (at least 1): the same update as one batch's ``loss_sum / num_tokens``."""
    for p in student.parameters():
        if p.grad is not None:
            p.grad.div_(max(count, 1))


def _clip_and_step(opt, student) -> int:
    """Clip the gradient to norm 1.0 and step, or (as ``onpolicy.trainer`` does) skip the update
    when it is not finite; 1 for a skipped step."""
    import torch

    params = [p for p in student.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
    finite = bool(torch.isfinite(norm))
    if finite:
        opt.step()
    opt.zero_grad(set_to_none=True)
    return 0 if finite else 1


class _Timer:
    """A TrainerCallback timing each optimizer step as the gap between consecutive step ends (so
    generation, done while TRL prepares the batch, is counted), by wall clock and CPU time."""

    def __init__(self) -> None:
        from transformers import TrainerCallback

        timer = self

        class CB(TrainerCallback):
            def on_train_begin(self, a, state, control, **kw):
                bench.sync()
                timer.last = (time.perf_counter(), time.process_time())

            def on_step_end(self, a, state, control, **kw):
                bench.sync()  # on a GPU: the step's queued work, as the engine side times it
                now = (time.perf_counter(), time.process_time())
                timer.wall.append(now[0] - timer.last[0])
                timer.cpu.append(now[1] - timer.last[1])
                timer.last = now

        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.last = (0.0, 0.0)
        self.callback = CB()


def _trl_common(args, rollout: str) -> dict:
    micro = args.micro_batches if getattr(args, "micro_batch_sides", "both") == "both" else 1
    common = {
        "output_dir": "/tmp/onpolicy-e2e-trl",
        "max_steps": args.steps + 1,
        "per_device_train_batch_size": args.batch // micro,
        "gradient_accumulation_steps": micro,
        "learning_rate": args.lr,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "weight_decay": 0.0,
        "max_grad_norm": 1.0,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": [],
        "use_cpu": not bench.on_gpu(),
        "bf16": getattr(args, "precision", "fp32") == "bf16",
        "fp16": False,
        "gradient_checkpointing": False,
        "temperature": 1.0,
        "top_p": 1.0,  # the engine's sampling (GOLDConfig's default top_p is 0.95)
        "top_k": 0,
        "max_completion_length": args.max_new_tokens,
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
        "seed": 0,
    }
    if rollout == "vllm":  # TRL's colocated vLLM, sized as the engine's (CPU: KV cache in GiB)
        common.update(
            use_vllm=True, vllm_mode="colocate", vllm_gpu_memory_utilization=0.3,
            vllm_max_model_length=1024, vllm_enable_sleep_mode=False,
        )  # fmt: skip
    return common


def _force_min_tokens(trainer, args, rollout: str) -> None:
    """Equal completion lengths: TRL's generation with the same minimum as the engine's."""
    if not args.min_new_tokens:
        return
    if rollout == "vllm":
        gen = trainer.vllm_generation
        gen.generation_kwargs = {**gen.generation_kwargs, "min_tokens": args.min_new_tokens}
    else:
        trainer.generation_config.min_new_tokens = args.min_new_tokens
        trainer.generation_kwargs = {
            **trainer.generation_kwargs,
            "min_new_tokens": args.min_new_tokens,
        }


def run_trl_distillation(args, rollout: str) -> dict:
    """TRL's ``DistillationTrainer`` (always on-policy; beta = 1: reverse KL)."""
    from datasets import Dataset
    from trl import DistillationConfig, DistillationTrainer

    from onpolicy.models import load_model, load_tokenizer

    pair = model_pair(args.pair, cross=False)
    student, stok = load_model(pair.student), load_tokenizer(pair.student)
    teacher = load_model(pair.teacher, trainable=False)
    n = args.batch * (args.steps + 1)
    data = Dataset.from_list([prompt_row(p) for p in prompts(args.pair, n)])
    timer = _Timer()
    cfg = DistillationConfig(**_trl_common(args, rollout), beta=1.0, shuffle_dataset=False)
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=cfg, train_dataset=data,
        processing_class=stok, callbacks=[timer.callback],
    )  # fmt: skip
    _force_min_tokens(trainer, args, rollout)
    trainer.train()
    lengths = [h["completions/mean_length"] for h in trainer.state.log_history
               if "completions/mean_length" in h]  # fmt: skip
    tokens = [args.batch * n for n in lengths][1 : args.steps + 1]
    return _result(timer.wall[1:], timer.cpu[1:], tokens)


def run_trl_gold(args, rollout: str) -> dict:
    """TRL's ``GOLDTrainer`` (ULD + hybrid matched/unmatched loss; lmbda = 1: on-policy)."""
    from datasets import Dataset
    from trl.experimental.gold import GOLDConfig, GOLDTrainer

    from onpolicy.models import load_model, load_tokenizer

    pair = model_pair(args.pair)
    student, stok = load_model(pair.cross_student), load_tokenizer(pair.cross_student)
    cut_layers(student, args.student_layers)
    teacher = load_model(pair.cross_teacher, trainable=False)
    n = args.batch * (args.steps + 1)
    rows = [prompt_row(p, p.reference or "") for p in prompts(args.pair, n)]
    timer = _Timer()
    cfg = GOLDConfig(
        **_trl_common(args, rollout), lmbda=1.0, beta=1.0, use_uld_loss=True,
        uld_use_hybrid_loss=True, teacher_tokenizer_name_or_path=pair.cross_teacher,
        uld_crossentropy_weight=0.0, uld_distillation_weight=1.0,
    )  # fmt: skip
    trainer = GOLDTrainer(
        model=student, teacher_model=teacher, args=cfg, train_dataset=Dataset.from_list(rows),
        processing_class=stok, callbacks=[timer.callback],
    )  # fmt: skip
    _force_min_tokens(trainer, args, rollout)
    counted: list[float] = []
    generate = trainer.generate_on_policy_outputs

    def counting(*a, **kw):  # GOLD logs no completion length: count the trained tokens here
        out = generate(*a, **kw)
        counted.append(float((out[2] != -100).sum()))
        return out

    trainer.generate_on_policy_outputs = counting
    trainer.train()
    micro = _trl_common(args, rollout)["gradient_accumulation_steps"]
    per_step = [sum(counted[i : i + micro]) for i in range(0, len(counted), micro)]
    if len(per_step) >= args.steps + 1:  # one generate call per micro-batch
        tokens = per_step[1 : args.steps + 1]
    else:  # the vLLM path generates elsewhere: equal lengths are forced, so batch x length
        per_step = args.batch * args.min_new_tokens if args.min_new_tokens else float("nan")
        tokens = [float(per_step)] * args.steps
    return _result(timer.wall[1:], timer.cpu[1:], tokens)


def run_side(args) -> dict:
    """Run ``args.side`` (``engine_same``, ``engine_cross``, ``trl_distillation``, ``trl_gold``)
    with ``args.rollout`` (``hf`` or ``vllm``)."""
    import torch

    if args.threads:  # 0: torch's default thread count, what a user's run gets
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    retain = getattr(args, "retain_freed_memory", "engine")
    if retain == "both" or (retain == "engine" and args.side.startswith("engine")):
        from alignment.cpu import retain_freed_memory

        retain_freed_memory()  # what onpolicy.trainer.train does on CPU
    fns = {
        "engine_same": lambda: run_engine(args, cross=False, rollout=args.rollout),
        "engine_cross": lambda: run_engine(args, cross=True, rollout=args.rollout),
        "trl_distillation": lambda: run_trl_distillation(args, args.rollout),
        "trl_gold": lambda: run_trl_gold(args, args.rollout),
    }
    return fns[args.side]()
