"""A tokenizer's chat rendering and its special tokens by role: BOS, EOS, padding, and the chat
template's end-of-turn marker.

``render_prompt``: the conversation rendered with the tokenizer's own chat template and the
generation prompt, tokenized with ``add_special_tokens=False`` (templates render their own BOS
and markers); a tokenizer without a template gets a plain rendering (``"{role}: {content}\\n"``
per message, then ``"assistant: "``; the doctor warns about that).

The end-of-turn marker is read from the tokenizer's own chat template: render a conversation whose
assistant turn is a sentinel, tokenize it, and take the first special token after the sentinel
(``<|im_end|>`` for Qwen/SmolLM2, ``<end_of_turn>`` for Gemma). Without a template it is the EOS.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from alignment.tokens.offsets import token_bytes_table

_SENTINEL = "Zq7xSENTINELx7qZ"


def render_prompt(tokenizer: Any, messages: Sequence[dict[str, str]]) -> list[int]:
    """The tokenizer's chat-template rendering of ``messages`` + generation prompt, as ids."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=True
        )
    else:
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def end_of_turn_id(tokenizer: Any) -> int | None:
    """Id of the token the chat template puts after an assistant turn (None if not found)."""
    if not getattr(tokenizer, "chat_template", None):
        return tokenizer.eos_token_id
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _SENTINEL}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:  # a template that rejects this conversation: fall back to EOS
        return tokenizer.eos_token_id
    tail = text[text.find(_SENTINEL) + len(_SENTINEL) :]
    ids = tokenizer(tail, add_special_tokens=False)["input_ids"]
    special = token_bytes_table(tokenizer).special_V
    found = [i for i in ids if special[i]]
    return found[0] if found else tokenizer.eos_token_id


def stop_ids(tokenizer: Any) -> set[int]:
    """Ids that end a completion: EOS and the end-of-turn marker."""
    ids = {tokenizer.eos_token_id, end_of_turn_id(tokenizer)}
    return {i for i in ids if i is not None}


def special_roles(tokenizer: Any) -> dict[str, int]:
    """role -> id for the roles this tokenizer defines: bos, eos, pad, unk, end_of_turn."""
    roles = {
        "bos": tokenizer.bos_token_id,
        "eos": tokenizer.eos_token_id,
        "pad": tokenizer.pad_token_id,
        "unk": tokenizer.unk_token_id,
        "end_of_turn": end_of_turn_id(tokenizer),
    }
    return {role: i for role, i in roles.items() if i is not None}
