"""The harness is apart from the engine it drives (``onpolicy/__init__``'s layout): no engine
module imports ``tasks``, ``compare``, ``evidence``, ``scaling`` or ``init_student``, and the model
builders ``tiny`` and ``offline`` are reached only through model-path resolution
(``onpolicy.models.paths``). Read from the source, lazy imports included."""

from __future__ import annotations

import ast
from pathlib import Path

import onpolicy

ROOT = Path(onpolicy.__file__).parent
HARNESS = {"tasks", "compare", "evidence", "scaling", "init_student", "tiny", "offline"}
FRONT = {"cli.py", "__init__.py"}  # the command line and the lazy names front both
BUILDER_DOOR = Path("models/paths.py")  # tiny: and offline: model paths are built there


def _harness_imports(path: Path) -> set[str]:
    """The harness modules ``path`` imports (``onpolicy.X`` or ``from onpolicy import X``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            parts = [a.name.split(".") for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            base = node.module.split(".")
            parts = [base] + [[*base, a.name] for a in node.names]
        else:
            continue
        found |= {p[1] for p in parts if len(p) > 1 and p[0] == "onpolicy" and p[1] in HARNESS}
    return found


def test_engine_modules_do_not_import_the_harness():
    engine = [
        f for f in sorted(ROOT.rglob("*.py"))
        if f.relative_to(ROOT).parts[0].removesuffix(".py") not in HARNESS
        and f.relative_to(ROOT).as_posix() not in FRONT
    ]  # fmt: skip
    assert len(engine) > 50  # the package was found
    found = {str(f.relative_to(ROOT)): _harness_imports(f) for f in engine}
    found[str(BUILDER_DOOR)] -= {"tiny", "offline"}
    assert {f: sorted(m) for f, m in found.items() if m} == {}
