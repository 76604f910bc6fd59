"""A client that hangs up halfway through its body: no 500, nothing counted, server healthy."""

from __future__ import annotations

import socket

import httpx

from tests.servers import ServiceProcess


def test_client_disconnect_mid_body_is_not_a_server_error() -> None:
    with ServiceProcess({"defense": "snd", "sigma": 0.01}) as server:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"POST /predict?shape=1,1,28,28 HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Type: application/octet-stream\r\n"
                         b"Content-Length: 3136\r\n\r\n" + b"\x00" * 1000)
        ok = httpx.post(server.url + "/predict", content=b"\x00" * 3136,
                        params={"shape": "1,1,28,28"},
                        headers={"Content-Type": "application/octet-stream"}, timeout=30)
        assert ok.status_code == 200
        assert ok.headers["x-queries-used"] == "1"  # the cut-off request counted nothing
        log = server.log()
    assert "Traceback" not in log and " 500" not in log
