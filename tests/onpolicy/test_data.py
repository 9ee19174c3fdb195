"""Dataset loading -> Prompts, with one-line DataErrors for bad rows, and the resumable stream."""

from __future__ import annotations

import json

import pytest

from onpolicy.config import DataConfig
from onpolicy.data import PromptStream, filter_by_length, load_prompts, load_rows, rows_to_prompts
from onpolicy.errors import DataError
from onpolicy.types import Prompt


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_prompt_and_conversational_rows(tmp_path):
    rows = [
        {"prompt": "2+2?", "completion": "4"},
        {
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
            ]
        },
    ]
    p1 = _jsonl(tmp_path / "a.jsonl", rows[:1])
    p2 = _jsonl(tmp_path / "b.jsonl", rows[1:])
    [a] = rows_to_prompts(load_rows(p1), DataConfig())
    [b] = rows_to_prompts(load_rows(p2), DataConfig())
    assert a == Prompt(text="2+2?", reference="4")
    # the final assistant turn is the reference, cut from the prompt
    assert b.messages == (
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    )
    assert b.reference == "hello"


def test_parquet_json_and_saved_dataset(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict({"question": ["a", "b", "c"]})
    ds.to_parquet(str(tmp_path / "d.parquet"))
    ds.to_json(str(tmp_path / "d.json"))
    ds.save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "dd"))
    cfg = DataConfig(prompt_field="question")
    for name in ("d.parquet", "d.json", "saved", "dd"):
        prompts = rows_to_prompts(load_rows(tmp_path / name), cfg)
        assert [p.text for p in prompts] == ["a", "b", "c"], name
    with pytest.raises(DataError, match="has no split 'test'"):
        load_rows(tmp_path / "dd", split="test")


def test_bad_datasets_are_one_line_errors(tmp_path):
    no_prompts = _jsonl(tmp_path / "x.jsonl", [{"text": "a"}])
    with pytest.raises(DataError, match="has no prompts: neither a 'prompt' nor a 'messages'"):
        rows_to_prompts(load_rows(no_prompts), DataConfig())
    empty_completion = _jsonl(tmp_path / "y.jsonl", [{"prompt": "a", "completion": "  "}])
    with pytest.raises(DataError, match="row 0 has an empty completion"):
        rows_to_prompts(load_rows(empty_completion), DataConfig())
    empty_prompt = _jsonl(tmp_path / "z.jsonl", [{"prompt": "a"}, {"prompt": ""}])
    with pytest.raises(DataError, match="row 1 has an empty prompt"):
        rows_to_prompts(load_rows(empty_prompt), DataConfig())
    (tmp_path / "w.txt").write_text("a")
    with pytest.raises(DataError, match=r"unknown suffix '\.txt'"):
        load_rows(tmp_path / "w.txt")
    (tmp_path / "broken.jsonl").write_text("{not json\n")
    with pytest.raises(DataError, match="could not be read as json"):
        load_rows(tmp_path / "broken.jsonl")


def test_too_long_prompts_skip_with_count_or_error():
    prompts = [Prompt(text="a" * n) for n in (3, 10, 5)]
    kept, skipped = filter_by_length(prompts, lambda p: list(p.text), 5, "skip")
    assert [len(p.text) for p in kept] == [3, 5] and skipped == 1
    with pytest.raises(DataError, match="prompt 1 has 10 tokens, more than the 5"):
        filter_by_length(prompts, lambda p: list(p.text), 5, "error")
    with pytest.raises(DataError, match="all 3 prompts are longer than 2 tokens"):
        filter_by_length(prompts, lambda p: list(p.text), 2, "skip")


def test_held_out_split_is_disjoint_and_seeded(tmp_path):
    path = _jsonl(tmp_path / "p.jsonl", [{"prompt": f"q{i}"} for i in range(20)])
    train, held = load_prompts(DataConfig(path=str(path), eval_size=5), seed=3)
    again, held_again = load_prompts(DataConfig(path=str(path), eval_size=5), seed=3)
    assert len(held) == 5 and len(train) == 15
    assert {p.text for p in train}.isdisjoint({p.text for p in held})
    assert (train, held) == (again, held_again)


def test_prompt_stream_resumes_exactly():
    prompts = [Prompt(text=str(i)) for i in range(7)]
    full = PromptStream(prompts, seed=1)
    seq = [p.text for p in full.take(10) + full.take(9)]
    first = PromptStream(prompts, seed=1)
    head = [p.text for p in first.take(10)]
    resumed = PromptStream(prompts, seed=1, position=first.position)
    assert head + [p.text for p in resumed.take(9)] == seq
    assert sorted(seq[:7]) == sorted(str(i) for i in range(7))  # each epoch is a permutation
    with pytest.raises(DataError, match="no training prompts"):
        PromptStream([], seed=0)
