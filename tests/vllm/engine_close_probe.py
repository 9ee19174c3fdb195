"""Run in a fresh process by ``test_vllm_close.py``: start what a run or ``onpolicy score`` starts
with a vLLM engine whose core is a child process (``in_process: false``), finish normally or fail,
and print one JSON line with this process's child processes while the engine ran and after.

    python tests/vllm/engine_close_probe.py score|score-error|train|train-error OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import ClassVar

import psutil

TEACHER = "tiny:small,seed=1,pretrain_steps=300"
ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "configs" / "data" / "tiny_chat.jsonl"


def _children() -> list[str]:
    """This process's living descendants: ``name:pid:command line``."""
    alive = [p for p in psutil.Process().children(recursive=True) if p.is_running()]
    return [
        f"{p.name()}:{p.pid}:{' '.join(p.cmdline())[:120]}"
        for p in alive
        if p.status() != psutil.STATUS_ZOMBIE
    ]


class _Watch:
    """Records the descendants seen while the engine runs (the teacher's first score call)."""

    during: ClassVar[list[str]] = []

    @classmethod
    def patch(cls) -> None:
        from onpolicy.teacher.vllm_teacher import VLLMTeacher

        score_ids = VLLMTeacher.score_ids

        def watched(self, *args, **kwargs):
            cls.during = cls.during or _children()
            return score_ids(self, *args, **kwargs)

        VLLMTeacher.score_ids = watched


def _score(out: Path, fail: bool) -> None:
    from onpolicy.scores.command import ScoreSpec, score_dataset

    engine = ["in_process=false", "dtype=float32", "max_model_len=" + ("8" if fail else "256")]
    rows = out / "rows.jsonl"
    rows.write_text("".join(DATA.read_text().splitlines(keepends=True)[:8]))
    spec = ScoreSpec(teacher=TEACHER, data=str(rows), out=str(out / "scores"), top_k=8,
                     backend="vllm", vllm=tuple(engine), batch_size=4)  # fmt: skip
    score_dataset(spec)


def _train(out: Path, fail: bool) -> None:
    from onpolicy.config import from_dict
    from onpolicy.trainer import train

    engine = {"in_process": False, "dtype": "float32", "max_model_len": 8 if fail else 256}
    raw = {
        "student": {"path": "tiny:tiny,seed=2,pretrain_steps=100", "max_length": 96},
        "teacher": {"path": TEACHER, "backend": "vllm", "top_k": 8, "vllm": engine},
        "objective": {"name": "supervised_kd", "params": {"source": "dataset"}},
        "data": {"path": str(DATA), "eval_size": 4},
        "rollout": {"max_new_tokens": 8},
        "train": {"steps": 2, "micro_batch_size": 2, "output_dir": str(out / "run")},
        "eval": {"num_prompts": 2},
        "logging": {"progress_bar": False},
    }
    train(from_dict(raw))


def main() -> int:
    what, out = sys.argv[1], Path(sys.argv[2])
    _Watch.patch()
    error = None
    try:
        (_score if what.startswith("score") else _train)(out, what.endswith("error"))
    except Exception as exc:  # the error path: reported, the children checked after it
        error = f"{type(exc).__name__}: {exc}"[:300]
    engines = [p for p in psutil.Process().children(recursive=True) if _engine(p)]
    _, alive = psutil.wait_procs(engines, timeout=30)  # a shut-down core exits within seconds
    report = {"during": _Watch.during, "engines_alive_after_30s": len(alive)}
    print(json.dumps({**report, "after": _children(), "error": error}))


def _engine(p: psutil.Process) -> bool:
    try:
        return p.name().startswith("VLLM")
    except psutil.NoSuchProcess:
        return False
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
