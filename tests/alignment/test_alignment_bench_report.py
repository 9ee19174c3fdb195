"""benchmarks/alignment.py rewrites only the report sections of the cases it ran."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "alignment.py"


def _merge():
    spec = importlib.util.spec_from_file_location("alignment_bench_report", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.merge_sections


def test_merge_replaces_its_cases_and_keeps_everything_else() -> None:
    merge = _merge()
    old = (
        "# title\n\nintro\n\n<!-- case:base -->\nold base\n<!-- /case:base -->\n\n"
        "notes between\n\n<!-- case:large -->\nold large\n<!-- /case:large -->\n\n## analysis\n"
    )
    new = merge(old, {"base": "new base\n| a |", "real": "new real"})
    assert "old base" not in new and "new base\n| a |" in new
    assert "old large" in new and "notes between" in new and "## analysis" in new
    assert new.index("new base") < new.index("notes between") < new.index("old large")
    assert new.rstrip().endswith("<!-- case:real -->\nnew real\n<!-- /case:real -->")
    assert merge(new, {"base": "new base\n| a |", "real": "new real"}) == new  # idempotent
