"""Hidden-state distillation in the trainer: the update (student and projection) does not depend
on the micro-batch split, the projection is saved in checkpoints and restored on resume, never
exported, and bad ``hidden`` configs stop before any model loads with one line."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from trainer_configs import TEACHER, make_config

from onpolicy.config_checks import validate
from onpolicy.data import load_prompts
from onpolicy.errors import ConfigError
from onpolicy.hidden.build import hidden_plan
from onpolicy.trainer import checkpoint as ckpt
from onpolicy.trainer import train
from onpolicy.trainer.loop import micro_batches_for, train_step
from onpolicy.trainer.run import make_accelerator
from onpolicy.trainer.setup import build_components

HIDDEN = ("hidden.weight=0.5", "hidden.loss=mse")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    cfg = make_config(
        tmp_path_factory.mktemp("hsplit"),
        *HIDDEN,
        "student.path='tiny:tiny,seed=2,pretrain_steps=100'",
        "rollout.temperature=0",  # greedy: the same completions for every split
        "optim.optimizer=sgd",
        "optim.lr=0.5",
        "optim.grad_clip=null",
    )
    accelerator = make_accelerator(cfg)
    torch.manual_seed(0)
    c = build_components(cfg, accelerator)
    every = sorted(load_prompts(cfg.data)[0], key=lambda p: len(p.reference))
    return accelerator, c, every[:: len(every) // 6][:6]


def _delta(setup, micro_batch_size, grad_accum):
    accelerator, c, prompts = setup
    modules = {"student": c.raw_model, "projection": c.projection}
    start = {n: {k: v.clone() for k, v in m.state_dict().items()} for n, m in modules.items()}
    result = train_step(c, micro_batches_for(prompts, 0, 1, micro_batch_size, grad_accum), 0,
                        accelerator, None)  # fmt: skip
    delta = {
        f"{n}.{k}": v - start[n][k] for n, m in modules.items() for k, v in m.state_dict().items()
    }
    for n, m in modules.items():
        m.load_state_dict(start[n])
    return result, delta


def test_same_update_for_any_micro_batch_split(setup):
    _, c, _ = setup
    assert c.projection is not None and len(c.projection.maps) == 2  # 64 -> 128, two pairs
    ref_result, ref = _delta(setup, 6, 1)
    assert ref_result.applied and "hidden/distance_sum" in ref_result.metrics
    moved = {k: d.abs().max().item() for k, d in ref.items()}
    assert min(v for k, v in moved.items() if k.startswith("projection")) > 1e-4
    for mbs, accum in ((1, 6), (2, 3), (3, 2)):
        result, delta = _delta(setup, mbs, accum)
        assert result.loss == pytest.approx(ref_result.loss, rel=1e-5)
        assert result.metrics["hidden/distance_sum"] == pytest.approx(
            ref_result.metrics["hidden/distance_sum"], rel=1e-5
        )
        for k in ref:
            torch.testing.assert_close(delta[k], ref[k], rtol=1e-4, atol=1e-6, msg=k)


def _projection(path):
    return load_file(str(path / "model_1.safetensors"))


def test_projection_saved_restored_and_not_exported(tmp_path):
    args = (*HIDDEN, "train.checkpoint_every=1", "train.keep_checkpoints=5", "eval.num_prompts=0")
    full = train(make_config(tmp_path / "full", *args, "train.steps=3"))
    train(make_config(tmp_path / "cut", *args, "train.steps=2"))
    resumed = train(make_config(tmp_path / "cut", *args, "train.steps=3"))
    assert resumed.resumed_from == 2
    saved = [ckpt.list_checkpoints(tmp_path / d) for d in ("full", "cut")]
    first, last = _projection(saved[0][0]), _projection(saved[0][-1])
    assert sorted(first) == ["maps.0.weight", "maps.1.weight"]
    assert first["maps.0.weight"].shape == (128, 64)
    assert not torch.equal(first["maps.0.weight"], last["maps.0.weight"])  # it trains
    resumed_last = _projection(saved[1][-1])
    for k in last:  # resuming restored the projection (and its optimizer state) exactly
        torch.testing.assert_close(resumed_last[k], last[k], rtol=1e-5, atol=1e-7)
    exported = load_file(str(full.final_dir / "model.safetensors"))
    assert not any("maps." in k for k in exported)


def _cfg(tmp_path, *overrides):
    return make_config(tmp_path, *overrides)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("hidden.weight=-1",), r"hidden.weight=-1.0 must be >= 0"),
        (
            ("hidden.weight=1", "objective.name=gold", "teacher.mode=same"),
            r"objective 'gold' compares states at aligned span ends .* teacher.mode=same",
        ),
        (("hidden.weight=1", "hidden.layer_map=[[1, 2, 3]]"), r"not a \[student, teacher\] pair"),
        (("hidden.loss=l1",), r"hidden.loss='l1' is not allowed"),
        (("hidden.weight=1", "teacher.backend=vllm"), r"teacher.backend='vllm' returns log-prob"),
    ],
)
def test_bad_hidden_configs_fail_in_validation(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(_cfg(tmp_path, *overrides))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("hidden.layer_map=[[1, 4]]",), r"teacher index 4 is outside 0..3"),
        (("hidden.projection=none",), r"hidden width is 64 and the teacher's 128"),
        (
            ("teacher.path='tiny:small,tokenizer=char'", "teacher.mode=same"),
            r"teacher.mode=same needs the same tokenizer, but the teacher .* tokenizes differently",
        ),
        (
            ("teacher.path='tiny:small,tokenizer=char'", "teacher.mode=auto"),
            r"runs with gold, uld, next_byte .* or sft .*, not 'reverse_kl'",
        ),
        (("objective.name=gold", "teacher.mode=auto"), r"objective 'gold' is cross-tokenizer but"),
    ],
)
def test_bad_hidden_plans_fail_before_weights_load(tmp_path, overrides, message):
    cfg = _cfg(tmp_path, "hidden.weight=1", *overrides)
    validate(cfg)
    with pytest.raises(ConfigError, match=message):
        hidden_plan(cfg)


def test_plan_defaults(tmp_path):
    plan = hidden_plan(_cfg(tmp_path, "hidden.weight=1", f"teacher.path='{TEACHER}'"))
    assert plan.pairs == ((1, 2), (2, 3)) and plan.num_maps == 2
    same = hidden_plan(_cfg(tmp_path, "hidden.weight=1", "teacher.path=tiny:tiny"))
    assert same.pairs == ((1, 1), (2, 2)) and same.num_maps == 0  # equal widths: compared as is
    forced = hidden_plan(
        _cfg(tmp_path, "hidden.weight=1", "teacher.path=tiny:tiny", "hidden.projection=linear")
    )
    assert forced.num_maps == 2


@pytest.mark.slow
def test_two_processes_match_one_with_the_hidden_term(tmp_path):
    """DDP (2 processes x 2 micro-batches of 1) vs 1 process x 1 micro-batch of 4: the same
    losses, student and projection (the projection is DDP-synchronized; the term is normalized
    by the global token count, not per process)."""
    import yaml
    from launch_helpers import ddp_launch_args, losses, train_under_accelerate
    from trainer_configs import base_raw

    from onpolicy.config import apply_overrides, from_dict

    overrides = [*HIDDEN, "rollout.temperature=0", "optim.optimizer=sgd", "optim.lr=0.5",
                 "optim.grad_clip=null", "train.steps=2", "eval.num_prompts=0"]  # fmt: skip
    raw = apply_overrides(base_raw(tmp_path / "two"), overrides)
    raw["train"].update(micro_batch_size=1, grad_accum=2)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    train_under_accelerate(ddp_launch_args(), path)
    one = from_dict(apply_overrides(base_raw(tmp_path / "one"), overrides))
    one.train.micro_batch_size = 4
    train(one)
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), rel=1e-6)
    for name in ("model.safetensors", "model_1.safetensors"):
        a, b = (load_file(str(ckpt.latest_checkpoint(tmp_path / d) / name)) for d in ("one", "two"))
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=f"{name} {k}")


def test_checkpoints_written_before_the_hidden_block_still_resume(tmp_path):
    """A checkpoint's recorded config without the ``hidden.*`` keys (written before they existed)
    matches a config that leaves them at their defaults; turning the term on is a change."""
    from pathlib import Path

    from onpolicy.errors import TrainingError
    from onpolicy.trainer.run_folder import check_config, config_record

    cfg = _cfg(tmp_path)
    old = {k: v for k, v in config_record(cfg)["config"].items() if not k.startswith("hidden.")}
    assert check_config(Path("step-00000002"), old, cfg, allow=()) == []
    with pytest.raises(TrainingError, match=r"hidden.weight None -> 1.0"):
        check_config(Path("step-00000002"), old, _cfg(tmp_path, "hidden.weight=1"), allow=())
