"""The teacher's view: its own template, the completion's exact bytes, stop tokens by role."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alignment import collate_views, encode_bytes, render_messages, teacher_view
from alignment.errors import AlignmentError
from alignment.tokens.chat import end_of_turn_id, stop_ids, turn_end_id
from alignment.tokens.offsets import token_bytes_table, token_offsets

MESSAGES = [{"role": "user", "content": "What is the capital of France? Answer briefly."}]
ANSWER = "The capital of France is Paris 🇫🇷.\nПариж — 巴黎."


def span_bytes(tokenizer, ids, spans, k):
    table = token_bytes_table(tokenizer)
    return b"".join(
        b"" if table.special_V[i] else table.bytes_V[i]
        for i, s in zip(ids, spans.tolist(), strict=True)
        if s == k
    )


@pytest.mark.parametrize(("student", "teacher"), [("smollm2", "gemma3"), ("smollm2", "qwen")])
def test_teacher_view_of_a_stopped_completion(real_tokenizers, student, teacher):
    s_tok, t_tok = real_tokenizers[student], real_tokenizers[teacher]
    completion = [*s_tok(ANSWER, add_special_tokens=False)["input_ids"], s_tok.eos_token_id]
    view = teacher_view(render_messages(t_tok, MESSAGES), completion, s_tok, t_tok)
    ids = view.teacher_input_ids_T.tolist()
    # the prompt is the teacher's own template rendering, not the student's
    assert ids[: view.completion.start] == render_messages(t_tok, MESSAGES)
    assert t_tok.decode(ids[: view.completion.start]).count("France") == 1
    t_completion = ids[view.completion]
    eot = {"gemma3": "<end_of_turn>", "qwen": "<|im_end|>"}[teacher]
    assert view.stopped and t_completion[-1] == t_tok.convert_tokens_to_ids(eot)
    assert t_tok.decode(t_completion[:-1]) == ANSWER
    # every span covers the same bytes on both sides; the stop pair is the last, zero-byte span
    assert view.student_span_Ts[-1] == view.teacher_span_Tt[-1] == view.num_spans - 1
    for k in range(view.num_spans - 1):
        a = span_bytes(s_tok, completion, view.student_span_Ts, k)
        b = span_bytes(t_tok, t_completion, view.teacher_span_Tt, k)
        assert a == b != b""
    assert len(view.teacher_span_Tt) == len(t_completion)


def test_truncated_completion_with_invalid_utf8(real_tokenizers):
    """GPT-2-style byte tokens cut an emoji: the teacher gets the same bytes, not U+FFFD."""
    s_tok, t_tok = real_tokenizers["smollm2"], real_tokenizers["gemma3"]
    full = s_tok("ok 👨‍👩‍👧", add_special_tokens=False)["input_ids"]
    _, raw_full = token_offsets(s_tok, full)
    for cut in range(1, len(full)):
        _, raw = token_offsets(s_tok, full[:cut])
        view = teacher_view(render_messages(t_tok, MESSAGES), full[:cut], s_tok, t_tok)
        assert not view.stopped
        t_ids = view.teacher_input_ids_T[view.completion].tolist()
        assert token_offsets(t_tok, t_ids)[1] == raw == raw_full[: len(raw)]


def test_encode_bytes_invalid_utf8_round_trip(real_tokenizers):
    data = "añb".encode() + b"\xf0\x9f" + b"c\xff"
    for name in ("gpt2", "gemma3"):
        tok = real_tokenizers[name]
        ids, off = encode_bytes(tok, data)
        assert token_offsets(tok, ids)[1] == data
        assert off[0, 0] == 0 and off[-1, 1] == len(data)
        assert (off[1:, 0] == off[:-1, 1]).all()


@pytest.mark.parametrize("name", ["gpt2", "gemma3"])
@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=40))
def test_encode_random_bytes_partitions(real_tokenizers, name, data):
    tok = real_tokenizers[name]
    ids, off = encode_bytes(tok, data)
    assert token_offsets(tok, ids)[1] == data
    assert off[:, 1].tolist() == (off[:, 0] + token_bytes_table(tok).length_V[ids]).tolist()
    if data:
        assert off[0, 0] == 0 and off[-1, 1] == len(data) and (off[1:, 0] == off[:-1, 1]).all()


def test_empty_completion_and_stop_only(real_tokenizers):
    s_tok, t_tok = real_tokenizers["smollm2"], real_tokenizers["gemma3"]
    view = teacher_view(render_messages(t_tok, MESSAGES), [], s_tok, t_tok)
    assert view.num_spans == 0 and view.completion.stop == view.completion.start
    view = teacher_view(render_messages(t_tok, MESSAGES), [s_tok.eos_token_id], s_tok, t_tok)
    assert view.num_spans == 1 and view.teacher_input_ids_T[-1].item() == 106


def test_teacher_without_template_is_an_error_and_ends_its_turn_with_eos(real_tokenizers):
    s_tok, t_tok = real_tokenizers["smollm2"], real_tokenizers["gpt2"]
    with pytest.raises(AlignmentError, match="no chat template") as err:
        render_messages(t_tok, MESSAGES)
    assert "\n" not in str(err.value)
    assert end_of_turn_id(t_tok) is None and turn_end_id(t_tok) == t_tok.eos_token_id
    assert stop_ids(t_tok) == (t_tok.eos_token_id,)
    prompt = t_tok("Q: capital of France?\nA:", add_special_tokens=False)["input_ids"]
    completion = [*s_tok(" Paris.", add_special_tokens=False)["input_ids"], 2]
    view = teacher_view(prompt, completion, s_tok, t_tok)
    text = t_tok.decode(view.teacher_input_ids_T)
    assert text == "Q: capital of France?\nA: Paris.<|endoftext|>"


def test_stop_ids_add_the_generation_config_eos_and_extra_in_order(real_tokenizers):
    tok = real_tokenizers["gemma3"]

    model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=[1, 106, 7]))
    eot = end_of_turn_id(tok)
    assert eot == tok.convert_tokens_to_ids("<end_of_turn>")
    assert stop_ids(tok, model, extra=(9, 1)) == (tok.eos_token_id, eot, 7, 9)


def test_collate_views_places_spans_on_sequence_positions(real_tokenizers):
    s_tok, t_tok = real_tokenizers["smollm2"], real_tokenizers["gemma3"]
    answers = ["Paris.", "It is Paris, of course! 🇫🇷"]
    completions = [[*s_tok(a, add_special_tokens=False)["input_ids"], 2] for a in answers]
    views = [teacher_view(render_messages(t_tok, MESSAGES), c, s_tok, t_tok) for c in completions]
    prompt_lens, student_T = [3, 5], 5 + max(len(c) for c in completions) + 2
    t_ids, t_att, al = collate_views(views, prompt_lens, student_T, t_tok.pad_token_id)
    for b, view in enumerate(views):
        n = len(view.teacher_input_ids_T)
        assert t_ids[b, :n].tolist() == view.teacher_input_ids_T.tolist()
        assert t_att[b].sum() == n and (t_ids[b, n:] == t_tok.pad_token_id).all()
        p, k = prompt_lens[b], len(completions[b])
        assert al.student_span_B_Ts[b, p : p + k].tolist() == view.student_span_Ts.tolist()
        assert (al.student_span_B_Ts[b, :p] == -1).all()
        assert (al.student_span_B_Ts[b, p + k :] == -1).all()
        assert al.teacher_span_B_Tt[b, view.completion].tolist() == view.teacher_span_Tt.tolist()
        assert (al.teacher_span_B_Tt[b, : view.completion.start] == -1).all()
        assert al.num_spans_B[b] == view.num_spans
    with pytest.raises(AlignmentError, match="exceed student_T"):
        collate_views(views, prompt_lens, 4, 0)
