"""Cross-tokenizer hidden-state distillation (``onpolicy.hidden.cross``): the span-end math
against a float64 reference on random inputs, the span-end indices on real tokenizers (GPT-2
student, Qwen teacher; a hand-checked case with multi-byte UTF-8), and ``WithCrossHidden`` on the
tiny cross pair against states read row by row from unpadded forwards. (Bad configs:
tests/onpolicy/trainer/test_hidden_trainer.py.)"""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_cross_pair import scored_cross_pair, self_scored_rollout

from onpolicy.api import make_objective
from onpolicy.hidden.cross import WithCrossHidden, span_end_rows, span_end_term
from onpolicy.hidden.projection import HiddenProjection
from onpolicy.teacher.local import LocalTeacher
from onpolicy.trainer.step_metrics import PROJECTION_FLOPS

MAP = ((1, 2), (2, 3))


def test_span_end_rows_by_hand():
    """Two rows; a token in no span (-1) is skipped, a span missing on one side is dropped, and
    row 1's indices are offset by row 0's token counts (5 student, 4 teacher)."""
    s = [torch.tensor([0, 0, 1, -1, 2]), torch.tensor([0, 1, 1])]
    t = [torch.tensor([0, 1, 1, 2]), torch.tensor([0, 0, 1])]
    s_rows, t_rows = span_end_rows(s, t, [3, 2])
    assert s_rows.tolist() == [1, 2, 4, 5, 7]
    assert t_rows.tolist() == [0, 2, 3, 5, 6]
    s_rows, t_rows = span_end_rows([torch.tensor([0, 2])], [torch.tensor([0, 1, 2])], [3])
    assert s_rows.tolist() == [0, 1] and t_rows.tolist() == [0, 2]  # span 1: no student token


@pytest.mark.parametrize("kind", ["mse", "cosine"])
def test_span_end_term_matches_float64_reference(kind):
    """Values and gradients (student states and projection) vs a float64 loop over spans."""
    g = torch.Generator().manual_seed(0)
    L, Ns, Nt, Ds, Dt = 2, 9, 7, 5, 3
    student = torch.randn(L, Ns, Ds, generator=g, requires_grad=True)
    teacher = torch.randn(L, Nt, Dt, generator=g)
    s_rows, t_rows = torch.tensor([1, 4, 8, 2]), torch.tensor([0, 3, 6, 6])
    proj = HiddenProjection(Ds, Dt, L)
    got = span_end_term(student, teacher, s_rows, t_rows, proj, kind)
    g_student, g_w = torch.autograd.grad(got, (student, proj.maps[0].weight))

    s64 = student.detach().double().requires_grad_(True)
    w64 = [m.weight.detach().double().requires_grad_(True) for m in proj.maps]
    ref = torch.zeros((), dtype=torch.float64)
    for i, j in zip(s_rows.tolist(), t_rows.tolist(), strict=True):
        per_layer = []
        for layer in range(L):
            a, b = w64[layer] @ s64[layer, i], teacher[layer, j].double()
            if kind == "mse":
                per_layer.append(((a - b) ** 2).mean())
            else:
                per_layer.append(1 - a @ b / (a.norm() * b.norm()))
        ref = ref + torch.stack(per_layer).mean()
    r_student, r_w = torch.autograd.grad(ref, (s64, w64[0]))
    torch.testing.assert_close(got.double(), ref.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_student.double(), r_student, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(g_w.double(), r_w, rtol=1e-4, atol=1e-6)
    assert g_student[:, [0, 3, 5, 6, 7]].abs().max() == 0  # rows that end no span get nothing


@pytest.fixture(scope="module")
def real_tokenizers_gq():
    from transformers import AutoTokenizer

    from onpolicy import offline

    return tuple(AutoTokenizer.from_pretrained(offline.ALL[n]()) for n in ("gpt2", "qwen"))


def test_span_ends_on_real_tokenizers(real_tokenizers_gq):
    """GPT-2 (student) splits 日 and 本 into byte pieces, Qwen (teacher) keeps each whole; 'ï' (2
    bytes) sits inside one GPT-2 token but ends a Qwen token. The span ends select the student
    token that completes each character and the matching teacher token, and after every selected
    pair both sides have read the same bytes."""
    from alignment import teacher_view, token_offsets

    gpt2, qwen = real_tokenizers_gq
    texts = [" naïve café", " 日本 ok"]
    s_ids = [gpt2(x, add_special_tokens=False)["input_ids"] for x in texts]
    views = [teacher_view([0], ids, gpt2, qwen, ()) for ids in s_ids]
    t_ids = [v.teacher_input_ids_T[v.completion].tolist() for v in views]
    assert [gpt2.convert_ids_to_tokens(i) for i in s_ids] == [
        ["ĠnaÃ¯ve", "ĠcafÃ©"], ["Ġæ", "Ĺ", "¥", "æľ", "¬", "Ġok"]]  # fmt: skip
    assert [qwen.convert_ids_to_tokens(i) for i in t_ids] == [
        ["ĠnaÃ¯", "ve", "ĠcafÃ©"], ["ĠæĹ¥", "æľ¬", "Ġok"]]  # fmt: skip
    s_rows, t_rows = span_end_rows(
        [v.student_span_Ts for v in views], [v.teacher_span_Tt for v in views],
        [v.num_spans for v in views],
    )  # fmt: skip
    # row 0: " naïve" ends at student 0 / teacher 1, " café" at 1 / 2; row 1 (offset 2 / 3):
    # " 日" at student 2 (the byte 0xa5) / teacher 0, "本" at 4 / 1, " ok" at 5 / 2
    assert s_rows.tolist() == [0, 1, 2 + 2, 2 + 4, 2 + 5]
    assert t_rows.tolist() == [1, 2, 3 + 0, 3 + 1, 3 + 2]
    flat_s = [(r, k) for r, ids in enumerate(s_ids) for k in range(len(ids))]
    flat_t = [(r, k) for r, ids in enumerate(t_ids) for k in range(len(ids))]
    for i, j in zip(s_rows.tolist(), t_rows.tolist(), strict=True):
        (rs, ks), (rt, kt) = flat_s[i], flat_t[j]
        assert rs == rt
        s_read = token_offsets(gpt2, s_ids[rs][: ks + 1])[1]
        t_read = token_offsets(qwen, t_ids[rt][: kt + 1])[1]
        assert s_read == t_read  # the same completion bytes read on both sides
    assert token_offsets(gpt2, s_ids[1][:3])[1] == " 日".encode()


@pytest.fixture(scope="module")
def pair():
    p = scored_cross_pair()
    scorer = LocalTeacher(p.teacher, p.teacher_tokenizer, p.student_tokenizer, mode="auto",
                          hidden_layers=tuple(t for _, t in MAP))  # fmt: skip
    return p, scorer.score(p.rollout)


def _states_at_tokens(model, prompt_ids, completion_ids, layers):
    """[L, C, D] the model's states at each completion token, from an unpadded forward."""
    ids = torch.tensor([list(prompt_ids) + list(completion_ids)])
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
    return torch.stack([out.hidden_states[i][0, len(prompt_ids) :] for i in layers])


def test_teacher_states_are_at_its_own_completion_tokens(pair):
    p, scores = pair
    c = scores.cross
    want = torch.cat([
        _states_at_tokens(p.teacher, pr, co, [2, 3])
        for pr, co in zip(c.prompt_ids_B, c.completion_ids_B, strict=True)
    ], dim=1)  # fmt: skip
    assert c.layer_hidden_L_Nt_D.shape == want.shape == (2, sum(c.num_tokens_B), 128)
    torch.testing.assert_close(c.layer_hidden_L_Nt_D, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("inner", ["gold", "next_byte", "uld", "sft"])
def test_with_cross_hidden_matches_row_by_row_reference(pair, inner):
    """The term equals the float64 distance between the student's and the teacher's states read
    at the span ends from unpadded per-row forwards; the inner objective's loss is unchanged; the
    projection gets the reference's gradient."""
    p, scores = pair
    c, ro = scores.cross, p.rollout
    proj = HiddenProjection(128, 128, 2)
    obj = WithCrossHidden(make_objective(inner), MAP, 0.5, "cosine", proj)
    out = obj.loss(copy.deepcopy(p.student).requires_grad_(True), ro, scores)
    inner_out = make_objective(inner).loss(
        copy.deepcopy(p.student), ro, scores if make_objective(inner).needs_teacher else None
    )
    (g_w,) = torch.autograd.grad(out.loss_sum, proj.maps[1].weight)

    s_states = torch.cat([
        _states_at_tokens(p.student, ro.prompt_ids_B[b], ro.completion_ids_B[b], [1, 2])
        for b in range(len(ro.completion_ids_B))
    ], dim=1).double()  # fmt: skip
    t_states = c.layer_hidden_L_Nt_D.double()
    s_rows, t_rows = span_end_rows(c.student_span_B, c.teacher_span_B, c.num_spans_B)
    w = [m.weight.detach().double().requires_grad_(True) for m in proj.maps]
    a = torch.stack([s_states[k, s_rows] @ w[k].T for k in range(2)])
    b = t_states[:, t_rows]
    ref = (1 - torch.nn.functional.cosine_similarity(a, b, dim=-1)).mean(0).sum()
    (r_w,) = torch.autograd.grad(ref, w[1])
    assert out.metrics["hidden/span_ends_sum"] == len(s_rows) == sum(c.num_spans_B)
    assert out.metrics[PROJECTION_FLOPS] == 6 * (2 * 128 * 128) * len(s_rows)
    ref_value = float(ref.detach())
    assert out.metrics["hidden/distance_sum"] == pytest.approx(ref_value, rel=1e-4, abs=1e-4)
    want = float(inner_out.loss_sum.detach()) + 0.5 * ref_value
    assert float(out.loss_sum.detach()) == pytest.approx(want, rel=1e-4, abs=1e-4)
    torch.testing.assert_close(g_w.double(), 0.5 * r_w, rtol=1e-3, atol=1e-5)


def test_a_student_scored_by_itself_across_the_cross_path_gives_zero(pair):
    p, _ = pair
    model, tok = p.student, p.student_tokenizer
    ro, _ = self_scored_rollout(model, tok)
    scores = LocalTeacher(model, tok, tok, mode="cross", hidden_layers=(1, 2)).score(ro)
    obj = WithCrossHidden(make_objective("next_byte"), ((1, 1), (2, 2)), 1.0, "mse",
                          HiddenProjection(128, 128, 0))  # fmt: skip
    out = obj.loss(copy.deepcopy(model).requires_grad_(True), ro, scores)
    assert out.metrics["hidden/span_ends_sum"] > 0
    assert abs(out.metrics["hidden/distance_sum"]) < 1e-8
