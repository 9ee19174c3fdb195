"""Config factory for trainer tests: tiny in-process models, the repo's tiny chat data.

(A module of its own, not conftest.py: several test folders have a conftest.py, so
``from conftest import`` would depend on import order.)
"""

from __future__ import annotations

from pathlib import Path

from onpolicy.config import Config, apply_overrides, from_dict

REPO = Path(__file__).resolve().parents[3]
DATA = REPO / "configs" / "data" / "tiny_chat.jsonl"
TEACHER = "tiny:small,seed=1,pretrain_steps=300"
PRETRAINED_STUDENT = "tiny:tiny,seed=2,pretrain_steps=100"


def base_raw(output_dir: Path) -> dict:
    return {
        "student": {"path": "tiny:tiny", "max_length": 96},
        "teacher": {"path": TEACHER, "mode": "same"},
        "rollout": {"max_new_tokens": 12, "temperature": 1.0},
        "objective": {"name": "reverse_kl"},
        "data": {"path": str(DATA), "eval_size": 8},
        "optim": {"lr": 3e-3, "grad_clip": 1.0},
        "train": {"steps": 4, "micro_batch_size": 4, "output_dir": str(output_dir), "seed": 0},
        "eval": {"num_prompts": 8},
        "logging": {"progress_bar": False},
    }


def make_config(output_dir: Path, *overrides: str) -> Config:
    """The base config with ``key.sub=value`` overrides."""
    return from_dict(apply_overrides(base_raw(output_dir), list(overrides)))


# the two tiny cross-tokenizer pairs of the FLOPs-plan tests (hidden projection, teacher charge)
CROSS_BPE = "'tiny:small,seed=1,pretrain_steps=300'"
CROSS_CHAR = "'tiny:small,tokenizer=char,seed=2,pretrain_steps=300'"
CROSS_PAIRS = {  # (student model, teacher model, student tokenizer, teacher tokenizer)
    "bpe student, char teacher": (CROSS_BPE, CROSS_CHAR, "bpe", "char"),
    "char student, bpe teacher": (CROSS_CHAR, CROSS_BPE, "char", "bpe"),
}
CROSS_ANSWER = "Spell 日本: 日-本, 4 plus 9 is 13."


def tiny_tok(kind: str):
    """The tiny ``bpe`` or ``char`` tokenizer."""
    from onpolicy.models import load_tokenizer
    from onpolicy.tiny import tiny_tokenizer_dir

    return load_tokenizer(tiny_tokenizer_dir(kind))


def cross_hidden_sft_config(
    output_dir: Path, pair: str, data: Path, steps: int, rows: int
) -> Config:
    """SFT on ``data`` with a linear-projection hidden term, student and teacher from
    ``CROSS_PAIRS[pair]``: the run both FLOPs-plan tests record."""
    student, teacher, _, _ = CROSS_PAIRS[pair]
    return make_config(
        output_dir, f"student.path={student}", f"teacher.path={teacher}", "teacher.mode=auto",
        "objective.name=sft", "objective.params.source=dataset", f"data.path={data}",
        "data.eval_size=2", "hidden.weight=0.5", "hidden.projection=linear",
        f"train.steps={steps}", f"train.micro_batch_size={rows}", "eval.num_prompts=0",
    )  # fmt: skip
