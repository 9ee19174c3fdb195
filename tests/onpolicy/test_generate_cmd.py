"""``onpolicy generate``: the teacher's answers in the data format, resumable after a kill, never
duplicated, refused for another teacher; SFT and supervised KD train on the file it writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from onpolicy.config import DataConfig, from_dict
from onpolicy.data import read_prompts
from onpolicy.errors import ConfigError
from onpolicy.generate import GenerateSpec, generate_dataset, main, prompt_hash

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "configs" / "data" / "tiny_chat.jsonl"
TEACHER = "tiny:small,seed=1,pretrain_steps=300"
OTHER_TEACHER = "tiny:small,seed=3"


def _prompts(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(DATA.read_text().splitlines(keepends=True)[:n]))
    return path


def _spec(prompts: Path, out: Path, **kw) -> GenerateSpec:
    return GenerateSpec(teacher=TEACHER, prompts=str(prompts), out=str(out), n=2,
                        max_new_tokens=16, batch_size=2, **kw)  # fmt: skip


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.read_text().splitlines()]


def _check_complete(out: Path, prompts: Path, n: int) -> None:
    """Every distinct prompt answered: ``n`` samples each (none empty), no (prompt, sample) twice,
    rendered rows readable by the data loader."""
    rows = _rows(out)
    keys = Counter((r["prompt_hash"], r["sample"]) for r in rows)
    assert max(keys.values()) == 1, "a sample was written twice"
    expected = {prompt_hash(p) for p in read_prompts(prompts, DataConfig())}
    assert {r["prompt_hash"] for r in rows} == expected
    assert all(c == n for c in Counter(r["prompt_hash"] for r in rows).values())
    assert len(read_prompts(out, DataConfig())) == len(rows)  # the project's data format


def test_writes_the_data_format_with_the_teachers_template(tmp_path):
    prompts = _prompts(tmp_path, 6)
    out = tmp_path / "answers.jsonl"
    summary = generate_dataset(_spec(prompts, out))
    assert summary.prompts_sampled == 6 and summary.rows_written == 12
    _check_complete(out, prompts, 2)
    loaded = read_prompts(out, DataConfig())
    first = json.loads(prompts.read_text().splitlines()[0])
    assert loaded[0].messages == tuple(first["messages"]) and loaded[0].reference
    # a rerun of a finished file samples nothing and changes nothing
    before = out.read_bytes()
    again = generate_dataset(_spec(prompts, out))
    assert (again.prompts_sampled, again.prompts_already_done) == (0, 6)
    assert out.read_bytes() == before


def test_a_torn_tail_is_cut_and_the_rest_continues(tmp_path):
    """A kill between the rows and the progress record: the unrecorded rows (and a half line) are
    dropped on resume, their prompts sampled again, nothing duplicated."""
    prompts = _prompts(tmp_path, 6)
    out = tmp_path / "answers.jsonl"
    generate_dataset(_spec(prompts, out))
    record = out.with_name(out.name + ".progress.jsonl")
    lines = record.read_text().splitlines(keepends=True)
    record.write_text("".join(lines[:3]) + lines[3][:7])  # 2 prompts recorded + a torn line
    out.write_bytes(out.read_bytes() + b'{"messages": [{"ro')  # a torn row after all rows
    summary = generate_dataset(_spec(prompts, out))
    assert (summary.prompts_already_done, summary.prompts_sampled) == (2, 4)
    _check_complete(out, prompts, 2)


def test_resume_after_kill(tmp_path):
    """A real kill (SIGKILL) of the command mid-run, then a rerun: it continues, never
    duplicates, and ends with every prompt answered."""
    prompts = _prompts(tmp_path, 24)
    out = tmp_path / "answers.jsonl"
    record = out.with_name(out.name + ".progress.jsonl")
    cmd = [sys.executable, "-m", "onpolicy.cli", "generate", "--teacher", TEACHER, "--prompts",
           str(prompts), "--out", str(out), "--n", "2", "--max-new-tokens", "16",
           "--batch-size", "2"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if record.exists() and len(record.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"finished before the kill: {proc.stderr.read()!r}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(record.read_text().splitlines()) - 1
    assert 0 < done_before < 24
    summary = generate_dataset(_spec(prompts, out))
    assert summary.prompts_already_done >= done_before  # a batch may have landed after the read
    assert summary.prompts_already_done + summary.prompts_sampled == 24
    _check_complete(out, prompts, 2)


def test_another_teacher_or_setting_is_refused(tmp_path, capsys):
    prompts = _prompts(tmp_path, 2)
    out = tmp_path / "answers.jsonl"
    generate_dataset(_spec(prompts, out))
    with pytest.raises(ConfigError, match="another teacher or other sampling"):
        generate_dataset(GenerateSpec(**{**_spec(prompts, out).__dict__, "teacher": OTHER_TEACHER}))
    argv = ["--teacher", TEACHER, "--prompts", str(prompts), "--out", str(out), "--n", "3"]
    assert main(argv) == 2
    assert "another teacher or other sampling" in capsys.readouterr().err
    assert main([*argv[:3], str(tmp_path / "none.jsonl"), *argv[4:]]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    "objective",
    [
        {"name": "sft", "params": {"source": "dataset"}},
        {"name": "supervised_kd", "params": {"source": "dataset"}},
    ],
)
def test_sft_and_supervised_kd_train_on_a_generated_file(tmp_path, objective):
    from onpolicy.trainer import train

    prompts = _prompts(tmp_path, 8)
    out = tmp_path / "answers.jsonl"
    generate_dataset(_spec(prompts, out))
    config = from_dict({
        "student": {"path": "tiny:tiny", "max_length": 64},
        "teacher": {"path": TEACHER, "mode": "same"},
        "objective": objective,
        "data": {"path": str(out), "eval_size": 4},
        "rollout": {"max_new_tokens": 8},
        "train": {"steps": 2, "micro_batch_size": 4, "output_dir": str(tmp_path / "run")},
        "eval": {"num_prompts": 4},
        "logging": {"progress_bar": False},
    })  # fmt: skip
    result = train(config)
    assert result.steps == 2 and result.nonfinite_steps == 0


def test_the_recipe_reads_a_generated_file(tmp_path):
    from onpolicy.config import load_config

    prompts = _prompts(tmp_path, 2)
    out = tmp_path / "answers.jsonl"
    generate_dataset(_spec(prompts, out))
    config = load_config(REPO / "configs" / "sft_teacher_data.yaml", [f"data.path={out}"])
    assert config.objective.params == {"source": "dataset"} and config.teacher.path is None


def test_drop_truncated_keeps_only_finished_answers(tmp_path):
    prompts = _prompts(tmp_path, 6)
    out = tmp_path / "answers.jsonl"
    spec = GenerateSpec(teacher=TEACHER, prompts=str(prompts), out=str(out), n=2,
                        max_new_tokens=8, drop_truncated=True)  # fmt: skip
    summary = generate_dataset(spec)
    assert summary.truncated > 0  # 8 tokens cut some answers
    assert summary.rows_written + summary.truncated + summary.dropped_empty == 12
    rows = _rows(out) if out.exists() else []
    assert len(rows) == summary.rows_written
    assert all(r["finish_reason"] == "stop" for r in rows)


def test_the_teacher_sees_its_own_chat_template(tmp_path):
    """A teacher with a Gemma-like template (char tokenizer): greedy ``generate`` answers equal
    the teacher's greedy answers to prompts rendered with its own template."""
    from onpolicy.chat import render_prompt
    from onpolicy.rollout.hf import HFRolloutBackend
    from onpolicy.teacher.identity import load_teacher_model
    from onpolicy.types import SamplingParams

    teacher = "tiny:small,tokenizer=char,seed=4"
    prompts = _prompts(tmp_path, 3)
    out = tmp_path / "answers.jsonl"
    greedy = SamplingParams(max_new_tokens=8, temperature=0.0)
    spec = GenerateSpec(teacher=teacher, prompts=str(prompts), out=str(out), temperature=0.0,
                        max_new_tokens=8)  # fmt: skip
    generate_dataset(spec)
    model, tok, _ = load_teacher_model(teacher)
    loaded = read_prompts(prompts, DataConfig())
    ids = [render_prompt(tok, p) for p in loaded]
    assert tok.decode(ids[0]).startswith("<bos><start_of_turn>user")  # its template, not ChatML
    want = HFRolloutBackend(model, tok).generate(ids, greedy, loaded)
    got = [r["completion"] for r in _rows(out)]
    assert got == [t for t in want.texts_B if t.strip()]
