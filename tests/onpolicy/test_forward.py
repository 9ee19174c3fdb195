"""``forward_completions``: the packed completion-position outputs equal a plain full forward
(values and gradients), with logits computed only from the first completion position on."""

from __future__ import annotations

import pytest
import torch

from onpolicy.forward import _takes_logits_to_keep, forward_completions, head_logits, output_head
from onpolicy.models import load_model
from onpolicy.tiny import tiny_model_dir
from onpolicy.types import PaddedBatch


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return load_model(tiny_model_dir("tiny", "bpe", seed=0))


def _batch(vocab: int) -> PaddedBatch:
    g = torch.Generator().manual_seed(1)

    def ids(n):
        return torch.randint(3, vocab, (n,), generator=g).tolist()

    # prompts of different lengths, one row with no completion token
    return PaddedBatch.from_ragged([ids(7), ids(3), ids(5)], [ids(4), ids(6), []], 0)


def _reference(model, batch: PaddedBatch):
    """Full [B, T, V] logits of a plain forward, gathered at the positions predicting completion
    tokens (row-major), and their targets."""
    logits = model(input_ids=batch.input_ids_B_T, attention_mask=batch.attention_mask_B_T).logits
    labels = batch.labels()
    mask = labels != -100
    return logits[mask], labels[mask]


class _NoKeep(torch.nn.Module):
    """A wrapper whose forward takes no ``logits_to_keep`` (older or custom models)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask)

    def get_output_embeddings(self):
        return self.inner.get_output_embeddings()


@pytest.mark.parametrize("wrap", [False, True], ids=["logits_to_keep", "full_logits"])
def test_completion_logits_and_grads_equal_a_full_forward(model, wrap):
    vocab = model.config.vocab_size
    batch = _batch(vocab)
    net = _NoKeep(model) if wrap else model
    assert _takes_logits_to_keep(net) is not wrap
    weights = torch.randn(9, vocab, generator=torch.Generator().manual_seed(2))
    fwd = forward_completions(net, batch, vocab)
    assert fwd.num_tokens_B == [4, 6, 0] and fwd.row_N.tolist() == [0] * 4 + [1] * 6
    want, targets = _reference(model, batch)
    assert torch.equal(fwd.targets_N, targets)
    torch.testing.assert_close(fwd.logits_N_V, want, atol=1e-5, rtol=1e-5)
    # gradients of a weighted sum of the kept logits: same as through the full forward
    g_ours = torch.autograd.grad((fwd.logits_N_V[:9] * weights).sum(), model.lm_head.weight)[0]
    want, _ = _reference(model, batch)
    g_ref = torch.autograd.grad((want[:9] * weights).sum(), model.lm_head.weight)[0]
    torch.testing.assert_close(g_ours, g_ref, atol=1e-5, rtol=1e-5)


def test_hidden_states_through_the_head_give_the_same_logits(model):
    vocab = model.config.vocab_size
    batch = _batch(vocab)
    fwd = forward_completions(model, batch, vocab, hidden=True)
    want, _ = _reference(model, batch)
    assert fwd.logits_N_V is None and fwd.hidden_N_D.shape[0] == 10
    torch.testing.assert_close(head_logits(fwd.hidden_N_D, fwd.lm_head), want, atol=1e-5, rtol=1e-5)


def test_no_completion_token_at_all(model):
    vocab = model.config.vocab_size
    batch = PaddedBatch.from_ragged([[5, 6, 7], [8, 9]], [[], []], 0)
    fwd = forward_completions(model, batch, vocab)
    assert fwd.logits_N_V.shape == (0, vocab) and fwd.num_tokens_B == [0, 0]


@pytest.mark.parametrize("padded_rows", [0, 5])
def test_output_head_is_the_weight_itself_unless_rows_are_padded(model, padded_rows):
    """No slice (whose backward zero-fills and copies a full [V, D] gradient) when the head has
    exactly the tokenizer's rows; sliced to the vocabulary when embedding rows are padded.
    Either way the head's gradient lands on the model's weight, zero on padded rows."""
    vocab = model.config.vocab_size - padded_rows
    head = output_head(model, vocab)
    weight = model.get_output_embeddings().weight
    assert (head.weight is weight) == (padded_rows == 0)
    assert head.weight.shape == (vocab, weight.shape[1])
    h = torch.randn(3, weight.shape[1], generator=torch.Generator().manual_seed(3))
    (grad,) = torch.autograd.grad(head_logits(h, head).square().sum(), weight)
    z = h @ weight[:vocab].detach().T
    torch.testing.assert_close(grad[:vocab], 2 * z.T @ h, atol=1e-4, rtol=1e-4)
    assert not grad[vocab:].any()
