"""The one loader: dataset rows -> Prompts, one-line DataErrors naming file, line and field for bad
rows, the held-out split, and the resumable stream."""

from __future__ import annotations

import json

import pytest

from onpolicy.config import DataConfig
from onpolicy.data import PromptStream, filter_by_length, load_prompts, read_prompts, read_rows
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
    [a] = read_prompts(p1, DataConfig())
    [b] = read_prompts(p2, DataConfig())
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
        prompts = read_prompts(tmp_path / name, cfg)
        assert [p.text for p in prompts] == ["a", "b", "c"], name
    with pytest.raises(DataError, match="has no split 'test'"):
        read_rows(tmp_path / "dd", split="test")


def test_one_rule_for_plain_prompts_and_reference_alias(tmp_path):
    path = _jsonl(tmp_path / "r.jsonl", [{"prompt": "cat", "reference": "tac"}])
    [text] = read_prompts(path, DataConfig())
    [chat] = read_prompts(path, DataConfig(chat=True))
    assert text == Prompt(text="cat", reference="tac")  # `reference` is the completion's alias
    assert chat == Prompt(messages=({"role": "user", "content": "cat"},), reference="tac")
    both = _jsonl(tmp_path / "b.jsonl", [{"prompt": "a", "completion": "x", "reference": "y"}])
    with pytest.raises(DataError, match=r"b.jsonl:1: `completion` and `reference` differ"):
        read_prompts(both, DataConfig())


BAD_ROWS = [
    # (file content, the message's expected pattern after the file name x.jsonl)
    ('{"prompt": "a"}\n{"messages": [{"x": 1}]}\n', r":2: `messages\[0\].role` is missing"),
    ('{"messages": "hello"}\n', r":1: `messages` must be a non-empty list"),
    ('{"messages": [{"role": "user", "content": 3}]}\n', r":1: `messages\[0\].content` is int"),
    ('{"prompt": "a"}\n\n{"prompt": "b", "completion": "  "}\n', r":3: `completion` is empty"),
    ('{"prompt": "a"}\n{"prompt": ""}\n', r":2: `prompt` must be non-empty text"),
    ('{"prompt": ["a"]}\n', r":1: `prompt` must be non-empty text"),
    ('{"text": "a"}\n', r":1: no `prompt` or `messages` field \(fields: \['text'\]\)"),
    ('{"prompt": "a"}\n{not json\n', r":2: not valid JSON \(.* at column 2\)"),
    ('["a"]\n', r" row 1: a row must be a JSON object"),
    ("7\n", r":1: a row must be a JSON object, got int"),
    ("", r"' has no rows"),
    ("\n  \n", r"' has no rows"),
]  # fmt: skip


@pytest.mark.parametrize(("content", "message"), BAD_ROWS)
def test_bad_rows_are_one_line_errors_with_file_line_and_field(tmp_path, content, message):
    path = tmp_path / "x.jsonl"
    path.write_text(content)
    with pytest.raises(DataError, match=r"x\.jsonl" + message) as err:
        read_prompts(path, DataConfig())
    assert "\n" not in str(err.value)


def test_non_utf8_bytes_name_the_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"prompt": "a"}\n{"prompt": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"x.jsonl:2: not UTF-8 text \(byte 0xe9 at byte 16\)"):
        read_prompts(path, DataConfig())


def test_bad_files_are_one_line_errors(tmp_path):
    (tmp_path / "w.txt").write_text("a")
    with pytest.raises(DataError, match=r"unknown suffix '\.txt'"):
        read_rows(tmp_path / "w.txt")
    with pytest.raises(DataError, match="does not exist"):
        read_rows(tmp_path / "missing.jsonl")


def test_eval_size_that_leaves_nothing_to_train_is_refused(tmp_path):
    path = _jsonl(tmp_path / "p.jsonl", [{"prompt": f"q{i}"} for i in range(4)])
    with pytest.raises(DataError, match=r"has 4 rows and eval_size=4 leaves none to train on"):
        load_prompts(DataConfig(path=str(path), eval_size=4))
    train, held = load_prompts(DataConfig(path=str(path), eval_size=3))
    assert len(train) == 1 and len(held) == 3
    eval_file = _jsonl(tmp_path / "e.jsonl", [{"prompt": "held"}])
    train, held = load_prompts(DataConfig(path=str(path), eval_path=str(eval_file), eval_size=99))
    assert len(train) == 4 and held == [Prompt(text="held")]


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
