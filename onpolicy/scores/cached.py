"""``CachedTeacher``: a teacher that answers from a score folder (``onpolicy score``), so supervised
KD and GKD's off-policy share train with no teacher model in memory (``teacher.scores``).

A rollout whose rows are all in the cache gets sparse ``TopKScores`` (top-k ids, log-probs, tail
mass, the completion tokens' log-probs), float32 on the CPU. Any other rollout (GKD's on-policy
share, the student's own samples) goes to the live teacher when one is loaded (``live``), else it is
a one-line ``DataError``: scores are never made up.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from onpolicy.errors import ConfigError, DataError, TokenizerMismatchError
from onpolicy.scores.store import ScoreReader, row_key
from onpolicy.teacher.types import TopKScores
from onpolicy.types import Rollout


class CachedTeacher:
    """Scores from ``reader`` (a ``ScoreReader``); ``live``: a teacher for rollouts not in it."""

    mode = "same"

    def __init__(self, reader: ScoreReader, live: Any = None) -> None:
        self.reader = reader
        self.live = live
        self.vocab_size = reader.manifest.vocab_size

    def keys(self, rollout: Rollout) -> list[str]:
        m = self.reader.manifest
        pairs = zip(rollout.prompt_ids_B, rollout.completion_ids_B, strict=True)
        return [row_key(m, p, c) for p, c in pairs]

    def score(self, rollout: Rollout) -> TopKScores:
        """The cached scores of ``rollout`` (all rows cached), else the live teacher's."""
        start = time.perf_counter()
        keys = self.keys(rollout)
        missing = [b for b, k in enumerate(keys) if k not in self.reader]
        if missing:
            if self.live is not None:
                return self.live.score(rollout)
            raise DataError(
                f"{len(missing)} of {len(keys)} rows have no cached teacher scores in "
                f"{str(self.reader.folder)!r} (first: {rollout.texts_B[missing[0]][:40]!r}); run "
                "onpolicy score on this data with --student set to this run's student, or set "
                "teacher.path for a live teacher"
            )
        rows = [self.reader.get(k) for k in keys]
        scores = TopKScores(
            vocab_size=self.vocab_size,
            num_tokens_B=[len(r.tail_T) for r in rows],
            token_logprobs_N=torch.cat([r.token_logprob_T for r in rows]),
            topk_ids_N_K=torch.cat([r.ids_T_K for r in rows]),
            topk_logprobs_N_K=torch.cat([r.logprobs_T_K for r in rows]),
            tail_logprob_N=torch.cat([r.tail_T for r in rows]),
        )
        scores.metrics["teacher/seconds"] = time.perf_counter() - start
        scores.metrics["teacher/cached_rows"] = float(len(rows))
        return scores


def open_cached_teacher(
    folder: str,
    student_tokenizer: Any,
    teacher_path: str | None,
    gguf_file: str | None = None,
    live: Any = None,
) -> CachedTeacher:
    """A ``CachedTeacher`` on ``folder`` after its checks: the student tokenizes like the teacher
    whose scores these are, and ``teacher_path`` (when given) has the weights they came from."""
    from alignment.tokens.vocab_map import same_tokenizer
    from onpolicy.models import load_tokenizer

    reader = ScoreReader(folder)
    cached_tok = load_tokenizer(Path(folder) / "tokenizer")
    if not same_tokenizer(cached_tok, student_tokenizer):
        raise TokenizerMismatchError(
            f"the scores in {folder!r} are for another tokenizer than the student's; score the "
            "data for this student (onpolicy score --student ...)"
        )
    if teacher_path is not None:
        from onpolicy.models import resolve_model_path
        from onpolicy.teacher.identity import weights_fingerprint

        found = weights_fingerprint(resolve_model_path(teacher_path), gguf_file)
        if found != reader.manifest.teacher_fingerprint:
            raise ConfigError(
                f"teacher.scores {folder!r} were made by another teacher (weights "
                f"{reader.manifest.teacher_fingerprint}, teacher.path has {found}); rerun "
                "onpolicy score with this teacher"
            )
    return CachedTeacher(reader, live)


def live_teacher(teacher: Any) -> Any:
    """The teacher that scores rollouts outside the cache (evaluation on the student's own
    completions): a ``CachedTeacher``'s live one (None without), any other teacher itself."""
    return teacher.live if isinstance(teacher, CachedTeacher) else teacher


def needs_live_teacher(config: Any, objective: Any) -> bool:
    """Whether a run must load its teacher model: always without ``teacher.scores``; with them,
    only when some step's batch does not come from the dataset (GKD's on-policy share)."""
    if config.teacher.scores is None:
        return True
    steps = range(config.train.steps)
    return any(objective.batch_source(s) != "dataset" for s in steps)


def check_cached_scores(config: Any, base_dir: Path | None = None) -> None:
    """``teacher.scores`` checked before any model loads (one-line ``ConfigError``s): a score
    folder, a same-tokenizer teacher, an objective that trains on dataset batches with a top-k
    teacher, and a live teacher for its other batches."""
    from onpolicy.config_checks import resolve_path
    from onpolicy.objectives.base import make_objective, topk_teacher_limit
    from onpolicy.scores.store import read_manifest

    t = config.teacher
    read_manifest(resolve_path(t.scores, base_dir))
    if t.mode not in ("same", "auto"):
        raise ConfigError(
            f"teacher.scores with teacher.mode={t.mode}: cached scores are for a teacher sharing "
            "the student's tokenizer; set mode: same (or drop teacher.scores)"
        )
    objective = make_objective(config.objective.name, config.objective.params, config.train.seed)
    sources = {objective.batch_source(s) for s in range(config.train.steps)}
    if not objective.needs_teacher or "dataset" not in sources:
        raise ConfigError(
            f"teacher.scores: objective {config.objective.name!r} never scores dataset batches; "
            "use supervised_kd (source: dataset) or gkd (off_policy: dataset), or drop the key"
        )
    if sources - {"dataset"} and t.path is None:
        raise ConfigError(
            f"teacher.scores: objective {config.objective.name!r} also trains on "
            f"{sorted(sources - {'dataset'})} batches, which need a live teacher: set teacher.path "
            "(or lmbda: 0 for gkd)"
        )
    reason = topk_teacher_limit(objective)
    if reason is not None:
        raise ConfigError(
            f"teacher.scores are top-k log-probs at temperature 1; objective "
            f"{config.objective.name!r}: {reason} in objective.params, or drop teacher.scores"
        )
