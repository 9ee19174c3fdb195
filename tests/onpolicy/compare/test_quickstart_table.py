"""The quickstart's printed table: a start column for warm starts, the named FLOPs accounting."""

from __future__ import annotations

from onpolicy.compare import quickstart_table
from onpolicy.compare.report import Row


def _row(method: str, start: str, score: float, free: float, paid: float) -> Row:
    return Row(
        method=method, status="ok", seeds=2, score=score, score_std=0.01, retained=None,
        kl_per_char=0.1, kl_std=0.0, agreement=None, student_tokens=None, teacher_tokens=None,
        flops=free, seconds=3.0, params=None, disk_mb=None, latency_ms=None, tokens_per_s=None,
        error=None, steps=10, start=start, flops_free=free, flops_paid=paid,
    )  # fmt: skip


def test_warm_rows_get_a_start_column_and_the_paid_flops():
    rows = [_row("teacher", "cold", 0.99, 0, 0), _row("sft", "plateau", 0.6, 1e9, 3e9)]
    lines = quickstart_table(rows, "paid").splitlines()
    assert lines[0].startswith("| start | model |") and "teacher data paid" in lines[0]
    sft = next(ln for ln in lines if "SFT" in ln)
    assert sft.startswith("| plateau |") and "3.00e+09" in sft and "1.00e+09" not in sft
    assert all(ln.count("|") == lines[0].count("|") for ln in lines)  # a well-formed table


def test_cold_rows_keep_the_quickstart_table():
    rows = [_row("teacher", "cold", 0.99, 0, 0), _row("reverse_kl", "cold", 0.4, 2e9, 2e9)]
    lines = quickstart_table(rows).splitlines()
    assert lines[0].startswith("| model |") and "start" not in lines[0]
    assert "2.00e+09" in next(ln for ln in lines if "reverse KL" in ln)


def test_a_plateau_not_reached_is_labelled_by_its_step():
    # `make demo`'s warm-up stops at step 1000 with its validation curve still rising: the table
    # must not call that start "plateau"
    from onpolicy.compare.report_text import start_labels

    def record(seed: int, step: int, reached: bool) -> dict:
        return {"seed": seed, "branches": [{"name": "plateau", "step": step, "reached": reached}]}

    assert start_labels([record(0, 800, True), record(1, 600, True)]) == {}
    labels = start_labels([record(0, 1000, False), record(1, 1000, False)])
    assert labels == {"plateau": "step 1000 (plateau not reached)"}
    assert start_labels([record(0, 700, True), record(1, 1000, False)]) == {
        "plateau": "plateau (not reached by every seed: step 1000)"
    }
    rows = [_row("teacher", "cold", 0.99, 0, 0), _row("sft", "plateau", 0.6, 1e9, 3e9)]
    sft = next(ln for ln in quickstart_table(rows, "paid", labels).splitlines() if "SFT" in ln)
    assert sft.startswith("| step 1000 (plateau not reached) |")
