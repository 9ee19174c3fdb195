"""The ``vllm-server`` backend against servers that are down, slow or failing (local stand-ins on
127.0.0.1; no vllm needed): a clear ``BackendError`` after the configured retries, exponential
backoff, no retry on a bad request, and the run's saved checkpoint intact."""

from __future__ import annotations

import http.server
import json
import socket
import time

import pytest
import torch
from local_http import LocalServer

from onpolicy.errors import BackendError, ConfigError
from onpolicy.rollout.http import RetryPolicy, request_json
from onpolicy.rollout.vllm_server import VLLMServerBackend, VLLMServerOptions
from onpolicy.types import SamplingParams


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server(LocalServer):
    """A local HTTP server answering POSTs with ``plan`` (list of (delay_s, status, body));
    the last entry repeats. Counts requests."""

    def __init__(self, plan):
        self.plan, self.count = plan, 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                step = outer.plan[min(outer.count, len(outer.plan) - 1)]
                outer.count += 1
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                time.sleep(step[0])
                body = json.dumps(step[2]).encode()
                try:
                    self.send_response(step[1])
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out first

            def log_message(self, *args):
                pass

        super().__init__(Handler)


def _backend(url, **options):
    opts = {"sync": "none", "timeout_s": 0.5, "max_retries": 2, "backoff_s": 0.01, **options}
    return VLLMServerBackend(url, model="student", options=VLLMServerOptions(**opts))


def test_a_down_server_is_a_clear_error_after_the_retries():
    url = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    waits = []
    policy = RetryPolicy(timeout_s=0.5, max_retries=3, backoff_s=0.1, backoff_max_s=0.25)
    with pytest.raises(BackendError, match=r"failed after 4 tries.*server is up"):
        request_json(f"{url}/v1/completions", {"x": 1}, policy, sleep=waits.append)
    assert waits == [0.1, 0.2, 0.25]  # exponential, capped


def test_a_slow_server_times_out_on_every_try_then_errors():
    ok = {"choices": []}
    with _Server([(2.0, 200, ok)]) as server:
        start = time.monotonic()
        with pytest.raises(BackendError, match="failed after 3 tries"):
            _backend(server.url).generate([[1, 2]], SamplingParams(max_new_tokens=2))
        assert server.count == 3  # first try + max_retries
        assert time.monotonic() - start < 3 * 2.0  # gave up on each at the 0.5 s timeout


def test_a_flaky_server_is_retried_until_it_answers():
    answer = {
        "choices": [
            {
                "index": 0,
                "text": "a",
                "token_ids": [7],
                "finish_reason": "length",
                "logprobs": {"token_logprobs": [-0.5]},
            }
        ]
    }
    with _Server([(0, 503, {"error": "busy"}), (0, 200, answer)]) as server:
        ro = _backend(server.url).generate([[1, 2]], SamplingParams(max_new_tokens=1))
    assert server.count == 2
    assert ro.completion_ids_B == [[7]] and ro.sampling_logprobs_B == [[-0.5]]


def test_a_bad_request_is_not_retried_and_names_the_server_message():
    with _Server([(0, 400, {"error": {"message": "max_tokens too large"}})]) as server:
        with pytest.raises(BackendError, match="HTTP 400: max_tokens too large"):
            _backend(server.url).generate([[1]], SamplingParams(max_new_tokens=1))
        assert server.count == 1


def test_the_saved_checkpoint_is_intact_after_a_server_failure(tmp_path):
    from accelerate import Accelerator

    from onpolicy.trainer.checkpoint import TrainerState, load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    acc = Accelerator(cpu=True)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model, opt = acc.prepare(model, opt)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    saved = save_checkpoint(acc, tmp_path, TrainerState(step=1, data_position=8), keep=2)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(BackendError):  # the step's rollout fails before anything changes
        _backend(url, max_retries=1).generate([[1, 2]], SamplingParams(max_new_tokens=2))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()  # a crashed run's memory is gone; resume from disk
    state = load_checkpoint(acc, saved)
    assert state == TrainerState(step=1, data_position=8)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())


def test_server_options_are_validated_up_front():
    with pytest.raises(ConfigError, match="sync_dir"):
        VLLMServerOptions(sync="adapter")
    with pytest.raises(ConfigError, match="unknown vllm-server option"):
        VLLMServerOptions.from_kwargs(timeout=3)
    with pytest.raises(ConfigError, match="timeout_s > 0"):
        RetryPolicy(timeout_s=0)
