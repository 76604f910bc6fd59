"""Real servers for the tests: uvicorn in a subprocess, redis-server, a KServe upstream.

Ports are race-free: the gateway binds port 0 itself and the harness reads the port it got
from uvicorn's start-up line; redis-server and the KServe upstream cannot bind port 0, so they
get a port that was free a moment ago and start again on another one when it was taken
meanwhile. A server that dies during start-up fails the start at once, with its exit code and
the tail of its output, instead of burning the start-up timeout."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
START_ATTEMPTS = 5  # for servers that cannot bind port 0 (a port taken between check and use)
_RUNNING_ON = re.compile(r"Uvicorn running on https?://\S+:(\d+) \(Press CTRL\+C")
_QUIET_LEVELS = ("warning", "error", "critical")


def free_port() -> int:
    """A port that was free a moment ago. Only for addresses that nothing should answer on
    (connection-refused tests): a server started on it could lose it to someone else first."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ProcessExited(RuntimeError):
    """A server process exited while the harness waited for it: fatal, never polled past."""


class PortTaken(ProcessExited):
    """The server could not bind its port (taken between choosing and binding it)."""


def tail(text: str, chars: int = 4000) -> str:
    return text[-chars:]


def check_alive(proc: subprocess.Popen[bytes] | None, what: str, log: str) -> None:
    """Raise ``ProcessExited`` (or ``PortTaken``) when ``proc`` has exited."""
    if proc is None or proc.poll() is None:
        return
    error = PortTaken if "address already in use" in log.lower() else ProcessExited
    raise error(f"{what} exited with code {proc.returncode} during start-up:\n{tail(log)}")


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> None:
    """Poll ``check`` until it returns true; other exceptions count as "not yet", except
    ``ProcessExited``, which ends the wait at once."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except ProcessExited:
            raise
        except Exception as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not come up within {timeout}s (last error: {last!r})")


def open_log(prefix: str) -> tuple[int, Path]:
    fd, path = tempfile.mkstemp(prefix=prefix, suffix=".log")
    return fd, Path(path)


def read_log(path: Path | None) -> str:
    return path.read_text(errors="replace") if path is not None and path.exists() else ""


@dataclass
class ServiceProcess:
    """``python -m service`` in a subprocess; settings passed as ``SND_*`` environment.

    ``port`` 0 (the default) lets uvicorn bind a free port itself; ``start`` reads which one
    from its "Uvicorn running on" line, so the log level must be ``info`` or more verbose."""

    settings: Mapping[str, Any] = field(default_factory=dict)
    workers: int = 1
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("the service has no port yet: start it first")
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SND_")}
        env["PYTHONPATH"] = str(ROOT)
        env["SND_TORCH_THREADS"] = env.get("SND_TEST_TORCH_THREADS", "1")
        for key, value in self.settings.items():
            env["SND_" + key.upper()] = (
                json.dumps(value) if isinstance(value, dict | list) else str(value)
            )
        env["SND_PORT"] = str(self.port)  # the harness owns the port
        return env

    def start(self, timeout: float = 90.0) -> ServiceProcess:
        learn_port = not self.port
        if learn_port and str(self.settings.get("log_level", "info")).lower() in _QUIET_LEVELS:
            raise ValueError("a quiet log_level hides the port uvicorn bound: pass port=")
        fd, self.log_path = open_log("snd-service-")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service", "--workers", str(self.workers)],
            env=self.environment(),
            cwd=ROOT,
            stdout=fd,
            stderr=subprocess.STDOUT,
        )
        os.close(fd)

        def healthy() -> bool:
            log = self.log()
            check_alive(self.proc, "service", log)
            if not self.port:
                found = _RUNNING_ON.search(log)
                if found is None:
                    return False
                self.port = int(found.group(1))
            return httpx.get(self.url + "/healthz", timeout=1).status_code == 200

        try:
            wait_for(healthy, timeout, "service")
        except BaseException as exc:
            self.stop()
            if learn_port:
                self.port = 0
            if isinstance(exc, TimeoutError):
                raise TimeoutError(f"{exc}\n{tail(self.log())}") from None
            raise
        return self

    def log(self) -> str:
        return read_log(self.log_path)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_on_some_port(
    server: RedisProcess | UpstreamProcess, launch: Callable[[], None], check: Callable[[], Any]
) -> None:
    """``launch`` the server and wait for ``check``; on a port taken meanwhile, start again
    on another free port (unless the caller chose the port)."""
    chosen = server.port
    for attempt in range(1, START_ATTEMPTS + 1):
        server.port = chosen or free_port()
        launch()
        try:
            check()
            return
        except PortTaken:
            server.stop()
            if chosen or attempt == START_ATTEMPTS:
                raise
        except BaseException:
            server.stop()
            raise


@dataclass
class RedisProcess:
    """A throwaway ``redis-server`` with its own temp dir, no persistence; on a free port, or
    on ``port`` when given (restarting a server on the port it had)."""

    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="snd-redis-")))
    extra: list[str] = field(default_factory=list)
    """More redis-server arguments (cluster mode, replicaof, ...)."""

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.directory / "redis-server.log"

    def start(self) -> RedisProcess:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is missing (the README's test set-up installs it)")

        def launch() -> None:
            with self.log_path.open("wb") as log:
                self.proc = subprocess.Popen(
                    [binary, "--port", str(self.port), "--bind", "127.0.0.1"]
                    + ["--dir", str(self.directory), "--save", "", "--appendonly", "no"]
                    + self.extra,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )

        def up() -> bool:
            check_alive(self.proc, "redis-server", read_log(self.log_path))
            return self._ping()

        start_on_some_port(self, launch, lambda: wait_for(up, 20, "redis-server"))
        return self

    def _ping(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def __enter__(self) -> RedisProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass
class UpstreamProcess:
    """A real KServe ``ModelServer`` (``deploy/upstream/kserve_resnet20.py``) serving the
    embedded ResNet-20 over the Open Inference Protocol: the upstream of proxy mode."""

    model: str = "resnet20"
    delay_s: float = 0.0
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> UpstreamProcess:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}

        def launch() -> None:
            fd, self.log_path = open_log("kserve-upstream-")
            command = [sys.executable, str(ROOT / "deploy" / "upstream" / "kserve_resnet20.py")]
            command += ["--http_port", str(self.port), "--model_name", self.model]
            command += ["--delay_s", str(self.delay_s), "--enable_latency_logging", "False"]
            self.proc = subprocess.Popen(
                command, env=env, cwd=ROOT, stdout=fd, stderr=subprocess.STDOUT
            )
            os.close(fd)

        def ready() -> bool:
            log = self.log()
            check_alive(self.proc, "kserve upstream", log)
            if "address already in use" in log.lower():  # uvicorn may stay up without a port
                raise PortTaken(f"kserve upstream could not bind {self.port}:\n{tail(log)}")
            url = f"{self.url}/v2/models/{self.model}/ready"
            return httpx.get(url, timeout=1).status_code == 200

        def up() -> None:
            try:
                wait_for(ready, timeout, "kserve upstream")
            except TimeoutError as exc:
                raise TimeoutError(f"{exc}\n{tail(self.log())}") from None

        start_on_some_port(self, launch, up)
        return self

    def log(self) -> str:
        return read_log(self.log_path)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> UpstreamProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


REFUSING_ZOO, REFUSING_LABELS, REFUSING_WATCHED = "resnet20-mnist", "mnist-labels", "mnist-watched"


def refusing_settings(
    api_keys: dict[str, str], budgets: dict[str, int], throttle_s: float
) -> dict[str, Any]:
    """Settings of a gateway that refuses in every way: the embedded model as
    ``resnet20-mnist``, a label-only copy (``mnist-labels``) and one under stateful detection
    (``mnist-watched``, enforce) that throttles at the first flag for ``throttle_s`` and
    suspends at the second; ``api_keys`` maps key hashes to callers."""

    def model(name: str, **more: object) -> dict[str, object]:
        return {"name": name, "zoo": REFUSING_ZOO, "defense": {"kind": "none"}, **more}

    return {
        "api_keys": api_keys,
        "budgets": budgets,
        "models": [
            model(REFUSING_ZOO),
            model(REFUSING_LABELS, label_only=True),
            model(REFUSING_WATCHED, detection={"action": "enforce"}),
        ],
        "detection_secret": "refusals-secret",
        "detection_throttle_after": 1,
        "detection_suspend_after": 2,
        "detection_throttle_s": throttle_s,
    }
