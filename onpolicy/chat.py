"""Render a ``Prompt`` with a model's own chat template; find the stop tokens that model uses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from onpolicy.errors import ConfigError
from onpolicy.types import Prompt

_PROBE = (
    "\u2063onpolicy-probe\u2063"  # text no template will add: marks where assistant content ends
)


def render_prompt(tokenizer: Any, prompt: Prompt) -> list[int]:
    """Token ids of ``prompt`` as the model with ``tokenizer`` sees it before its answer.

    ``messages`` are rendered with the tokenizer's chat template and the generation prompt (the
    assistant turn's header); a model without a chat template gets a one-line ``ConfigError``.
    ``text`` is a raw completion prompt: tokenized as is, with the tokenizer's usual special tokens
    (e.g. BOS), no template.
    """
    if prompt.text is not None:
        return list(tokenizer(prompt.text, add_special_tokens=True)["input_ids"])
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            f"tokenizer {tokenizer.name_or_path!r} has no chat template but the prompt is a chat "
            "message; give `prompt` rows with chat: false (data.chat in onpolicy train, task.chat "
            "in onpolicy compare) instead of `messages`, or a tokenizer with a chat template"
        )
    ids = tokenizer.apply_chat_template(
        list(prompt.messages), add_generation_prompt=True, tokenize=True, return_dict=False
    )
    return list(ids)


def render_prompts(tokenizer: Any, prompts: Sequence[Prompt]) -> list[list[int]]:
    """``render_prompt`` for each prompt."""
    return [render_prompt(tokenizer, p) for p in prompts]


def end_of_turn_token_id(tokenizer: Any) -> int | None:
    """The special token the chat template puts right after an assistant message (``<|im_end|>``,
    ``<end_of_turn>``, ``<|eot_id|>``, ...), or None when there is no template or it adds none."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _PROBE}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:  # templates that reject this conversation shape: no end-of-turn to learn
        return None
    if _PROBE not in text:
        return None
    after = text.split(_PROBE, 1)[1]
    special = set(tokenizer.all_special_tokens) | set(
        getattr(tokenizer, "added_tokens_encoder", {})
    )
    for token in sorted(special, key=len, reverse=True):
        if token and after.startswith(token):
            return int(tokenizer.convert_tokens_to_ids(token))
    return None


def stop_token_ids(tokenizer: Any, model: Any = None, extra: Sequence[int] = ()) -> tuple[int, ...]:
    """The token ids that end a completion for this model: the tokenizer's EOS, the template's
    end-of-turn token, the model's ``generation_config.eos_token_id`` (int or list) and ``extra``;
    deduplicated, in that order."""
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    eot = end_of_turn_token_id(tokenizer)
    if eot is not None:
        ids.append(eot)
    gen = getattr(model, "generation_config", None)
    gen_eos = getattr(gen, "eos_token_id", None)
    if gen_eos is not None:
        ids.extend([int(gen_eos)] if isinstance(gen_eos, int) else [int(i) for i in gen_eos])
    ids.extend(int(i) for i in extra)
    return tuple(dict.fromkeys(ids))
