"""The report's forward-measure section (``eval: {forward_nll: true}``): at each evaluation, the
student's NLL per token and per UTF-8 byte of a fixed pool of held-out teacher samples
(``onpolicy.trainer.forward_pool``), next to the score, as seed means (± sample sd).

Reverse KL is mode-seeking: an on-policy student can hold its score while it stops covering
completions the teacher would give; a rising NLL of the teacher's own samples shows that loss of
coverage, a falling one shows the student moving toward the teacher's distribution. Per byte is
the unit that compares students with different tokenizers.
"""

from __future__ import annotations

from onpolicy.compare.curves import CurvePoint, has_metric, mean_curve

Groups = dict[str, dict[str, list[list[CurvePoint]]]]


def forward_table(groups: Groups, teacher_data: str) -> str | None:
    """Per start point, method and evaluation step: FLOPs, score, forward NLL/token and /byte
    (seed means ± sd); None when no curve holds the measure."""
    if not any(has_metric(c, "forward_nll_per_token") for m in groups.values() for c in m.values()):
        return None
    lines = [
        "Student NLL of held-out teacher samples (one temperature-1 teacher completion per "
        "held-out prompt, drawn once, the same pool for every method and seed; never trained on). "
        "Lower: the student covers more of the teacher's distribution.",
        "",
        f"| start | method | step | FLOPs (teacher data {teacher_data}) | score | "
        "teacher-sample NLL/token | teacher-sample NLL/byte |",
        "|" + "---|" * 7,
    ]
    for start, methods in groups.items():
        for m, curves in methods.items():
            per_token = mean_curve(curves, teacher_data, "forward_nll_per_token")
            per_byte = {p.step: p for p in mean_curve(curves, teacher_data, "forward_nll_per_byte")}
            score = {p.step: p for p in mean_curve(curves, teacher_data, "score")}
            for p in per_token:
                b, s = per_byte.get(p.step), score.get(p.step)
                lines.append(
                    f"| {start} | {m} | {p.step} | {p.x:.2e} | {_pm(s, '.3f')} | "
                    f"{_pm(p, '.4f')} | {_pm(b, '.4f')} |"
                )
    return "\n".join(lines)


def _pm(p, spec: str) -> str:
    return "–" if p is None else f"{p.y:{spec}} ± {p.sd:{spec}}"
