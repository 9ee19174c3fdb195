"""Gold-data SFT (``sft`` with ``source: dataset``) through ``onpolicy train`` with no teacher, and
the task metric (``eval.metric``) logged at every ``eval.every`` steps."""

from __future__ import annotations

import json

import pytest
import torch

from onpolicy.config import from_dict
from onpolicy.config_checks import validate
from onpolicy.data import read_prompts
from onpolicy.errors import ConfigError, DataError
from onpolicy.models import load_model, load_tokenizer, resolve_model_path
from onpolicy.objectives.sft import SFT
from onpolicy.trainer import train
from onpolicy.trainer.setup import build_components
from onpolicy.trainer.sources import completions_for

WORDS = ["cat", "dog", "sun", "map", "pen", "cup", "owl", "fig"]
STUDENT = "tiny:tiny,tokenizer=char"


def _data(tmp_path):
    path = tmp_path / "reverse.jsonl"
    rows = [{"prompt": f"reverse {w}:", "completion": f" {w[::-1]}"} for w in WORDS]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _config(tmp_path, **eval_block):
    data = _data(tmp_path)
    return from_dict(
        {
            "student": {"path": STUDENT, "max_length": 32},
            "objective": {"name": "sft", "params": {"source": "dataset"}},
            "data": {"path": str(data), "eval_path": str(data)},  # memorize 8 words
            "rollout": {"max_new_tokens": 5},
            "optim": {"lr": 1e-2},
            "train": {"steps": 60, "micro_batch_size": 8, "output_dir": str(tmp_path / "run")},
            "eval": {"every": 20, "num_prompts": 8, "metric": "exact_match", **eval_block},
            "logging": {"progress_bar": False},
        }
    )


def _gold_nll_per_token(model_dir, data) -> float:
    """Mean NLL of the gold completions (+ end token) under the model, teacher-forced."""
    from onpolicy.chat import render_prompt

    model, tok = load_model(model_dir), load_tokenizer(model_dir)
    prompts = read_prompts(data, from_dict({}).data)
    ids = [render_prompt(tok, p) for p in prompts]
    ro, _ = completions_for("dataset", prompts, ids, None, _sources(tok))
    with torch.no_grad():
        out = SFT(source="dataset").loss(model, ro)
    return float(out.loss_sum) / out.num_tokens


def _sources(tok):
    from alignment.tokens.chat import turn_end_id
    from onpolicy.trainer.sources import SampleSources

    end_id = turn_end_id(tok)  # as the trainer picks it
    return SampleSources(student_backend=None, tokenizer=tok, end_id=end_id)


def test_gold_sft_learns_the_gold_completions_without_a_teacher(tmp_path):
    config = _config(tmp_path)
    validate(config)  # no teacher.path: gold SFT needs none
    before = _gold_nll_per_token(resolve_model_path(STUDENT), _data(tmp_path))
    result = train(config)
    after = _gold_nll_per_token(result.final_dir, _data(tmp_path))
    assert after < 0.2 * before, (before, after)
    assert result.eval_before["eval/score"] == 0.0
    assert result.eval_after["eval/score"] >= 0.75  # 6 of the 8 words reversed exactly
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    scored = [r["step"] for r in rows if "eval/score" in r]
    assert scored == [0, 20, 40, 60]  # before training, every eval.every steps, at the end


def test_gold_sft_builds_no_teacher_and_appends_the_end_token(tmp_path):
    config = _config(tmp_path)
    from accelerate import Accelerator

    c = build_components(config, Accelerator(cpu=True))
    assert c.teacher is None and c.sources.teacher_backend is None
    prompts = read_prompts(_data(tmp_path), config.data)[:2]
    ids = [[1, 2]] * 2
    ro, _ = completions_for("dataset", prompts, ids, None, c.sources)
    # the student learns to stop
    assert all(row[-1] == c.sources.end_id for row in ro.completion_ids_B)
    assert ro.texts_B == [" tac", " god"]


def test_objectives_that_need_a_teacher_still_ask_for_one(tmp_path):
    config = _config(tmp_path)
    config.objective.params = {}  # sft on teacher samples
    with pytest.raises(ConfigError, match=r"teacher.path is missing and objective 'sft' needs"):
        validate(config)
    config.objective.params = {"source": "data"}
    with pytest.raises(ConfigError, match="sft source='data'; use 'teacher' or 'dataset'"):
        from onpolicy.trainer.setup import build_objective

        build_objective(config)


def test_metric_errors_before_models_load(tmp_path):
    with pytest.raises(ConfigError, match="unknown metric 'bleu'"):
        validate(_config(tmp_path, metric="bleu"))
    with pytest.raises(ConfigError, match=r"metric file 'nope\.py' does not exist"):
        validate(_config(tmp_path, metric="nope.py:score"))


def test_bad_rows_stop_the_run_before_any_model_loads(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\n{"messages": "hi"}\n')
    config = _config(tmp_path)
    config.data.path, config.data.eval_path = str(bad), None
    not_a_model = tmp_path / "empty_folder"  # loading it would fail with another error
    not_a_model.mkdir()
    config.student.path = str(not_a_model)
    with pytest.raises(DataError, match=r"bad\.jsonl:2: `messages` must be a non-empty list"):
        train(config)
