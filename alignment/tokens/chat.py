"""The one chat rendering and stop-token rule of both packages (``onpolicy.chat`` adapts its
``Prompt`` type to it), and special tokens by role.

- ``render_messages``: a conversation rendered with the tokenizer's own chat template and the
  generation prompt (the assistant turn's header), tokenized with ``add_special_tokens=False``
  (templates render their own BOS and markers). A tokenizer without a template is an error: no
  rendering is invented that the model never saw in training.
- ``end_of_turn_id``: the special token the template puts right after an assistant turn
  (``<|im_end|>`` for Qwen/SmolLM2, ``<end_of_turn>`` for Gemma): render a conversation whose
  assistant turn is a sentinel, tokenize it, take the first special token after the sentinel.
  None without a template, or when the template adds none (or rejects that conversation).
- ``turn_end_id``: the token that ends the model's turn: its end of turn, else its EOS.
- ``stop_ids``: the ids that end a completion: EOS, end of turn, the model's
  ``generation_config.eos_token_id`` (int or list) and any extra, deduplicated in that order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from alignment.errors import AlignmentError
from alignment.tokens.offsets import token_bytes_table

_SENTINEL = "Zq7xSENTINELx7qZ"


def has_chat_template(tokenizer: Any) -> bool:
    """Whether the tokenizer ships a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def render_messages(tokenizer: Any, messages: Sequence[dict[str, str]]) -> list[int]:
    """Ids of ``messages`` + the generation prompt, rendered with the tokenizer's chat template."""
    if not has_chat_template(tokenizer):
        raise AlignmentError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template but the "
            "prompt has `messages`; give plain `text` prompts or a tokenizer with a chat template"
        )
    text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def end_of_turn_id(tokenizer: Any) -> int | None:
    """Id of the special token the chat template puts after an assistant turn (module doc)."""
    if not has_chat_template(tokenizer):
        return None
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _SENTINEL}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:  # a template that rejects this conversation: no end of turn to learn
        return None
    if _SENTINEL not in text:
        return None
    tail = text[text.find(_SENTINEL) + len(_SENTINEL) :]
    ids = tokenizer(tail, add_special_tokens=False)["input_ids"]
    special = token_bytes_table(tokenizer).special_V
    found = [i for i in ids if special[i]]
    return int(found[0]) if found else None


def turn_end_id(tokenizer: Any) -> int | None:
    """The token that ends the model's turn: its end of turn, else its EOS (None if neither)."""
    eot = end_of_turn_id(tokenizer)
    return tokenizer.eos_token_id if eot is None else eot


def stop_ids(tokenizer: Any, model: Any = None, extra: Sequence[int] = ()) -> tuple[int, ...]:
    """The ids that end a completion: EOS, end of turn, ``model.generation_config.eos_token_id``
    and ``extra``; deduplicated, in that order."""
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    eot = end_of_turn_id(tokenizer)
    if eot is not None:
        ids.append(eot)
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if gen_eos is not None:
        ids.extend([int(gen_eos)] if isinstance(gen_eos, int) else [int(i) for i in gen_eos])
    ids.extend(int(i) for i in extra)
    return tuple(dict.fromkeys(ids))


def special_roles(tokenizer: Any) -> dict[str, int]:
    """role -> id for the roles this tokenizer defines: bos, eos, pad, unk, end_of_turn (the turn
    end: ``turn_end_id``)."""
    roles = {
        "bos": tokenizer.bos_token_id,
        "eos": tokenizer.eos_token_id,
        "pad": tokenizer.pad_token_id,
        "unk": tokenizer.unk_token_id,
        "end_of_turn": turn_end_id(tokenizer),
    }
    return {role: i for role, i in roles.items() if i is not None}
