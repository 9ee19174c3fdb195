"""The layering the package docstrings state: ``alignment`` never imports ``onpolicy`` (onpolicy
imports alignment, so the math both need lives in alignment), read from the source itself."""

from __future__ import annotations

import ast
from pathlib import Path

import alignment

ROOT = Path(alignment.__file__).parent


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_alignment_never_imports_onpolicy_even_lazily():
    files = sorted(ROOT.rglob("*.py"))
    assert len(files) > 10  # the package was found
    offenders = {
        str(f.relative_to(ROOT)): sorted(
            m for m in _imported_modules(f) if m.split(".")[0] == "onpolicy"
        )
        for f in files
    }
    assert {f: m for f, m in offenders.items() if m} == {}


def test_the_public_names_import_from_the_package():
    from alignment import align_spans, byte_offsets, gold_loss, next_byte_loss, uld_loss

    assert all(
        callable(f) for f in (align_spans, byte_offsets, gold_loss, next_byte_loss, uld_loss)
    )
    assert set(alignment.__all__) <= set(dir(alignment))
