"""Cached teacher scores: ``onpolicy score`` writes a dataset's top-k teacher log-probs once
(``store`` is the format, ``command`` the command); a run with ``teacher.scores`` reads them through
``CachedTeacher`` (``cached``) with no teacher model in memory."""

from onpolicy.scores.store import Manifest, ScoreReader, row_key

__all__ = ["Manifest", "ScoreReader", "row_key"]
