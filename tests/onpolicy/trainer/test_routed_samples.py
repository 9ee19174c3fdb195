"""Teacher samples with several teachers (``onpolicy.trainer.routed_samples``): each prompt is
sampled by its named teacher, or one drawn by weight; cross-tokenizer samples come back in the
student's tokens; an SFT run on them trains."""

from __future__ import annotations

import json

import pytest
from trainer_configs import DATA, TEACHER, base_raw

from onpolicy.chat import render_prompt
from onpolicy.config import apply_overrides, from_dict
from onpolicy.models import load_model, load_tokenizer
from onpolicy.rollout.hf import HFRolloutBackend
from onpolicy.tiny import tiny_model_dir
from onpolicy.trainer.routed_samples import RoutedSampler, SamplingTeacher, pick_teacher
from onpolicy.types import Prompt, SamplingParams

GREEDY = SamplingParams(max_new_tokens=10, temperature=0)


def _prompt(q, teacher=None):
    return Prompt(messages=({"role": "user", "content": q},), teacher=teacher)


def test_weighted_draw_is_seeded_by_the_prompt_and_follows_the_weights():
    weights = {"a": 1.0, "b": 3.0}
    prompts = [_prompt(f"What is {i} plus {i}?") for i in range(400)]
    picks = [pick_teacher(p, weights, seed=0) for p in prompts]
    assert picks == [pick_teacher(p, weights, seed=0) for p in prompts]  # same draw again
    assert 0.68 < picks.count("b") / len(picks) < 0.82
    assert pick_teacher(_prompt("x", teacher="a"), {"a": 0.001, "b": 1.0}, seed=0) == "a"


def test_each_prompt_is_sampled_by_its_teacher_in_the_student_tokens():
    bpe_path = tiny_model_dir("small", "bpe", seed=1, pretrain_steps=300)
    char_path = tiny_model_dir("small", "char", seed=2, pretrain_steps=300)
    stok = load_tokenizer(tiny_model_dir("tiny", "bpe"))
    bpe, btok = load_model(bpe_path, trainable=False), load_tokenizer(bpe_path)
    char, ctok = load_model(char_path, trainable=False), load_tokenizer(char_path)
    samplers = {
        "bpe": SamplingTeacher(HFRolloutBackend(bpe, btok), btok, True),
        "char": SamplingTeacher(HFRolloutBackend(char, ctok), ctok, False),
    }
    weights = {"bpe": 1.0, "char": 1.0}
    prompts = [_prompt("Spell cat.", "char"), _prompt("What is 2 plus 3?", "bpe"),
               _prompt("Count to 3.")]  # fmt: skip
    ids = [render_prompt(stok, p) for p in prompts]
    ro = RoutedSampler(samplers, weights, stok, stok.eos_token_id, seed=0).generate(
        ids, GREEDY, prompts
    )
    assert ro.prompt_index_B == [0, 1, 2] and ro.prompt_ids_B == ids
    for b, prompt in enumerate(prompts):
        name = pick_teacher(prompt, weights, seed=0)
        t = samplers[name]
        own = t.sampler.generate([render_prompt(t.tokenizer, prompt)], GREEDY, [prompt])
        assert ro.texts_B[b] == own.texts_B[0]
        if name == "bpe":  # the student's tokenizer: the teacher's own ids
            assert ro.completion_ids_B[b] == own.completion_ids_B[0]
        else:  # re-tokenized by the student (+ its end token when the teacher stopped)
            text_ids = stok(own.texts_B[0], add_special_tokens=False)["input_ids"]
            assert ro.completion_ids_B[b][: len(text_ids)] == text_ids


@pytest.mark.parametrize("samples", ["fresh", "fixed"])
def test_sft_on_several_teachers_samples_trains(tmp_path, samples):
    from onpolicy.trainer import train

    rows = [json.loads(x) for x in DATA.read_text().splitlines()][:16]
    for i, row in enumerate(rows):
        if i % 2:
            row["teacher"] = "char"
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    raw = base_raw(tmp_path / "run")
    raw.pop("teacher")
    raw["teachers"] = {
        "bpe": {"path": TEACHER},
        "char": {"path": "tiny:small,tokenizer=char,seed=2,pretrain_steps=300"},
    }
    cfg = from_dict(apply_overrides(raw, [
        f"data.path={data}", "objective.name=sft", "train.steps=2", "eval.num_prompts=2",
        f"teachers.bpe.samples={samples}", f"teachers.char.samples={samples}",
    ]))  # fmt: skip
    result = train(cfg)
    assert result.steps == 2 and result.budget.teacher_tokens > 0
