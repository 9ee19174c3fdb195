"""Models for the arithmetic task: tokenizers, tiny Llama configs, the teacher the project trains.

- ``char_tokenizer()``: one token per character (the teacher's and the same-tokenizer student's).
- ``bpe_tokenizer()``: a BPE trained on the task's texts (the cross-tokenizer student's): it merges
  frequent pieces such as ``+0=`` so its token boundaries differ from the teacher's.
- ``arithmetic_models()``: the teacher (trained by supervised learning on gold scratchpads to a high
  exact match), the smaller student (pre-trained briefly on the same data, partially right), and the
  different-tokenizer student; all cached on disk under the project cache and rebuilt when missing.

Head dimension 32 everywhere (vLLM's CPU attention supports it).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from onpolicy.tasks.arithmetic import ALPHABET, arithmetic_task
from onpolicy.tasks.supervised import evaluate_exact_match, train_supervised

SPECIALS = ("<pad>", "<eos>")


def cache_root() -> Path:
    """The project cache: ``onpolicy.offline.cache_dir()`` (else ``.cache/onpolicy``)."""
    try:
        from onpolicy.offline import cache_dir

        return Path(cache_dir())
    except ImportError:
        return Path(os.environ.get("ONPOLICY_CACHE", ".cache/onpolicy")).resolve()


def _wrap(tok) -> PreTrainedTokenizerFast:
    """Byte-level pre-tokenizer and decoder (identity on the task's ASCII alphabet, so tokens spell
    their bytes: the alignment layer reads them as byte-level BPE)."""
    from tokenizers import decoders, pre_tokenizers

    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", padding_side="left"
    )


def char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character of ``ALPHABET`` (ids 2..), ``<pad>`` = 0, ``<eos>`` = 1: a BPE
    without merges."""
    from tokenizers import AddedToken, Tokenizer, models

    tok = Tokenizer(models.BPE({s: i for i, s in enumerate((*SPECIALS, *ALPHABET))}, []))
    tok.add_special_tokens([AddedToken(s, special=True) for s in SPECIALS])
    return _wrap(tok)


def bpe_tokenizer(texts: list[str], vocab_size: int = 48) -> PreTrainedTokenizerFast:
    """A BPE over ``ALPHABET`` trained on ``texts`` (merges may cross step boundaries)."""
    from tokenizers import Tokenizer, models, trainers

    tok = _wrap(Tokenizer(models.BPE())).backend_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIALS),
        initial_alphabet=list(ALPHABET),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return _wrap(tok)


@dataclass(frozen=True)
class ModelSpec:
    """A tiny Llama: ``hidden = heads * 32``."""

    layers: int
    heads: int
    ffn: int

    def build(self, tokenizer: PreTrainedTokenizerFast, seed: int) -> LlamaForCausalLM:
        torch.manual_seed(seed)
        cfg = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32 * self.heads,
            intermediate_size=self.ffn,
            num_hidden_layers=self.layers,
            num_attention_heads=self.heads,
            num_key_value_heads=self.heads,
            head_dim=32,
            max_position_embeddings=256,
            tie_word_embeddings=True,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.eos_token_id,
        )
        return LlamaForCausalLM(cfg)


@dataclass(frozen=True)
class ArithmeticModelsConfig:
    """What the cached models are built from (its hash names the cache folder)."""

    digits: int = 3
    num_train: int = 4000
    data_seed: int = 0
    teacher: ModelSpec = ModelSpec(layers=3, heads=2, ffn=256)
    teacher_steps: int = 800
    student: ModelSpec = ModelSpec(layers=2, heads=2, ffn=128)
    student_steps: int = 750
    cross_student_steps: int = 250
    batch_size: int = 64
    lr: float = 3e-3

    version: int = 2  # bump when the tokenizers or the training recipe change


@dataclass(frozen=True)
class ArithmeticModels:
    """Folders (``save_pretrained`` model + tokenizer) of the task's three models, and their scores.

    Attributes:
        teacher_dir: the char-level teacher.
        student_dir: the smaller char-level student (same tokenizer as the teacher).
        cross_student_dir: the student with a BPE tokenizer (cross-tokenizer methods).
        scores: held-out exact match of each, measured when they were built.
    """

    teacher_dir: Path
    student_dir: Path
    cross_student_dir: Path
    scores: dict[str, float]


def max_new_tokens(digits: int) -> int:
    """Completion budget of a ``digits``-digit problem: the gold length + EOS + slack."""
    return 9 * digits + digits + 2 + 1 + 4


MODEL_NAMES = ("teacher", "student", "cross_student")


def _model_key(cfg: ArithmeticModelsConfig, name: str) -> str:
    """Cache key of one model: only the fields it is built from (a student's recipe can change
    without retraining the teacher)."""
    fields = asdict(cfg)
    own_steps = f"{name}_steps"
    for key in ("teacher_steps", "student_steps", "cross_student_steps"):
        if key != own_steps:
            fields.pop(key)
    fields.pop("student" if name == "teacher" else "teacher")
    blob = json.dumps({"name": name, **fields}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def arithmetic_models(
    cfg: ArithmeticModelsConfig | None = None,
    root: Path | None = None,
    log=print,
    which: tuple[str, ...] = MODEL_NAMES,
) -> ArithmeticModels:
    """The cached models for ``cfg``; those in ``which`` are built and saved on first use (a few
    minutes on a CPU), the others are only named (their folder may not exist yet)."""
    cfg = cfg or ArithmeticModelsConfig()
    base = (root or cache_root()) / "arithmetic"
    dirs = {name: base / f"{name}-{_model_key(cfg, name)}" for name in MODEL_NAMES}
    scores: dict[str, float] = {}
    for name in which:
        done = dirs[name] / "build.json"
        if not done.exists():
            _build_one(cfg, name, dirs[name], log)
        scores[name] = json.loads(done.read_text())["held_out_exact_match"]
    return ArithmeticModels(dirs["teacher"], dirs["student"], dirs["cross_student"], scores)


def _build_one(cfg: ArithmeticModelsConfig, name: str, folder: Path, log) -> None:
    """Train one model by supervised learning on gold scratchpads and save it with its tokenizer."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown arithmetic model {name!r}; use one of {MODEL_NAMES}")
    task = arithmetic_task(digits=cfg.digits, num_train=cfg.num_train, seed=cfg.data_seed)
    if name == "cross_student":
        tok = bpe_tokenizer([p.text + p.reference for p in task.train_prompts])
    else:
        tok = char_tokenizer()
    spec, steps = {
        "teacher": (cfg.teacher, cfg.teacher_steps),
        "student": (cfg.student, cfg.student_steps),
        "cross_student": (cfg.student, cfg.cross_student_steps),
    }[name]
    train_and_save(cfg, task, tok, spec, steps, name, folder, log)


def train_and_save(cfg: ArithmeticModelsConfig, task, tok, spec: ModelSpec, steps: int, name: str,
                   folder: Path, log, extra: dict | None = None) -> None:  # fmt: skip
    """Build ``spec`` with ``tok``, train it ``steps`` steps on ``task``'s gold scratchpads, and
    save it with its tokenizer and a ``build.json`` (held-out score, time, loss, ``cfg``,
    ``extra``)."""
    start = time.perf_counter()
    model = spec.build(tok, seed=cfg.data_seed)
    losses = train_supervised(
        model, tok, task.train_prompts, steps, cfg.batch_size, cfg.lr, cfg.data_seed
    )
    score = evaluate_exact_match(model, tok, task, max_new_tokens(cfg.digits))
    seconds = time.perf_counter() - start
    log(
        f"[arithmetic] trained {name} ({sum(p.numel() for p in model.parameters()):,} params, "
        f"{steps} steps, final loss {losses[-1]:.3f}) in {seconds:.0f}s: "
        f"held-out exact match {score:.3f}"
    )
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    record = {
        "held_out_exact_match": score,
        "seconds": seconds,
        "final_loss": losses[-1],
        "config": asdict(cfg),
        **(extra or {}),
    }
    (folder / "build.json").write_text(json.dumps(record, indent=1, default=str))
