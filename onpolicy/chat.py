"""Render a ``Prompt`` with a model's own chat template; find the stop tokens that model uses.

The rule itself (template rendering, end of turn, stop ids) has one home,
``alignment.tokens.chat``, shared with the cross-tokenizer layer; this module adapts ``Prompt``
(chat ``messages`` or raw ``text``) to it and raises onpolicy's ``ConfigError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from alignment.tokens.chat import has_chat_template, render_messages, stop_ids
from onpolicy.errors import ConfigError
from onpolicy.types import Prompt


def render_prompt(tokenizer: Any, prompt: Prompt) -> list[int]:
    """Token ids of ``prompt`` as the model with ``tokenizer`` sees it before its answer.

    ``messages`` are rendered with the tokenizer's chat template and the generation prompt (the
    assistant turn's header); a model without a chat template gets a one-line ``ConfigError``.
    ``text`` is a raw completion prompt: tokenized as is, with the tokenizer's usual special tokens
    (e.g. BOS), no template.
    """
    if prompt.text is not None:
        return list(tokenizer(prompt.text, add_special_tokens=True)["input_ids"])
    if not has_chat_template(tokenizer):
        raise ConfigError(
            f"tokenizer {tokenizer.name_or_path!r} has no chat template but the prompt is a chat "
            "message; give `prompt` rows with chat: false (data.chat in onpolicy train, task.chat "
            "in onpolicy compare) instead of `messages`, or a tokenizer with a chat template"
        )
    return render_messages(tokenizer, prompt.messages)


def render_prompts(tokenizer: Any, prompts: Sequence[Prompt]) -> list[list[int]]:
    """``render_prompt`` for each prompt."""
    return [render_prompt(tokenizer, p) for p in prompts]


def stop_token_ids(tokenizer: Any, model: Any = None, extra: Sequence[int] = ()) -> tuple[int, ...]:
    """The token ids that end a completion for this model: the tokenizer's EOS, the template's
    end-of-turn token, the model's ``generation_config.eos_token_id`` (int or list) and ``extra``;
    deduplicated, in that order (``alignment.tokens.chat.stop_ids``)."""
    return stop_ids(tokenizer, model, extra)
