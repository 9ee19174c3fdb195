"""A small JSON-over-HTTP client with timeouts, retries and exponential backoff (stdlib only).

Used by the ``vllm-server`` rollout backend and the vLLM teacher's server mode. Connection errors,
timeouts and 5xx/429 answers are retried ``max_retries`` times, waiting
``min(backoff_s * 2**attempt, backoff_max_s)`` between tries; then a one-line ``BackendError`` names
the URL, the last error and what to check. Other 4xx answers are not retried (the request is wrong).

The wait is bounded: at most ``RetryPolicy.worst_case_s`` = ``(max_retries + 1) * timeout_s`` plus
the backoff waits (defaults: 3 tries x 30 s + 1.5 s = 91.5 s before a hung server is reported);
the error states it. An answer that is not the JSON object a route returns (an HTML page from a
proxy or login portal with status 200, truncated JSON) is a one-line ``BackendError`` when the
caller asks for an object (``expect_object=True``).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from onpolicy.errors import BackendError, ConfigError

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try a server before giving up.

    Attributes:
        timeout_s: seconds one request may take (connect + answer).
        max_retries: extra tries after the first (0 = one try).
        backoff_s: wait before the first retry; doubles each retry.
        backoff_max_s: cap on one wait.
    """

    timeout_s: float = 30.0
    max_retries: int = 2
    backoff_s: float = 0.5
    backoff_max_s: float = 8.0

    def __post_init__(self) -> None:
        if self.timeout_s <= 0 or self.max_retries < 0 or self.backoff_s < 0:
            raise ConfigError(
                f"bad retry policy {self}: timeout_s > 0, max_retries >= 0, backoff_s >= 0"
            )

    def wait_s(self, attempt: int) -> float:
        """Seconds to wait after failed try number ``attempt`` (0-based)."""
        return min(self.backoff_s * 2**attempt, self.backoff_max_s)

    @property
    def worst_case_s(self) -> float:
        """The longest a request can take before its error: every try timing out, plus waits."""
        waits = sum(self.wait_s(a) for a in range(self.max_retries))
        return (self.max_retries + 1) * self.timeout_s + waits


class HTTPStatusError(BackendError):
    """The server answered with an error status that retrying will not fix."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def request_json(
    url: str,
    payload: dict[str, Any] | None,
    policy: RetryPolicy,
    *,
    method: str = "POST",
    sleep: Callable[[float], None] = time.sleep,
    expect_object: bool = False,
) -> Any:
    """Send ``payload`` as JSON to ``url``; return the decoded JSON answer (text if not JSON, None
    for an empty body). ``expect_object``: anything but a JSON object is a ``BackendError``.

    Raises ``HTTPStatusError`` at once on a non-retryable 4xx, ``BackendError`` after the retries.
    """
    data = None if payload is None else json.dumps(payload).encode()
    last = ""
    for attempt in range(policy.max_retries + 1):
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=policy.timeout_s) as resp:
                body, kind = resp.read(), resp.headers.get_content_type()
            answer = _decode(body)
            if expect_object and not isinstance(answer, dict):
                raise not_an_object(method, url, kind, body)
            return answer
        except urllib.error.HTTPError as err:
            detail = _error_detail(err)
            if err.code not in RETRY_STATUS:
                raise HTTPStatusError(
                    f"{method} {url} -> HTTP {err.code}: {detail}", err.code
                ) from err
            last = f"HTTP {err.code}: {detail}"
        except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
            last = f"{type(err).__name__}: {getattr(err, 'reason', err)}"
        if attempt < policy.max_retries:
            sleep(policy.wait_s(attempt))
    raise BackendError(
        f"{method} {url} failed after {policy.max_retries + 1} tries "
        f"(timeout {policy.timeout_s:g} s each, at most {policy.worst_case_s:g} s in all): {last}; "
        "check that the server is up and reachable, or raise rollout.vllm timeout_s / max_retries"
    )


def not_an_object(method: str, url: str, kind: str, body: bytes) -> BackendError:
    """The error for an answer that is not the expected JSON object (e.g. an HTML page)."""
    head = " ".join(body[:80].decode(errors="replace").split())
    return BackendError(
        f"{method} {url} answered with {kind or 'no content type'} ({head!r}), not a JSON "
        "object; is that address the vLLM server itself (not a proxy, login page or other app)?"
    )


def _decode(body: bytes) -> Any:
    """JSON answer, or the plain text some routes send (``/v1/load_lora_adapter``), or None."""
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except ValueError:
        return body.decode(errors="replace")


def _error_detail(err: urllib.error.HTTPError) -> str:
    try:
        body = err.read().decode(errors="replace")
    except OSError:
        return err.reason or ""
    try:
        parsed = json.loads(body)
    except ValueError:
        return body[:300]
    if isinstance(parsed, dict):
        inner = parsed.get("error", parsed.get("detail", parsed))
        if isinstance(inner, dict):
            inner = inner.get("message", inner)
        return str(inner)[:300]
    return str(parsed)[:300]
