"""The task reward next to the distillation signal (``reward:``, ``onpolicy.rewards``): the
advantage on a hand-derived case, a reward that prefers a token moves the student toward it, and
the config path (validated up front, trained, logged)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from onpolicy.api import rollout as sample
from onpolicy.api import step
from onpolicy.chat import render_prompt
from onpolicy.errors import ConfigError
from onpolicy.models import load_model, load_tokenizer
from onpolicy.objectives.policy_gradient import PolicyGradient, whiten
from onpolicy.rewards import TaskReward, group_advantages
from onpolicy.rollout.base import make_backend
from onpolicy.teacher.local import LocalTeacher
from onpolicy.teacher.types import TokenScores
from onpolicy.tiny import tiny_model_dir
from onpolicy.types import Prompt, Rollout, SamplingParams


def _chat(text: str) -> Prompt:
    return Prompt(messages=({"role": "user", "content": text},))


@pytest.fixture(scope="module")
def student():
    d = tiny_model_dir("tiny", seed=2, pretrain_steps=100)
    return load_model(d), load_tokenizer(d)


def _hand_rollout(tok) -> Rollout:
    """Two prompts x two samples, completions given as text."""
    prompts = [_chat("What is 4 plus 9?"), _chat("Name a colour.")]
    texts = ["13", "12", "red", "blue"]
    index = [0, 0, 1, 1]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    return Rollout(
        prompts=prompts, prompt_index_B=index,
        prompt_ids_B=[render_prompt(tok, prompts[i]) for i in index], completion_ids_B=ids,
        sampling_logprobs_B=[[0.0] * len(c) for c in ids], finish_reason_B=["stop"] * 4,
        texts_B=texts,
    )  # fmt: skip


def _student_logprobs_float64(model, ro: Rollout) -> torch.Tensor:
    """log p_student of every completion token, one row at a time, float64 softmax (a reference
    independent of the engine's packed forward)."""
    out = []
    with torch.no_grad():
        for p, c in zip(ro.prompt_ids_B, ro.completion_ids_B, strict=True):
            logits = model(torch.tensor([p + c])).logits[0].double()
            lp = torch.log_softmax(logits, -1)
            out += [float(lp[len(p) - 1 + t, tok]) for t, tok in enumerate(c)]
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_the_advantage_is_the_formula_on_a_hand_case(student, norm):
    model, tok = student
    ro = _hand_rollout(tok)
    s_lp = _student_logprobs_float64(model, ro)
    n = len(s_lp)
    delta = torch.linspace(-1.5, 0.5, n, dtype=torch.float64)  # teacher lp - student lp, chosen
    counts = [len(c) for c in ro.completion_ids_B]
    teacher_lp = (s_lp + delta).float()
    scores = TokenScores(vocab_size=len(tok), num_tokens_B=counts, token_logprobs_N=teacher_lp)
    reward = TaskReward(function=lambda text, prompt: float(text in ("13", "blue")), coef=2.0)
    objective = PolicyGradient(kl_coef=0.5, reward_fn=reward, advantage_norm=norm)
    _, advantage_N, _, metrics = objective.advantages(model, ro, scores)
    # by hand: prompt 0 rewards (1, 0) -> mean 0.5, std 0.5 -> (+1, -1); prompt 1 rewards (0, 1)
    # -> (-1, +1); times coef 2, on every token of the row; eps 1e-6 in the std's denominator
    a = 0.5 / (0.5 + 1e-6)
    per_row = [2 * a, -2 * a, -2 * a, 2 * a]
    rows = torch.tensor(per_row, dtype=torch.float64).repeat_interleave(torch.tensor(counts))
    expected = 0.5 * delta + rows
    if norm == "batch":
        expected = (expected - expected.mean()) / (expected.std() + 1e-6)
    assert torch.allclose(advantage_N.double(), expected, atol=1e-4)
    assert metrics == {"task_reward_sum": 2.0, "task_rows_sum": 4.0}
    assert not advantage_N.requires_grad


def test_group_advantages_center_and_std_by_hand():
    rewards, groups = [1.0, 0.0, 0.0, 0.0, 1.0, 1.0], [0, 0, 0, 0, 1, 1]
    assert group_advantages(rewards, groups, scale=False) == pytest.approx(
        [0.75, -0.25, -0.25, -0.25, 0.0, 0.0]
    )
    std = math.sqrt(0.75 * 0.25)
    assert group_advantages(rewards, groups, scale=True) == pytest.approx(
        [0.75 / std, -0.25 / std, -0.25 / std, -0.25 / std, 0.0, 0.0], rel=1e-5
    )
    assert whiten(torch.tensor([1.0])).tolist() == [1.0]  # fewer than two: unchanged


def _first_token_logprob(model, tok, prompt: Prompt, token: int) -> float:
    ids = render_prompt(tok, prompt)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1].float()
    return float(torch.log_softmax(logits[: len(tok)], -1)[token])


def _train(
    reward: TaskReward | None, prompt: Prompt, kl_coef: float = 0.1, steps: int = 8, lr=3e-4
):
    """``steps`` policy-gradient steps (batch whitening, AdamW at ``lr``) on one prompt, 8 samples
    a step, from the same student, teacher and sampling seeds; returns the trained student."""
    torch.manual_seed(0)
    d = tiny_model_dir("tiny", seed=2, pretrain_steps=100)
    model, tok = load_model(d), load_tokenizer(d)
    teacher_dir = tiny_model_dir("small", seed=1, pretrain_steps=300)
    teacher = LocalTeacher(load_model(teacher_dir, trainable=False), load_tokenizer(teacher_dir),
                           tok, "same")  # fmt: skip
    backend = make_backend("hf", model=model, tokenizer=tok)
    objective = PolicyGradient(kl_coef=kl_coef, reward_fn=reward, advantage_norm="batch")
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    for s in range(steps):
        ro = sample(backend, [prompt] * 2, tok, SamplingParams(max_new_tokens=6, n=4, seed=s))
        step(optimizer, objective.loss(model, ro, teacher.score(ro)), model=model,
             max_grad_norm=1.0)  # fmt: skip
    return model, tok


def test_a_reward_that_prefers_a_token_moves_the_student_toward_it(student):
    model, tok = student
    prompt = _chat("What is 4 plus 9?")
    ids = render_prompt(tok, prompt)
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor([ids])).logits[0, -1, : len(tok)].float(), -1)
    # a first token the student sometimes samples but does not favour: the reward's variance
    candidates = [int(t) for t in torch.argsort(probs, descending=True) if 0.05 < probs[t] < 0.5]
    target = candidates[0]
    piece = tok.decode([target])
    before = _first_token_logprob(model, tok, prompt, target)

    def prefers(text: str, _: Prompt) -> float:
        return float(text.startswith(piece))

    alone, _ = _train(TaskReward(function=prefers), prompt, kl_coef=0.0)  # the reward alone
    rewarded, _ = _train(TaskReward(function=prefers), prompt)  # + the distillation signal
    distilled, _ = _train(None, prompt)  # the same run without the reward
    after_alone = _first_token_logprob(alone, tok, prompt, target)
    after = _first_token_logprob(rewarded, tok, prompt, target)
    without = _first_token_logprob(distilled, tok, prompt, target)
    # measured at lr 3e-4 (the stable default): -1.75 -> -1.09 alone, -1.25 with distillation,
    # -3.02 without the reward (at lr 3e-3 one step broke this student: custom-loop.md's lesson)
    assert after_alone > before + 0.2, (before, after_alone)
    assert after > before + 0.2, (before, after)
    # the teacher answers "4 plus 9 is 13": its log-ratio pulls the first token to "4", away
    # from the rewarded one; the reward keeps the student far closer to it than distillation
    assert after > without + 0.5, (without, after)


def _raw(tmp_path, reward: dict, **blocks) -> dict:
    from pathlib import Path

    data = Path(__file__).resolve().parents[3] / "configs" / "data" / "tiny_chat.jsonl"
    raw = {
        "student": {"path": "tiny:tiny,seed=2,pretrain_steps=100", "max_length": 96},
        "teacher": {"path": "tiny:small,seed=1,pretrain_steps=300", "mode": "same"},
        "objective": {"name": "policy_gradient",
                      "params": {"kl_coef": 0.1, "advantage_norm": "batch"}},
        "rollout": {"max_new_tokens": 8, "n": 2},
        "data": {"path": str(data), "eval_size": 4},
        "optim": {"lr": 3e-4},
        "train": {"steps": 2, "micro_batch_size": 2, "output_dir": str(tmp_path / "run")},
        "eval": {"num_prompts": 4},
        "logging": {"progress_bar": False},
        "reward": reward,
    }  # fmt: skip
    for key, value in blocks.items():
        raw[key] = {**raw[key], **value}
    return raw


REWARD_FILE = "def has_digit(text, prompt):\n    return float(any(c.isdigit() for c in text))\n"


def test_a_config_reward_is_validated_up_front_and_trains(tmp_path):
    from onpolicy.config import from_dict
    from onpolicy.config_checks import validate
    from onpolicy.trainer import train

    (tmp_path / "rewards.py").write_text(REWARD_FILE)
    good = {"function": f"{tmp_path / 'rewards.py'}:has_digit", "coef": 1.0}
    bad = {
        "missing.py:f": "does not exist",
        f"{tmp_path / 'rewards.py'}:nope": "defines no function 'nope'",
        "rewards.txt": "unknown metric",
    }
    for function, message in bad.items():
        with pytest.raises(ConfigError, match=message):
            validate(from_dict(_raw(tmp_path, {"function": function})))
    with pytest.raises(ConfigError, match=r"rollout\.n >= 2"):
        validate(from_dict(_raw(tmp_path, good, rollout={"n": 1})))
    with pytest.raises(ConfigError, match="use objective policy_gradient"):
        validate(from_dict(_raw(tmp_path, good, objective={"name": "reverse_kl", "params": {}})))
    with pytest.raises(ConfigError, match=r"reward\.normalize"):
        from_dict(_raw(tmp_path, {**good, "normalize": "rank"}))
    result = train(from_dict(_raw(tmp_path, good)))
    assert result.steps == 2 and result.nonfinite_steps == 0
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "task_rows_sum" in r]
    assert logged and all(r["task_rows_sum"] == 4.0 for r in logged)  # 2 prompts x n 2
    assert all(0.0 <= r["task_reward_sum"] <= 4.0 for r in logged)


def test_the_recipe_loads_and_its_reward_file_scores():
    from pathlib import Path

    from onpolicy.config import load_config
    from onpolicy.rewards import build_task_reward

    config = load_config(Path(__file__).resolve().parents[3] / "configs" / "pg_task_reward.yaml")
    r = config.reward
    assert Path(r.function.rpartition(":")[0]).is_file()  # made absolute next to the YAML
    reward = build_task_reward(r.function, r.coef, r.normalize)
    prompt = Prompt(text="What is 4 plus 9?", reference="4 plus 9 is 13.")
    assert reward.function("4 plus 9 is 13.", prompt) == 1.0
    assert reward.function("4 plus 9 is 12.", prompt) == 0.0
