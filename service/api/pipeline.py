"""The request pipeline every inference route shares: resolve the model, enforce its output
policy, validate the images, refuse a caller its detector throttled or suspended, charge the caller
(never left charged-and-unanswered, even when cancelled), run the defended forward pass, screen it
through the model's stateful detector (``service.detection``), refund on failure.

Routes only decode their wire format into images and encode :class:`Answer` back (``/predict``
with its JSON/npy/raw codecs); the policy, accounting and hardening live here, once."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.accounting.base import Charge, CounterUnavailable
from service.api.deps import Runtime
from service.detection.detector import QueryDetector, refused_error
from service.errors import ApiError, counter_unavailable
from service.metrics import QUERIES_ANSWERED, QUERIES_UNCOUNTED
from service.protocol.tensors import OutputMode, validate_images
from service.serving.batcher import Overloaded
from service.serving.pool import Host

log = logging.getLogger(__name__)
_BACKGROUND: set[asyncio.Task[None]] = set()  # refunds that outlive their cancelled request


@dataclass(frozen=True)
class Answer:
    """What the pipeline answered: the host, the defended probabilities, the output mode the
    caller may see, and the charge (``None`` when answered uncounted under ``fail_open``)."""

    host: Host
    probs: np.ndarray
    mode: OutputMode
    charge: Charge | None

    @property
    def labels(self) -> list[int]:
        return [int(label) for label in self.probs.argmax(1)]

    def usage_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.charge is not None:
            headers["X-Queries-Used"] = str(self.charge.used)
            if self.charge.remaining is not None:
                headers["X-Queries-Remaining"] = str(self.charge.remaining)
        return headers


def resolve_host(runtime: Runtime, name: str | None) -> Host:
    name = name or runtime.pool.default
    host = runtime.pool.hosts.get(name)
    if host is None:
        raise ApiError(
            404, "unknown_model", f"unknown model {name!r}; served: {', '.join(runtime.pool.hosts)}"
        )
    return host


def output_mode(host: Host, requested: OutputMode | None) -> OutputMode:
    """The requested mode, or the model's default; scores from a label-only model are a 403."""
    mode: OutputMode = requested or ("label" if host.settings.label_only else "scores")
    if mode == "scores" and "scores" not in host.output_modes:
        raise ApiError(
            403, "label_only", f"model {host.name!r} answers labels only; ask for output=label"
        )
    return mode


async def refund(runtime: Runtime, caller: str, model: str, n: int) -> None:
    """Take back a charge whose images were not answered; a counter outage keeps the charge
    (over-counting is the safe side) rather than turning the failure into another one."""
    try:
        await runtime.counter.refund(caller, model, n)
    except CounterUnavailable:
        log.warning("could not refund %d queries of %s: counter unavailable", n, caller)


async def charge(
    runtime: Runtime, caller: str, host: Host, n: int, gate_at: float | None = None
) -> Charge | None:
    """Charge ``n`` images, or refuse: 429 over budget, 503 when the counter is down (unless
    ``fail_open``, which answers uncounted and returns ``None``); with ``gate_at``, the
    detection gate's 429 throttled / 403 suspended first (nothing charged)."""
    settings = runtime.settings
    retry = {"Retry-After": str(settings.retry_after_s)}
    budget = settings.budget_for(caller)
    try:
        result = await runtime.counter.charge(caller, host.name, n, budget, gate_at)
    except CounterUnavailable:
        if not settings.fail_open:
            raise counter_unavailable(settings.retry_after_s) from None
        log.warning(
            "counter unavailable: answering %d images of %s uncounted (fail_open)", n, caller
        )
        return None
    if result.gated is not None:
        raise refused_error(result.gated, result.retry_after_s, settings.retry_after_s)
    if not result.allowed:
        raise ApiError(
            429,
            "budget_exhausted",
            f"query budget of {result.budget} images is spent or too small for this batch: "
            f"{result.used} used, this batch of {n} was refused and not counted",
            retry,
        )
    return result


def _in_background(work: Coroutine[Any, Any, None]) -> None:
    task = asyncio.get_running_loop().create_task(work)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


async def settled_charge(
    runtime: Runtime, caller: str, host: Host, n: int, gate_at: float | None = None
) -> Charge | None:
    """``charge``, never left charged-and-unanswered: the charge runs shielded, so a request
    cancelled meanwhile (its client gone, a shutdown) does not abandon a charge that the
    counter's coalesced flush still applies; once that charge lands it is refunded in the
    background, and the count reads as if the request had never been made."""
    task = asyncio.ensure_future(charge(runtime, caller, host, n, gate_at))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:

        def refund_if_charged(done: asyncio.Future[Charge | None]) -> None:
            if not done.cancelled() and done.exception() is None and done.result() is not None:
                _in_background(refund(runtime, caller, host.name, n))

        task.add_done_callback(refund_if_charged)
        raise


async def forward(runtime: Runtime, host: Host, images: np.ndarray) -> np.ndarray:
    """The defended probabilities within the request timeout: 503 overloaded, 504 timeout."""
    settings = runtime.settings
    retry = {"Retry-After": str(settings.retry_after_s)}
    try:
        # on timeout the wait is cancelled (queued work may still run)
        return await asyncio.wait_for(
            runtime.pool.predict(host, images), settings.request_timeout_s
        )
    except Overloaded as exc:
        raise ApiError(503, "overloaded", str(exc), retry) from None
    except TimeoutError:
        raise ApiError(
            504,
            "timeout",
            f"no answer within {settings.request_timeout_s} s; this request was not counted",
            retry,
        ) from None


async def screen(
    runtime: Runtime, detector: QueryDetector, caller: str, images: np.ndarray, probs: np.ndarray
) -> np.ndarray:
    """The detector's answer; its store down follows the counter's rule (503, or answer
    unscreened under ``fail_open``)."""
    settings = runtime.settings
    try:
        return await detector.screen(caller, images, probs, settings.retry_after_s)
    except CounterUnavailable:
        if not settings.fail_open:
            raise counter_unavailable(settings.retry_after_s) from None
        log.warning("detection store unavailable: answering %s unscreened (fail_open)", caller)
        return probs


async def answer(
    runtime: Runtime,
    caller: str,
    images: np.ndarray,
    model: str | None,
    requested: OutputMode | None,
) -> Answer:
    """Run one decoded request through the pipeline. Nothing is counted unless it is answered:
    a refused or failed request refunds its charge."""
    host = resolve_host(runtime, model)
    mode = output_mode(host, requested)
    images = validate_images(images, host.signature.input_shape, runtime.settings.max_batch)
    n = len(images)
    detector = runtime.detectors.get(host.name)
    gate_at = None  # a refused caller costs no charge and no forward pass
    if detector is not None and detector.gated:
        if runtime.counter.gates_detection:  # the gate in the charge's own round trip
            gate_at = time.time()
        else:
            await detector.admit(caller, runtime.settings)
    paid = await settled_charge(runtime, caller, host, n, gate_at)
    try:
        probs = await forward(runtime, host, images)
        if detector is not None:
            probs = await screen(runtime, detector, caller, images, probs)
    except asyncio.CancelledError:
        if paid is not None:  # in the background: awaited, it could be cancelled again
            _in_background(refund(runtime, caller, host.name, n))
        raise
    except BaseException:
        if paid is not None:
            await refund(runtime, caller, host.name, n)
        raise
    QUERIES_ANSWERED.labels(host.name, host.settings.defense.kind).inc(n)
    if paid is None:
        QUERIES_UNCOUNTED.labels(host.name).inc(n)
    return Answer(host, probs, mode, paid)
