"""The learning-curve figure: the held-out score (top; left out for a task without a metric), the
KL(student || teacher) per byte and the teacher's NLL per byte of the student's completions, and
their repetition rate and share cut at the length limit (a collapse into loops), against
cumulative training FLOPs, one column per start point, each method's seed mean as a line with a
band of ± one sample sd over seeds (matplotlib, imported lazily)."""

from __future__ import annotations

from pathlib import Path

from onpolicy.compare.curves import CurvePoint, has_metric, mean_curve, warm_metric

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
    panels = curve_panels(groups, metric)
    fig, axes = plt.subplots(
        len(panels), len(groups), figsize=(5.2 * len(groups), 2.6 + 2.5 * len(panels)),
        squeeze=False, sharex="col",
    )  # fmt: skip
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


def curve_panels(groups: Groups, metric: str = "score") -> list[tuple[str, str]]:
    """``(CurvePoint attribute, axis label)`` of each row of the figure: the score when any curve
    has one, then the KL per byte and the teacher's NLL per byte, then the student's NLL per
    byte of held-out teacher samples (``eval.forward_nll``), the completions' repetition rate and
    share cut at the length limit when the curves hold them."""

    def held(attr: str) -> bool:
        return any(has_metric(c, attr) for m in groups.values() for c in m.values())

    return [("score", metric)] * held("score") + [
        ("kl_per_byte", "KL(student || teacher) per byte"),
        ("teacher_nll_per_byte", "teacher NLL per byte"),
        *[(a, label) for a, label in _DIAGNOSTICS if held(a)],
    ]


_DIAGNOSTICS = [
    ("forward_nll_per_byte", "student NLL/byte of teacher samples"),  # eval.forward_nll
    ("repetition", "repeated trigram share"),
    ("cut_share", "share cut at the limit"),
]


def plot_warm_up(records: list[dict], path: Path, teacher_data: str) -> Path | None:
    """The warm-up's validation score against its training FLOPs, one line per seed, with a
    marker at each branch point; None without matplotlib or a curve."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    if not any(r.get("curve") for r in records):
        return None
    key, name = warm_metric(records)  # the score, or KL/byte for a task without a metric
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, r in enumerate(records):
        pts = [p for p in r["curve"] if p.get(key) is not None]
        xs = [p[f"flops_{teacher_data}"] for p in pts]
        ax.plot(xs, [p[key] for p in pts], "-o", ms=2.5, c=f"C{i}", label=f"seed {r['seed']}")
        at = {p["step"]: p for p in pts}
        for b in r["branches"]:
            p = at.get(b["step"])
            if p is not None:
                ax.plot(p[f"flops_{teacher_data}"], p[key], "s", ms=8, mfc="none", c=f"C{i}")
                ax.annotate(b["name"], (p[f"flops_{teacher_data}"], p[key]), fontsize=7,
                            textcoords="offset points", xytext=(4, -10))  # fmt: skip
    ax.set_xlabel(f"warm-up training FLOPs (teacher data {teacher_data})")
    ax.set_ylabel(f"validation {name}")
    ax.set_title(f"{records[0]['method']} warm-up: branch points (squares)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
