"""Hidden-state distillation across tokenizers: hidden states compared at the ends of aligned spans.

When the tokenizers differ there is no shared position, but the byte alignment
(``onpolicy.teacher.cross``, ``alignment.teacher_view``) splits each completion into spans that
cover the same bytes on both sides. After the last token of span ``k`` both models have read the
same prompt and the same completion bytes, so their hidden states *at that token* (the state that
has consumed it, not the one predicting it) describe the same prefix. ``WithCrossHidden`` adds

    loss_sum = objective.loss_sum + weight * sum_k d_k

over the spans ``k`` present on both sides, ``d_k`` the ``mse`` or ``cosine`` distance
(``onpolicy.losses.hidden``) between the student's states at the span's last student token
(through the trained ``HiddenProjection``) and the teacher's at its last teacher token, averaged
over the layer pairs. The span ends come from the alignment's span ids (``student_span_B`` /
``teacher_span_B``), never from decoded text. As for the same-tokenizer term, the sum joins the
objective's SUM before the trainer's one division by the objective's count.

The student's states come from the inner objective's own forward (``capture_hidden_states``); the
teacher's from its scoring forward on its own tokens (``LocalTeacher`` with ``hidden_layers`` in
cross mode: ``CrossTeacherScores.layer_hidden_L_Nt_D``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from onpolicy.errors import ConfigError
from onpolicy.hidden.layers import capture_hidden_states, pack_layers
from onpolicy.hidden.objective import WithHidden, hidden_term, projection_flops
from onpolicy.losses.hidden import HiddenLoss
from onpolicy.objectives.base import LossOutput
from onpolicy.objectives.common import PAD_ID
from onpolicy.teacher.types import CrossTeacherScores, TeacherScores
from onpolicy.types import Rollout


def span_end_rows(
    student_span_B: list[torch.Tensor],
    teacher_span_B: list[torch.Tensor],
    num_spans_B: list[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(student_rows_K, teacher_rows_K)``: for every span present on both sides, the packed
    index of its last student token and of its last teacher token.

    ``student_span_B[b]``: int64 ``[Ts_b]`` span id of each student completion token of row ``b``
    (``-1``: in no span), ``teacher_span_B[b]``: ``[Tt_b]`` the same for the teacher's tokens,
    ``num_spans_B[b]``: spans in row ``b``. Packed indices count completion tokens row-major (row
    ``b``'s token ``j`` is ``sum(Ts_<b) + j``). ``K`` = spans with tokens on both sides, in
    order (row, span).
    """
    from alignment import span_anchor_positions

    s_rows, t_rows = [], []
    s_off = t_off = 0
    for s_span, t_span, num in zip(student_span_B, teacher_span_B, num_spans_B, strict=True):
        s_span, t_span = s_span.long().cpu(), t_span.long().cpu()
        s_pos, s_ok = span_anchor_positions(s_span[None], "last", num)
        t_pos, t_ok = span_anchor_positions(t_span[None], "last", num)
        both = (s_ok & t_ok)[0]
        s_rows.append(s_pos[0][both] + s_off)
        t_rows.append(t_pos[0][both] + t_off)
        s_off, t_off = s_off + s_span.numel(), t_off + t_span.numel()
    empty = torch.zeros(0, dtype=torch.long)
    return (torch.cat(s_rows) if s_rows else empty, torch.cat(t_rows) if t_rows else empty)


def span_end_term(
    student_L_Ns_Ds: torch.Tensor,
    teacher_L_Nt_Dt: torch.Tensor,
    student_rows_K: torch.Tensor,
    teacher_rows_K: torch.Tensor,
    projection: torch.nn.Module,
    kind: HiddenLoss,
) -> torch.Tensor:
    """``sum_k d_k``: a float32 scalar (float64 for float64 inputs) with gradients to the student's
    states and the projection (the teacher's are detached).

    Shapes: ``student_L_Ns_Ds`` the student's states at its ``Ns`` completion tokens for ``L``
    layers; ``teacher_L_Nt_Dt`` the teacher's at its ``Nt`` tokens; ``student_rows_K`` /
    ``teacher_rows_K`` int64 ``[K]`` the paired span-end rows (``span_end_rows``); ``projection``
    maps ``[L, K, Ds] -> [L, K, Dt]``.
    """
    if student_rows_K.shape != teacher_rows_K.shape:
        raise ValueError(
            f"{student_rows_K.shape[0]} student rows, {teacher_rows_K.shape[0]} teacher"
        )
    s = student_L_Ns_Ds.index_select(1, student_rows_K.to(student_L_Ns_Ds.device))
    t = teacher_L_Nt_Dt.index_select(1, teacher_rows_K.to(teacher_L_Nt_Dt.device))
    return hidden_term(s, t, projection, kind)


@dataclass
class WithCrossHidden(WithHidden):
    """``inner`` (any objective; with a cross-tokenizer teacher) + ``weight`` times the span-end
    hidden term (see the module docstring). Fields, batch source and teacher output as
    ``WithHidden``'s; ``inner`` is ``gold``, ``uld``, ``next_byte`` on-policy or ``sft`` on teacher
    samples; only the loss (span ends instead of every completion position) differs."""

    def loss(self, student, rollout: Rollout, teacher_scores: TeacherScores | None) -> LossOutput:
        cross = _cross_scores(teacher_scores)
        inner_scores = teacher_scores if self.inner.needs_teacher else None
        with capture_hidden_states(student) as captured:
            out = self.inner.loss(student, rollout, inner_scores)
        tokens_B_T = rollout.to_padded(PAD_ID).completion_mask_B_T
        student_L_Ns_D = pack_layers(_own_forward(captured.calls), [s for s, _ in self.pairs],
                                     tokens_B_T)  # fmt: skip
        if student_L_Ns_D.shape[1] != sum(x.numel() for x in cross.student_span_B):
            raise ValueError(
                f"the student has {student_L_Ns_D.shape[1]} completion tokens, the alignment "
                f"{sum(x.numel() for x in cross.student_span_B)}"
            )
        s_rows, t_rows = span_end_rows(cross.student_span_B, cross.teacher_span_B,
                                       cross.num_spans_B)  # fmt: skip
        distance_sum = span_end_term(student_L_Ns_D, cross.layer_hidden_L_Nt_D, s_rows, t_rows,
                                     self.projection, self.kind)  # fmt: skip
        metrics = {**out.metrics, "hidden/distance_sum": float(distance_sum.detach()),
                   "hidden/span_ends_sum": float(s_rows.numel()),
                   **projection_flops(self.projection, s_rows.numel())}  # fmt: skip
        return LossOutput(out.loss_sum + self.weight * distance_sum, out.num_tokens, metrics)


def _own_forward(calls: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
    """The student's own forward among the captured ones: the one with gradients (a LoRA
    student's ``reference_kl`` pass runs the same module without them)."""
    graded = [c for c in calls if c[-1].requires_grad]
    chosen = graded or calls
    if len(chosen) != 1:
        raise RuntimeError(
            f"hidden-state distillation expects one forward of the student per loss, saw "
            f"{len(chosen)}"
        )
    return chosen[0]


def _cross_scores(scores: TeacherScores | None) -> CrossTeacherScores:
    if scores is None or scores.mode != "cross" or scores.cross is None:
        raise ConfigError(
            "cross-tokenizer hidden-state distillation needs cross-tokenizer teacher scores; set "
            "teacher.mode=cross (or auto with a teacher whose tokenizer differs)"
        )
    if scores.cross.layer_hidden_L_Nt_D is None:
        raise ConfigError(
            "the teacher returned no intermediate hidden states; build it with "
            "LocalTeacher(hidden_layers=...) (the trainer does when hidden.weight > 0)"
        )
    return scores.cross
