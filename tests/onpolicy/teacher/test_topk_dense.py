"""The full-vocabulary teacher rebuilt from top-k (``onpolicy.teacher.topk_dense``): hand-derived
values, exact at k = V, out-of-vocabulary ids, and the token-only form of ``sparse_rows``."""

from __future__ import annotations

import math

import pytest
import torch

from onpolicy.teacher.topk_dense import dense_from_topk
from onpolicy.teacher.vllm_teacher import sparse_rows


def _case():
    ids = torch.tensor([[3, 0]])  # p = 0.5, 0.2
    lps = torch.tensor([[math.log(0.5), math.log(0.2)]])
    return ids, lps, torch.tensor([4]), torch.tensor([math.log(0.1)])  # actual token 4: 0.1


def test_uniform_tail_by_hand():
    ids, lps, tok, tok_lp = _case()
    q = dense_from_topk(ids, lps, 6, tok, tok_lp, tail="uniform").exp()[0]
    # known {3: .5, 0: .2, 4: .1}; the rest (.2) over ids 1, 2, 5
    want = torch.tensor([0.2, 0.2 / 3, 0.2 / 3, 0.5, 0.1, 0.2 / 3])
    torch.testing.assert_close(q, want, atol=1e-6, rtol=0)


def test_renorm_tail_by_hand():
    ids, lps, tok, tok_lp = _case()
    eps = 1e-4
    q = dense_from_topk(ids, lps, 6, tok, tok_lp, tail="renorm", min_tail_mass=eps).exp()[0]
    s = (1 - eps) / 0.8
    want = torch.tensor([0.2 * s, eps / 3, eps / 3, 0.5 * s, 0.1 * s, eps / 3])
    torch.testing.assert_close(q, want, atol=1e-6, rtol=0)


def test_token_inside_top_k_counts_once_and_k_equal_v_is_exact():
    logp = torch.log_softmax(torch.randn(5, 7, generator=torch.Generator().manual_seed(0)), -1)
    top_lp, top_ids = logp.topk(3, -1)
    q = dense_from_topk(top_ids, top_lp, 7, top_ids[:, 0], top_lp[:, 0])
    torch.testing.assert_close(q.exp().sum(-1), torch.ones(5), atol=1e-6, rtol=0)
    full_lp, full_ids = logp.topk(7, -1)
    for tail in ("uniform", "renorm"):
        got = dense_from_topk(full_ids, full_lp, 7, tail=tail)
        torch.testing.assert_close(got, logp, atol=1e-6, rtol=0)


def test_ids_beyond_the_vocabulary_go_to_the_tail():
    ids = torch.tensor([[1, 9]])  # 9: an engine's padded row, outside V = 4
    lps = torch.tensor([[math.log(0.6), math.log(0.3)]])
    q = dense_from_topk(ids, lps, 4).exp()[0]
    torch.testing.assert_close(q, torch.tensor([0.4 / 3, 0.6, 0.4 / 3, 0.4 / 3]), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="tail"):
        dense_from_topk(ids, lps, 4, tail="spread")


def test_sparse_rows_k0_keeps_only_the_token():
    positions = [None, {5: (-0.1, 1)}, {7: (math.log(0.5), 1), 9: (math.log(0.1), 4)}]
    ids, lps, tok, tail = sparse_rows([positions], [1], [[5, 9]], k=0)
    assert ids.shape == (2, 0) and lps.shape == (2, 0)
    assert tok.tolist() == pytest.approx([-0.1, math.log(0.1)])
    assert tail.tolist() == [0.0, 0.0]  # log(1 - 0): nothing is in the (empty) top-k
