#!/usr/bin/env bash
# The loss, alignment, rollout and end-to-end benchmarks on one GPU, in under 8 minutes, each
# writing its report next to the CPU one (benchmarks/RESULTS-*-gpu.md).
#
#   bash benchmarks/gpu_check.sh            # from the repository root
#   PYTHON=.venv/bin/python VLLM_PYTHON=/path/to/python-with-vllm bash benchmarks/gpu_check.sh
#
# PYTHON runs the losses, alignment and end-to-end benchmarks (torch with CUDA, trl);
# VLLM_PYTHON the rollout benchmark (the `vllm` package for GPUs; default: PYTHON when it
# imports vllm, else that benchmark is skipped with a line saying so). Without a CUDA device it
# stops at once with one line and exit status 3. Every benchmark runs under its own time limit
# (the budgets below add up to 7 min 50 s); one that fails or runs out of time is reported and
# the others still run; the exit status is the number of failed benchmarks.
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" ONPOLICY_BENCH_DEVICE=cuda
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}

cuda=$("$PYTHON" -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null || echo none)
if [ "$cuda" != 1 ]; then
    if [ "$cuda" = none ]; then why="$PYTHON cannot import torch (set PYTHON)"
    else why="torch.cuda.is_available() is False for $PYTHON"; fi
    echo "gpu_check: no CUDA device ($why); nothing run" >&2
    exit 3
fi
if [ -z "${VLLM_PYTHON:-}" ] && "$PYTHON" -c 'import vllm' 2>/dev/null; then
    VLLM_PYTHON=$PYTHON
fi

failed=0
start=$(date +%s)
run() {  # run NAME SECONDS COMMAND...: one benchmark under its time limit
    local name=$1 limit=$2
    shift 2
    local t0=$(date +%s)
    echo "gpu_check: $name (limit ${limit} s): $*" >&2
    if timeout --kill-after=10 "$limit" "$@"; then
        echo "gpu_check: $name done in $(( $(date +%s) - t0 )) s" >&2
    else
        echo "gpu_check: $name FAILED or timed out (status $?) after $(( $(date +%s) - t0 )) s" >&2
        failed=$((failed + 1))
    fi
}

# chunked divergence vs TRL vs dense: the small shape, 2 repeats per beta (3 betas, 4 processes each)
run losses 100 "$PYTHON" benchmarks/losses.py --quick --out benchmarks/RESULTS-losses-gpu.md
# exact ULD / GOLD vs TRL ULDLoss, the base case (4 x 256, 32k / 50k vocabularies), 5 processes
run alignment 80 "$PYTHON" benchmarks/alignment.py --cases base --repeats 3 --rounds 1 \
    --threads default --out benchmarks/RESULTS-alignment-gpu.md
# rollouts: transformers generate vs the vLLM engine, SmolLM2-135M, batch 1 / 8 / 32
if [ -n "${VLLM_PYTHON:-}" ]; then
    run rollout 130 "$VLLM_PYTHON" benchmarks/rollout.py --repeats 3 --threads default \
        --out benchmarks/RESULTS-rollout-gpu.md
else
    echo "gpu_check: rollout skipped: no Python with vllm (set VLLM_PYTHON)" >&2
    failed=$((failed + 1))
fi
# end to end, like for like: the engine's loop vs TRL's DistillationTrainer, hf rollouts
run e2e 160 "$PYTHON" benchmarks/e2e.py --pair smollm2 --batch 8 --max-new-tokens 128 \
    --equal-lengths --micro-batches 4 --steps 3 --rounds 1 \
    --configs engine_same:hf trl_distillation:hf --timeout 75 \
    --out benchmarks/RESULTS-e2e-gpu.md

echo "gpu_check: $failed failed; $(( $(date +%s) - start )) s in all; reports: benchmarks/RESULTS-*-gpu.md" >&2
exit "$failed"
