"""A client that hangs up mid-request leaves the count exactly as if it had never asked, or as
if it had been answered: never charged and unanswered. No 500, and the server stays healthy.

What the server counted comes from ``/usage/me``; what it answered from the
``snd_queries_answered`` metric; that it is done with the request from the
``snd_request_duration_seconds`` count of ``POST /predict``, observed whatever the outcome."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import RedisProcess, ServiceProcess
from tests.service.hardening.conftest import IMAGE

T = TypeVar("T")
N = 3  # images in the abandoned request


@pytest.fixture(scope="module")
def slow(redis_server: RedisProcess) -> Iterator[ServiceProcess]:
    """A lone request waits 1 s for batch company: charged, then in flight for a second."""
    settings = {
        "batch_wait_ms": 1000,
        "redis_url": f"redis://127.0.0.1:{redis_server.port}/12",
        "redis_timeout_s": 5,
        "log_level": "debug",
    }
    with ServiceProcess(settings) as server:
        yield server


def counts(server: ServiceProcess) -> tuple[int, int, int]:
    """(images counted for this caller, images answered, /predict requests finished)."""
    usage = httpx.get(server.url + "/usage/me", timeout=30)
    assert usage.status_code == 200, usage.text
    answered = finished = 0.0
    for family in text_string_to_metric_families(httpx.get(server.url + "/metrics").text):
        for s in family.samples:
            if s.name == "snd_queries_answered_total":
                answered += s.value
            elif s.name == "snd_request_duration_seconds_count" and s.labels["route"] == "/predict":
                finished += s.value if s.labels["method"] == "POST" else 0
    return int(usage.json()["total"]), int(answered), int(finished)


def poll(read: Callable[[], T], done: Callable[[T], bool], timeout: float = 30) -> T:
    """``read()`` until ``done`` holds of it or ``timeout`` passes; the last reading."""
    deadline = time.monotonic() + timeout
    value = read()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.02)
        value = read()
    return value


def assert_never_charged_and_unanswered(counted: int, answered: int, n: int) -> None:
    """The rule, on the changes the abandoned request made: counted as never asked (0, 0) or
    as answered (n, n); anything else is a charge nobody was answered for, or worse."""
    assert (counted, answered) in ((0, 0), (n, n)), (
        f"{counted} images counted, {answered} answered, of the {n} the client abandoned"
    )


@pytest.mark.parametrize(
    ("counted", "answered", "holds"),
    [(0, 0, True), (N, N, True), (N, 0, False), (0, N, False), (1, 1, False), (2 * N, N, False)],
)
def test_the_rule_tells_charged_and_unanswered_apart(
    counted: int, answered: int, holds: bool
) -> None:
    if holds:
        assert_never_charged_and_unanswered(counted, answered, N)
    else:
        with pytest.raises(AssertionError, match="counted"):
            assert_never_charged_and_unanswered(counted, answered, N)


def request_head(n: int) -> bytes:
    return (
        f"POST /predict?shape={n},1,28,28&output=label HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/octet-stream\r\n"
        f"Content-Length: {n * int(np.prod(IMAGE)) * 4}\r\n\r\n"
    ).encode()


def assert_healthy(server: ServiceProcess) -> None:
    """The next request is answered and counted exactly; nothing crashed on the way."""
    before = counts(server)[0]
    response = httpx.post(
        server.url + "/predict",
        params={"shape": "1,1,28,28", "output": "label"},
        content=np.full((1, *IMAGE), 0.5, np.float32).tobytes(),
        headers={"Content-Type": "application/octet-stream"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert counts(server)[0] == before + 1
    log = server.log()
    assert "Traceback" not in log and "unexpected error" not in log and '" 500' not in log


def test_hanging_up_mid_body_counts_nothing(slow: ServiceProcess) -> None:
    counted, answered, finished = counts(slow)
    with socket.create_connection(("127.0.0.1", slow.port)) as sock:
        sock.sendall(request_head(1) + b"\x00" * 1000)  # of 3136 bytes
    after = poll(lambda: counts(slow), lambda c: c[2] > finished)
    assert after[2] == finished + 1, "the server never finished the cut-off request"
    # the body never arrived: nothing to answer, and so nothing may be counted
    assert (after[0] - counted, after[1] - answered) == (0, 0), after
    assert_healthy(slow)


def test_hanging_up_after_the_charge_is_never_charged_and_unanswered(
    slow: ServiceProcess,
) -> None:
    counted, answered, finished = counts(slow)
    body = np.full((N, *IMAGE), 0.25, np.float32).tobytes()
    with socket.create_connection(("127.0.0.1", slow.port)) as sock:
        sock.sendall(request_head(N) + body)
        # leave once the server has charged the request, while it waits for batch company
        charged = poll(lambda: counts(slow), lambda c: c[0] >= counted + N)
        assert charged[0] == counted + N, f"the request was never charged: {charged}"
        with pytest.raises(BlockingIOError):  # no answer yet: the client leaves before it
            sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    done = poll(lambda: counts(slow), lambda c: c[2] > finished)
    assert done[2] == finished + 1, "the server never finished the abandoned request"
    # a refund of a cancelled charge may land just after: wait for counted to match answered
    settled = poll(lambda: counts(slow), lambda c: c[0] - counted == c[1] - answered, 10)
    assert_never_charged_and_unanswered(settled[0] - counted, settled[1] - answered, N)
    assert_healthy(slow)
