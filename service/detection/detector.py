"""``QueryDetector``: one model's detection step of the request pipeline.

After the defended forward pass (which always runs, so a flagged query takes as long as any
other), each image's fingerprints go to the store in one call with the answer it was given.
Under ``enforce`` a flagged query is answered with the matched query's stored answer (an exact
repeat with its first answer under ``repeat_policy="cached"``), so the flag is not visible in
the answer's status, headers or timing; after enough flags the caller is throttled (429), then
suspended (403) until an admin lifts it, refused by ``admit`` before its request is charged or
forwarded. ``shadow`` only counts.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass

import numpy as np

from service.accounting.base import CounterUnavailable, QueryCounter
from service.detection import defaults
from service.detection.base import Detector
from service.detection.blacklight import BlacklightFingerprint, BlacklightParams
from service.detection.exact import ExactDigest
from service.detection.store import (
    DetectionStore,
    MemoryDetectionStore,
    Observation,
    Outcome,
    Policy,
    State,
)
from service.errors import ApiError, counter_unavailable
from service.metrics import DETECTIONS
from service.model_settings import DetectionSettings, ModelSettings
from service.settings import Settings

log = logging.getLogger(__name__)
OFF_LOOP_IMAGES = 8  # larger batches are fingerprinted in a worker thread


def blacklight_params(
    settings: DetectionSettings, input_shape: tuple[int, ...]
) -> BlacklightParams:
    """The reference's parameters, or the scaled defaults: a 20-value window up to CIFAR-10's
    3,072 values, 50 beyond (ImageNet-sized inputs), fast hashing, blank windows skipped."""
    size = int(np.prod(input_shape))
    reference = settings.fingerprint == "reference"
    small = reference or size <= defaults.LARGE_INPUT
    window = settings.window or (defaults.WINDOW if small else defaults.LARGE_WINDOW)
    return BlacklightParams(
        window=window,
        keep=settings.keep,
        quantization=settings.quantization,
        threshold=settings.threshold,
        hash="sha256" if reference else "fast",
        skip_flat=not reference,
    )


class NearDuplicates:
    """Blacklight's layer at the shape of the images it is given: one fingerprint (salt) per
    input shape, made on first use (a proxied model learns its shape after start-up)."""

    layer = "near"

    def __init__(self, secret: bytes, settings: DetectionSettings) -> None:
        self.threshold = settings.threshold
        self._secret, self._settings = secret, settings
        self._by_shape: dict[tuple[int, int, int], BlacklightFingerprint] = {}

    def fingerprint(self, shape: tuple[int, int, int]) -> BlacklightFingerprint:
        layer = self._by_shape.get(shape)
        if layer is None:
            params = blacklight_params(self._settings, shape)
            layer = self._by_shape[shape] = BlacklightFingerprint(self._secret, shape, params)
        return layer

    def keys(self, images: np.ndarray) -> list[list[bytes]]:
        shape = (int(images.shape[1]), int(images.shape[2]), int(images.shape[3]))
        return self.fingerprint(shape).keys(images)


@dataclass
class QueryDetector:
    """The layers, store and policy of one served model."""

    model: str
    settings: DetectionSettings
    layers: list[Detector]
    store: DetectionStore
    policy: Policy
    label_only: bool
    cross_caller: bool = False

    @classmethod
    def build(
        cls,
        model: ModelSettings,
        settings: Settings,
        secret: bytes,
        store: DetectionStore,
    ) -> QueryDetector:
        det = model.detection
        layers: list[Detector] = []
        if "exact" in det.layers:
            layers.append(ExactDigest(secret))
        if "near" in det.layers:
            layers.append(NearDuplicates(secret, det))
        enforce = det.action == "enforce"
        policy = Policy(
            near_threshold=det.threshold,
            repeat_allowance=det.repeat_allowance,
            retention_s=settings.detection_retention_s,
            ids_per_key=settings.detection_ids_per_key,
            flag_window_s=settings.detection_flag_window_s,
            throttle_after=settings.detection_throttle_after,
            suspend_after=settings.detection_suspend_after,
            throttle_s=settings.detection_throttle_s,
            escalate=enforce,
            store_answers=enforce,
        )
        cross = settings.detection_cross_caller and "near" in det.layers
        return cls(model.name, det, layers, store, policy, model.label_only, cross)

    def observations(self, images: np.ndarray, probs: np.ndarray) -> list[Observation]:
        keys = {layer.layer: layer.keys(images) for layer in self.layers}
        exact = keys.get("exact") or [[b""] for _ in images]
        near = keys.get("near") or [[] for _ in images]
        answers = self.encode_answers(probs)
        return [Observation(e[0], n, a) for e, n, a in zip(exact, near, answers, strict=True)]

    def encode_answers(self, probs: np.ndarray) -> list[bytes]:
        if self.label_only:  # scores never leave a label-only model: keep the label only
            return [int(label).to_bytes(2, "little") for label in probs.argmax(1)]
        return [row.astype("<f4").tobytes() for row in probs]

    def decode_answer(self, answer: bytes, classes: int) -> np.ndarray | None:
        """A stored answer as a probability row; ``None`` if it has another model's shape
        (stored before the model's settings changed), which is then answered fresh."""
        if self.label_only and len(answer) == 2 and int.from_bytes(answer, "little") < classes:
            row = np.zeros(classes, np.float32)
            row[int.from_bytes(answer, "little")] = 1.0
            return row
        if not self.label_only and len(answer) == 4 * classes:
            return np.frombuffer(answer, "<f4").copy()
        return None

    async def admit(self, caller: str, settings: Settings) -> None:
        """Refuse a throttled (429) or suspended (403) caller before its request is charged and
        forwarded: a refusal costs one cheap read, not a forward pass, a charge and a refund
        (the observe script still refuses a caller refused meanwhile). A store outage follows
        the counter's rule: 503, or under ``fail_open`` nothing is refused here. A counter that
        ``gates_detection`` (Redis) does this read inside the charge instead (``gated``)."""
        if not self.policy.escalate:
            return
        try:
            refused, retry = await self.store.refused(caller, self.policy, time.time())
        except CounterUnavailable:
            if settings.fail_open:
                return
            raise counter_unavailable(settings.retry_after_s) from None
        if refused is not None:
            raise refused_error(refused, retry, settings.retry_after_s)

    @property
    def gated(self) -> bool:
        """Whether requests pass a detection gate (only under ``enforce``)."""
        return self.policy.escalate

    async def screen(
        self, caller: str, images: np.ndarray, probs: np.ndarray, retry_after_s: int
    ) -> np.ndarray:
        """The probabilities to answer: ``probs``, with flagged rows replaced under enforce.
        Raises 429 ``throttled`` / 403 ``suspended`` (nothing stored), or ``CounterUnavailable``."""
        if len(images) > OFF_LOOP_IMAGES:
            observations = await asyncio.to_thread(self.observations, images, probs)
        else:
            observations = self.observations(images, probs)
        now = time.time()
        outcome = await self.store.observe(caller, self.model, observations, self.policy, now)
        if outcome.refused is not None:
            raise refused_error(outcome.refused, outcome.retry_after_s, retry_after_s)
        if self.cross_caller:
            near = [o.near for o in observations]
            owners = await self.store.observe_shared(caller, self.model, near, self.policy, now)
            flagged = sum(owner is not None for owner in owners)
            if flagged:
                DETECTIONS.labels(self.model, "cross_caller", "shadow").inc(flagged)
        return self.answers(outcome, probs)

    def answers(self, outcome: Outcome, probs: np.ndarray) -> np.ndarray:
        action = self.settings.action
        enforce = action == "enforce"
        flagged = False
        out = probs
        for i, verdict in enumerate(outcome.verdicts):
            if verdict.layer is not None:
                DETECTIONS.labels(self.model, verdict.layer, action).inc()
                flagged = True
            exact_match = verdict.matched is not None and verdict.layer in (None, "exact")
            hide = verdict.layer == "near" or (
                exact_match and self.settings.repeat_policy == "cached"
            )
            cached = None
            if enforce and hide and verdict.cached is not None:
                cached = self.decode_answer(verdict.cached, probs.shape[1])
            if cached is not None:
                if out is probs:
                    out = probs.copy()
                out[i] = cached
        if enforce and flagged and self.settings.visible_rejection:
            raise ApiError(403, "query_flagged", "this request repeats earlier queries too closely")
        return out


def refused_error(refused: State, retry_s: float, retry_after_s: int) -> ApiError:
    """The answer to a caller refused as ``refused`` (403 suspended, or 429 throttled for
    ``retry_s`` more seconds, at least the service's ``retry_after_s``)."""
    if refused == "suspended":
        return ApiError(
            403,
            "suspended",
            "this caller is suspended for query patterns of an attack; "
            "an administrator can lift it",
        )
    wait = max(int(retry_s + 0.999), retry_after_s)
    return ApiError(
        429,
        "throttled",
        f"too many flagged queries: throttled for {wait} s",
        {"Retry-After": str(wait)},
    )


def detection_secret(settings: Settings) -> bytes:
    if settings.detection_secret is not None:
        return settings.detection_secret.get_secret_value().encode()
    log.warning(
        "no detection_secret set: fingerprints use a random key of this process and are "
        "forgotten at restart (set SND_DETECTION_SECRET)"
    )
    return secrets.token_bytes(32)


def build_detectors(
    settings: Settings, counter: QueryCounter
) -> tuple[DetectionStore | None, dict[str, QueryDetector]]:
    """The shared store (in the counter's Redis, or in memory) and each detecting model's
    detector; ``(None, {})`` when no model detects."""
    active = [m for m in settings.models if m.detection.action != "off"]
    if not active:
        return None, {}
    from service.accounting.redis_counter import RedisCounter

    store: DetectionStore
    if isinstance(counter, RedisCounter):
        from service.detection.redis_store import RedisDetectionStore

        store = RedisDetectionStore(counter.backend)
    else:
        store = MemoryDetectionStore()
    secret = detection_secret(settings)
    detectors = {m.name: QueryDetector.build(m, settings, secret, store) for m in active}
    return store, detectors
