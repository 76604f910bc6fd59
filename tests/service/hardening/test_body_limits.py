"""The body size limits (413, also for a chunked body or a declared length) and what happens to
a malformed Content-Length or conflicting framing (uvicorn's own plain-text 400 before the app;
see docs/SECURITY.md)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.requests import Request

from service.api.routes.predict import read_body
from service.errors import ApiError
from tests.servers import ServiceProcess
from tests.service.hardening.conftest import (
    KEYS,
    MAX_BODY,
    assert_json_error,
    good_request,
)

LIMITS_KEY = KEYS["limits"]


def raw_exchange(
    server: ServiceProcess, head: bytes, body: bytes = b"", timeout: float = 10.0
) -> bytes:
    """Send a hand-written request (what httpx refuses to send) and read the whole answer."""
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def head(content_length: str | None = None, extra: str = "") -> bytes:
    lines = [
        "POST /predict?shape=1,1,28,28 HTTP/1.1",
        "Host: test",
        f"X-API-Key: {LIMITS_KEY}",
        "Content-Type: application/octet-stream",
        "Connection: close",
    ]
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


def test_a_body_over_the_limit_is_413(hardened: ServiceProcess) -> None:
    before = int(good_request(hardened, LIMITS_KEY).headers["X-Queries-Used"])
    big = bytes(MAX_BODY + 1)
    response = httpx.post(
        hardened.url + "/predict",
        content=big,
        params={"shape": f"{len(big) // 4},1,1,1"},
        headers={"Content-Type": "application/octet-stream", "X-API-Key": LIMITS_KEY},
        timeout=30,
    )
    assert_json_error(response, 413, "body_too_large")
    big_json = json.dumps({"inputs": [[[[0.12345678901234567] * 28] * 28]] * 8}).encode()
    assert len(big_json) > MAX_BODY
    response = httpx.post(
        hardened.url + "/predict",
        content=big_json,
        headers={"Content-Type": "application/json", "X-API-Key": LIMITS_KEY},
        timeout=30,
    )
    assert_json_error(response, 413, "body_too_large")
    assert int(good_request(hardened, LIMITS_KEY).headers["X-Queries-Used"]) == before + 1


def chunks(total: int, size: int = 8192) -> Iterator[bytes]:
    while total > 0:
        yield bytes(min(size, total))
        total -= size


def test_a_chunked_body_over_the_limit_is_413(hardened: ServiceProcess) -> None:
    before = int(good_request(hardened, LIMITS_KEY).headers["X-Queries-Used"])
    with httpx.Client(timeout=30) as client:
        # a generator body goes out with Transfer-Encoding: chunked and no Content-Length
        request = client.build_request(
            "POST",
            hardened.url + "/predict",
            content=chunks(MAX_BODY + 4096),
            params={"shape": "1,1,28,28"},
            headers={"Content-Type": "application/octet-stream", "X-API-Key": LIMITS_KEY},
        )
        assert request.headers["Transfer-Encoding"] == "chunked"
        assert "Content-Length" not in request.headers
        assert_json_error(client.send(request), 413, "body_too_large")
        # a chunked body within the limit is fine
        ok = client.post(
            hardened.url + "/predict",
            content=chunks(3136, 1000),
            params={"shape": "1,1,28,28", "output": "label"},
            headers={"Content-Type": "application/octet-stream", "X-API-Key": LIMITS_KEY},
        )
        assert ok.status_code == 200, ok.text
    assert int(good_request(hardened, LIMITS_KEY).headers["X-Queries-Used"]) == before + 2


def test_a_declared_length_over_the_limit_is_413_before_the_body_is_sent(
    hardened: ServiceProcess,
) -> None:
    # no body follows the headers: the answer must come without waiting for it
    answer = raw_exchange(hardened, head(str(10**12)), timeout=10)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 413"), answer[:300]
    body = json.loads(rest.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["code"] == "body_too_large"
    good_request(hardened, LIMITS_KEY)


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "0x10", "3, 3", ""])
def test_a_malformed_content_length_is_400_before_the_app(
    hardened: ServiceProcess, value: str
) -> None:
    """uvicorn's HTTP parser refuses these itself: a plain-text 400 and a closed connection,
    before the app (and so the JSON error shape) is reached. Documented in docs/SECURITY.md."""
    before = int(good_request(hardened, LIMITS_KEY).headers["X-Queries-Used"])
    answer = raw_exchange(hardened, head(value), body=bytes(3136))
    assert answer.startswith(b"HTTP/1.1 400"), answer[:300]
    assert b"text/plain" in answer.split(b"\r\n\r\n", 1)[0].lower()
    assert int(good_request(hardened, LIMITS_KEY).headers["X-Queries-Used"]) == before + 1


def test_conflicting_framing_is_400_before_the_app(hardened: ServiceProcess) -> None:
    """Two Content-Lengths, or Content-Length with chunked: request-smuggling shapes."""
    for extra in (
        "Content-Length: 3136\r\nContent-Length: 5\r\n",
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    ):
        answer = raw_exchange(hardened, head(None, extra), body=b"0\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400"), answer[:300]
    good_request(hardened, LIMITS_KEY)


@pytest.mark.parametrize(
    ("value", "status", "code"),
    [
        (b"abc", 400, "bad_content_length"),
        (b"-5", 400, "bad_content_length"),
        (b"1e3", 400, "bad_content_length"),
        (str(MAX_BODY + 1).encode(), 413, "body_too_large"),
    ],
)
def test_the_app_refuses_a_bad_content_length_without_reading_the_body(
    value: bytes, status: int, code: str
) -> None:
    """Behind another HTTP server (or a parser that lets it through) the app's own check
    answers in the JSON shape, without reading the body."""

    async def receive() -> dict[str, Any]:
        raise AssertionError("the body was read")

    request = Request(
        {
            "type": "http",
            "method": "POST",
            "path": "/predict",
            "headers": [(b"content-length", value)],
        },
        receive,
    )
    with pytest.raises(ApiError) as refused:
        asyncio.run(read_body(request, MAX_BODY))
    assert (refused.value.status, refused.value.code) == (status, code)
