"""Config loading, overrides and validation: one-line ConfigErrors that name the key and the fix."""

from __future__ import annotations

import pytest

from onpolicy.config import Config, apply_overrides, from_dict, load_config
from onpolicy.config_checks import validate
from onpolicy.errors import ConfigError
from onpolicy.models import check_model_path, parse_tiny_spec

BASE = {"student": {"path": "tiny:tiny"}, "teacher": {"path": "tiny:small,seed=1"}}


def _config(**blocks) -> Config:
    raw = {**BASE, **blocks}
    return from_dict(raw)


def _error(raw: dict, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(ConfigError) as info:
        validate(from_dict(apply_overrides(raw, overrides)))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_yaml_file_with_overrides(tmp_path):
    data = tmp_path / "p.jsonl"
    data.write_text('{"prompt": "hi"}\n')
    path = tmp_path / "run.yaml"
    path.write_text(
        "student: {path: 'tiny:tiny'}\nteacher: {path: 'tiny:small'}\n"
        'data: {path: p.jsonl}\noptim: {lr: 1e-4}\nrollout: {stop_strings: ["\\n\\n"]}\n'
    )
    cfg = load_config(
        path,
        [
            "optim.lr=3e-3",
            "train.steps=7",
            "objective.params.beta=0.5",
            "lora.target_modules=[q_proj, k_proj]",
        ],
    )
    assert cfg.optim.lr == pytest.approx(3e-3)
    assert cfg.train.steps == 7
    assert cfg.objective.params == {"beta": 0.5}
    assert cfg.lora.target_modules == ["q_proj", "k_proj"]
    assert cfg.rollout.stop_strings == ["\n\n"]
    assert cfg.data.path == str(data.resolve())  # made absolute, relative to the YAML file


def test_unknown_key_suggests_the_closest():
    assert "did you mean optim.lr?" in _error(BASE, ("optim.lrr=1e-4",))
    assert "did you mean train.grad_accum?" in _error(BASE, ("train.grad_acum=2",))
    assert "unknown config key 'banana'" in _error({**BASE, "banana": 1})


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("optim.lr=2", "optim.lr=2.0 is out of range"),
        ("train.steps=0", "train.steps=0 must be >= 1"),
        ("rollout.top_p=0", "rollout.top_p=0.0 must be in (0, 1]"),
        ("rollout.max_new_tokens=300", "leaves no room for the prompt"),
        ("train.mixed_precision=fp8", "train.mixed_precision='fp8' is not allowed"),
        ("train.steps=abc", "train.steps must be an integer"),
        ("optim.betas=[0.9]", "optim.betas=[0.9] must be two numbers"),
        ("objective.name=reverse_kll", "did you mean 'reverse_kl'?"),
        ("rollout.backend=vlm", "rollout.backend='vlm' is not registered"),
        ("objective.params.betta=0.5", "did you mean 'beta'?"),
        ("teacher.mode=self", "teacher.mode=self needs lora.enabled=true"),
        ("lora.target_modules=[]", "lora.target_modules is empty"),
    ],
)
def test_bad_values_are_one_line_errors(override, fragment):
    raw = BASE if override != "lora.target_modules=[]" else {**BASE, "lora": {"enabled": True}}
    assert fragment in _error(raw, (override,))


def test_missing_files():
    assert "student.path='/nope/model' does not exist" in _error(
        {**BASE, "student": {"path": "/nope/model"}}
    )
    assert "data.path='missing.jsonl' does not exist" in _error(
        {**BASE, "data": {"path": "missing.jsonl"}}
    )
    assert "teacher.path is missing" in _error({"student": {"path": "tiny:tiny"}})
    with pytest.raises(ConfigError, match=r"config file .* not found"):
        load_config("/nope/run.yaml")


def test_invalid_yaml_and_overrides(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("student: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="is not key=value"):
        apply_overrides({}, ["optim.lr"])


def test_tiny_spec():
    assert parse_tiny_spec("tiny:small,seed=1,pretrain_steps=300,tokenizer=char") == {
        "name": "small",
        "seed": 1,
        "pretrain_steps": 300,
        "tokenizer": "char",
    }
    with pytest.raises(ConfigError, match="tiny model 'huge'"):
        parse_tiny_spec("tiny:huge")
    with pytest.raises(ConfigError, match="bad option 'colour=red'"):
        parse_tiny_spec("tiny:tiny,colour=red")


def test_model_paths_checked_in_models_without_an_import_circle():
    """``offline:`` names are checked (not built) where ``tiny:`` specs are; the checks import
    ``onpolicy.models``, and neither it nor ``config_checks`` imports ``onpolicy.config``."""
    import subprocess
    import sys

    check_model_path("teacher.path", "offline:smollm2")  # known: nothing is built
    with pytest.raises(ConfigError, match=r"teacher.path='offline:llama' is not an offline model"):
        check_model_path("teacher.path", "offline:llama")
    assert "offline:<name>" in _error({**BASE, "student": {"path": "/nope/model"}})
    code = (
        "import sys, onpolicy.config_checks, onpolicy.models; "
        "assert 'onpolicy.config' not in sys.modules, 'config imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_defaults_validate_and_round_trip():
    cfg = _config()
    validate(cfg)
    assert from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("name", ["onpolicy_reverse_kl", "gkd", "lora_student", "cross_tokenizer"])
def test_recipes_load_and_validate(name):
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    cfg = load_config(repo / "configs" / f"{name}.yaml")
    assert Path(cfg.data.path).is_file()


def test_accelerate_configs_are_valid_yaml():
    from pathlib import Path

    import yaml

    folder = Path(__file__).resolve().parents[2] / "configs" / "accelerate"
    kinds = {yaml.safe_load(p.read_text())["distributed_type"] for p in folder.glob("*.yaml")}
    assert kinds == {"NO", "MULTI_CPU", "MULTI_GPU", "FSDP", "DEEPSPEED"}


def test_vllm_block_passes_through_to_the_backend():
    cfg = from_dict(
        apply_overrides(
            BASE, ["rollout.backend=vllm", "rollout.vllm={gpu_memory_utilization: 0.4}"]
        )
    )
    validate(cfg)
    assert cfg.rollout.vllm == {"gpu_memory_utilization": 0.4}
    assert "rollout.backend=hf" in _error(BASE, ("rollout.vllm.server_url=http://x:8000",))
