"""The vLLM backends' parts that need no vllm: lazy imports, config mapping, validation, and the
request/response conversions of the server backend (checked on hand-made payloads)."""

from __future__ import annotations

import importlib.util

import pytest

from onpolicy.errors import BackendError, ConfigError
from onpolicy.rollout.base import ROLLOUT_BACKENDS, make_backend
from onpolicy.rollout.vllm_engine import VLLMEngineOptions, engine_options
from onpolicy.rollout.vllm_server import completion_payload, rollout_from_response
from onpolicy.tiny import tiny_model_dir
from onpolicy.types import SamplingParams


def test_both_backends_register_without_importing_vllm():
    assert {"vllm", "vllm-server"} <= set(ROLLOUT_BACKENDS)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_vllm_backend_without_vllm_says_how_to_get_it():
    with pytest.raises(BackendError, match=r"setup_vllm_venv\.sh"):
        make_backend("vllm", model_path=tiny_model_dir("tiny", "bpe", seed=0))


def test_config_keys_map_to_engine_options():
    opts = engine_options(
        sync="adapter",
        gpu_memory_utilization=0.25,
        kv_cache_space_gib=1.5,
        enforce_eager=True,
        server_url=None,
    )
    assert opts.lora_sync == "adapter" and opts.kv_cache_space_gib == 2
    assert engine_options(sync="weights").lora_sync == "merged"
    with pytest.raises(ConfigError, match="use weights, merged or adapter"):
        engine_options(sync="lora")
    with pytest.raises(ConfigError, match=r"unknown vllm rollout option\(s\) \['gpu_util'\]"):
        engine_options(gpu_util=0.3)
    with pytest.raises(ConfigError, match="gpu_memory_utilization"):
        VLLMEngineOptions(gpu_memory_utilization=1.5)
    with pytest.raises(ConfigError, match="sync_every"):
        VLLMEngineOptions(sync_every=0)


def test_server_backend_needs_a_url():
    with pytest.raises(ConfigError, match="server_url"):
        make_backend("vllm-server", sync="none")


def test_completion_payload_sends_token_ids_and_asks_for_sampled_logprobs():
    sampling = SamplingParams(
        max_new_tokens=5,
        temperature=0.7,
        top_k=3,
        n=2,
        seed=9,
        stop_strings=("\n",),
        stop_token_ids=(4,),
    )
    body = completion_payload("student", [[1, 2], [3]], sampling, stop_token_ids=(0, 4))
    assert body["prompt"] == [[1, 2], [3]] and body["n"] == 2 and body["max_tokens"] == 5
    assert body["stop_token_ids"] == [0, 4] and body["stop"] == ["\n"] and body["seed"] == 9
    assert body["logprobs"] == 0 and body["return_token_ids"] is True


def test_response_rows_are_prompt_major_by_choice_index():
    def choice(index, ids, reason):
        return {
            "index": index,
            "text": "t",
            "token_ids": ids,
            "finish_reason": reason,
            "logprobs": {"token_logprobs": [-1.0] * len(ids)},
        }

    answer = {
        "choices": [
            choice(3, [9], "length"),
            choice(0, [5, 0], "stop"),
            choice(2, [8], "stop"),
            choice(1, [6], "length"),
        ]
    }
    ro = rollout_from_response(answer, [[1], [2, 3]], n=2, prompts=None, policy_version=4)
    assert ro.completion_ids_B == [[5, 0], [6], [8], [9]]
    assert ro.prompt_index_B == [0, 0, 1, 1] and ro.prompt_ids_B == [[1], [1], [2, 3], [2, 3]]
    assert ro.finish_reason_B == ["stop", "length", "stop", "length"] and ro.policy_version == 4
    with pytest.raises(BackendError, match="3 completions for 2 prompts x n=2"):
        rollout_from_response({"choices": answer["choices"][:3]}, [[1], [2]], 2, None, 0)
    bad = {"choices": [choice(0, [5], "abort")]}
    with pytest.raises(BackendError, match="abort"):
        rollout_from_response(bad, [[1]], 1, None, 0)
