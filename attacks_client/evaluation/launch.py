"""Start gateway services as subprocesses for local experiments and the demo.

The client still sees them only over HTTP: this module runs ``python -m service`` with ``SND_*``
environment variables on a free port and waits for ``/readyz``; it never imports the service.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalService:
    """``python -m service`` on ``127.0.0.1:<free port>`` with the given settings."""

    def __init__(self, settings: Mapping[str, Any], *, startup_timeout: float = 120.0) -> None:
        self.settings = dict(settings)
        self.port = free_port()
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = Path(tempfile.mkstemp(prefix="snd-service-", suffix=".log")[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LocalService:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SND_")}
        env.update(
            {"SND_HOST": "127.0.0.1", "SND_PORT": str(self.port), "SND_LOG_LEVEL": "warning"}
        )
        # `workers` is uvicorn's, not a setting: worker processes serve in parallel (each with
        # its own models and batches, and its own in-memory counter unless redis_url is set)
        settings = dict(self.settings)
        workers = ["--workers", str(int(settings.pop("workers")))] if "workers" in settings else []
        for key, value in settings.items():
            env["SND_" + key.upper()] = (
                json.dumps(value) if isinstance(value, dict | list) else str(value)
            )
        with self._log.open("wb") as log_file:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "service", *workers],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"the service exited at start-up:\n{self._log.read_text()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    log.info("service %s ready at %s", self.settings, self.url)
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"the service did not get ready:\n{self._log.read_text()}")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._log.unlink(missing_ok=True)

    def __enter__(self) -> LocalService:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
