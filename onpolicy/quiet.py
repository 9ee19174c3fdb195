"""Quiet the libraries' known-harmless output in the command line and the harness's workers.

What is silenced, and only that:

- transformers' / huggingface_hub's / datasets' progress bars ("Loading weights", "Writing model
  shards", "Generating train split"): one per model load or save, dozens per comparison;
- accelerate's ``Removed shared tensor {...} while saving`` (tied input/output embeddings, which
  the checkpoint restores correctly; every other accelerate message is kept);
- vLLM's INFO records (engine configuration, start-up and shutdown lines: dozens per engine, in
  ``onpolicy score/generate --backend vllm`` and vLLM rollouts); its warnings and errors are kept
  (``VLLM_LOGGING_LEVEL=WARNING`` unless the user set it);
- DeepSpeed's "Setting accelerator to CPU" notice on import, on machines without an accelerator
  (``trainer.sharding.quiet_deepspeed_on_cpu`` names the CPU accelerator instead).

Warnings (``warnings.warn``) and every other log record pass through. ``quiet_libraries()`` also
sets ``ONPOLICY_QUIET=1``, which worker processes inherit: importing ``onpolicy`` there quiets them
too (``apply_from_environment``). Library users who never call it see the libraries' defaults;
``ONPOLICY_QUIET=0`` turns it off in the CLI.
"""

from __future__ import annotations

import logging
import os
import re
import sys

ENV = "ONPOLICY_QUIET"
_HARMLESS = {"accelerate.utils.other": ("Removed shared tensor",)}
_RANK = re.compile(r"^\[RANK \d+\] ")
_PROGRESS_ENV = ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS")


class _DropMessages(logging.Filter):
    """Drops records whose message starts with one of ``prefixes``."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        # accelerate's multi-process logger prefixes "[RANK n] " once a process group exists
        return not _RANK.sub("", str(record.msg), count=1).startswith(self.prefixes)


def quiet_libraries() -> None:
    """Silence the output listed in the module docstring, here and in child processes; nothing
    when the user set ``ONPOLICY_QUIET=0`` (to see every library message)."""
    if os.environ.get(ENV) == "0":
        return
    os.environ[ENV] = "1"
    for name in _PROGRESS_ENV:  # read when the libraries are imported (here and in workers)
        os.environ.setdefault(name, "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # read when vllm is imported
    if "transformers" in sys.modules:  # already imported: switch its bars off directly
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()
    _drop_harmless_records()
    from onpolicy.trainer.sharding import quiet_deepspeed_on_cpu

    quiet_deepspeed_on_cpu()  # sets DS_ACCELERATOR, which child processes inherit


def apply_from_environment() -> None:
    """In a process whose parent called ``quiet_libraries`` (``ONPOLICY_QUIET=1``): the variables
    are inherited, the log filters are installed here. Imports nothing heavy."""
    if os.environ.get(ENV) == "1":
        _drop_harmless_records()


def _drop_harmless_records() -> None:
    for logger_name, prefixes in _HARMLESS.items():
        logger = logging.getLogger(logger_name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(prefixes))
