"""The soak's traffic (``benchmarks.soak``): callers that come and go, each a short session on
its own connections sending a mix of single images and batches, scores and labels, npy, raw
and JSON bodies, exact repeats (flagged by the shadow detector), about a tenth bad input of the
hardening kinds, and requests abandoned mid-flight (client disconnects).

What the client saw is kept per caller: images answered 200 (must be counted exactly), and
images of requests whose fate it cannot know (cancelled, or a transport error), which the server
may or may not have counted."""

from __future__ import annotations

import asyncio
import io
import json
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

IMAGE = (1, 28, 28)
MAX_BATCH = 32  # the soak server's max_batch
MAX_BODY = 300_000  # the soak server's max_body_bytes


@dataclass
class Mix:
    """What a session sends: fractions of its requests, and its length."""

    bad_only_sessions: float = 0.03  # sessions of a caller that only ever sends bad input
    bad: float = 0.075  # bad requests in the other sessions (about a tenth in all)
    cancelled: float = 0.05  # good requests abandoned after a short random delay
    repeat: float = 0.03  # an exact repeat of the session's previous image
    batch: float = 0.4  # batches of 2..16 images (else one image)
    scores: float = 0.5  # output=scores (else label)
    mean_session: int = 40  # requests per session (geometric)


@dataclass
class Window:
    """What one sampling interval saw (reset at every sample)."""

    latencies: list[float] = field(default_factory=list)  # seconds, good requests answered 200
    statuses: Counter[str] = field(default_factory=Counter)
    images: int = 0  # images answered 200


@dataclass
class Stats:
    """Everything the client saw, for the whole run and the current window."""

    answered: Counter[str] = field(default_factory=Counter)  # caller -> images answered 200
    ambiguous: Counter[str] = field(default_factory=Counter)  # caller -> images of unknown fate
    callers: set[str] = field(default_factory=set)
    bad_callers: set[str] = field(default_factory=set)
    totals: Counter[str] = field(default_factory=Counter)  # status (or outcome) -> requests
    bad_kinds: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)  # what broke a target -> requests
    examples: list[str] = field(default_factory=list)
    window: Window = field(default_factory=Window)
    requests: int = 0
    sessions: int = 0
    typical_s: float = 0.05  # the last window's median latency: sets the cancel delays
    # every 200 answer of the run (monotonic end time, latency in s), for pooled percentiles
    answer_times: array[float] = field(default_factory=lambda: array("d"))
    answer_latencies: array[float] = field(default_factory=lambda: array("d"))

    def fail(self, what: str, example: str) -> None:
        self.failures[what] += 1
        if len(self.examples) < 20:
            self.examples.append(f"{what}: {example}")

    def take_window(self) -> Window:
        window, self.window = self.window, Window()
        if window.latencies:
            self.typical_s = float(np.median(window.latencies))
        return window


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


Request = dict[str, Any]  # httpx.AsyncClient.post keyword arguments


def as_npy(images: np.ndarray, **params: str) -> Request:
    return {
        "content": npy(images),
        "params": params,
        "headers": {"Content-Type": "application/x-npy"},
    }


def as_raw(images: np.ndarray, **params: str) -> Request:
    params.setdefault("shape", ",".join(map(str, images.shape)))
    return {
        "content": images.astype(np.float32).tobytes(),
        "params": params,
        "headers": {"Content-Type": "application/octet-stream"},
    }


def as_json(images: np.ndarray, output: str, **extra: Any) -> Request:
    body = {"inputs": np.round(images, 3).tolist(), "output": output, **extra}
    return {"content": json.dumps(body).encode(), "headers": {"Content-Type": "application/json"}}


def good_request(images: np.ndarray, output: str, rng: np.random.Generator) -> Request:
    """One valid request for ``images``: npy, raw float32 or (small batches) JSON."""
    encoding = rng.choice(["npy", "raw", "json"], p=[0.5, 0.3, 0.2])
    if encoding == "json" and len(images) <= 4:
        return as_json(images, output)
    if encoding == "raw":
        return as_raw(images, output=output)
    return as_npy(images, output=output)


def _pixels(n: int, value: float) -> np.ndarray:
    return np.full((n, *IMAGE), value, np.float32)


def _grey_json(text_for_half: str) -> Request:
    text = json.dumps({"inputs": _pixels(1, 0.5).tolist()}).replace("0.5", text_for_half, 1)
    return {"content": text.encode(), "headers": {"Content-Type": "application/json"}}


# the hardening kinds (tests/service/hardening): name -> (request builder, expected status)
BAD_KINDS: dict[str, tuple[Callable[[], Request], int]] = {
    "NaN pixel (raw)": (lambda: as_raw(_pixels(1, np.nan)), 422),
    "NaN token (JSON)": (lambda: _grey_json("NaN"), 422),
    "pixel out of range (npy)": (lambda: as_npy(_pixels(1, 255.0)), 422),
    "wrong shape: 3 channels (npy)": (lambda: as_npy(np.zeros((1, 3, 28, 28), np.float32)), 422),
    "wrong rank (npy)": (lambda: as_npy(np.zeros((1, 1, *IMAGE), np.float32)), 422),
    "float64 (npy)": (lambda: as_npy(np.zeros((1, *IMAGE), np.float64)), 422),
    "raw shape disagrees with body": (lambda: as_raw(_pixels(1, 0.5), shape="2,1,28,28"), 400),
    "malformed npy": (
        lambda: {"content": b"garbage", "headers": {"Content-Type": "application/x-npy"}},
        400,
    ),
    "truncated npy": (
        lambda: {
            "content": npy(_pixels(1, 0.5))[:-10],
            "headers": {"Content-Type": "application/x-npy"},
        },
        400,
    ),
    "malformed JSON": (
        lambda: {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
        400,
    ),
    "unknown JSON field": (lambda: as_json(_pixels(1, 0.5), "label", sigma=0), 422),
    "wrong content type": (
        lambda: {"content": b"hello", "headers": {"Content-Type": "text/plain"}},
        415,
    ),
    "body over max_body_bytes": (
        lambda: as_raw(_pixels(MAX_BODY // 3136 + 1, 0.5)),
        413,
    ),
    "batch over max_batch": (lambda: as_npy(_pixels(MAX_BATCH + 1, 0.5)), 413),
    "unknown model": (lambda: as_npy(_pixels(1, 0.5), model="nope"), 404),
    "unknown output": (lambda: as_npy(_pixels(1, 0.5), output="logits"), 422),
}
BAD_REQUESTS = {name: (build(), status) for name, (build, status) in BAD_KINDS.items()}


def retry_after_ok(response: httpx.Response) -> bool:
    return response.status_code in (503, 504) and "retry-after" in response.headers


class Traffic:
    """Runs sessions against one server until ``done()`` says stop."""

    def __init__(
        self,
        url: str,
        keys: dict[str, str],
        bad_keys: dict[str, str],
        mix: Mix,
        stats: Stats,
        done: Callable[[], bool],
        seed: int = 0,
    ) -> None:
        self.url, self.keys, self.bad_keys = url, keys, bad_keys
        self.mix, self.stats, self.done = mix, stats, done
        self.rng = np.random.default_rng(seed)

    async def runner(self) -> None:
        """One concurrent slot: a caller arrives, sends a session, leaves; the next arrives."""
        while not self.done():
            bad_only = self.rng.random() < self.mix.bad_only_sessions
            pool = self.bad_keys if bad_only else self.keys
            name = str(self.rng.choice(sorted(pool)))
            await self.session(name, pool[name], bad_only)

    async def session(self, name: str, key: str, bad_only: bool) -> None:
        caller = "key:" + name
        (self.stats.bad_callers if bad_only else self.stats.callers).add(caller)
        self.stats.sessions += 1
        length = int(self.rng.geometric(1 / self.mix.mean_session))
        previous: np.ndarray | None = None
        async with httpx.AsyncClient(
            base_url=self.url, headers={"X-API-Key": key}, timeout=120
        ) as client:
            for _ in range(length):
                if self.done():
                    return
                self.stats.requests += 1
                if bad_only or self.rng.random() < self.mix.bad:
                    await self.bad(client)
                    continue
                n = int(self.rng.integers(2, 17)) if self.rng.random() < self.mix.batch else 1
                if previous is not None and self.rng.random() < self.mix.repeat:
                    images = previous[:n]
                else:
                    images = self.rng.random((n, *IMAGE), dtype=np.float32)
                previous = images
                output = "scores" if self.rng.random() < self.mix.scores else "label"
                cancel = self.rng.random() < self.mix.cancelled
                await self.good(client, caller, images, output, cancel)

    async def good(
        self,
        client: httpx.AsyncClient,
        caller: str,
        images: np.ndarray,
        output: str,
        cancel: bool,
    ) -> None:
        stats, n = self.stats, len(images)
        request = good_request(images, output, self.rng)
        start = time.perf_counter()
        try:
            if cancel:  # hang up after a delay around the typical latency
                delay = float(self.rng.uniform(0.0, 2.0 * stats.typical_s))
                response = await asyncio.wait_for(client.post("/predict", **request), delay)
            else:
                response = await client.post("/predict", **request)
        except TimeoutError:
            stats.ambiguous[caller] += n
            stats.totals["cancelled"] += 1
            stats.window.statuses["cancelled"] += 1
            return
        except httpx.TransportError as exc:
            stats.ambiguous[caller] += n
            stats.totals["transport error"] += 1
            stats.window.statuses["transport error"] += 1
            stats.fail("transport error on a good request", repr(exc))
            return
        elapsed = time.perf_counter() - start
        status = response.status_code
        stats.totals[str(status)] += 1
        stats.window.statuses[str(status)] += 1
        if status == 200:
            body = response.json()
            if len(body.get("labels", [])) != n or (output == "scores") != ("scores" in body):
                stats.fail("malformed 200 answer", response.text[:200])
            stats.answered[caller] += n
            stats.window.images += n
            stats.window.latencies.append(elapsed)
            stats.answer_times.append(time.monotonic())
            stats.answer_latencies.append(elapsed)
        elif retry_after_ok(response):
            pass  # overload or timeout, refused and refunded: nothing counted
        elif status >= 500:
            stats.fail(f"{status} without Retry-After" if status in (503, 504) else str(status), "")
        else:
            stats.fail(f"good request answered {status}", response.text[:200])

    async def bad(self, client: httpx.AsyncClient) -> None:
        stats = self.stats
        kind = str(self.rng.choice(sorted(BAD_REQUESTS)))
        request, expected = BAD_REQUESTS[kind]
        stats.bad_kinds[kind] += 1
        try:
            response = await client.post("/predict", **request)
        except httpx.TransportError:
            # e.g. the server answered 413 and closed before the whole body was sent
            stats.totals["bad: transport error"] += 1
            stats.window.statuses["bad: transport error"] += 1
            return
        status = response.status_code
        stats.totals[f"bad: {status}"] += 1
        stats.window.statuses[f"bad: {status}"] += 1
        if 400 <= status < 500:
            if status != expected:
                stats.totals[f"bad: {kind} answered {status}, not {expected}"] += 1
        elif retry_after_ok(response):
            pass
        elif status >= 500:
            stats.fail(str(status), f"{kind}: {response.text[:200]}")
        else:
            stats.fail(f"bad input answered {status}", kind)
