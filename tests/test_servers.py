"""The test harness itself (``tests/servers.py``): a server that dies during start-up is
reported at once with its output, and ports are never lost to a check-then-use race."""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Iterator

import pytest

import tests.servers
from tests.servers import PortTaken, ProcessExited, RedisProcess, ServiceProcess, wait_for


def test_a_service_that_exits_during_start_up_fails_at_once_with_its_output() -> None:
    server = ServiceProcess({"trusted_proxies": ["10.0.0.0/8 "]})
    start = time.monotonic()
    with pytest.raises(ProcessExited) as failure:
        server.start(timeout=60)
    elapsed = time.monotonic() - start
    assert elapsed < 20, f"reported after {elapsed:.1f} s: the start-up timeout was waited out"
    message = str(failure.value)
    assert server.proc is not None and server.proc.returncode not in (None, 0)
    assert f"exited with code {server.proc.returncode}" in message, message
    assert "invalid settings: trusted_proxies" in message, message
    with pytest.raises(RuntimeError, match="no port yet"):
        server.url  # noqa: B018  # never started: no URL pointing at some other server


def test_a_quiet_log_level_is_refused_because_it_hides_the_port() -> None:
    with pytest.raises(ValueError, match="log_level"):
        ServiceProcess({"log_level": "warning"}).start()


def test_wait_for_stops_at_once_on_a_dead_process_but_polls_past_other_errors() -> None:
    def dead() -> bool:
        raise ProcessExited("gone")

    start = time.monotonic()
    with pytest.raises(ProcessExited):
        wait_for(dead, 30, "dead")
    assert time.monotonic() - start < 1
    calls: list[int] = []

    def flaky() -> bool:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("not yet")
        return True

    wait_for(flaky, 30, "flaky")
    assert len(calls) == 3
    with pytest.raises(TimeoutError, match="ConnectionError"):
        wait_for(lambda: (_ for _ in ()).throw(ConnectionError("never")), 0.3, "never")


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port some other process is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_redis_starts_again_elsewhere_when_its_port_was_taken_meanwhile(
    taken_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    ports, free_port = iter([taken_port, taken_port]), tests.servers.free_port
    monkeypatch.setattr(tests.servers, "free_port", lambda: next(ports, 0) or free_port())
    with RedisProcess() as redis:
        assert redis.port not in (0, taken_port)
        assert redis._ping()


def test_redis_on_a_chosen_port_that_is_taken_fails_at_once(taken_port: int) -> None:
    redis = RedisProcess(port=taken_port)
    start = time.monotonic()
    with pytest.raises(PortTaken, match="(?i)address already in use"):
        redis.start()
    assert time.monotonic() - start < 10
    assert redis.port == taken_port
    shutil.rmtree(redis.directory, ignore_errors=True)
