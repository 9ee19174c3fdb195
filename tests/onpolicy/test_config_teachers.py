"""``teacher.backend`` and ``teachers:`` in the config: parsed, validated before any model loads
(one-line errors), and a tiny run with two teachers of different tokenizers logs per-teacher
metrics."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from onpolicy.config import TeacherConfig, apply_overrides, from_dict
from onpolicy.config_checks import validate
from onpolicy.errors import ConfigError, DataError
from onpolicy.teacher.backends import vllm_installed

sys.path.insert(0, str(Path(__file__).parent / "trainer"))
from trainer_configs import DATA, TEACHER, base_raw

CHAR_TEACHER = "tiny:small,tokenizer=char,seed=2,pretrain_steps=300"


def _config(tmp_path, *overrides, teachers=None, drop_teacher=False):
    raw = base_raw(tmp_path)
    if drop_teacher:
        raw.pop("teacher")
    if teachers is not None:
        raw["teachers"] = teachers
    return from_dict(apply_overrides(raw, list(overrides)))


def _error(make) -> str:
    """The one-line ``ConfigError`` of building (``make()``) and validating a config."""
    with pytest.raises(ConfigError) as err:
        validate(make())
    message = str(err.value)
    assert "\n" not in message
    return message


def test_teachers_map_parses_to_teacher_blocks(tmp_path):
    cfg = _config(
        tmp_path,
        teachers={"a": {"path": TEACHER, "weight": 2}, "b": {"path": CHAR_TEACHER}},
        drop_teacher=True,
    )
    assert cfg.teachers == {
        "a": TeacherConfig(path=TEACHER, weight=2.0),
        "b": TeacherConfig(path=CHAR_TEACHER),
    }
    validate(cfg)
    with pytest.raises(ConfigError, match=r"unknown config key 'teachers\.a\.wieght'.*weight"):
        _config(tmp_path, teachers={"a": {"path": TEACHER, "wieght": 2}}, drop_teacher=True)


@pytest.mark.parametrize(
    ("overrides", "teachers", "match"),
    [
        (("teacher.backend=vlm",), None, r"teacher.backend='vlm' is not allowed.*'vllm'"),
        (("teacher.backend=vllm-server",), None, r"needs teacher.server_url \(http"),
        (("teacher.server_url=http://x:1",), None, "backend=local"),
        (
            (
                "teacher.backend=vllm-server",
                "teacher.server_url=http://x:1",
                "teacher.vllm={timeout: 3}",
            ),
            None,
            r"unknown teacher.vllm option\(s\) \['timeout'\]",
        ),
        (
            (
                "teacher.backend=vllm-server",
                "teacher.server_url=http://x:1",
                "objective.name=supervised_kd",
                "objective.params={alpha: 0.5}",
            ),
            None,
            "alpha: 0",
        ),
        (
            (
                "teacher.backend=vllm-server",
                "teacher.server_url=http://x:1",
                "objective.params={temperature: 2.0}",
            ),
            None,
            "temperature 1",
        ),
        (
            (
                "teacher.backend=vllm-server",
                "teacher.server_url=http://x:1",
                "teacher.mode=self",
                "lora.enabled=true",
            ),
            None,
            "backend=local",
        ),
        ((), {"a": {"path": TEACHER}}, "both teacher: and teachers:"),
        (("objective.name=sft", "lora.enabled=true"), {"a": {"mode": "self"}}, "cannot sample"),
        (
            (),
            {"a": {"path": TEACHER, "samples": "fixed"}, "b": {"path": TEACHER}},
            "disagree on samples",
        ),
        ((), {"a": {"path": TEACHER, "weight": 0}}, r"teachers.a.weight=0.0 must be > 0"),
        ((), {"a": {"weight": 1}}, r"teachers.a.path is missing"),
        ((), {"a": {"path": "nowhere/x"}}, r"teachers.a.path='nowhere/x' does not exist"),
    ],
)
def test_bad_teacher_settings_are_one_line_errors(tmp_path, overrides, teachers, match):
    drop = teachers is not None and "both" not in match

    def make():
        return _config(tmp_path, *overrides, teachers=teachers, drop_teacher=drop)

    message = _error(make)
    assert re.search(match, message), message


def test_engine_options_are_checked_up_front(tmp_path, monkeypatch):
    import onpolicy.teacher.backends as backends

    monkeypatch.setattr(backends, "vllm_installed", lambda: True)  # the check after the package's
    message = _error(lambda: _config(tmp_path, "teacher.backend=vllm", "teacher.vllm={gpu: 1}"))
    assert "unknown vllm rollout option(s) ['gpu']" in message


@pytest.mark.skipif(vllm_installed(), reason="vllm is installed")
def test_vllm_backend_without_vllm_says_what_to_install(tmp_path):
    message = _error(lambda: _config(tmp_path, "teacher.backend=vllm"))
    assert "needs the vllm package" in message and "setup_vllm_venv.sh" in message


def test_a_row_naming_an_unknown_teacher_fails_before_models_load(tmp_path):
    from onpolicy.trainer import train

    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"prompt": "What is 1 plus 2?", "teacher": "bpe"}) + "\n"
                    + json.dumps({"prompt": "Spell cat.", "teacher": "cahr"}) + "\n")  # fmt: skip
    cfg = _config(
        tmp_path / "run",
        f"data.path={data}",
        "data.eval_size=0",
        teachers={"bpe": {"path": TEACHER}, "char": {"path": CHAR_TEACHER}},
        drop_teacher=True,
    )
    with pytest.raises(DataError, match=r"names teacher 'cahr'"):
        train(cfg)
    assert not (tmp_path / "run").exists()  # nothing ran


def test_two_teachers_of_different_tokenizers_train_with_per_teacher_metrics(tmp_path):
    from onpolicy.trainer import train

    rows = [json.loads(x) for x in DATA.read_text().splitlines()][:24]
    for i, row in enumerate(rows):  # a third routed to each teacher, a third mixed
        if i % 3 < 2:
            row["teacher"] = ("bpe", "char")[i % 3]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = _config(
        tmp_path / "run",
        f"data.path={data}",
        "objective.name=policy_gradient",
        "train.steps=2",
        "eval.num_prompts=4",
        teachers={"bpe": {"path": TEACHER}, "char": {"path": CHAR_TEACHER, "weight": 3}},
        drop_teacher=True,
    )
    result = train(cfg)
    steps = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in steps if "train/loss" in r]
    assert len(steps) == 2 and result.steps == 2
    for r in steps:
        for name in ("bpe", "char"):
            assert r[f"teacher/{name}/tokens"] > 0
            assert f"teacher/{name}/loss_sum" in r and r[f"teacher/{name}/seconds"] > 0
        # routed rows count once, mixed rows once over both teachers (weights 1/4, 3/4)
        total = r["teacher/bpe/tokens"] + r["teacher/char/tokens"]
        assert total == pytest.approx(r["train/completion_tokens"], abs=1)
        assert 0 < r["teacher/coverage"] <= 1  # the char teacher scored across tokenizers
    ev = result.eval_after  # each teacher evaluated; the first one's also under the plain keys
    assert ev["eval/teacher_nll_per_byte"] == ev["eval/bpe/teacher_nll_per_byte"]
    assert ev["eval/char/teacher_nll_per_byte"] != ev["eval/bpe/teacher_nll_per_byte"]
    assert "eval/bpe/kl_per_token" in ev and 0 < ev["eval/char/alignment_coverage"] <= 1
    assert "eval/char/completion_length" not in ev  # student-only metrics stay unprefixed


@pytest.mark.parametrize(
    "name",
    ["served_reverse_kl", "served_policy_gradient", "served_cross_tokenizer",
     "engine_reverse_kl", "several_teachers"],
)  # fmt: skip
def test_teacher_recipes_load_and_validate(name):
    from onpolicy.config import load_config

    path = Path(__file__).resolve().parents[2] / "configs" / "teachers" / f"{name}.yaml"
    if name.startswith("engine") and not vllm_installed():
        with pytest.raises(ConfigError, match="needs the vllm package"):
            load_config(path)
        return
    cfg = load_config(path)
    assert Path(cfg.data.path).is_file()
    assert cfg.teachers or cfg.teacher.backend != "local"


def test_a_checkpoint_from_before_the_backend_keys_resumes(tmp_path):
    """Keys added since a checkpoint was saved are no change at their defaults (old runs resume);
    set to something else they are listed like any other change."""
    from onpolicy.trainer.run_folder import config_changes, config_record

    now = config_record(_config(tmp_path))["config"]
    added = ("teacher.backend", "teacher.server_url", "teacher.served_model", "teacher.weight",
             "data.teacher_field")  # fmt: skip
    old = {k: v for k, v in now.items() if k not in added}
    assert "teacher.backend" in now and "teacher.backend" not in old
    assert config_changes(old, now) == {}
    served = config_record(_config(tmp_path, "teacher.backend=vllm-server"))["config"]
    assert config_changes(old, served) == {"teacher.backend": (None, "vllm-server")}


def test_make_teacher_builds_and_checks_like_the_config():
    import socket

    from onpolicy import make_teacher
    from onpolicy.config_checks import resolve_model_path
    from onpolicy.errors import BackendError
    from onpolicy.models import load_model, load_tokenizer
    from onpolicy.teacher.local import LocalTeacher

    path = resolve_model_path("tiny:tiny")
    student, tok = load_model(path), load_tokenizer(path)
    teacher = make_teacher(student, tok, path=TEACHER, mode="same")
    assert isinstance(teacher, LocalTeacher) and teacher.mode == "same"
    with pytest.raises(ConfigError, match=r"needs teacher\.server_url"):
        make_teacher(student, tok, path=TEACHER, backend="vllm-server")
    with socket.socket() as s:  # a port nothing listens on: retried, then one line
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(BackendError) as err:
        make_teacher(student, tok, path=TEACHER, backend="vllm-server", server_url=url,
                     vllm={"timeout_s": 1, "max_retries": 1, "backoff_s": 0.0})  # fmt: skip
    assert "\n" not in str(err.value) and "2 tries" in str(err.value)


def test_top_k_a_vllm_teacher_asks_for():
    from onpolicy.teacher.backends import teacher_top_k

    served = TeacherConfig(path=TEACHER, backend="vllm-server", server_url="http://x:1")
    assert teacher_top_k(served, "logits", "same") == 64
    assert teacher_top_k(served, "logits", "cross") == 256  # the rebuilt distribution
    assert teacher_top_k(served, "token", "cross") == 0  # policy_gradient: the tokens' only
    served.top_k = 16
    assert teacher_top_k(served, "token", "same") == 16  # an explicit top_k wins


def test_a_chunked_objective_takes_a_top_k_server_teacher(tmp_path):
    """``chunked: true`` with a vLLM teacher validates: its top-k scores go to the chunked top-k
    loss (``onpolicy.losses.chunked_topk``), not refused for lack of hidden states."""
    for name in ("reverse_kl", "supervised_kd", "gkd"):
        validate(_config(
            tmp_path, "teacher.backend=vllm-server", "teacher.server_url=http://x:1",
            f"objective.name={name}", "objective.params={chunked: true}",
        ))  # fmt: skip
