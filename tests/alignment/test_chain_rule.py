"""Chain-rule span log-probs and span distributions: tiny real models, loop references, edges."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM

from alignment.errors import AlignmentError
from alignment.spans.align import align_spans
from alignment.spans.chain_rule import (
    count_spans,
    span_anchor_positions,
    span_distributions,
    span_log_scale,
    span_logprobs,
    span_sampled_reward,
    span_values_to_tokens,
    token_logprobs,
)

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "distillation of language models across tokenizers",
    "def main():\n    return 42\n",
    "a student samples, a teacher scores, the student learns",
] * 20
TEXT = "the student learns quickly: def fox(): return 7"
PROMPT = "q: "


def _bpe(vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<bos>"],
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def _char_level() -> Tokenizer:
    chars = sorted(set("".join([*CORPUS, TEXT, PROMPT])))
    vocab = {"<bos>": 0, "<unk>": 1} | {c: i + 2 for i, c in enumerate(chars)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    return tok


def _encode(tok: Tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """BOS + prompt + completion ids; byte offsets in the completion (ASCII: chars == bytes),
    zero-width for BOS and prompt tokens (they get span -1)."""
    bos = tok.token_to_id("<bos>")
    prompt = tok.encode(PROMPT, add_special_tokens=False).ids
    enc = tok.encode(text, add_special_tokens=False)
    return [bos, *prompt, *enc.ids], [(0, 0)] * (1 + len(prompt)) + list(enc.offsets)


def _model(vocab: int, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    return LlamaForCausalLM(cfg).eval().double()


@pytest.fixture(scope="module")
def two_sides():
    sides = []
    for seed, tok in enumerate([_bpe(330), _char_level()]):
        ids, offs = _encode(tok, TEXT)
        sides.append((_model(tok.get_vocab_size(), seed), torch.tensor([ids]), offs))
    (ms, ids_s, offs_s), (mt, ids_t, offs_t) = sides
    span_s, span_t = (x.unsqueeze(0) for x in align_spans(offs_s, offs_t))
    assert ids_s.shape[1] != ids_t.shape[1]  # really two different tokenizations
    return (ms, ids_s, span_s), (mt, ids_t, span_t)


def _hf_logp(model, ids: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """log P(tokens where keep) by HF's own shifted cross entropy (independent of our shift)."""
    labels = torch.where(keep, ids, -100)
    with torch.no_grad():
        out = model(input_ids=ids, labels=labels)
    return (-out.loss * keep.sum()).double()  # HF computes the loss in float32


def test_chain_rule_span_sum_equals_sequence_logprob_on_both_sides(two_sides) -> None:
    S = None
    for model, ids, span in two_sides:
        with torch.no_grad():
            logits = model(input_ids=ids).logits
        span_logp, mask = span_logprobs(token_logprobs(logits, ids), span)
        S = span_logp.shape[1] if S is None else S
        assert span_logp.shape[1] == S and bool(mask.all())  # same spans on both sides
        seq = _hf_logp(model, ids, span >= 0)
        torch.testing.assert_close(span_logp.sum(), seq, rtol=1e-5, atol=1e-5)
        for k in (0, S // 2, S - 1):  # each span on its own
            ref = _hf_logp(model, ids, span == k)
            torch.testing.assert_close(span_logp[0, k], ref, rtol=1e-5, atol=1e-5)


def test_sampled_reward_sums_to_text_logratio(two_sides) -> None:
    (ms, ids_s, span_s), (mt, ids_t, span_t) = two_sides
    S = count_spans(span_s)
    with torch.no_grad():
        ls, lt = ms(input_ids=ids_s).logits, mt(input_ids=ids_t).logits
    sp_s, mask = span_logprobs(token_logprobs(ls, ids_s), span_s, S)
    sp_t, _ = span_logprobs(token_logprobs(lt, ids_t), span_t, S)
    reward = span_sampled_reward(sp_s, sp_t, mask)
    text_ratio = _hf_logp(mt, ids_t, span_t >= 0) - _hf_logp(ms, ids_s, span_s >= 0)
    torch.testing.assert_close(reward.sum(), text_ratio, rtol=1e-5, atol=1e-5)
    tok_reward = span_values_to_tokens(reward, span_s)
    torch.testing.assert_close(tok_reward.sum(), reward.sum())
    assert int((tok_reward != 0).sum()) == S


def test_last_anchor_is_the_exact_joint_under_the_model(two_sides) -> None:
    """q_last[w] = P(span tokens but the last, then w | prefix), checked by re-running the model."""
    model, ids, span = two_sides[1]  # the char-level side: spans of several tokens
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    log_q, _ = span_distributions(logits, ids, span, anchor="last")
    first, _ = span_anchor_positions(span, "first")
    last, _ = span_anchor_positions(span, "last")
    k = int(torch.argmax(last - first))  # the longest span
    assert int(last[0, k] - first[0, k]) >= 1
    a, b = int(first[0, k]), int(last[0, k])
    for w in (3, 7, int(ids[0, b])):
        seq = torch.cat([ids[:, :b], torch.tensor([[w]])], dim=1)
        keep = torch.zeros_like(seq, dtype=torch.bool)
        keep[0, a:] = True
        ref = _hf_logp(model, seq, keep)
        torch.testing.assert_close(log_q[0, k, w], ref, rtol=1e-5, atol=1e-5)


def test_first_anchor_is_prefix_distribution_times_rest(two_sides) -> None:
    model, ids, span = two_sides[1]
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    logp = token_logprobs(logits, ids)
    log_q, _ = span_distributions(logits, ids, span, anchor="first")
    span_logp, _ = span_logprobs(logp, span)
    first, _ = span_anchor_positions(span, "first")
    last, _ = span_anchor_positions(span, "last")
    k = int(torch.argmax(last - first))  # the longest span
    a = int(first[0, k])
    assert int(last[0, k]) > a
    with torch.no_grad():  # the model run on the prefix alone
        prefix_next = torch.log_softmax(model(input_ids=ids[:, :a]).logits[0, -1], -1)
    rest = span_logp[0, k] - logp[0, a]
    torch.testing.assert_close(log_q[0, k], prefix_next + rest)
    torch.testing.assert_close(log_q[0, k, ids[0, a]], span_logp[0, k])


def _loop_reference(logits, ids, span, anchor, normalize, temperature):
    """float64 per-span loop: the definition written out."""
    B, T, V = logits.shape
    S = count_spans(span)
    out = torch.zeros(B, S, V, dtype=torch.float64)
    lsm = torch.log_softmax(logits.double() / temperature, -1)
    for b in range(B):
        for k in range(S):
            pos = [t for t in range(T) if span[b, t] == k]
            if not pos:
                continue
            anchor_t = pos[0] if anchor == "first" else pos[-1]
            rest = sum(lsm[b, t - 1, ids[b, t]] for t in pos if t != anchor_t)
            out[b, k] = lsm[b, anchor_t - 1] + (0 if normalize else rest)
    return out


@pytest.mark.parametrize("anchor", ["first", "last"])
@pytest.mark.parametrize("normalize", [False, True])
def test_span_distributions_match_loop_reference_values_and_grads(anchor, normalize) -> None:
    g = torch.Generator().manual_seed(0)
    B, T, V = 3, 12, 17
    logits = torch.randn(B, T, V, generator=g, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, V, (B, T), generator=g)
    span = torch.tensor(
        [
            [-1, -1, 0, 0, 1, 2, 2, 2, 3, -1, -1, -1],
            [-1, 0, 1, 1, 1, 1, 2, 3, 4, 5, 5, -1],
            [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1],
        ]
    )
    got, mask = span_distributions(logits, ids, span, anchor, normalize, temperature=1.5)
    ref = _loop_reference(logits, ids, span, anchor, normalize, 1.5)
    assert mask.tolist() == [[True] * 4 + [False] * 2, [True] * 6, [False] * 6]
    torch.testing.assert_close(got[mask], ref[mask])
    w = torch.randn(got.shape, generator=g, dtype=torch.float64) * mask.unsqueeze(-1)
    (g1,) = torch.autograd.grad((got * w).sum(), logits)
    (g2,) = torch.autograd.grad((ref * w).sum(), logits)
    torch.testing.assert_close(g1, g2)
    if normalize:
        totals = got[mask].exp().sum(-1)
        torch.testing.assert_close(totals, torch.ones_like(totals))


def test_span_logprobs_edges() -> None:
    logp = torch.randn(2, 5, dtype=torch.float64)
    none = torch.full((2, 5), -1)
    sp, mask = span_logprobs(logp, none)
    assert sp.shape == (2, 0) and mask.shape == (2, 0)
    sp, mask = span_logprobs(logp, none, num_spans=3)
    assert torch.all(sp == 0) and not mask.any()
    with pytest.raises(AlignmentError, match="span ids must lie"):
        span_logprobs(logp, torch.full((2, 5), 4), num_spans=2)
    with pytest.raises(AlignmentError, match="same"):
        span_logprobs(logp, torch.full((2, 4), -1))
    with pytest.raises(AlignmentError, match="token 0"):
        span_log_scale(logp, torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(AlignmentError, match="anchor"):
        span_anchor_positions(none, "middle")  # type: ignore[arg-type]
    reward = span_sampled_reward(sp, sp + 1, mask)
    assert torch.all(reward == 0)


def test_span_logprobs_hand_computed() -> None:
    logp = torch.tensor([[0.0, -1.0, -2.0, -3.0, -0.5], [0.0, -0.25, -0.5, 0.0, 0.0]])
    span = torch.tensor([[-1, 0, 0, 1, -1], [-1, 0, 0, 0, -1]])
    sp, mask = span_logprobs(logp, span)
    assert sp.tolist() == [[-3.0, -3.0], [-0.75, 0.0]]
    assert mask.tolist() == [[True, True], [True, False]]
    pos, _ = span_anchor_positions(span, "last")
    assert pos.tolist() == [[2, 3], [3, 0]]
    row, scale, _ = span_log_scale(logp, span, "first")
    assert row.tolist() == [[0, 2], [0, 0]] and scale.tolist() == [[-2.0, 0.0], [-0.5, 0.0]]
