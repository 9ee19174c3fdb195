#!/usr/bin/env bash
# The loss, alignment, rollout and end-to-end benchmarks on one GPU, in under 8 minutes, each
# writing its report into GPU_OUT (default benchmarks/: RESULTS-*-gpu.md next to the CPU ones),
# with this script's own log (gpu_check.log) beside them.
#
#   bash benchmarks/gpu_check.sh            # from the repository root
#   GPU_OUT=$OUT bash benchmarks/gpu_check.sh
#   PYTHON=.venv/bin/python VLLM_PYTHON=/path/to/python-with-vllm bash benchmarks/gpu_check.sh
#
# PYTHON runs the losses, alignment and end-to-end benchmarks (torch with CUDA, trl; default
# .venv/bin/python, else python3). A machine that cannot download packages gets the missing ones
# as wheels in .whl/ (git-ignored; trl 1.16.0, datasets 5.2.0, dill 0.4.1, multiprocess 0.70.19,
# from `pip download --no-deps --only-binary=:all: --python-version 3.12 ...`): when .whl/ exists
# they are installed into /tmp/site first, and if `import trl, datasets` still fails, the wheels
# in .whl/fallback/ (datasets 4.8.5, for an older pyarrow) are tried.
# The end-to-end rows use the `smollm2-shape` pair (SmolLM2-135M's architecture with random
# weights + its real tokenizer, committed: no checkpoint needs to travel), torch's default threads,
# like-for-like settings (RESULTS-e2e.md), completions forced to 128 tokens on both sides.
# VLLM_PYTHON runs the rollout benchmark (default: PYTHON when it imports vllm, else that
# benchmark is skipped with a line saying so; a skip is not a failure). Without a CUDA device it
# stops at once with one line and exit status 3. Every benchmark runs under its own time limit
# (the budgets below add up to 12 min 35 s without vLLM, ~9 min expected from the 2026-12-04 H200
# run; the issue-18 rows run first: the batch-8 end-to-end row in two rounds with the side order
# reversed in the second, then the rollout op counts, then batch 32); one that fails or runs out
# of time is reported by name and the others still run; the exit status is the number of failed
# benchmarks.
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
cuda=$("$PYTHON" -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null || echo none)
if [ "$cuda" != 1 ]; then
    if [ "$cuda" = none ]; then why="$PYTHON cannot import torch (set PYTHON)"
    else why="torch.cuda.is_available() is False for $PYTHON"; fi
    echo "gpu_check: no CUDA device ($why); nothing run" >&2
    exit 3
fi

OUTDIR=${GPU_OUT:-benchmarks}
mkdir -p "$OUTDIR"
LOG="$OUTDIR/gpu_check.log"
: >"$LOG"
say() { echo "gpu_check: $*" | tee -a "$LOG" >&2; }
if [ -d .whl ] && compgen -G ".whl/*.whl" >/dev/null; then
    say "installing $(ls .whl/*.whl | wc -l) wheels from .whl/ into /tmp/site"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl 2>&1 | tail -3 | tee -a "$LOG" >&2
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
    if ! err=$("$PYTHON" -c "import trl, datasets" 2>&1) &&
        compgen -G ".whl/fallback/*.whl" >/dev/null; then
        say "import trl, datasets failed ($(echo "$err" | tail -1)); trying .whl/fallback/"
        rm -rf /tmp/site/datasets /tmp/site/datasets-*.dist-info  # one version of each
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .whl/fallback/*.whl 2>&1 | tail -3 | tee -a "$LOG" >&2
    fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" ONPOLICY_BENCH_DEVICE=cuda
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} PYTHONUNBUFFERED=1
export TRANSFORMERS_OFFLINE=${TRANSFORMERS_OFFLINE:-1}
"$PYTHON" - 2>&1 <<'EOF' | tee -a "$LOG" >&2
import importlib, sys, torch
try:
    gpu = torch.cuda.get_device_name(0)
except Exception as exc:  # the benchmarks will fail and say why
    gpu = f"no GPU name ({type(exc).__name__}: {exc})"
print(f"gpu_check: python {sys.version.split()[0]}, torch {torch.__version__}, {gpu}, "
      f"{torch.get_num_threads()} torch threads")
for name in ("transformers", "accelerate", "tokenizers", "trl", "datasets"):
    try:
        print(f"gpu_check:   {name} {importlib.import_module(name).__version__}")
    except Exception as exc:  # report, do not stop: the benchmarks that need it will fail
        print(f"gpu_check:   {name} NOT importable: {type(exc).__name__}: {exc}"[:300])
EOF
if [ -z "${VLLM_PYTHON:-}" ] && "$PYTHON" -c 'import vllm' 2>/dev/null; then
    VLLM_PYTHON=$PYTHON
fi

failed=()
start=$(date +%s)
run() {  # run NAME SECONDS COMMAND...: one benchmark under its time limit
    local name=$1 limit=$2 status
    shift 2
    local t0=$(date +%s)
    say "$name (limit ${limit} s): $*"
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
    status=${PIPESTATUS[0]}
    if [ "$status" = 0 ]; then
        say "$name done in $(( $(date +%s) - t0 )) s"
    else
        local why="exit status $status"
        [ "$status" = 124 ] || [ "$status" = 137 ] && why="timed out after ${limit} s"
        say "$name FAILED ($why) after $(( $(date +%s) - t0 )) s; see $LOG"
        failed+=("$name")
    fi
}
rows_ok() {  # rows_ok NAME REPORT: e2e.py exits 0 when a side fails; its report names the failures
    if [ -f "$2" ] && grep -q "^Failed configurations:" "$2"; then
        say "$1 FAILED configurations: $(sed -n '/^Failed configurations:/,$p' "$2" | grep '^- ' | tr '\n' ' ')"
        local n=${#failed[@]}
        [ "$n" -gt 0 ] && [ "${failed[$((n - 1))]}" = "$1" ] || failed+=("$1")
    fi
}

# end to end first (the figure this check is for), like for like (RESULTS-e2e.md): the engine's
# loop vs TRL's DistillationTrainer, hf rollouts on both sides, torch's default threads, one batch
# per step on both sides; each side in its own process under its own limit (--timeout). 6 steps x
# 2 rounds, the order reversed in round 1: the 2026-12-04 run (3 steps, 1 round, engine first) had
# its 0.79x inside its own step spread (RESULTS-rollout-overhead.md); ~48 s per process then
run e2e-batch8 420 "$PYTHON" benchmarks/e2e.py --pair smollm2-shape --batch 8 \
    --max-new-tokens 128 --equal-lengths --steps 6 --rounds 2 \
    --configs engine_same:hf trl_distillation:hf --timeout 100 \
    --out "$OUTDIR/RESULTS-e2e-gpu.md"
rows_ok e2e-batch8 "$OUTDIR/RESULTS-e2e-gpu.md"
# the engine's hf rollout vs plain model.generate (TRL's call) in one process, the same 30-layer
# model, batch 8, equal lengths: ops/syncs per decode step and wall ms per step (issue 18)
run rollout-overhead 75 "$PYTHON" benchmarks/rollout_overhead.py --model smollm2-shape \
    --layers 0 --settings equal --short 16 --long 80 --rounds 3 --threads 0 \
    --out "$OUTDIR/RESULTS-rollout-overhead-gpu.md"
# the same at batch 32 (a GPU's batch; generation is launch-bound at batch 8)
run e2e-batch32 125 "$PYTHON" benchmarks/e2e.py --pair smollm2-shape --batch 32 \
    --max-new-tokens 128 --equal-lengths --steps 3 --rounds 1 \
    --configs engine_same:hf trl_distillation:hf --timeout 60 \
    --out "$OUTDIR/RESULTS-e2e-gpu-batch32.md"
rows_ok e2e-batch32 "$OUTDIR/RESULTS-e2e-gpu-batch32.md"

# chunked divergence vs TRL vs dense: the small shape, 2 repeats per beta (3 betas, 4 processes each)
run losses 75 "$PYTHON" benchmarks/losses.py --quick --out "$OUTDIR/RESULTS-losses-gpu.md"
# exact ULD / GOLD vs TRL ULDLoss, the base case (4 x 256, 32k / 50k vocabularies), 5 processes
run alignment 60 "$PYTHON" benchmarks/alignment.py --cases base --repeats 3 --rounds 1 \
    --threads default --out "$OUTDIR/RESULTS-alignment-gpu.md"
# rollouts: transformers generate vs the vLLM engine, SmolLM2-135M, batch 1 / 8 / 32
if [ -n "${VLLM_PYTHON:-}" ]; then
    run rollout 130 "$VLLM_PYTHON" benchmarks/rollout.py --repeats 3 --threads default \
        --out "$OUTDIR/RESULTS-rollout-gpu.md"
else
    say "rollout skipped (not a failure): no Python with vllm here (set VLLM_PYTHON)"
fi
total=$(( $(date +%s) - start ))
if [ ${#failed[@]} = 0 ]; then
    say "all benchmarks ran; ${total} s in all; reports in $OUTDIR: $(cd "$OUTDIR" && ls RESULTS-*-gpu*.md | tr '\n' ' ')"
else
    say "${#failed[@]} FAILED: ${failed[*]}; ${total} s in all; log: $LOG"
fi
exit "${#failed[@]}"
