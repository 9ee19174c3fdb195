"""Compatibility doctor: can this teacher distill into this student, and with which loss?

``run_doctor`` renders the same conversations through both chat templates and tokenizers and
returns a short table: same tokenizer or not (by content), tokenizer and padded embedding sizes,
BOS/EOS/end-of-turn per side, how digits and whitespace split, vocabulary overlap after byte
normalization, alignment coverage of the assistant replies (share of 1:1 spans, mean tokens per
span), the recommended loss, and warnings for known traps. Its command, ``onpolicy doctor``, is
``onpolicy.doctor`` (which reads ``--data`` with the one prompt loader, ``onpolicy.data``).

A conversation is a list of ``{"role", "content"}`` messages; a final assistant message is the
reply that gets aligned. Built-in conversations (``DEFAULT_CONVERSATIONS``) when none are given.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alignment.tokens.chat import turn_end_id
from alignment.tokens.offsets import token_bytes_table
from alignment.tokens.vocab_map import build_vocab_map, same_tokenizer
from alignment.view import teacher_view

DEFAULT_CONVERSATIONS = [
    [
        {"role": "user", "content": "What is 1234 * 5678?"},
        {"role": "assistant", "content": "1234 * 5678 = 7,006,652."},
    ],
    [
        {"role": "user", "content": "Write a Python function that squares a number."},
        {"role": "assistant", "content": "def square(x):\n    return x ** 2\n"},
    ],
    [
        {"role": "user", "content": "Say hello in Russian, Chinese and with an emoji."},
        {"role": "assistant", "content": "Привет! 你好！ 👋🏽  Hello\t\tagain.\r\n"},
    ],
]
PROBES = {"digits": "31415926", "spaces": "a    b", "tabs+newlines": "\t\t\n\n"}
# Recommendation thresholds (shares in [0, 1]); see ``recommend``.
MIN_VOCAB_OVERLAP = 0.5
MIN_ONE_TO_ONE = 0.5


def _padded_vocab(path: Any) -> str:
    if not isinstance(path, str | Path):
        return "-"
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(path)
    except Exception:  # a tokenizer-only folder
        return "-"
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    size = getattr(text_config, "vocab_size", None)
    return "-" if size is None else f"{size:,}"


def _split(tokenizer: Any, text: str) -> str:
    table = token_bytes_table(tokenizer)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return "|".join(repr(table.bytes_V[i].decode("utf-8", "replace"))[1:-1] for i in ids)


def _name(tokenizer: Any, token_id: int | None) -> str:
    return "-" if token_id is None else f"{tokenizer.convert_ids_to_tokens(token_id)} ({token_id})"


def coverage(conversations, student: Any, teacher: Any) -> tuple[float, float, float, int]:
    """(share of 1:1 spans, student tokens/span, teacher tokens/span, spans) over the replies."""
    one, s_tokens, t_tokens, spans = 0, 0, 0, 0
    for conv in conversations:
        if not conv or conv[-1]["role"] != "assistant":
            continue
        reply = student(conv[-1]["content"], add_special_tokens=False)["input_ids"]
        view = teacher_view((), reply, student, teacher)  # only the replies are aligned
        S = view.num_spans
        s_count = view.student_span_Ts[view.student_span_Ts >= 0].bincount(minlength=S)
        t_count = view.teacher_span_Tt[view.teacher_span_Tt >= 0].bincount(minlength=S)
        one += int(((s_count == 1) & (t_count == 1)).sum())
        s_tokens, t_tokens, spans = (
            s_tokens + int(s_count.sum()),
            t_tokens + int(t_count.sum()),
            spans + S,
        )
    if spans == 0:
        return 1.0, 1.0, 1.0, 0
    return one / spans, s_tokens / spans, t_tokens / spans, spans


def recommend(same: bool, overlap: float, one_to_one: float, byte_exact: bool = False) -> str:
    """The loss to start with: same vocabulary -> a divergence on full logits; two tokenizers
    whose tokens spell bytes (byte-level BPE, SentencePiece with byte fallback) -> the next-byte
    divergence (exact next-byte marginals at shared boundaries, no vocabulary map); otherwise
    (WordPiece: tokens are not byte-exact) large byte-matched vocabulary overlap -> GOLD-style
    hybrid; mostly 1:1 spans -> ULD on span distributions; else the sampled-token span reward."""
    if same:
        return "same-vocab divergence (reverse KL / GKD on full logits)"
    if byte_exact:
        return "next-byte divergence (objective next_byte: byte marginals, no vocabulary map)"
    if overlap >= MIN_VOCAB_OVERLAP:
        return "GOLD-style hybrid (matched vocabulary by JSD, the rest by ULD)"
    if one_to_one >= MIN_ONE_TO_ONE:
        return "ULD on span distributions"
    return "sampled-token span reward (chain-rule span log-probs)"


def _warnings(student: Any, teacher: Any, s_eot: int | None, t_eot: int | None) -> list[str]:
    out = []
    s_stop, t_stop = student.convert_ids_to_tokens(s_eot), teacher.convert_ids_to_tokens(t_eot)
    if s_stop != t_stop:
        out.append(
            f"different end-of-turn tokens: student {s_stop!r}, teacher {t_stop!r}; teacher_view "
            "maps them by role (the student's stop is scored as the teacher's end of turn)"
        )
    for side, tok in (("student", student), ("teacher", teacher)):
        if not tok.chat_template:
            out.append(
                f"the {side} has no chat template (a base model?): it sees a plain "
                "'role: content' rendering it never saw in training; prefer an instruct model"
            )
            continue
        text = tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)
        if tok.bos_token and text.startswith(tok.bos_token):
            ids = tok(text)["input_ids"]
            if ids[:2] == [tok.bos_token_id] * 2:
                out.append(
                    f"the {side}'s template renders {tok.bos_token} and the tokenizer adds another:"
                    " tokenize rendered chats with add_special_tokens=False (onpolicy does)"
                )
    if teacher.chat_template and student.chat_template != teacher.chat_template:
        out.append(
            "the teacher is prompted with its own template, not the student's: check it is the"
            " template the teacher was trained with (a base model's tokenizer may ship one it"
            " never saw)"
        )
    return out


def _load(model: Any) -> Any:
    if isinstance(model, str | Path):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(model)
    return model


def run_doctor(
    teacher: Any, student: Any, conversations: Sequence[Sequence[dict[str, str]]] | None = None
) -> str:
    """The doctor's report, as text, for two model/tokenizer folders (or loaded tokenizers; the
    padded embedding size is then shown as ``-``) over ``conversations`` (message lists; the
    built-in ones when None)."""
    t_tok, s_tok = _load(teacher), _load(student)
    conversations = DEFAULT_CONVERSATIONS if conversations is None else conversations
    same = same_tokenizer(s_tok, t_tok)
    vmap = build_vocab_map(s_tok, t_tok)
    matched = len(vmap.student_ids_M)
    s_size, t_size = len(token_bytes_table(s_tok).bytes_V), len(token_bytes_table(t_tok).bytes_V)
    one, s_per, t_per, spans = coverage(conversations, s_tok, t_tok)
    s_eot, t_eot = turn_end_id(s_tok), turn_end_id(t_tok)
    rows = [
        ("tokenizer size / padded embeddings", f"{s_size:,} / {_padded_vocab(student)}",
         f"{t_size:,} / {_padded_vocab(teacher)}"),
        ("BOS", _name(s_tok, s_tok.bos_token_id), _name(t_tok, t_tok.bos_token_id)),
        ("EOS", _name(s_tok, s_tok.eos_token_id), _name(t_tok, t_tok.eos_token_id)),
        ("end of turn (stop)", _name(s_tok, s_eot), _name(t_tok, t_eot)),
        ("chat template", "yes" if s_tok.chat_template else "no",
         "yes" if t_tok.chat_template else "no"),
        *[(f"{k} {v!r}", _split(s_tok, v), _split(t_tok, v)) for k, v in PROBES.items()],
        ("vocab matched by bytes", f"{matched:,} ({matched / s_size:.0%})",
         f"{matched:,} ({matched / t_size:.0%})"),
        ("tokens per span (replies)", f"{s_per:.2f}", f"{t_per:.2f}"),
    ]  # fmt: skip
    w = [max(len(r[i]) for r in [("", "student", "teacher"), *rows]) for i in range(3)]
    lines = [f"| {'':<{w[0]}} | {'student':<{w[1]}} | {'teacher':<{w[2]}} |"]
    lines.append(f"|{'-' * (w[0] + 2)}|{'-' * (w[1] + 2)}|{'-' * (w[2] + 2)}|")
    lines += [f"| {a:<{w[0]}} | {b:<{w[1]}} | {c:<{w[2]}} |" for a, b, c in rows]
    overlap = matched / s_size
    byte_exact = token_bytes_table(s_tok).byte_exact and token_bytes_table(t_tok).byte_exact
    lines += [
        "",
        f"same tokenizer (by content): {'yes' if same else 'no'}",
        f"alignment coverage: {one:.0%} of {spans} spans are 1:1 "
        f"({len(conversations)} conversations)",
        f"recommended loss: {recommend(same, overlap, one, byte_exact)}",
    ]
    lines += [f"warning: {m}" for m in _warnings(s_tok, t_tok, s_eot, t_eot)]
    return "\n".join(lines)
