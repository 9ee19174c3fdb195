"""The trainer: a thin loop on accelerate (``loop.py``), evaluation, diagnostics, checkpoints.

``train(config) -> TrainResult`` and ``evaluate_config(config)`` are the entry points.
"""

from onpolicy.trainer.eval_entry import evaluate_config
from onpolicy.trainer.run import TrainResult, train

__all__ = ["TrainResult", "evaluate_config", "train"]
