"""The ``reference_kl`` term of the cross-tokenizer objectives: KL(student || the student's
initial policy) on the student's own tokens, and how the initial policy is handed over
(``ReferencePolicy``, taken by ``initial_reference`` for an objective that ``UsesReference``:
``onpolicy.trainer.setup`` does it after loading, before ``prepare`` and any checkpoint restore)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch.utils.checkpoint import checkpoint

from onpolicy.losses import reverse_kl
from onpolicy.objectives.common import student_forward
from onpolicy.types import Rollout

CHUNK_ELEMS = 1 << 22  # rows per chunk = CHUNK_ELEMS // vocabulary (16 MiB of float32)


def reference_kl_sum(
    student_logits_W_V: torch.Tensor,
    rows_N: torch.Tensor,
    reference_logits_N_V: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """float32 ``sum_n KL(softmax(s[rows_N[n]] / tau) || softmax(r[n] / tau))``.

    ``student_logits_W_V``: [W, V] rows holding the student's logits (any layout); ``rows_N``:
    the row of each of the ``N`` compared positions; ``reference_logits_N_V``: [N, V] the
    reference's logits at those positions (no gradient). A chunk of rows at a time under
    activation checkpointing: no [N, V] float32 temporaries are kept for backward."""
    ref = reference_logits_N_V.detach()
    chunk = max(1, CHUNK_ELEMS // max(ref.shape[-1], 1))
    total = student_logits_W_V.new_zeros((), dtype=torch.float32)
    grad = student_logits_W_V.requires_grad
    for s in range(0, rows_N.shape[0], chunk):
        args = (student_logits_W_V, rows_N[s : s + chunk].to(ref.device), ref[s : s + chunk],
                temperature)  # fmt: skip
        part = checkpoint(_kl_rows, *args, use_reentrant=False) if grad else _kl_rows(*args)
        total = total + part
    return total


def _kl_rows(s_W_V, rows, r_c_V, tau: float) -> torch.Tensor:
    return reverse_kl(s_W_V.index_select(0, rows), r_c_V, tau, reduction="sum").float()


@dataclass(frozen=True)
class ReferencePolicy:
    """The student's *initial* policy for ``reference_kl``, handed to an objective by whoever
    built the student (``onpolicy.trainer.setup``: before ``prepare`` and any checkpoint restore).

    Attributes:
        model: a frozen module computing the initial policy (a full student: a copy of the weights
            as loaded from their source); None = the student passed to ``loss`` itself.
        adapters_off: run ``model`` (or the student) with its LoRA adapters disabled: PEFT adapters
            start as the identity, so the base model is the initial student, with no copy.
    """

    model: torch.nn.Module | None = None
    adapters_off: bool = False


@runtime_checkable
class UsesReference(Protocol):
    """An objective with a ``reference_kl`` term (``next_byte``, ``gold``, ``uld``)."""

    reference_kl: float

    def set_reference(self, reference: ReferencePolicy) -> None: ...


def initial_reference(student: torch.nn.Module, full_copy: Any = None) -> ReferencePolicy:
    """The ``ReferencePolicy`` of a freshly loaded (not yet prepared, not restored) ``student``.

    A LoRA student: its base with adapters off (no copy); when the student is sharded in place
    (FSDP / DeepSpeed ZeRO-3) ``full_copy`` is the trainer's unsharded ``FullCopy`` module, whose
    frozen base weights never change. A full student: a frozen copy of ``student`` taken now
    (under sharding, before ``prepare`` shards it), so a resumed run anchors to the loaded weights.
    """
    from onpolicy.models import is_peft

    if is_peft(student):
        return ReferencePolicy(model=full_copy, adapters_off=True)
    return ReferencePolicy(model=copy.deepcopy(student).eval().requires_grad_(False))


class FrozenReference:
    """KL(student || the student's initial policy) on the student's tokens, for ``reference_kl``.

    A byte-level or span-level cross-tokenizer target cannot tell two tokenizations of the same
    text apart, so nothing in it keeps a BPE student on its own (canonical) tokenization; on the
    arithmetic pair the student drifted to splits it was never trained on (``0|`` then ``#``) and
    collapsed. KL(student || reference) on the student's tokens (the RLHF-style KL to the initial
    policy) anchors those token-level choices.

    The reference is a ``ReferencePolicy`` given with ``set`` (the trainer does, so a resumed run
    anchors to the initial weights, not the resumed ones). Without one (a user's own loop): a LoRA
    student uses its base with adapters off; a full student is copied at the first loss call.
    """

    def __init__(self) -> None:
        self.policy: ReferencePolicy | None = None

    def set(self, reference: ReferencePolicy) -> None:
        self.policy = reference

    def _policy(self, student: torch.nn.Module) -> ReferencePolicy:
        if self.policy is None:
            self.policy = initial_reference(getattr(student, "module", student))
        return self.policy

    def logits(self, student: torch.nn.Module, rollout: Rollout):
        """The reference's ``student_forward`` on ``rollout`` (no gradients)."""
        from onpolicy.models import adapters_disabled

        ref = self._policy(student)
        model = ref.model if ref.model is not None else getattr(student, "module", student)
        with torch.no_grad():
            if not ref.adapters_off:
                return student_forward(model, rollout, None)
            with adapters_disabled(model):
                return student_forward(model, rollout, None)

    def kl_sum(self, student: torch.nn.Module, rollout: Rollout, s_side, cross) -> torch.Tensor:
        """KL(student || reference) summed over the completion tokens, at ``s_side``'s
        temperature (``s_side``: ``flat_window`` layout, packed row ``n`` at window row ``n``)."""
        fwd = self.logits(student, rollout)
        rows_N = torch.arange(fwd.logits_N_V.shape[0])
        s_flat = s_side.logits_B_T_V.reshape(-1, s_side.logits_B_T_V.shape[-1])
        return reference_kl_sum(s_flat, rows_N, fwd.logits_N_V, s_side.temperature)

    def add_to(
        self,
        weight: float,
        loss_sum: torch.Tensor,
        student,
        rollout: Rollout,
        s_side,
        cross,
        prefix: str,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``(loss_sum + weight * KL(student || reference), {f"{prefix}/reference_kl_sum": ...})``;
        ``weight = 0``: ``(loss_sum, {})`` without running the reference."""
        if not weight:
            return loss_sum, {}
        ref_kl = self.kl_sum(student, rollout, s_side, cross)
        return loss_sum + weight * ref_kl, {f"{prefix}/reference_kl_sum": float(ref_kl.detach())}
