"""Tiny real models for tests and examples, built in-process and cached on disk.

Two tokenizers trained/built with the ``tokenizers`` library on a small built-in corpus:

- ``bpe``: byte-level BPE (GPT-2/Qwen/SmolLM2 style, ``Ġ`` for spaces), ChatML template
  (``<|im_start|>role\\n...<|im_end|>\\n``), EOS ``<|endoftext|>``, end of turn ``<|im_end|>``, pad
  ``<|pad|>``.
- ``char``: SentencePiece-style characters with byte fallback (Gemma/Llama style, ``▁`` for spaces,
  ``<0xNN>`` byte tokens for anything outside the corpus alphabet), Gemma-like template
  (``<bos><start_of_turn>user\\n...<end_of_turn>\\n<start_of_turn>model\\n``), EOS ``<eos>``,
  pad ``<pad>``.

and a tiny ``LlamaForCausalLM`` (head dim 32, which vLLM's CPU attention accepts) saved as a Hugging
Face folder together with its tokenizer. ``pretrain_steps > 0`` trains it briefly on the corpus
rendered as chats, so it answers in the corpus' style and ends its turns (useful as a teacher).
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Literal

TokenizerKind = Literal["bpe", "char"]

_RECIPE_VERSION = 1  # bump when a build changes, so stale cache entries are not reused

SIZES: dict[str, dict[str, int]] = {
    # name: hidden size, layers, attention heads, key/value heads (head dim = hidden / heads = 32)
    "tiny": {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "intermediate_size": 128,
    },
    "small": {
        "hidden_size": 128,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 256,
    },
}

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

GEMMA_LIKE_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] + '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

_COLORS = {
    "sky": "blue",
    "grass": "green",
    "snow": "white",
    "coal": "black",
    "sun": "yellow",
    "blood": "red",
    "orange": "orange",
    "café au lait": "brown",
    "plum": "purple",
}
_WORDS = ["naïve", "façade", "über", "日本", "smörgåsbord", "emoji 🙂", "tab\tand newline"]


def corpus_pairs(seed: int = 0) -> list[tuple[str, str]]:
    """The built-in corpus as (question, answer) pairs: sums, colours, counting, spelling, including
    non-ASCII text (multi-byte characters, an emoji) so offsets and byte fallback are exercised."""
    rng = random.Random(seed)
    pairs = []
    for a in range(10):
        for b in range(10):
            pairs.append((f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."))
    for thing, color in _COLORS.items():
        pairs.append((f"What color is the {thing}?", f"The {thing} is {color}."))
    for n in range(1, 10):
        pairs.append((f"Count to {n}.", " ".join(str(i) for i in range(1, n + 1))))
    for word in _WORDS:
        pairs.append((f"Repeat: {word}", f"{word}"))
        pairs.append((f"Spell {word}.", "-".join(word)))
    rng.shuffle(pairs)
    return pairs


def corpus_texts() -> list[str]:
    """Plain training text for the tokenizers: every question and answer."""
    return [s for pair in corpus_pairs() for s in pair]


def cache_root() -> Path:
    """Where tiny models are cached: ``onpolicy.offline.cache_dir() / "tiny"``."""
    from onpolicy.offline import cache_dir

    return cache_dir() / "tiny"


def build_tokenizer(kind: TokenizerKind = "bpe"):
    """Build a ``PreTrainedTokenizerFast`` of the given kind (see the module docstring)."""
    if kind == "bpe":
        return _build_bpe()
    if kind == "char":
        return _build_char()
    raise ValueError(f"unknown tiny tokenizer kind {kind!r}; use 'bpe' or 'char'")


def _build_bpe():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus_texts(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|endoftext|>",
        pad_token="<|pad|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        chat_template=CHATML_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )


def _build_char():
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    chars = sorted({c for text in corpus_texts() for c in text.replace(" ", "▁")} | {"▁"})
    vocab = {t: i for i, t in enumerate(specials + byte_tokens + chars)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True, unk_token="<unk>"))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    tok.add_special_tokens(specials)
    from tokenizers import processors

    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=["<start_of_turn>", "<end_of_turn>"],
        chat_template=GEMMA_LIKE_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )


def tiny_tokenizer_dir(kind: TokenizerKind = "bpe") -> Path:
    """A cached folder holding the tokenizer of ``kind`` (built on first use)."""
    target = cache_root() / f"tokenizer-{kind}-v{_RECIPE_VERSION}"
    return _build_once(target, lambda d: build_tokenizer(kind).save_pretrained(d))


def tiny_model_dir(
    name: str = "tiny",
    tokenizer: TokenizerKind = "bpe",
    seed: int = 0,
    pretrain_steps: int = 0,
    pad_vocab_to: int | None = None,
) -> Path:
    """A cached Hugging Face folder with a tiny ``LlamaForCausalLM`` and its tokenizer.

    Args:
        name: size preset, a key of ``SIZES`` (``tiny``: hidden 64, 2 layers; ``small``: 128, 3).
        tokenizer: ``bpe`` or ``char`` (see the module docstring).
        seed: initialization (and pretraining) seed; different seeds give different models.
        pretrain_steps: optimizer steps of next-token training on the corpus rendered as chats.
        pad_vocab_to: embedding rows (>= the tokenizer's size), to mimic padded vocabularies such as
            Qwen's 151,936 vs 152,064; the extra rows are never produced by the tokenizer.
    """
    if name not in SIZES:
        raise ValueError(f"unknown tiny model size {name!r}; use one of {sorted(SIZES)}")
    key = f"{name}-{tokenizer}-s{seed}-p{pretrain_steps}-v{pad_vocab_to or 0}-r{_RECIPE_VERSION}"
    return _build_once(
        cache_root() / key,
        lambda d: _build_model(d, name, tokenizer, seed, pretrain_steps, pad_vocab_to),
    )


def _build_once(target: Path, build) -> Path:
    """Build in a temporary sibling, then rename into place (atomic: concurrent builds are safe)."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(tmp)
        os.rename(tmp, target)
    except OSError:
        if not target.exists():
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _build_model(
    out: Path, name: str, kind: TokenizerKind, seed: int, steps: int, pad_to: int | None
) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tok = build_tokenizer(kind)
    vocab = len(tok)
    if pad_to is not None and pad_to < vocab:
        raise ValueError(f"pad_vocab_to={pad_to} is smaller than the tokenizer's {vocab} tokens")
    eos_ids = [tok.eos_token_id, tok.convert_tokens_to_ids(_end_of_turn(kind))]
    config = LlamaConfig(
        vocab_size=pad_to or vocab,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        bos_token_id=tok.bos_token_id,
        eos_token_id=eos_ids,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
        **SIZES[name],
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    if steps > 0:
        _pretrain(model, tok, steps, seed)
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=eos_ids, pad_token_id=tok.pad_token_id
    )
    model.save_pretrained(out)
    tok.save_pretrained(out)


def _end_of_turn(kind: TokenizerKind) -> str:
    return "<|im_end|>" if kind == "bpe" else "<end_of_turn>"


def _pretrain(model, tok, steps: int, seed: int, batch_size: int = 16, lr: float = 3e-3) -> None:
    """Next-token training on whole chats (question + answer + end of turn)."""
    import torch

    chats = [
        tok.apply_chat_template(
            [{"role": "user", "content": q}, {"role": "assistant", "content": a}], tokenize=False
        )
        for q, a in corpus_pairs(seed)
    ]
    encoded = [tok(c, add_special_tokens=False)["input_ids"] for c in chats]
    rng = random.Random(seed)
    optim = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        rows = rng.sample(encoded, min(batch_size, len(encoded)))
        T = max(len(r) for r in rows)
        ids = torch.full((len(rows), T), tok.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), T), -100, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            labels[i, : len(r)] = torch.tensor(r)
        loss = model(input_ids=ids, attention_mask=(labels != -100).long(), labels=labels).loss
        loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)
    model.eval()
