"""Cross-tokenizer alignment: compare a student and a teacher that tokenize the same text
differently. Pure tensor code on tokenizers and logits; never imports ``onpolicy`` (which imports
this package, so the math both need lives here: ``alignment.divergence``).

Layout, by job:

- ``alignment.tokens``: tokens and offsets. ``offsets`` (each token's bytes and byte offsets,
  raw-byte encoding), ``vocab_map`` (tokenizer identity, matched vocabulary pairs), ``chat``
  (chat rendering, end-of-turn and stop tokens), ``byte_trie`` (a vocabulary sorted by bytes).
- ``alignment.spans``: span math and losses. ``align`` (which tokens cover the same bytes),
  ``chain_rule`` (span log-probabilities and span distributions), ``uld`` (sorted-L1 ULD),
  ``gold`` (span ULD, GOLD-style hybrid and its prefix-marginal form; kernel ``_gold_rows``),
  ``next_byte`` (the next-byte loss; kernel ``_byte_mass``).
- ``alignment.view``: the teacher's view of a student sample (render, tokenize, align).
- ``alignment.divergence``: sampled-token log-probs and the generalized JSD, shared with onpolicy.
- ``alignment.doctor``: can this teacher distill into this student, and with which loss.
- ``alignment.cpu``: the CPU speed paths, for both packages (one thread pool for the row kernels,
  thread-local buffers, huge pages, glibc's freed-memory setting); values never depend on them.
- ``alignment.types`` (the dataclasses at the boundary), ``alignment.errors``.

The public names below are importable from ``alignment`` itself.
"""

from alignment.divergence import gjsd_log, gjsd_measure, token_logprobs
from alignment.errors import AlignmentError
from alignment.spans.align import align_spans, align_spans_batch
from alignment.spans.chain_rule import (
    count_spans,
    span_anchor_positions,
    span_distributions,
    span_logprobs,
    span_sampled_reward,
    span_values_to_tokens,
)
from alignment.spans.gold import (
    gold_loss,
    gold_prefix_loss,
    gold_prefix_terms,
    gold_terms,
    span_uld_loss,
)
from alignment.spans.next_byte import ByteTerms, next_byte_loss, next_byte_terms
from alignment.spans.uld import uld_loss, uld_loss_topk
from alignment.tokens.byte_trie import ByteTrie, byte_trie
from alignment.tokens.chat import end_of_turn_id, render_messages, stop_ids, turn_end_id
from alignment.tokens.offsets import byte_offsets, encode_bytes, token_bytes_table, token_offsets
from alignment.tokens.vocab_map import build_vocab_map, same_tokenizer
from alignment.types import SideLogits, SpanAlignment, SpanLossTerms, TeacherView, VocabMap
from alignment.view import collate_views, teacher_view

__all__ = [
    "AlignmentError",
    "ByteTerms",
    "ByteTrie",
    "SideLogits",
    "SpanAlignment",
    "SpanLossTerms",
    "TeacherView",
    "VocabMap",
    "align_spans",
    "align_spans_batch",
    "build_vocab_map",
    "byte_offsets",
    "byte_trie",
    "collate_views",
    "count_spans",
    "encode_bytes",
    "end_of_turn_id",
    "gjsd_log",
    "gjsd_measure",
    "gold_loss",
    "gold_prefix_loss",
    "gold_prefix_terms",
    "gold_terms",
    "next_byte_loss",
    "next_byte_terms",
    "render_messages",
    "same_tokenizer",
    "span_anchor_positions",
    "span_distributions",
    "span_logprobs",
    "span_sampled_reward",
    "span_uld_loss",
    "span_values_to_tokens",
    "stop_ids",
    "teacher_view",
    "token_bytes_table",
    "token_logprobs",
    "token_offsets",
    "turn_end_id",
    "uld_loss",
    "uld_loss_topk",
]
