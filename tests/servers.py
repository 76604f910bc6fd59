"""Real servers for the tests: uvicorn on a free port in a subprocess, and redis-server."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not come up within {timeout}s")


@dataclass
class ServiceProcess:
    """``python -m service`` in a subprocess; settings passed as ``SND_*`` environment."""

    settings: Mapping[str, Any] = field(default_factory=dict)
    workers: int = 1
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SND_")}
        env["PYTHONPATH"] = str(ROOT)
        env["SND_PORT"] = str(self.port)
        env["SND_TORCH_THREADS"] = env.get("SND_TEST_TORCH_THREADS", "1")
        for key, value in self.settings.items():
            env["SND_" + key.upper()] = (
                json.dumps(value) if isinstance(value, dict | list) else str(value)
            )
        return env

    def start(self, timeout: float = 90.0) -> ServiceProcess:
        fd, log = tempfile.mkstemp(prefix="snd-service-", suffix=".log")
        self.log_path = Path(log)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service", "--workers", str(self.workers)],
            env=self.environment(),
            cwd=ROOT,
            stdout=fd,
            stderr=subprocess.STDOUT,
        )
        os.close(fd)

        def alive() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"service exited early:\n{self.log()}")
            return httpx.get(self.url + "/healthz", timeout=1).status_code == 200

        try:
            wait_for(alive, timeout, "service")
        except RuntimeError:
            raise
        except TimeoutError as exc:
            self.stop()
            raise TimeoutError(f"{exc}\n{self.log()}") from None
        return self

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path and self.log_path.exists() else ""

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


@dataclass
class RedisProcess:
    """A throwaway ``redis-server`` on a free port with its own temp dir, no persistence."""

    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="snd-redis-")))
    extra: list[str] = field(default_factory=list)
    """More redis-server arguments (cluster mode, replicaof, ...)."""

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is missing (the README's test set-up installs it)")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--save",
                "",
                "--appendonly",
                "no",
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._ping, 20, "redis-server")
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
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> UpstreamProcess:
        fd, log = tempfile.mkstemp(prefix="kserve-upstream-", suffix=".log")
        self.log_path = Path(log)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        command = [sys.executable, str(ROOT / "deploy" / "upstream" / "kserve_resnet20.py")]
        command += ["--http_port", str(self.port), "--model_name", self.model]
        command += ["--delay_s", str(self.delay_s), "--enable_latency_logging", "False"]
        self.proc = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=fd, stderr=subprocess.STDOUT
        )
        os.close(fd)

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"kserve upstream exited early:\n{self.log()[-4000:]}")
            url = f"{self.url}/v2/models/{self.model}/ready"
            return httpx.get(url, timeout=1).status_code == 200

        try:
            wait_for(ready, timeout, "kserve upstream")
        except TimeoutError as exc:
            self.stop()
            raise TimeoutError(f"{exc}\n{self.log()[-4000:]}") from None
        return self

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path and self.log_path.exists() else ""

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
