"""The detection gate: a throttled or suspended caller is refused before its request is charged
or forwarded, inside the charge's own script on Redis (the real app and lifespan in-process
over ASGI, a real redis-server) and by ``QueryDetector.admit`` on the memory store."""

from __future__ import annotations

import asyncio
import hashlib
import time

import httpx
import numpy as np
import pytest
import redis as redis_sync
from prometheus_client import REGISTRY

from service.app import create_app
from service.detection.detector import QueryDetector
from service.detection.store import MemoryDetectionStore, Observation, Policy
from service.errors import ApiError
from service.settings import Settings
from tests.servers import RedisProcess

MODEL = "resnet20-mnist"
CALLER = "key:eve"


def costs(prefix: str, client: redis_sync.Redis) -> tuple[float, float, int, int]:
    """What requests have cost so far: forward passes of the model, charge script calls (the
    gate's read is in them), images counted, and refunds (their idempotency keys, kept 30 s)."""
    forwards = REGISTRY.get_sample_value("snd_forward_batch_images_count", {"model": MODEL})
    charges = REGISTRY.get_sample_value("snd_accounting_charges_per_call_sum")
    counted = sum(int(v) for v in client.hvals(f"{prefix}{{{CALLER}}}:usage"))
    refunds = len(list(client.scan_iter(match=f"{prefix}{{{CALLER}}}:refund:*")))
    return forwards or 0.0, charges or 0.0, counted, refunds


def test_a_refused_caller_costs_no_charge_and_no_forward(redis_server: RedisProcess) -> None:
    prefix = f"admit-{time.monotonic_ns()}:"
    settings = Settings(
        redis_url=redis_server.url,
        redis_prefix=prefix,
        api_keys={hashlib.sha256(b"eve-key").hexdigest(): "eve"},
        models=[
            {
                "name": MODEL,
                "zoo": MODEL,
                "defense": {"kind": "snd", "sigma": 0.01},
                "detection": {"action": "enforce"},
            }
        ],
        detection_secret="s",
        detection_throttle_after=2,
        detection_suspend_after=50,
        detection_throttle_s=30,
        device="cpu",
        torch_threads=1,
    )
    app = create_app(settings)
    body = np.full((1, 1, 28, 28), 0.25, np.float32).tobytes()
    client = redis_sync.Redis.from_url(redis_server.url)

    async def scenario() -> None:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:

                async def predict() -> httpx.Response:
                    return await http.post(
                        "/predict",
                        content=body,
                        params={"shape": "1,1,28,28"},
                        headers={
                            "Content-Type": "application/octet-stream",
                            "X-API-Key": "eve-key",
                        },
                    )

                for _ in range(3):  # the image, then two flagged repeats: throttled
                    assert (await predict()).status_code == 200
                before = costs(prefix, client)
                throttled = await predict()
                assert throttled.status_code == 429, throttled.text
                assert throttled.json()["error"]["code"] == "throttled"
                assert 29 <= int(throttled.headers["Retry-After"]) <= 30
                client.hset(f"{prefix}{{{CALLER}}}:det", "state", "suspended")
                suspended = await predict()
                assert suspended.status_code == 403, suspended.text
                assert suspended.json()["error"]["code"] == "suspended"
                forwards, charges, counted, refunds = costs(prefix, client)
                # two refusals: no forward, nothing counted, no refund; one charge call each
                assert (forwards, counted, refunds) == (before[0], before[2], before[3])
                assert charges == before[1] + 2
                assert before[3] == 0  # no refund was ever needed
                assert client.hgetall(f"{prefix}{{{CALLER}}}:usage") == {MODEL.encode(): b"3"}

    asyncio.run(scenario())
    client.close()


def test_admit_reads_the_memory_store_and_shadow_never_refuses() -> None:
    settings = Settings(device="cpu")
    store = MemoryDetectionStore()
    detector = QueryDetector(MODEL, settings.models[0].detection, [], store, Policy(), False)
    escalate = Policy(throttle_after=1, suspend_after=2, throttle_s=10, escalate=True)
    enforcing = QueryDetector(MODEL, settings.models[0].detection, [], store, escalate, False)
    image = Observation(b"r" * 16, [], b"")

    async def body() -> None:
        await enforcing.admit("key:new", settings)  # unknown: admitted
        await store.observe("key:r", MODEL, [image, image], escalate, time.time())
        with pytest.raises(ApiError) as throttled:
            await enforcing.admit("key:r", settings)
        assert throttled.value.status == 429 and throttled.value.code == "throttled"
        await detector.admit("key:r", settings)  # shadow: never refused
        await store.lift("key:r")
        await enforcing.admit("key:r", settings)

    asyncio.run(body())
