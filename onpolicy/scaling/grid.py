"""A small grid of distillation runs on tiny models, producing a runs table for the fit.

Each student is a fresh ``LlamaForCausalLM`` (the teachers' tokenizer, ``layers`` layers, hidden
size from ``student_hidden``), trained with plain AdamW on the dataset's gold completions, either
by word-level KD from a teacher (``supervised_kd``: forward KL) or without a teacher (``sft``: the
supervised loss each run's ``supervised_loss`` needs). A student is evaluated at every step count
in ``steps`` along one run (constant learning rate, so a checkpoint at step k is the k-step run).

A row per (teacher, student size, step count): ``student_params`` (non-embedding parameters, as in
Kaplan et al. and Busbridge et al.), ``tokens`` (completion tokens trained on), ``teacher_loss``
and ``student_loss`` (mean NLL per completion token on held-out rows), ``supervised_loss``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from onpolicy.errors import ConfigError, check_known_keys


@dataclass(frozen=True)
class GridConfig:
    """A grid: teachers (model folders or ``tiny:`` specs) x student hidden sizes x step counts.

    ``data``: JSONL rows with ``messages`` and a gold ``completion``; the last ``eval_rows`` are
    held out for the losses.
    """

    teachers: list[str]
    student_hidden: list[int]
    steps: list[int]
    data: str
    layers: int = 2
    heads: int = 2
    batch_size: int = 16
    lr: float = 3e-3
    eval_rows: int = 24
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.teachers or not self.student_hidden or not self.steps:
            raise ConfigError("a grid needs teachers, student_hidden and steps (non-empty lists)")
        if sorted(self.steps) != list(self.steps) or self.steps[0] < 1:
            raise ConfigError(f"steps {self.steps} must be increasing positive step counts")
        bad = [h for h in self.student_hidden if h % self.heads]
        if bad:
            raise ConfigError(f"student_hidden {bad} must be multiples of heads={self.heads}")


def load_grid(path: str | Path) -> GridConfig:
    """A ``GridConfig`` from YAML (``data`` relative to the YAML's folder when not found)."""
    import yaml

    from onpolicy.config_checks import resolve_path

    p = Path(path)
    raw = yaml.safe_load(p.read_text()) or {}
    check_known_keys("grid", raw, set(GridConfig.__dataclass_fields__) - {"extra"}, where=str(p))
    raw["data"] = str(resolve_path(str(raw.get("data", "")), p.parent))
    return GridConfig(**raw)


def _student(tokenizer: Any, hidden: int, cfg: GridConfig) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=1,
        max_position_embeddings=256, tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(cfg.seed)
    return LlamaForCausalLM(config)


def non_embedding_params(model: torch.nn.Module) -> int:
    """Parameters outside the input and output embeddings."""
    skip = {id(model.get_input_embeddings().weight), id(model.get_output_embeddings().weight)}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def gold_rollout(rows: list[dict[str, Any]], tokenizer: Any):
    """A ``Rollout`` of the rows' prompts and gold completions (each ending its turn)."""
    from onpolicy.api import completion_rollout
    from onpolicy.types import Prompt

    prompts = [Prompt(messages=tuple(r["messages"])) for r in rows]
    return completion_rollout(prompts, [r["completion"] for r in rows], tokenizer)


def mean_nll(model: torch.nn.Module, rollout: Any) -> float:
    """Mean NLL per completion token (the ``sft`` objective's summed NLL / its token count)."""
    from onpolicy.api import make_objective

    with torch.no_grad():
        out = make_objective("sft").loss(model, rollout, None)
    return float(out.loss_sum) / out.num_tokens


def train_student(
    student, teacher, train_rows, eval_ro, tokenizer, cfg: GridConfig
) -> list[tuple[int, int, float]]:
    """Train ``student`` (KD from ``teacher``, a ``LocalTeacher``, or plain CE when None) for
    ``cfg.steps[-1]`` steps; ``(step, tokens so far, held-out NLL/token)`` at each grid step."""
    from onpolicy.api import make_objective

    objective = make_objective("sft" if teacher is None else "supervised_kd")
    optim = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=0.0)
    rng, tokens, out = random.Random(cfg.seed), 0, []
    for step in range(1, cfg.steps[-1] + 1):
        ro = gold_rollout(rng.sample(train_rows, min(cfg.batch_size, len(train_rows))), tokenizer)
        scores = None if teacher is None else teacher.score(ro)
        loss = objective.loss(student, ro, scores)
        (loss.loss_sum / max(loss.num_tokens, 1)).backward()  # mean over this batch's tokens
        optim.step()
        optim.zero_grad(set_to_none=True)
        tokens += loss.num_tokens
        if step in cfg.steps:
            out.append((step, tokens, mean_nll(student, eval_ro)))
    return out


def run_grid(cfg: GridConfig, log=print) -> list[dict[str, Any]]:
    """Every run of the grid as a row (see the module docstring)."""
    from onpolicy.data import read_rows
    from onpolicy.models import load_model, load_tokenizer, resolve_model_path
    from onpolicy.teacher.local import LocalTeacher

    rows = [row for _, row in read_rows(cfg.data)]  # checked rows, in file order
    if len(rows) <= cfg.eval_rows + cfg.batch_size:
        raise ConfigError(f"{cfg.data} has {len(rows)} rows; need more than eval_rows + batch_size")
    train_rows, eval_rows = rows[: -cfg.eval_rows], rows[-cfg.eval_rows :]
    paths = [resolve_model_path(t) for t in cfg.teachers]
    tokenizer = load_tokenizer(paths[0])
    eval_ro = gold_rollout(eval_rows, tokenizer)
    supervised = {}
    for hidden in cfg.student_hidden:
        student = _student(tokenizer, hidden, cfg)
        for step, _, loss in train_student(student, None, train_rows, eval_ro, tokenizer, cfg):
            supervised[(hidden, step)] = loss
    out = []
    for spec, path in zip(cfg.teachers, paths, strict=True):
        model = load_model(path, trainable=False)
        teacher_loss = mean_nll(model, eval_ro)
        teacher = LocalTeacher(model, load_tokenizer(path), tokenizer, mode="same")
        for hidden in cfg.student_hidden:
            student = _student(tokenizer, hidden, cfg)
            n = non_embedding_params(student)
            for step, tokens, loss in train_student(
                student, teacher, train_rows, eval_ro, tokenizer, cfg
            ):
                out.append({
                    "name": f"{spec}|h{hidden}|s{step}", "student_params": n, "tokens": tokens,
                    "teacher_loss": teacher_loss, "student_loss": loss,
                    "supervised_loss": supervised[(hidden, step)],
                })  # fmt: skip
                log(f"{out[-1]['name']}: L_T {teacher_loss:.4f} L_S {loss:.4f}")
    return out
