"""Hidden-state distillation: the distances, layer maps, and ``WithHidden`` on tiny real models
(a 64-wide 2-layer student, a 128-wide 3-layer teacher, one tokenizer) against a float64
reference computed row by row from the unpadded sequences."""

from __future__ import annotations

import copy

import pytest
import torch

from onpolicy.api import completion_rollout, make_objective
from onpolicy.errors import ConfigError
from onpolicy.hidden.layers import default_layer_map, layer_map
from onpolicy.hidden.objective import WithHidden
from onpolicy.hidden.projection import HiddenProjection
from onpolicy.losses.hidden import hidden_distance
from onpolicy.models import load_model, load_tokenizer
from onpolicy.teacher.local import LocalTeacher
from onpolicy.tiny import tiny_model_dir
from onpolicy.types import Prompt

PAIRS = [
    ("What is 2 plus 2?", "4, of course."),
    ("Hi", "Hello! How can I help?"),
    ("Name a colour.", "Blue."),
]
MAP = ((1, 2), (2, 3))  # student layer -> teacher layer (0 = embeddings)


def test_distances_by_hand():
    s = torch.tensor([[[1.0, 0.0], [3.0, 4.0]]])  # (L=1, N=2, D=2)
    t = torch.tensor([[[0.0, 1.0], [3.0, 4.0]]])
    torch.testing.assert_close(hidden_distance(s, t, "mse"), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(hidden_distance(s, t, "cosine"), torch.tensor([1.0, 0.0]))
    two = torch.cat([s, 2 * s])  # L=2: the mean over layers
    torch.testing.assert_close(
        hidden_distance(two, torch.cat([t, t]), "mse"), torch.tensor([(1 + 2.5) / 2, 12.5 / 2])
    )


@pytest.mark.parametrize("kind", ["mse", "cosine"])
def test_distance_gradients_match_float64(kind):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(3, 5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(3, 5, 7, generator=g, dtype=torch.float64)
    got = hidden_distance(s.float(), t.float(), kind).sum()
    (g_got,) = torch.autograd.grad(got, s)
    if kind == "mse":
        ref = ((s - t) ** 2).mean(-1).mean(0).sum()
    else:
        ref = (1 - torch.nn.functional.cosine_similarity(s, t, dim=-1)).mean(0).sum()
    (g_ref,) = torch.autograd.grad(ref, s)
    torch.testing.assert_close(got.double(), ref.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_got, g_ref, rtol=1e-4, atol=1e-6)


def test_default_layer_map_is_evenly_spaced():
    assert default_layer_map(2, 4) == ((1, 2), (2, 4))
    assert default_layer_map(2, 3) == ((1, 2), (2, 3))
    assert default_layer_map(3, 3) == ((1, 1), (2, 2), (3, 3))
    assert default_layer_map(3, 12) == ((1, 4), (2, 8), (3, 12))
    assert layer_map([[0, 0], [2, 3]], 2, 3) == ((0, 0), (2, 3))
    with pytest.raises(ConfigError, match=r"teacher index 4 is outside 0..3"):
        layer_map([[1, 4]], 2, 3)
    with pytest.raises(ConfigError, match="not a \\[student, teacher\\] pair"):
        layer_map([[1]], 2, 3)


def test_identity_projection_init():
    p = HiddenProjection(3, 5, 2, init="identity")
    x = torch.randn(2, 4, 3)
    torch.testing.assert_close(p(x)[..., :3], x)
    assert p(x)[..., 3:].abs().max() == 0
    assert HiddenProjection(4, 4, 0)(x[..., :2].repeat(1, 1, 2)).shape == (2, 4, 4)


@pytest.fixture(scope="module")
def models():
    tpath = tiny_model_dir("small", "bpe", seed=1, pretrain_steps=300)
    tok = load_tokenizer(tpath)
    student = load_model(tiny_model_dir("tiny", "bpe", seed=2, pretrain_steps=100))
    return student, tok, load_model(tpath, trainable=False)


def _rollout(tok, pairs=PAIRS):
    prompts = [Prompt(messages=({"role": "user", "content": q},)) for q, _ in pairs]
    return completion_rollout(prompts, [a for _, a in pairs], tok)


def _wrapped(inner_name, kind, weight, seed=0, **inner):
    torch.manual_seed(seed)
    proj = HiddenProjection(64, 128, len(MAP))
    return WithHidden(make_objective(inner_name, **inner), MAP, weight, kind, proj)


def _reference_hidden(student, teacher, proj, ro, kind):
    """float64, one unpadded row at a time, positions len(prompt)-1 .. end-1 picked by hand."""
    s64, w64 = copy.deepcopy(student).double(), [m.weight.double() for m in proj.maps]
    total = torch.zeros((), dtype=torch.float64)
    for p, c in zip(ro.prompt_ids_B, ro.completion_ids_B, strict=True):
        ids = torch.tensor([p + c])
        hs = s64(input_ids=ids, output_hidden_states=True).hidden_states
        with torch.no_grad():
            ht = teacher(input_ids=ids, output_hidden_states=True).hidden_states
        cols = slice(len(p) - 1, len(p) + len(c) - 1)
        for (si, ti), w in zip(MAP, w64, strict=True):
            a, b = hs[si][0, cols] @ w.T, ht[ti][0, cols].double()
            if kind == "mse":
                d = ((a - b) ** 2).mean(-1)
            else:
                d = 1 - (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))
            total = total + d.sum() / len(MAP)
    return total, s64, w64


@pytest.mark.parametrize(("inner", "kind"), [("supervised_kd", "mse"), ("reverse_kl", "cosine")])
def test_value_and_gradients_match_a_float64_reference(models, inner, kind):
    student, tok, teacher = models
    ro = _rollout(tok)
    obj = _wrapped(inner, kind, weight=0.7)
    scores = LocalTeacher(teacher, tok, tok, mode="same", hidden_layers=(2, 3)).score(ro)
    assert scores.layer_hidden_L_N_D.shape == (2, sum(map(len, ro.completion_ids_B)), 128)
    student.zero_grad(set_to_none=True)
    out = obj.loss(student, ro, scores)
    out.loss_sum.backward()
    plain = obj.inner.loss(student, ro, scores).loss_sum.detach()
    ref, s64, w64 = _reference_hidden(student, teacher, obj.projection, ro, kind)
    torch.testing.assert_close(
        out.metrics["hidden/distance_sum"], float(ref.detach()), rtol=1e-4, atol=1e-5
    )
    torch.testing.assert_close(
        out.loss_sum.detach().double(), plain.double() + 0.7 * ref.detach(), rtol=1e-5, atol=1e-5
    )
    # gradients of the hidden term alone: the whole loss's minus the logit objective's
    got_s = [p.grad.clone() for p in student.parameters()]
    got_w = [m.weight.grad.clone() for m in obj.projection.maps]
    student.zero_grad(set_to_none=True)
    obj.inner.loss(student, ro, scores).loss_sum.backward()
    got_s = [g - p.grad for g, p in zip(got_s, student.parameters(), strict=True)]
    student.zero_grad(set_to_none=True)
    for w in w64:
        w.retain_grad()
    (0.7 * ref).backward()
    assert max(g.abs().max() for g in got_s) > 1e-4  # the term moves the student
    for g, p in zip(got_s, s64.parameters(), strict=True):  # None: a weight the term never uses
        ref_g = torch.zeros_like(p) if p.grad is None else p.grad
        torch.testing.assert_close(g.double(), ref_g, rtol=2e-3, atol=3e-5)
    for g, w in zip(got_w, w64, strict=True):
        torch.testing.assert_close(g.double(), w.grad, rtol=2e-3, atol=1e-6)


def test_sum_over_rows_is_additive_so_padding_and_splits_do_not_matter(models):
    """The batch's hidden sum equals the sum of each row's alone: prompt and padding positions
    never count (the rows pad differently in the batch and alone), so accumulation over
    micro-batches and processes, normalized once by the global count, gives the same loss."""
    student, tok, teacher = models
    obj = _wrapped("reverse_kl", "mse", weight=1.0)
    t = LocalTeacher(teacher, tok, tok, mode="same", hidden_layers=(2, 3))
    whole = _rollout(tok)
    together = obj.loss(student, whole, t.score(whole)).metrics["hidden/distance_sum"]
    alone = 0.0
    for pair in PAIRS:
        ro = _rollout(tok, [pair])
        alone += obj.loss(student, ro, t.score(ro)).metrics["hidden/distance_sum"]
    assert together == pytest.approx(alone, rel=1e-5)


def test_a_student_equal_to_the_teacher_gives_zero(models):
    _, tok, teacher = models
    ro = _rollout(tok)
    scores = LocalTeacher(teacher, tok, tok, mode="same", hidden_layers=(1, 3)).score(ro)
    obj = WithHidden(
        make_objective("sft"), ((1, 1), (3, 3)), 1.0, "cosine", HiddenProjection(128, 128, 0)
    )
    out = obj.loss(copy.deepcopy(teacher).requires_grad_(True), ro, scores)
    assert abs(out.metrics["hidden/distance_sum"]) < 1e-4


def test_cross_tokenizer_teacher_returns_states_at_its_own_tokens(models):
    """Across tokenizers the states come back in the cross view (``onpolicy.hidden.cross``),
    one row per teacher completion token, not at the student's positions."""
    _, tok, teacher = models
    char_tok = load_tokenizer(tiny_model_dir("tiny", "char", seed=0))
    ro = _rollout(char_tok)
    scores = LocalTeacher(teacher, tok, char_tok, mode="auto", hidden_layers=(1,)).score(ro)
    assert scores.mode == "cross" and scores.layer_hidden_L_N_D is None
    assert scores.cross.layer_hidden_L_Nt_D.shape[:2] == (1, sum(scores.cross.num_tokens_B))


def test_chunked_objective_and_a_lora_student_get_the_same_term(models):
    """The term reads the objective's own forward: a chunked divergence (hidden states + head,
    ``logits_to_keep=1``) and a PEFT LoRA student (hooks on the PEFT wrapper) give the dense
    objective's hidden sum; LoRA gradients reach the adapters only."""
    from onpolicy.models import LoraSpec, apply_lora

    student, tok, teacher = models
    ro = _rollout(tok)
    scores = LocalTeacher(teacher, tok, tok, mode="same", hidden_layers=(2, 3)).score(ro)
    heads = LocalTeacher(teacher, tok, tok, "same", hidden=True, hidden_layers=(2, 3)).score(ro)
    dense = _wrapped("reverse_kl", "mse", 1.0).loss(student, ro, scores)
    chunked = _wrapped("reverse_kl", "mse", 1.0, chunked=True).loss(student, ro, heads)
    assert chunked.metrics["hidden/distance_sum"] == pytest.approx(
        dense.metrics["hidden/distance_sum"], rel=1e-5
    )
    lora = apply_lora(copy.deepcopy(student), LoraSpec(rank=4, alpha=8.0))
    out = _wrapped("reverse_kl", "mse", 1.0).loss(lora, ro, scores)
    assert out.metrics["hidden/distance_sum"] == pytest.approx(
        dense.metrics["hidden/distance_sum"], rel=1e-5
    )  # LoRA B starts at zero: the student's function is unchanged
    out.loss_sum.backward()
    trained = {n for n, p in lora.named_parameters() if p.grad is not None}
    assert trained and all("lora_" in n for n in trained)
