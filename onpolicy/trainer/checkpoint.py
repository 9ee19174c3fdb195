"""Atomic checkpoints and exact resume.

A checkpoint is a folder ``<output_dir>/checkpoints/step-00000042`` holding:

- accelerate's state (``accelerator.save_state``): model weights (adapters and base for a LoRA
  student), optimizer, scheduler, and every process's RNG states (python, numpy, torch, cuda);
  under FSDP the FULL model and optimizer state dicts written by rank 0
  (``pytorch_model_fsdp.bin``, ``optimizer.bin``), which load into any process count;
- ``trainer_state.json``: the optimizer step, the data stream position, the count of skipped
  non-finite steps, the run's config and its fingerprint (``run_folder.config_record``); written
  last.

- ``custom_state_<i>.json``: the state of each object registered with
  ``accelerator.register_for_checkpointing`` (the lr scheduler, the sharded runs' full copy), as
  JSON, not accelerate's pickled ``custom_checkpoint_<i>.pkl``.

Loading never unpickles code: every ``.pkl`` state file (RNG states; the custom objects of
checkpoints written before the JSON files) and the FSDP optimizer are read with
``torch.load(weights_only=True)``, which accepts tensors and plain containers only; a file holding
anything else (a planted pickle) is refused with a one-line error before accelerate touches it.

Atomicity: everything is written into ``.tmp-step-00000042``, every file and the folder are fsynced,
then the folder is renamed into place (a rename within one file system is atomic), and the parent
is fsynced. A run killed at any moment leaves either the complete checkpoint or a ``.tmp-*`` folder
that the next run deletes; checkpoints already written are never touched until a newer one is
complete (then all but the newest ``keep`` are removed).
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from onpolicy.errors import TrainingError
from onpolicy.trainer.disk import disk_errors
from onpolicy.trainer.step_metrics import ComputeBudget

STATE_FILE = "trainer_state.json"
_PREFIX = "step-"
_TMP = ".tmp-"
_CUSTOM = "custom_state_"


@dataclass
class TrainerState:
    """What the loop needs besides accelerate's state to continue exactly.

    Attributes:
        step: optimizer steps completed.
        data_position: prompts consumed from the shared ``PromptStream``.
        nonfinite_steps: steps skipped for a NaN/inf loss so far.
        budget: the compute spent so far (all processes), so a resumed run reports the whole run's.
        fingerprint, config: the run's config record (``run_folder.config_record``), checked on
            resume; empty in checkpoints written before it existed.
    """

    step: int = 0
    data_position: int = 0
    nonfinite_steps: int = 0
    budget: ComputeBudget = field(default_factory=ComputeBudget)
    fingerprint: str = ""
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainerState:
        """From ``asdict`` output (the budget a nested mapping; absent in older checkpoints)."""
        data = dict(data)
        budget = ComputeBudget(**data.pop("budget", {}))
        return cls(**data, budget=budget)


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def _name(step: int) -> str:
    return f"{_PREFIX}{step:08d}"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints (with a state file), oldest first."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.name.startswith(_PREFIX) and (p / STATE_FILE).is_file()]
    return sorted(done, key=lambda p: int(p.name.removeprefix(_PREFIX)))


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def remove_partial(output_dir: str | Path) -> list[Path]:
    """Delete ``.tmp-*`` folders a killed run left behind; returns what was removed."""
    root = checkpoint_root(output_dir)
    stale = [p for p in root.iterdir() if p.name.startswith(_TMP)] if root.is_dir() else []
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


def _fsync_tree(folder: Path) -> None:
    for dirpath, _, files in os.walk(folder):
        for f in files:
            fd = os.open(os.path.join(dirpath, f), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    accelerator: Any, output_dir: str | Path, state: TrainerState, keep: int
) -> Path:
    """Write a checkpoint atomically (every process calls this; the main one renames and prunes).

    Returns the final checkpoint path.
    """
    root = checkpoint_root(output_dir)
    final = root / _name(state.step)
    tmp = root / f"{_TMP}{_name(state.step)}"
    previous = latest_checkpoint(output_dir)
    kept = f"the latest complete checkpoint is {previous}" if previous else "no checkpoint yet"
    with disk_errors(tmp, kept, cleanup=tmp if accelerator.is_main_process else None):
        if accelerator.is_main_process:
            root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        accelerator.wait_for_everyone()
        with _custom_objects_hidden(accelerator) as custom:
            accelerator.save_state(str(tmp), safe_serialization=True)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            for i, obj in enumerate(custom):
                (tmp / f"{_CUSTOM}{i}.json").write_text(json.dumps(obj.state_dict()))
            (tmp / STATE_FILE).write_text(json.dumps(asdict(state), indent=2))
            _fsync_tree(tmp)
            if final.exists():  # the same step saved twice (e.g. a resumed run's last step)
                shutil.rmtree(final)
            os.rename(tmp, final)
            _fsync_dir(root)
            for old in list_checkpoints(output_dir)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Any, path: str | Path) -> TrainerState:
    """Restore model, optimizer, scheduler and RNG states (``accelerator.load_state``) from ``path``
    and return its ``TrainerState``. Call after ``accelerator.prepare``."""
    p = Path(path)
    state_file = p / STATE_FILE
    if not state_file.is_file():
        raise TrainingError(f"checkpoint {str(p)!r} is incomplete (no {STATE_FILE}); delete it")
    try:
        state = TrainerState.from_json(json.loads(state_file.read_text()))
    except (json.JSONDecodeError, TypeError) as exc:
        raise TrainingError(f"checkpoint state {str(state_file)!r} is unreadable: {exc}") from exc
    check_no_code(p)
    as_json = (p / f"{_CUSTOM}0.json").is_file()
    # accelerate loads custom objects with weights_only=False: ours are JSON, loaded here; older
    # checkpoints' .pkl files were read safely by check_no_code first
    hide = _custom_objects_hidden(accelerator) if as_json else contextlib.nullcontext([])
    try:
        with hide as custom, _stateless_optimizers_hidden(accelerator, p) as hidden:
            accelerator.load_state(str(p))
        for optimizer, groups in hidden:
            _restore_hyperparameters(optimizer, groups)
        for i, obj in enumerate(custom):
            obj.load_state_dict(json.loads((p / f"{_CUSTOM}{i}.json").read_text()))
        _check_optimizer_keys(accelerator)
    except pickle.UnpicklingError as exc:  # a .bin accelerate loads itself (weights_only=True)
        raise TrainingError(
            f"refusing to load checkpoint {str(p)!r}: a state file in it is not plain saved "
            "state; it was not written by onpolicy: delete it or start over with --fresh"
        ) from exc
    except (RuntimeError, KeyError, ValueError, IndexError, FileNotFoundError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise TrainingError(
            f"checkpoint {str(p)!r} does not fit this run's student or optimizer ({first}); "
            "resume with the config it was written with, or start over with --fresh"
        ) from exc
    return state


@contextlib.contextmanager
def _custom_objects_hidden(accelerator: Any) -> Iterator[list[Any]]:
    """Hide the objects registered for checkpointing from accelerate (it would pickle them, and
    unpickle them with ``weights_only=False``); yields them, to be saved/loaded as JSON."""
    custom = list(getattr(accelerator, "_custom_objects", []))
    accelerator._custom_objects = []
    try:
        yield custom
    finally:
        accelerator._custom_objects = custom


def safe_load(path: str | Path) -> Any:
    """``torch.load`` of a state file with ``weights_only=True`` (tensors, plain containers and
    the numpy types of RNG states only); ``TrainingError`` on anything else."""
    from accelerate.utils.other import load

    try:
        return load(path, map_location="cpu")  # accelerate's safe globals + weights_only=True
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, EOFError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise TrainingError(
            f"refusing to load {str(path)!r}: it is not plain saved state ({first}); it was not "
            "written by onpolicy, or is damaged: delete this checkpoint or start over with --fresh"
        ) from exc


def check_no_code(path: Path) -> None:
    """Read every pickled state file of checkpoint ``path`` safely (see the module docstring),
    before accelerate loads them; raises ``TrainingError`` naming the first bad file."""
    for f in sorted(path.glob("*.pkl")):
        safe_load(f)


def _is_fsdp(accelerator: Any) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.FSDP


@contextlib.contextmanager
def _stateless_optimizers_hidden(
    accelerator: Any, path: Path
) -> Iterator[list[tuple[Any, list[dict[str, Any]]]]]:
    """Under FSDP with a FULL state dict, an optimizer that keeps no per-parameter state (SGD
    without momentum) cannot be loaded by torch's ``set_optimizer_state_dict`` ("Expected device
    to be set"). Hide such optimizers from ``load_state`` (their saved state is empty: nothing is
    lost) and yield ``(optimizer, saved param_groups)`` to restore their hyperparameters."""
    hidden: list[tuple[Any, list[dict[str, Any]]]] = []
    optimizers = list(getattr(accelerator, "_optimizers", []))
    if not _is_fsdp(accelerator):
        yield hidden
        return
    kept = []
    for i, opt in enumerate(optimizers):
        f = path / ("optimizer.bin" if i == 0 else f"optimizer_{i}.bin")
        saved = safe_load(f) if f.is_file() else None
        if saved is not None and not saved.get("state"):
            hidden.append((opt, saved.get("param_groups", [])))
        else:
            kept.append(opt)
    accelerator._optimizers = kept
    try:
        yield hidden
    finally:
        accelerator._optimizers = optimizers


def _check_optimizer_keys(accelerator: Any) -> None:
    """``KeyError`` when a loaded optimizer's parameter groups lack a setting its class needs
    (state written by another optimizer: torch accepts it and fails at the first step)."""
    for opt in getattr(accelerator, "_optimizers", []):
        try:
            defaults = opt.defaults
        except AttributeError:  # DeepSpeed's ZeRO optimizers have none (DeepSpeed loads its own)
            continue
        for group in opt.param_groups:
            missing = sorted(set(defaults) - set(group))
            if missing:
                raise KeyError(
                    f"the saved optimizer state lacks {missing}: another optimizer wrote it"
                )


def _restore_hyperparameters(optimizer: Any, groups: list[dict[str, Any]]) -> None:
    """Saved ``param_groups`` hyperparameters (lr, weight decay, ...) into ``optimizer``."""
    if len(groups) != len(optimizer.param_groups):
        raise TrainingError(
            f"checkpoint has {len(groups)} optimizer parameter groups, the run has "
            f"{len(optimizer.param_groups)}; resume with the same optimizer settings"
        )
    for live, saved in zip(optimizer.param_groups, groups, strict=True):
        live.update({k: v for k, v in saved.items() if k != "params"})
