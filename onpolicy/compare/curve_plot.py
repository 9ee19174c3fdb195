"""The learning-curve figure: the held-out score (top) and the KL per token to the teacher
(bottom) against cumulative training FLOPs, one column per start point, each method's seed mean
as a line with a band of ± one sample sd over seeds (matplotlib, imported lazily)."""

from __future__ import annotations

from pathlib import Path

from onpolicy.compare.curves import CurvePoint, mean_curve

Groups = dict[str, dict[str, list[list[CurvePoint]]]]  # start -> method -> one curve per seed


def plot_curves(
    groups: Groups,
    path: Path,
    teacher_score: float | None,
    teacher_data: str,
    metric: str = "score",
    titles: dict[str, str] | None = None,
) -> Path | None:
    """Draw ``groups`` to ``path``; None when matplotlib is missing or there is no curve."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    groups = {s: m for s, m in groups.items() if any(any(c) for c in m.values())}
    if not groups:
        return None
    panels = [("score", metric), ("kl_per_token", "KL(student || teacher) per token")]
    fig, axes = plt.subplots(
        2, len(groups), figsize=(5.2 * len(groups), 7.5), squeeze=False, sharex="col"
    )
    colors: dict[str, str] = {}
    for col, (start, methods) in enumerate(groups.items()):
        for row, (attr, label) in enumerate(panels):
            ax = axes[row][col]
            for method, curves in methods.items():
                pts = mean_curve(curves, teacher_data, attr)
                if not pts:
                    continue
                color = colors.setdefault(method, f"C{len(colors)}")
                xs, ys = [p.x for p in pts], [p.y for p in pts]
                ax.plot(xs, ys, "-o", ms=2.5, lw=1.4, color=color, label=method)
                lo = [p.y - p.sd for p in pts]
                hi = [p.y + p.sd for p in pts]
                ax.fill_between(xs, lo, hi, color=color, alpha=0.18, lw=0)
            if attr == "score" and teacher_score is not None:
                ax.axhline(teacher_score, ls="--", c="gray", lw=1, label="teacher")
                ax.axhline(0.9 * teacher_score, ls=":", c="gray", lw=1, label="90% of teacher")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
            if row == 0:
                ax.set_title((titles or {}).get(start, start), fontsize=10)
            if row == len(panels) - 1:
                ax.set_xlabel(f"training FLOPs (teacher data {teacher_data})")
        axes[0][col].legend(fontsize=7, loc="best")
    fig.suptitle("held-out curves: seed mean ± sd")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
