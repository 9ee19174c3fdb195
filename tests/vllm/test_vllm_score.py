"""``onpolicy score --backend vllm``: scores made by a vLLM engine equal the transformers teacher's
(tiny model, K = 16, float32 store) within the stated tolerance, under the same keys (a rerun with
the other backend is all cache hits), and a run trained from them matches the run trained from the
transformers-made scores; ``--backend vllm-server`` (the conftest's teacher server) likewise.

Tolerance (measured on this model: top-K ids identical, log-probs within 7.6e-6, the tail mass
``exp(tail)`` within 2.3e-7): ids equal, log-probs and token log-probs within 1e-4, tail mass within
1e-4, training losses within 1e-4 relative."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("vllm")

from onpolicy.config import apply_overrides, from_dict
from onpolicy.scores.command import ScoreSpec, score_dataset
from onpolicy.scores.store import ScoreReader

pytestmark = [pytest.mark.vllm]

DATA = Path(__file__).resolve().parents[2] / "configs" / "data" / "tiny_chat.jsonl"
TEACHER = "tiny:small,seed=1,pretrain_steps=300"
K = 16
TOL = 1e-4


def _score(data: Path, out: Path, backend: str, teacher: str = TEACHER, url: str | None = None):
    options = {"vllm": ("max_model_len=256",), "vllm-server": ("timeout_s=120",)}
    spec = ScoreSpec(teacher=teacher, data=str(data), out=str(out), top_k=K, dtype="float32",
                     batch_size=4, rows_per_shard=4, backend=backend,
                     vllm=options.get(backend, ()), server_url=url)  # fmt: skip
    return score_dataset(spec)


def _train_losses(tmp_path: Path, data: Path, scores: Path, name: str) -> list[float]:
    import json

    from onpolicy.trainer import train

    raw = {
        "student": {"path": "tiny:tiny,seed=2,pretrain_steps=100", "max_length": 96},
        "teacher": {"path": None, "mode": "same", "scores": str(scores)},
        "objective": {"name": "supervised_kd", "params": {"source": "dataset"}},
        "data": {"path": str(data), "eval_size": 4, "shuffle": False},
        "rollout": {"max_new_tokens": 8},
        "optim": {"lr": 3e-3},
        "train": {"steps": 3, "micro_batch_size": 4, "output_dir": str(tmp_path / name)},
        "eval": {"num_prompts": 0},
        "logging": {"progress_bar": False},
    }
    result = train(from_dict(apply_overrides(raw, [])))
    assert result.steps == 3
    rows = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    return [r["train/loss"] for r in rows if "train/loss" in r]


def test_vllm_scores_match_transformers_and_train(tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(DATA.read_text().splitlines(keepends=True)[:16]))
    made = {b: _score(data, tmp_path / b, b) for b in ("local", "vllm")}
    assert made["vllm"].rows_scored == 16 and made["vllm"].tokens_stored > 0
    assert made["vllm"].tokens_stored == made["local"].tokens_stored
    local, engine = ScoreReader(tmp_path / "local"), ScoreReader(tmp_path / "vllm")
    assert set(local.where) == set(engine.where)  # the same keys: the backend is not in them
    for key in local.where:
        a, b = local.get(key), engine.get(key)
        assert torch.equal(a.ids_T_K, b.ids_T_K), key
        assert (a.logprobs_T_K - b.logprobs_T_K).abs().max() < TOL
        assert (a.token_logprob_T - b.token_logprob_T).abs().max() < TOL
        assert (a.tail_T.exp() - b.tail_T.exp()).abs().max() < TOL
    again = _score(data, tmp_path / "local", "vllm")  # a cache made by transformers: all hits
    assert (again.cache_hits, again.rows_scored, again.invalidated) == (16, 0, False)
    from_local = _train_losses(tmp_path, data, tmp_path / "local", "run-local")
    from_vllm = _train_losses(tmp_path, data, tmp_path / "vllm", "run-vllm")
    assert len(from_vllm) == 3 and all(x == x for x in from_vllm)  # trained, finite
    rel = [abs(a - b) / abs(b) for a, b in zip(from_vllm, from_local, strict=True)]
    assert max(rel) < TOL, rel


def test_served_teacher_scores_match_transformers(vllm_teacher_server, tmp_path):
    """``--backend vllm-server``: the conftest's teacher server (the char-tokenizer tiny model,
    float32) gives the transformers teacher's scores under the same keys."""
    url, _ = vllm_teacher_server
    served = "tiny:tiny,tokenizer=char"  # the model the server runs (its folder keys the scores)
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(DATA.read_text().splitlines(keepends=True)[:8]))
    made = {b: _score(data, tmp_path / b, b, served, url if b != "local" else None)
            for b in ("local", "vllm-server")}  # fmt: skip
    assert made["vllm-server"].rows_scored == 8
    local, server = ScoreReader(tmp_path / "local"), ScoreReader(tmp_path / "vllm-server")
    assert set(local.where) == set(server.where)
    for key in local.where:
        a, b = local.get(key), server.get(key)
        assert torch.equal(a.ids_T_K, b.ids_T_K), key
        assert (a.logprobs_T_K - b.logprobs_T_K).abs().max() < TOL
        assert (a.token_logprob_T - b.token_logprob_T).abs().max() < TOL
