"""Models and prompts for ``benchmarks/e2e.py``.

Pairs (``--pair``):
- ``arithmetic``: the arithmetic task's tiny Llamas (char-level student and teacher; the BPE
  student for the cross case). Both engines are mostly Python overhead at this size.
- ``smollm2``: the real SmolLM2-135M-Instruct student (byte-level BPE, 49,152 tokens). Same
  tokenizer: SmolLM2-135M-Instruct scores its own samples (a real teacher with the student's
  tokenizer; no larger one ships offline). Cross tokenizer: a Qwen2-architecture teacher with the
  Qwen2.5 tokenizer (byte-level BPE, 151,665 tokens, embeddings padded to 151,936), randomly
  initialized (a speed benchmark needs the shapes, not the knowledge), ~130M parameters, built once
  into ``onpolicy.offline.cache_dir()``. TRL's GOLD trainer accepts it (it refuses Gemma-3's
  SentencePiece tokenizer).
- ``smollm2-shape``: SmolLM2-135M-Instruct's exact architecture with random weights (seed 0) and
  its real tokenizer, committed in ``benchmarks/smollm2_tokenizer/``
  (``benchmarks/smollm2_shape.py``), as student and teacher: the ``smollm2`` pair's
  same-tokenizer work on a machine without the GGUF (time it with ``--equal-lengths``).
  Cross tokenizer: that student and the Qwen2 teacher above.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

QWEN_TEACHER = "bench-qwen2-teacher-v1"


@dataclass(frozen=True)
class Pair:
    """Model folders of one benchmark pair."""

    student: str  # same-tokenizer student
    teacher: str  # same-tokenizer teacher
    cross_student: str  # "" when the pair was asked for without its cross sides
    cross_teacher: str


def qwen_teacher_dir() -> Path:
    """A randomly initialized Qwen2 causal LM (hidden 576, 12 layers, 9 heads / 3 KV heads of 64,
    MLP 1536, tied 151,936-row embeddings, float32, seed 0) + the Qwen2.5 tokenizer, cached."""
    from onpolicy.offline import cache_dir, qwen_tokenizer_dir

    final = cache_dir() / QWEN_TEACHER
    if (final / "config.json").exists() and (final / "model.safetensors").exists():
        return final
    import torch
    from transformers import AutoTokenizer, GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(qwen_tokenizer_dir())
    config = Qwen2Config(
        vocab_size=151_936, hidden_size=576, intermediate_size=1536, num_hidden_layers=12,
        num_attention_heads=9, num_key_value_heads=3, head_dim=64, max_position_embeddings=4096,
        rope_theta=1_000_000.0, tie_word_embeddings=True, bos_token_id=None,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).float()
    model.generation_config = GenerationConfig(
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )

    def save(folder: Path) -> None:
        model.save_pretrained(folder)
        tok.save_pretrained(folder)

    return save_into(final, save)


def save_into(final: Path, save: Callable[[Path], None]) -> Path:
    """``save(tmp)`` into a temporary sibling of ``final``, then rename it into place (a stale or
    half-written ``final`` is replaced; an interrupted save leaves none)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        save(tmp)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


PAIRS = ("arithmetic", "smollm2", "smollm2-shape")


def model_pair(name: str, cross: bool = True) -> Pair:
    """The folders of pair ``name`` (built and cached on first use); ``cross=False`` builds
    neither cross-tokenizer model of the SmolLM2 pairs (their Qwen2 teacher needs the Qwen2.5
    tokenizer's package) and leaves those fields empty."""
    if name in ("smollm2", "smollm2-shape"):
        if name == "smollm2":
            from onpolicy.offline import smollm2_dir

            s = str(smollm2_dir())
        else:
            from benchmarks.smollm2_shape import model_dir

            s = str(model_dir())
        return Pair(s, s, s, str(qwen_teacher_dir())) if cross else Pair(s, s, "", "")
    from onpolicy.tasks.arith_models import arithmetic_models

    m = arithmetic_models(log=lambda s: print(s, file=sys.stderr))
    return Pair(
        str(m.student_dir), str(m.teacher_dir), str(m.cross_student_dir), str(m.teacher_dir)
    )


def prompts(name: str, n: int) -> list:
    """``n`` prompts (``onpolicy.types.Prompt``): the chat_pair task's shipped instructions for
    the SmolLM2 pairs (cycled), seeded 3-digit additions for ``arithmetic``."""
    if name in ("smollm2", "smollm2-shape"):
        from onpolicy.tasks import make_task

        task = make_task("chat_pair")
        pool = list(task.train_prompts + task.eval_prompts)
        return [pool[i % len(pool)] for i in range(n)]
    from onpolicy.tasks.arithmetic import make_prompts

    return make_prompts(n, 3, seed=123)


def prompt_row(p, completion: str | None = None) -> dict:
    """A TRL dataset row (conversational when the prompt has messages)."""
    if p.messages is not None:
        row = {"prompt": list(p.messages)}
        if completion is not None:
            row["completion"] = [{"role": "assistant", "content": completion}]
        return row
    return {"prompt": p.text, **({"completion": completion} if completion is not None else {})}
