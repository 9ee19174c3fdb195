"""``onpolicy``: the command line, a thin launcher over the Python API.

    onpolicy train --config configs/onpolicy_reverse_kl.yaml [key.sub=value ...]
    onpolicy eval  --config configs/gkd.yaml [--student runs/gkd/final] [key=value ...]
    onpolicy doctor ...        (alignment.doctor: can these two tokenizers be aligned?)
    onpolicy compare ...       (onpolicy.compare: on-policy vs off-policy baselines)
    onpolicy quickstart ...    (onpolicy.compare: a small end-to-end demo)
    onpolicy init-student ...  (onpolicy.init_student: a student cut from the teacher's layers)
    onpolicy scaling ...       (onpolicy.scaling: fit a distillation scaling law to your runs)

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
    # subcommand: (module, candidate function names); the first found is called with the argv
    # after the subcommand and returns the exit status
    "doctor": ("alignment.doctor", ("main",)),
    "compare": ("onpolicy.compare", ("compare_main", "main")),
    "quickstart": ("onpolicy.compare", ("quickstart_main", "main")),
    "init-student": ("onpolicy.init_student", ("main",)),
    "scaling": ("onpolicy.scaling", ("main",)),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onpolicy", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a student from a YAML config")
    train.add_argument("--config", required=True, help="YAML run config (see configs/)")
    train.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. optim.lr=1e-4")
    ev = sub.add_parser("eval", help="evaluate a student against the config's teacher")
    ev.add_argument("--config", required=True)
    ev.add_argument("--student", default=None, help="a saved student folder (default: config's)")
    ev.add_argument("overrides", nargs="*")
    for name in _DISPATCH:
        sub.add_parser(name, help=f"see `onpolicy {name} --help`", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``onpolicy`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _DISPATCH:
        return _dispatch(argv[0], argv[1:])
    args = _parser().parse_args(argv)
    try:
        if args.command == "train":
            return _train(args.config, args.overrides)
        return _eval(args.config, args.student, args.overrides)
    except OnpolicyError as exc:
        print(f"onpolicy: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the alignment layer's errors, without importing it eagerly
        if type(exc).__module__.startswith("alignment"):
            print(f"onpolicy: error: {exc}", file=sys.stderr)
            return 2
        raise


def _train(config_path: str, overrides: list[str]) -> int:
    from onpolicy.config import load_config
    from onpolicy.trainer import train

    config = load_config(config_path, overrides)
    if config.data.path is None:  # the Python API may pass prompts; the CLI reads them from data
        raise ConfigError("data.path is not set; point it at a JSON/JSONL/parquet file of prompts")
    result = train(config, base_dir=Path(config_path).parent)
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
    module_name, functions = _DISPATCH[command]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        print(
            f"onpolicy: error: `{command}` is unavailable ({module_name}: {exc})", file=sys.stderr
        )
        return 2
    for fn in functions:
        if hasattr(module, fn):
            return int(getattr(module, fn)(argv) or 0)
    print(f"onpolicy: error: {module_name} has no {' or '.join(functions)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
