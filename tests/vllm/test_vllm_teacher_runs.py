"""Config runs with a real ``vllm serve`` as the teacher (``teacher.backend: vllm-server``): same
tokenizer (top-k reverse KL, its chunked form, GKD, the sampled-token objective, SFT on the
served teacher's samples), two teachers of different tokenizers in one run, and a server outage
mid-run (retries, then one line, the checkpoint intact and resumable)."""

from __future__ import annotations

import http.server
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

vllm = pytest.importorskip("vllm")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from local_http import LocalServer  # noqa: E402

from onpolicy.config import apply_overrides, from_dict  # noqa: E402
from onpolicy.errors import BackendError  # noqa: E402
from onpolicy.trainer import train  # noqa: E402

pytestmark = pytest.mark.vllm

DATA = Path(__file__).resolve().parents[2] / "configs" / "data" / "tiny_chat.jsonl"
SERVED = "tiny:tiny,tokenizer=char"  # the model the teacher server runs (its tokenizer here)
STUDENT = "tiny:tiny,tokenizer=char,seed=2"
RETRY = {"timeout_s": 60, "max_retries": 1, "backoff_s": 0.1}


def _config(tmp_path, url, *overrides, teachers=None):
    raw = {
        "student": {"path": STUDENT, "max_length": 256},
        "teacher": {"path": SERVED, "backend": "vllm-server", "server_url": url, "vllm": RETRY},
        "rollout": {"max_new_tokens": 8},
        "objective": {"name": "reverse_kl"},
        "data": {"path": str(DATA), "eval_size": 4},
        "train": {"steps": 2, "micro_batch_size": 2, "output_dir": str(tmp_path), "seed": 0},
        "eval": {"num_prompts": 2},
        "logging": {"progress_bar": False},
    }
    if teachers is not None:
        raw.pop("teacher")
        raw["teachers"] = teachers
    return from_dict(apply_overrides(raw, list(overrides)))


def _steps(folder: Path) -> list[dict]:
    rows = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "train/loss" in r]


@pytest.mark.parametrize(
    "overrides",
    [
        ("teacher.top_k=8",),  # top-k + tail reverse KL
        ("teacher.top_k=8", "objective.params={chunked: true}"),  # the chunked top-k loss
        ("objective={name: gkd, params: {lmbda: 0.5, off_policy: teacher}}",),  # both shares
        ("objective.name=policy_gradient",),  # only the sampled tokens' log-probs
        ("objective.name=sft",),  # the served teacher samples the completions
    ],
)
def test_served_teacher_same_tokenizer_runs(vllm_teacher_server, tmp_path, overrides):
    url, _ = vllm_teacher_server
    result = train(_config(tmp_path, url, *overrides))
    steps = _steps(tmp_path)
    assert result.steps == 2 and len(steps) == 2
    assert all(r["train/loss"] == r["train/loss"] for r in steps)  # finite, not NaN
    if "sft" not in overrides[0]:
        assert all(r["teacher/seconds"] > 0 for r in steps)
        assert "eval/teacher_nll_per_byte" in result.eval_after  # evaluation with the server
    else:
        assert all(r["train/on_policy"] == 0.0 and r["train/teacher_tokens"] > 0 for r in steps)


def test_served_teacher_across_tokenizers_next_byte_run(vllm_teacher_server, tmp_path):
    """A BPE student, the char teacher on the server: its top-256 (the cross default) rebuilt
    for next_byte; the run trains and logs the alignment coverage."""
    url, _ = vllm_teacher_server
    cfg = _config(tmp_path, url, "student.path=tiny:tiny,seed=2,pretrain_steps=100",
                  "objective.name=next_byte", "teacher.mode=cross")  # fmt: skip
    assert cfg.teacher.top_k == 0  # the default: 256 across tokenizers
    result = train(cfg)
    steps = _steps(tmp_path)
    assert result.steps == 2 and all(0 < r["teacher/coverage"] <= 1 for r in steps)
    assert all(r["train/loss"] == r["train/loss"] for r in steps)


def test_two_teachers_of_different_tokenizers_one_served(vllm_teacher_server, tmp_path):
    url, _ = vllm_teacher_server
    teachers = {
        "served": {"path": SERVED, "backend": "vllm-server", "server_url": url, "vllm": RETRY},
        "local": {"path": "tiny:small,seed=1,pretrain_steps=300"},  # bpe: the student's
    }
    cfg = _config(
        tmp_path,
        url,
        "student.path=tiny:tiny,seed=2,pretrain_steps=100",
        "objective.name=policy_gradient",
        teachers=teachers,
    )
    train(cfg)
    for r in _steps(tmp_path):
        assert r["teacher/served/tokens"] > 0 and r["teacher/local/tokens"] > 0
        assert 0 < r["teacher/coverage"] <= 1  # the served char teacher scored across tokenizers


class _Proxy(http.server.BaseHTTPRequestHandler):
    """Forwards to the real server until ``down`` is set, then answers 503 (an outage)."""

    upstream = ""
    down_after: int | None = None
    completions = 0

    def log_message(self, *args):
        pass

    def _forward(self, body: bytes | None) -> None:
        cls = type(self)
        if self.path.startswith("/v1/completions"):
            cls.completions += 1
        if cls.down_after is not None and cls.completions > cls.down_after:
            self.send_response(503)
            self.end_headers()
            return
        req = urllib.request.Request(cls.upstream + self.path, data=body, method=self.command)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=120) as answer:
            payload = answer.read()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self):
        self._forward(None)

    def do_POST(self):
        self._forward(self.rfile.read(int(self.headers["Content-Length"])))


def test_server_outage_mid_run_is_one_line_and_the_checkpoint_resumes(
    vllm_teacher_server, tmp_path
):
    url, _ = vllm_teacher_server
    _Proxy.upstream, _Proxy.completions = url, 0
    _Proxy.down_after = 2  # one scoring request a step: steps 1 and 2 pass, step 3 meets the outage
    with LocalServer(_Proxy) as proxy:
        cfg = _config(tmp_path, proxy.url, "objective.name=policy_gradient", "train.steps=3",
                      "train.checkpoint_every=1", "train.micro_batch_size=2",
                      "eval.every=0", "data.eval_size=0")  # fmt: skip
        cfg.eval.num_prompts = 0
        with pytest.raises(BackendError) as err:
            train(cfg)
        message = str(err.value)
        assert "\n" not in message and "/v1/completions" in message and "503" in message
        saved = sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*"))
        assert saved[-1] == "step-00000002", saved  # saved before the outage
        _Proxy.down_after = None  # the server is back: the run resumes and finishes
        result = train(cfg)
    assert result.resumed_from is not None and result.steps == 3


def test_engine_teacher_same_tokenizer_run(tmp_path):
    """``teacher.backend: vllm``: an in-process engine started on the teacher scores (top-k)."""
    engine = {"dtype": "float32", "kv_cache_space_gib": 1, "max_model_len": 256}
    cfg = _config(tmp_path, "", "teacher.backend=vllm", "teacher.server_url=null",
                  "teacher.top_k=8", f"teacher.vllm={json.dumps(engine)}")  # fmt: skip
    result = train(cfg)
    steps = _steps(tmp_path)
    assert result.steps == 2 and all(r["teacher/seconds"] > 0 for r in steps)
    assert all(r["train/loss"] == r["train/loss"] for r in steps)
