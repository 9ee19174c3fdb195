"""``onpolicy generate --backend vllm``: the teacher's answers sampled by a vLLM engine, in the data
format, resumed without duplicates; greedy answers equal the ``hf`` backend's."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

vllm = pytest.importorskip("vllm")

from onpolicy.config import DataConfig  # noqa: E402
from onpolicy.data import read_prompts  # noqa: E402
from onpolicy.generate import GenerateSpec, generate_dataset  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

DATA = Path(__file__).resolve().parents[2] / "configs" / "data" / "tiny_chat.jsonl"
TEACHER = "tiny:small,seed=1,pretrain_steps=300"


def test_vllm_generate_writes_resumes_and_matches_hf_when_greedy(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(DATA.read_text().splitlines(keepends=True)[:6]))
    out = tmp_path / "vllm.jsonl"
    spec = GenerateSpec(teacher=TEACHER, prompts=str(prompts), out=str(out), n=2,
                        max_new_tokens=16, batch_size=3, backend="vllm")  # fmt: skip
    first = generate_dataset(spec)
    assert (first.prompts_sampled, first.rows_written + first.dropped_empty) == (6, 12)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert max(Counter((r["prompt_hash"], r["sample"]) for r in rows).values()) == 1
    assert len(read_prompts(out, DataConfig())) == len(rows)
    assert generate_dataset(spec).prompts_sampled == 0  # a rerun: everything done
    greedy = {}
    for backend in ("hf", "vllm"):
        path = tmp_path / f"greedy-{backend}.jsonl"
        greedy_spec = GenerateSpec(teacher=TEACHER, prompts=str(prompts), out=str(path),
                                   temperature=0.0, max_new_tokens=16, backend=backend)  # fmt: skip
        generate_dataset(greedy_spec)
        greedy[backend] = [json.loads(x)["completion"] for x in path.read_text().splitlines()]
    assert greedy["vllm"] == greedy["hf"]
