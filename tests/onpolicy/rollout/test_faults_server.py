"""A server that answers status 200 with an HTML page (a proxy, a login portal, another app on
the port) or with JSON of another shape: one line, not a traceback; the default timeouts bound
the total wait and the error states it (http.py, vllm_server.py, vllm_teacher.py)."""

from __future__ import annotations

import http.server

import pytest
from local_http import LocalServer

from onpolicy.errors import BackendError
from onpolicy.rollout.http import RetryPolicy, request_json
from onpolicy.rollout.vllm_server import VLLMServerBackend, VLLMServerOptions
from onpolicy.teacher.vllm_teacher import VLLMTeacher
from onpolicy.types import SamplingParams

HTML = b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>portal</body></html>"


class _Server(LocalServer):
    """127.0.0.1 server answering every GET and POST with status 200, ``body``, ``kind``."""

    def __init__(self, body: bytes, kind: str):
        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        super().__init__(Handler)


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert len(text.splitlines()) == 1
    return text


def test_html_with_200_is_one_line_from_the_rollout_backend():
    with _Server(HTML, "text/html") as server, pytest.raises(BackendError) as err:
        VLLMServerBackend(server.url, options=VLLMServerOptions(sync="none"))
    msg = _one_line(err.value)
    assert "text/html" in msg and "<!DOCTYPE html>" in msg and "not a JSON object" in msg


def test_html_with_200_on_completions_is_one_line():
    with _Server(HTML, "text/html") as server:
        backend = VLLMServerBackend(server.url, model="m", options=VLLMServerOptions(sync="none"))
        with pytest.raises(BackendError, match="/v1/completions answered with text/html"):
            backend.generate([[1, 2]], SamplingParams(max_new_tokens=2))


def test_json_of_another_shape_is_one_line():
    with _Server(b'{"choices": [{"index": 0, "token_ids": "x"}]}', "application/json") as server:
        backend = VLLMServerBackend(server.url, model="m", options=VLLMServerOptions(sync="none"))
        with pytest.raises(BackendError, match="unexpected shape"):
            backend.generate([[1, 2]], SamplingParams(max_new_tokens=2))


def test_html_with_200_is_one_line_from_the_vllm_teacher():
    with _Server(HTML, "text/html") as server, pytest.raises(BackendError) as err:
        VLLMTeacher(server.url)
    assert "text/html" in _one_line(err.value)


def test_default_total_wait_is_bounded_and_stated():
    policy = RetryPolicy()
    assert policy.worst_case_s == 3 * 30.0 + 0.5 + 1.0  # 91.5 s, was ~8 minutes
    assert VLLMServerOptions(sync="none").retry == policy
    failed = []
    short = RetryPolicy(timeout_s=0.2, max_retries=1, backoff_s=0.0)
    with pytest.raises(BackendError, match=r"at most 0.4 s in all") as err:
        request_json("http://127.0.0.1:9/v1/models", None, short, method="GET", sleep=failed.append)
    _one_line(err.value)
