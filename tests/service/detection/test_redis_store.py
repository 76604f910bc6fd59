"""``RedisDetectionStore`` alone: a retried call observes once, and the app's shutdown closes its
connections (real redis-server processes; a real TCP proxy loses a reply)."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
from typing import Any

import httpx
import numpy as np

from service.accounting.redis_counter import RedisCounter
from service.app import create_app
from service.detection.redis_store import RedisDetectionStore
from service.detection.store import Observation, Policy
from service.settings import Settings
from tests.servers import RedisProcess

PREFIXES = itertools.count()


def image(tag: bytes) -> Observation:
    """An image of its own: exact digest and near keys all derived from ``tag``."""
    return Observation(tag * 16, [tag + bytes([i]) * 7 for i in range(50)], tag)


class ReplyDropper:
    """A TCP proxy to Redis. Armed, it forwards the next request carrying an ``EVALSHA`` and
    then closes that client connection instead of passing Redis's reply on: the script ran,
    its reply is lost (a timeout after the fact), and redis-py retries on a fresh connection."""

    def __init__(self, redis_port: int) -> None:
        self.redis_port = redis_port
        self.armed = False
        self.dropped = 0
        self.port = 0

    async def start(self) -> asyncio.Server:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        return server

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.redis_port)
        lose_reply = False

        async def to_redis() -> None:
            nonlocal lose_reply
            while data := await reader.read(1 << 16):
                if self.armed and b"EVALSHA" in data:
                    self.armed, lose_reply = False, True
                up_writer.write(data)
                await up_writer.drain()
            up_writer.close()

        async def to_client() -> None:
            while data := await up_reader.read(1 << 16):
                if lose_reply:
                    self.dropped += 1
                    break
                writer.write(data)
                await writer.drain()
            writer.close()
            up_writer.close()

        await asyncio.gather(to_redis(), to_client(), return_exceptions=True)


def test_the_same_token_observes_once(redis_server: RedisProcess) -> None:
    """A rerun of a call (same token) answers its first reply: nothing indexed or counted
    again, so the image does not match itself."""

    async def body() -> None:
        counter = RedisCounter(redis_server.url, prefix=f"once{next(PREFIXES)}:", timeout=5)
        store = RedisDetectionStore(counter.backend)
        policy = Policy(store_answers=True)
        args = ("key:a", "m", [image(b"x")], policy, 100.0)
        first = await store.observe(*args, token="t1")
        again = await store.observe(*args, token="t1")
        assert first == again
        assert (first.verdicts[0].seq, first.verdicts[0].layer) == (1, None)
        status = await store.status("key:a", policy, 100.0)
        assert status is not None and status.queries == 1 and status.flags == {}
        other = await store.observe(*args, token="t2")  # a new request does repeat
        assert (other.verdicts[0].seq, other.verdicts[0].layer) == (2, "exact")
        assert other.verdicts[0].cached == b"x"
        await counter.close()
        await store.close()

    asyncio.run(body())


def test_a_reply_lost_after_the_script_ran_is_retried_and_observed_once(
    redis_server: RedisProcess,
) -> None:
    """The client really retries (the call succeeds although its connection died after the
    script ran), alone and coalesced in a pipeline; each image is still observed once."""

    async def body() -> None:
        proxy = ReplyDropper(redis_server.port)
        server = await proxy.start()
        url = f"redis://127.0.0.1:{proxy.port}/0"
        counter = RedisCounter(url, prefix=f"lost{next(PREFIXES)}:", timeout=5)
        store = RedisDetectionStore(counter.backend)
        policy = Policy()
        await store.observe("key:warm", "m", [image(b"w")], policy, 1.0)  # loads the script

        proxy.armed = True
        alone = await store.observe("key:a", "m", [image(b"a")], policy, 1.0)
        assert proxy.dropped == 1
        assert [(v.seq, v.layer) for v in alone.verdicts] == [(1, None)]

        proxy.armed = True
        together = await asyncio.gather(
            store.observe("key:b", "m", [image(b"b")], policy, 1.0),
            store.observe("key:c", "m", [image(b"c"), image(b"d")], policy, 1.0),
        )
        assert proxy.dropped == 2
        got = [[(v.seq, v.layer) for v in o.verdicts] for o in together]
        assert got == [[(1, None)], [(1, None), (2, None)]]
        for caller, queries in (("key:a", 1), ("key:b", 1), ("key:c", 2)):
            status = await store.status(caller, policy, 1.0)
            assert status is not None and (status.queries, status.flags) == (queries, {})
        await counter.close()
        await store.close()
        server.close()

    asyncio.run(body())


def connected_clients(port: int) -> int:
    out = subprocess.run(
        ["redis-cli", "-p", str(port), "info", "clients"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("connected_clients:"))
    return int(line.split(":")[1]) - 1  # not this redis-cli


def test_the_apps_shutdown_closes_the_detection_stores_connections() -> None:
    """In-process (the real app and lifespan over ASGI) on its own redis-server, so every
    client connection on it is the gateway's."""
    model = {
        "name": "resnet20-mnist",
        "zoo": "resnet20-mnist",
        "defense": {"kind": "snd", "sigma": 0.01},
        "detection": {"action": "enforce"},
    }
    body = np.full((1, 1, 28, 28), 0.5, np.float32).tobytes()
    kept: list[Any] = []

    with RedisProcess() as redis:
        settings = Settings(
            redis_url=redis.url,
            models=[model],
            detection_secret="s",
            device="cpu",
            torch_threads=1,
        )
        app = create_app(settings)

        async def scenario() -> None:
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                    response = await client.post(
                        "/predict",
                        content=body,
                        params={"shape": "1,1,28,28"},
                        headers={"Content-Type": "application/octet-stream"},
                    )
                    assert response.status_code == 200, response.text
                store = app.state.runtime.detections
                assert isinstance(store, RedisDetectionStore)
                kept.append(store)  # referenced: only a close ends its connections
                assert store._redis.connection_pool._available_connections
                assert connected_clients(redis.port) >= 2  # the counter's and the store's
            assert connected_clients(redis.port) == 0

        asyncio.run(scenario())
