"""Old import path of ``alignment.tokens.vocab_map`` (``onpolicy.compare`` imports it from here)."""

from alignment.tokens.vocab_map import same_tokenizer

__all__ = ["same_tokenizer"]
