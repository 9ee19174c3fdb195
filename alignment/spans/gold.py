"""Cross-tokenizer losses over aligned spans: pure ULD and the GOLD-style hybrid (one module; its
row kernel is the private ``alignment.spans._gold_rows``).

Each side gives its logits on its own tokens and a span id per token (``alignment.SideLogits``).
For every span ``k`` that has tokens on both sides, each side's *span distribution* is formed as
in ``alignment.spans.chain_rule`` (anchor token's next-token distribution at temperature
``tau``, times the chain-rule probability of the span's other tokens, unnormalized):

    a_k = P_student(rest of span k) * softmax(student_logits[anchor_s - 1] / tau_s)   [V_s]
    b_k = P_teacher(rest of span k) * softmax(teacher_logits[anchor_t - 1] / tau_t)   [V_t]

* ``span_uld_loss``: ``ULD(a_k, b_k)`` (sorted L1, ``alignment.spans.uld``).
* ``gold_loss``: ``matched_weight * GJSD_beta(a_k[ms], b_k[mt])
  + unmatched_weight * ULD(a_k without ms, b_k without mt)``, where ``ms[i]``/``mt[i]`` are the
  student/teacher ids of the ``i``-th matched vocabulary pair (same bytes;
  ``alignment.tokens.vocab_map``).
  This holds where the span's two anchor tokens are themselves a matched pair: then ``a_k[ms[i]]``
  and ``b_k[mt[i]]`` are the same event (``ms[i]`` followed by the same rest of the span). Where
  the anchors spell different bytes (a merged student token ``+4`` against a teacher's ``+``
  ``4``), ``a_k["+"]`` is "the span is ``+`` alone" but ``b_k["+"]`` is "``+`` then ``4``": the
  vocabulary pairs would push the student off its merged tokens. There the only known pair is
  the two anchors (both equal the span's probability): ``ms = [anchor_s]``, ``mt = [anchor_t]``.
  ``GJSD_beta`` is ``alignment.divergence.gjsd_measure`` (GKD's/TRL's convention, with the KL
  for positive measures: restricted span distributions do not sum to 1). The weights are
  explicit (TRL's adaptive choice is ``matched_weight = M / V_t``).
* ``gold_prefix_loss``: the same, but each matched pair compares the same *event* on both sides,
  the prefix marginal at the span start ``M(beta_i) = sum_{w : bytes(w) starts with beta_i} P(w)``
  (``beta_i`` the pair's bytes). With token probabilities a char-level teacher's ``P("+")`` means
  "the text goes on with ``+``" but a BPE student's ``P("+")`` "a bare ``+`` token" (its ``+4``,
  ``+0=1`` ... are the rest of that event). Both sides are at a token boundary at a span start, so
  the first anchor rows are used without the chain-rule scale of the span's other tokens: a span
  where the student went off-track weighs no more than any other, and with ``0 < beta < 1`` each
  span's term is bounded. The unmatched part is the same ULD (bounded by 2 per span).

Memory and speed: no [spans x V] tensor is kept. A custom autograd function
(``_gold_rows.SpanDivergence``) walks the span rows a chunk at a time (``CHUNK_ELEMS``,
sized for a core's L2 cache; on CPU the chunks run on torch's thread count, ``alignment.cpu``),
gathers only the rows it needs (anchor rows, and the rows predicting a span's other tokens for
the chain-rule scale; a 1:1 span needs none) into buffers reused between calls, sorts with
numpy's SIMD sort on CPU (``alignment.spans.uld``), and keeps for backward one int8 sign per
student vocabulary entry per span (+ one float per matched pair). The backward recomputes the
softmax of those rows and writes each gradient row once, into a fresh gradient laid on huge
pages on CPU (``alignment.cpu.fresh_empty``). The teacher gets no gradient.
"""

from __future__ import annotations

import dataclasses

import torch

from alignment.errors import AlignmentError
from alignment.spans._byte_mass import matched_prefix_gjsd
from alignment.spans._gold_rows import KernelSpec, RowPlan, SpanDivergence
from alignment.spans.chain_rule import Anchor, count_spans, span_anchor_positions
from alignment.spans.uld import Reduction, reduce_rows
from alignment.tokens.byte_trie import ByteTrie
from alignment.types import SideLogits, SpanLossTerms

# rows per chunk = CHUNK_ELEMS // vocabulary: 2 MiB of float32, one thread's work at a time
# (alignment.cpu.run_chunks), so a chunk's rows stay in a core's L2 cache between the passes over
# them (gather, softmax, scale, sort keys); measured against larger chunks in
# benchmarks/RESULTS-alignment.md; the same chunks at any thread count: the same values
CHUNK_ELEMS = 1 << 19


def _check_side(side: SideLogits, name: str) -> None:
    shape = side.logits_B_T_V.shape
    if side.logits_B_T_V.dim() != 3 or side.input_ids_B_T.shape != shape[:2]:
        raise AlignmentError(
            f"{name}: logits {tuple(shape)} must be [B, T, V] and input_ids "
            f"{tuple(side.input_ids_B_T.shape)} must be [B, T]"
        )
    if side.span_B_T.shape != shape[:2]:
        raise AlignmentError(f"{name}: span ids {tuple(side.span_B_T.shape)} must be [B, T]")
    if side.temperature <= 0:
        raise AlignmentError(f"{name}: temperature={side.temperature} must be > 0")
    if side.span_B_T.numel() and bool((side.span_B_T[:, 0] >= 0).any()):
        raise AlignmentError(f"{name}: token 0 is in a span but nothing predicts it; give it -1")


def _side_plan(side: SideLogits, S: int, anchor: Anchor, sel_B_S: torch.Tensor) -> RowPlan:
    """Index tensors of one side for the spans where ``sel_B_S`` (no [.., V] work here)."""
    span = side.span_B_T.long()
    B, T = span.shape
    pos_B_S, _ = span_anchor_positions(span, anchor, S)
    # [B, T]; the padding column keeps gather valid when S == 0 (tokens with span -1 are unused)
    anchor_of_token = torch.nn.functional.pad(pos_B_S, (0, 1)).gather(1, span.clamp(min=0))
    rest = (span >= 0) & (torch.arange(T, device=span.device) != anchor_of_token)
    b, t = rest.nonzero(as_tuple=True)
    index_of_span = torch.full((B * S,), -1, dtype=torch.long, device=span.device)
    sel = sel_B_S.reshape(-1).nonzero().squeeze(1)
    index_of_span[sel] = torch.arange(sel.shape[0], device=span.device)
    rest_span = index_of_span[b * S + span[b, t]]
    keep = rest_span >= 0  # rest tokens of spans that count
    b, t = b[keep], t[keep]
    rows_B_S = torch.arange(B, device=span.device).unsqueeze(1) * T + pos_B_S - 1
    return RowPlan(
        anchor_rows_R=rows_B_S.reshape(-1)[sel],
        anchor_ids_R=side.input_ids_B_T.long().gather(1, pos_B_S).reshape(-1)[sel],
        rest_rows_N=b * T + t - 1,
        rest_ids_N=side.input_ids_B_T[b, t].long(),
        rest_span_N=rest_span[keep],
    )


def _check_matched(ms: torch.Tensor, mt: torch.Tensor, Vs: int, Vt: int) -> None:
    if ms.dim() != 1 or ms.shape != mt.shape:
        raise AlignmentError(
            f"matched ids must be two 1-D tensors of the same length, got {tuple(ms.shape)} "
            f"and {tuple(mt.shape)}"
        )
    for ids, V, name in ((ms, Vs, "student"), (mt, Vt, "teacher")):
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= V):
            raise AlignmentError(
                f"matched {name} ids must lie in [0, {V}); got [{int(ids.min())}, "
                f"{int(ids.max())}]: build the vocabulary map from the same tokenizers"
            )


def _with_matched(spec: KernelSpec, ms, mt) -> KernelSpec:
    """Pairs sorted by student id (contiguous-ish gathers)."""
    order = torch.argsort(ms)
    return dataclasses.replace(spec, matched_student_M=ms[order], matched_teacher_M=mt[order])


def _validate(
    student: SideLogits,
    teacher: SideLogits,
    ms: torch.Tensor | None,
    mt: torch.Tensor | None,
    beta: float,
    top_k: int | None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Check the arguments of ``gold_terms``; the matched ids as int64, or ``None`` for none."""
    _check_side(student, "student")
    _check_side(teacher, "teacher")
    B, Vs, Vt = (
        student.logits_B_T_V.shape[0],
        student.logits_B_T_V.shape[-1],
        teacher.logits_B_T_V.shape[-1],
    )
    if teacher.logits_B_T_V.shape[0] != B:
        raise AlignmentError(f"student batch {B} != teacher batch {teacher.logits_B_T_V.shape[0]}")
    if not 0.0 <= beta <= 1.0:
        raise AlignmentError(f"beta={beta} must lie in [0, 1] (0: forward KL, 1: reverse KL)")
    if top_k is not None and top_k < 1:
        raise AlignmentError(f"top_k={top_k} must be >= 1 or None (exact ULD)")
    if (ms is None) != (mt is None):
        raise AlignmentError(
            "pass both matched_student_ids_M and matched_teacher_ids_M, or neither"
        )
    if ms is None or mt is None:
        return None, None
    ms, mt = ms.long(), mt.long()
    _check_matched(ms, mt, Vs, Vt)
    return (ms, mt) if ms.numel() else (None, None)


def gold_terms(
    student: SideLogits,
    teacher: SideLogits,
    matched_student_ids_M: torch.Tensor | None = None,
    matched_teacher_ids_M: torch.Tensor | None = None,
    beta: float = 0.5,
    anchor: Anchor = "first",
    top_k: int | None = None,
) -> SpanLossTerms:
    """Per-span matched (GJSD) and unmatched (ULD) terms; see the module docstring.

    Args:
        student, teacher: each side's logits, tokens and span ids (same ``B``, same spans).
        matched_student_ids_M, matched_teacher_ids_M: int64 [M] vocabulary pairs; ``None`` (or
            ``M = 0``) makes the whole vocabulary unmatched (pure ULD).
        beta: generalized JSD coefficient in [0, 1].
        anchor: ``first`` or ``last`` token of a span carries its distribution.
        top_k: compare only the top ``k`` unmatched values exactly (``uld_loss_topk``'s bound).

    Returns:
        ``SpanLossTerms`` with [B, S] terms; ``S`` = the larger span count of the two sides.
        Differentiable with respect to the student logits only.
    """
    ms, mt = _validate(student, teacher, matched_student_ids_M, matched_teacher_ids_M, beta, top_k)
    B, _, Vs = student.logits_B_T_V.shape
    Vt = teacher.logits_B_T_V.shape[-1]
    S = max(count_spans(student.span_B_T), count_spans(teacher.span_B_T))
    mask = (
        span_anchor_positions(student.span_B_T.long(), anchor, S)[1]
        & span_anchor_positions(teacher.span_B_T.long(), anchor, S)[1]
    )  # spans with tokens on both sides
    spec = KernelSpec(
        student.temperature, teacher.temperature, beta, ms, mt, top_k,
        max(1, CHUNK_ELEMS // max(Vs, Vt)),
    )  # fmt: skip
    s_plan, t_plan = _side_plan(student, S, anchor, mask), _side_plan(teacher, S, anchor, mask)
    if ms is not None and mt is not None:
        spec = _with_matched(spec, ms, mt)
        s_to_t = torch.full((Vs,), -1, dtype=torch.long, device=ms.device)
        s_to_t[ms] = mt
        same = s_to_t[s_plan.anchor_ids_R.to(ms.device)] == t_plan.anchor_ids_R.to(ms.device)
        spec = dataclasses.replace(spec, same_anchor_R=same.to(s_plan.anchor_ids_R.device))
    matched_R, unmatched_R = SpanDivergence.apply(
        student.logits_B_T_V.reshape(-1, Vs),
        teacher.logits_B_T_V.detach().reshape(-1, Vt),
        s_plan,
        t_plan,
        spec,
    )
    dtype = matched_R.dtype
    sel = mask.reshape(-1).nonzero().squeeze(1)
    zeros = torch.zeros(B * S, dtype=dtype, device=mask.device)
    return SpanLossTerms(
        matched_B_S=zeros.index_put((sel,), matched_R).reshape(B, S),
        unmatched_B_S=zeros.index_put((sel,), unmatched_R).reshape(B, S),
        mask_B_S=mask,
    )


def gold_loss(
    student: SideLogits,
    teacher: SideLogits,
    matched_student_ids_M: torch.Tensor,
    matched_teacher_ids_M: torch.Tensor,
    beta: float = 0.5,
    matched_weight: float = 1.0,
    unmatched_weight: float = 1.0,
    anchor: Anchor = "first",
    top_k: int | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """GOLD-style loss ``matched_weight * GJSD + unmatched_weight * ULD`` per span, reduced.

    ``mean``: sum over spans with tokens on both sides / their number (0 if none); ``sum``;
    ``none``: [B, S]. Arguments as in ``gold_terms``.
    """
    terms = gold_terms(
        student, teacher, matched_student_ids_M, matched_teacher_ids_M, beta, anchor, top_k
    )
    return reduce_rows(terms.weighted(matched_weight, unmatched_weight), terms.mask_B_S, reduction)


def span_uld_loss(
    student: SideLogits,
    teacher: SideLogits,
    anchor: Anchor = "first",
    top_k: int | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Pure ULD between span distributions (no vocabulary map). Reduction as in ``gold_loss``."""
    terms = gold_terms(student, teacher, None, None, 0.5, anchor, top_k)
    return reduce_rows(terms.unmatched_B_S, terms.mask_B_S, reduction)


def gold_prefix_terms(
    student: SideLogits,
    teacher: SideLogits,
    student_trie: ByteTrie,
    teacher_trie: ByteTrie,
    matched_student_ids_M: torch.Tensor,
    matched_teacher_ids_M: torch.Tensor,
    beta: float = 0.5,
    top_k: int | None = None,
) -> SpanLossTerms:
    """Per-span matched (GJSD of prefix marginals at the span start) and unmatched (ULD, as in
    ``gold_terms``) terms; [B, S], zero where ``mask_B_S`` is False."""
    anchor: Anchor = "first"
    base = gold_terms(
        student, teacher, matched_student_ids_M, matched_teacher_ids_M, beta, anchor, top_k
    )
    S = max(count_spans(student.span_B_T), count_spans(teacher.span_B_T))
    mask = base.mask_B_S
    sel = mask.reshape(-1).nonzero().squeeze(1)
    flat, rows = [], []
    for side in (student, teacher):
        B, T, V = side.logits_B_T_V.shape
        pos, _ = span_anchor_positions(side.span_B_T.long(), anchor, S)
        rows.append((torch.arange(B, device=pos.device)[:, None] * T + pos - 1).reshape(-1)[sel])
        flat.append(side.logits_B_T_V.reshape(-1, V))
    matched_R = matched_prefix_gjsd(
        flat[0], rows[0], student_trie, matched_student_ids_M.long(),
        flat[1].detach(), rows[1], teacher_trie, matched_teacher_ids_M.long(),
        beta, student.temperature, teacher.temperature,
    ).to(base.unmatched_B_S.dtype)  # fmt: skip
    zeros = torch.zeros(mask.numel(), dtype=matched_R.dtype, device=mask.device)
    return SpanLossTerms(
        matched_B_S=zeros.index_put((sel,), matched_R).reshape(mask.shape),
        unmatched_B_S=base.unmatched_B_S,
        mask_B_S=mask,
    )


def gold_prefix_loss(
    student: SideLogits,
    teacher: SideLogits,
    student_trie: ByteTrie,
    teacher_trie: ByteTrie,
    matched_student_ids_M: torch.Tensor,
    matched_teacher_ids_M: torch.Tensor,
    beta: float = 0.5,
    matched_weight: float = 1.0,
    unmatched_weight: float = 1.0,
    top_k: int | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """``matched_weight * GJSD(prefix marginals) + unmatched_weight * ULD`` per span, reduced
    (``mean`` over spans with tokens on both sides, ``sum``, ``none``)."""
    terms = gold_prefix_terms(
        student, teacher, student_trie, teacher_trie, matched_student_ids_M,
        matched_teacher_ids_M, beta, top_k,
    )  # fmt: skip
    return reduce_rows(terms.weighted(matched_weight, unmatched_weight), terms.mask_B_S, reduction)
