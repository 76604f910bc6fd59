"""A client that hangs up halfway through its body: no 500, nothing counted, server healthy."""

from __future__ import annotations

import socket
import time

from tests.servers import ServiceProcess
from tests.service.hardening.conftest import KEYS, good_request

KEY = KEYS["disconnect"]


def test_client_disconnect_mid_body_is_not_a_server_error(hardened: ServiceProcess) -> None:
    before = int(good_request(hardened, KEY).headers["X-Queries-Used"])
    with socket.create_connection(("127.0.0.1", hardened.port)) as sock:
        sock.sendall(
            b"POST /predict?shape=1,1,28,28 HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/octet-stream\r\n"
            b"X-API-Key: " + KEY.encode() + b"\r\n"
            b"Content-Length: 3136\r\n\r\n" + b"\x00" * 1000
        )
    time.sleep(0.5)  # let the server notice the hang-up
    # the cut-off request counted nothing, and the server answers the next one
    assert int(good_request(hardened, KEY).headers["X-Queries-Used"]) == before + 1
    log = hardened.log()
    assert "Traceback" not in log and "unexpected error" not in log and '" 500' not in log
