"""``onpolicy``: the command line, a thin launcher over the Python API.

    onpolicy train --config configs/onpolicy_reverse_kl.yaml [--fresh] [key.sub=value ...]
    onpolicy eval  --config configs/gkd.yaml [--student runs/gkd/final] [key=value ...]
    onpolicy doctor ...        (onpolicy.doctor: can these two tokenizers be aligned?)
    onpolicy compare ...       (onpolicy.compare: on-policy vs off-policy baselines)
    onpolicy quickstart ...    (onpolicy.compare: a small end-to-end demo)
    onpolicy init-student ...  (onpolicy.init_student: a student cut from the teacher's layers)
    onpolicy scaling ...       (onpolicy.scaling: fit a distillation scaling law to your runs)
    onpolicy generate ...      (onpolicy.generate: the teacher answers prompts -> a dataset)
    onpolicy score ...         (onpolicy.scores: cached top-k teacher scores of a dataset)

Works unchanged under ``accelerate launch -m onpolicy.cli train ...`` (or ``accelerate launch
$(which onpolicy) train ...``). A bad input is one line on stderr (``onpolicy: error: ...``) and
exit status 2; nothing already saved is touched.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from onpolicy.errors import ConfigError, OnpolicyError

_DISPATCH = {
    # subcommand: (module, function); the function is called with the argv after the subcommand
    # and returns the exit status
    "doctor": ("onpolicy.doctor", "main"),
    "compare": ("onpolicy.compare", "main"),
    "quickstart": ("onpolicy.compare", "quickstart_main"),
    "init-student": ("onpolicy.init_student", "main"),
    "scaling": ("onpolicy.scaling", "main"),
    "generate": ("onpolicy.generate", "main"),
    "score": ("onpolicy.scores.command", "main"),
}


_TRAIN_HELP = """Train a student from a YAML run config (validated before any model loads).

The config's blocks: student, teacher, lora, rollout, objective, data, optim, train, eval,
logging (see configs/*.yaml and onpolicy/config.py). The data format (prompt or messages, an
optional gold completion, an optional eval file) is in onpolicy/data.py. Progress: one line on
stderr; metrics in <train.output_dir>/metrics.jsonl; the trained student in <output_dir>/final.
A JSON summary is printed on stdout at the end."""

_TRAIN_EXAMPLES = """examples:
  onpolicy train --config configs/onpolicy_reverse_kl.yaml optim.lr=1e-3 train.steps=20
  onpolicy train --config examples/own_task/teacher.yaml   # gold-data SFT, task metric
  accelerate launch -m onpolicy.cli train --config configs/gkd.yaml"""

_EVAL_HELP = """Evaluate a student against the config's teacher on the held-out prompts (greedy):
KL to the teacher, per-byte log-ratio, and the task metric (eval.metric). Nothing is written;
the metrics are printed as JSON."""


def _parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="onpolicy", description=__doc__, formatter_class=raw)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = sub.add_parser(
        "train",
        help="train a student from a YAML config",
        description=_TRAIN_HELP,
        epilog=_TRAIN_EXAMPLES,
        formatter_class=raw,
    )
    train.add_argument("--config", required=True, help="YAML run config (see configs/)")
    train.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (same as logging.progress_bar=false); the summary is still printed",
    )
    train.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. optim.lr=1e-4")
    train.add_argument(
        "--fresh",
        action="store_true",
        help="start over: an earlier run in train.output_dir is renamed to "
        "<output_dir>.old-<UTC time> (nothing is deleted) and training starts from step 0",
    )
    train.add_argument(
        "--allow-change",
        action="append",
        default=[],
        metavar="KEY",
        help="resume although KEY (e.g. data.path) differs from the checkpoint's config; the "
        "checkpoint's optimizer and scheduler state are restored as saved (repeatable). Keys that "
        "do not change a step (train.steps, logging.*, eval.*, ...) need no flag",
    )
    ev = sub.add_parser(
        "eval",
        help="evaluate a student against the config's teacher",
        description=_EVAL_HELP,
        formatter_class=raw,
    )
    ev.add_argument("--config", required=True, help="YAML run config (its teacher, data, eval)")
    ev.add_argument("--student", default=None, help="a saved student folder (default: config's)")
    ev.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. eval.num_prompts=8")
    for name in _DISPATCH:
        summary = _SUMMARIES.get(name, name)
        sub.add_parser(name, help=f"{summary} (see `onpolicy {name} --help`)", add_help=False)
    return parser


_SUMMARIES = {
    "doctor": "can these two tokenizers be aligned, and which loss fits",
    "compare": "on-policy vs off-policy baselines on your task, same budget",
    "quickstart": "a small end-to-end comparison on CPU",
    "init-student": "a smaller student cut from a subset of the teacher's layers",
    "scaling": "fit the distillation scaling law to a table of your runs",
    "generate": "a teacher-made dataset: the teacher answers your prompts (resumable)",
    "score": "cache a teacher's top-k scores of a dataset for training without the teacher",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``onpolicy`` console script; returns the exit status."""
    from onpolicy.quiet import quiet_libraries

    argv = list(sys.argv[1:] if argv is None else argv)
    quiet_libraries()  # library progress bars and known-harmless notices (here and in workers)
    if argv and argv[0] in _DISPATCH:
        return _dispatch(argv[0], argv[1:])
    args = _parser().parse_args(argv)
    try:
        if args.command == "train":
            extra = ["logging.progress_bar=false"] if args.no_progress else []
            return _train(args.config, [*args.overrides, *extra], args.fresh, args.allow_change)
        return _eval(args.config, args.student, args.overrides)
    except OnpolicyError as exc:
        print(f"onpolicy: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the alignment layer's errors, without importing it eagerly
        if type(exc).__module__.startswith("alignment"):
            print(f"onpolicy: error: {exc}", file=sys.stderr)
            return 2
        raise


def _train(config_path: str, overrides: list[str], fresh: bool, allow: list[str]) -> int:
    from onpolicy.config import load_config
    from onpolicy.trainer import train
    from onpolicy.trainer.run_folder import ResumePolicy

    config = load_config(config_path, overrides)
    if config.data.path is None:  # the Python API may pass prompts; the CLI reads them from data
        raise ConfigError("data.path is not set; point it at a JSON/JSONL/parquet file of prompts")
    explicit = _sets_key(config_path, overrides, "train", "resume")
    policy = ResumePolicy(fresh, explicit and config.train.resume, tuple(allow))
    result = train(config, base_dir=Path(config_path).parent, policy=policy)
    summary = {
        "steps": result.steps,
        "final_dir": str(result.final_dir) if result.final_dir else None,
        "eval_before": result.eval_before,
        "eval_after": result.eval_after,
        "nonfinite_steps": result.nonfinite_steps,
        "resumed_from": result.resumed_from,
        "skipped_prompts": result.skipped_prompts,
    }
    _print_main(json.dumps(summary, indent=2))
    return 0


def _sets_key(config_path: str, overrides: list[str], block: str, key: str) -> bool:
    """Whether the YAML file or an override sets ``block.key`` (not left to its default)."""
    import yaml

    from onpolicy.config import apply_overrides

    raw = apply_overrides(yaml.safe_load(Path(config_path).read_text()) or {}, overrides)
    return isinstance(raw.get(block), dict) and key in raw[block]


def _eval(config_path: str, student: str | None, overrides: list[str]) -> int:
    from onpolicy.config import load_config
    from onpolicy.trainer import evaluate_config

    config = load_config(config_path, overrides)
    metrics = evaluate_config(config, student_path=student, base_dir=Path(config_path).parent)
    _print_main(json.dumps(metrics, indent=2))
    return 0


def _print_main(text: str) -> None:
    """Print once under ``accelerate launch`` (rank 0 only)."""
    import os

    if os.environ.get("RANK", "0") == "0":
        print(text)


def _dispatch(command: str, argv: list[str]) -> int:
    module_name, function = _DISPATCH[command]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        print(
            f"onpolicy: error: `{command}` is unavailable ({module_name}: {exc})", file=sys.stderr
        )
        return 2
    if not hasattr(module, function):
        print(f"onpolicy: error: {module_name} has no {function}", file=sys.stderr)
        return 2
    return int(getattr(module, function)(argv) or 0)


if __name__ == "__main__":
    sys.exit(main())
