"""Suite-wide settings: hypothesis runs derandomized (the same examples every run, so CI is
reproducible); `HYPOTHESIS_PROFILE=random` explores new examples locally."""

from __future__ import annotations

import os

try:  # the vLLM lane's venv has no hypothesis
    from hypothesis import settings
except ImportError:
    settings = None

if settings is not None:
    settings.register_profile("derandomized", derandomize=True)
    settings.register_profile("random", derandomize=False)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "derandomized"))
