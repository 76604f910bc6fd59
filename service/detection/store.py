"""Where fingerprints live: the ``DetectionStore`` protocol, its types, and the in-memory store.

Per caller and model, each layer keeps an index ``key -> recent query ids`` in time buckets
(``retention_s / 4`` wide, looked up ``retention_s`` back), so state expires without a sweep. A
query matches the stored query that shares the most of its keys, when that count exceeds the
layer's threshold (exact layer: one digest, threshold 0; Blacklight: 50 hashes, threshold 25).
A query that repeats an image exactly is judged by the exact layer alone and not re-indexed.
Flags feed a per-caller sliding window that throttles, then suspends, under ``escalate``.

``RedisDetectionStore`` (``service.detection.redis_store``) runs the same algorithm as one Lua
call per request; this module's :class:`MemoryDetectionStore` is the single-process default and
the executable specification the Redis store is tested against.
"""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Literal, Protocol

State = Literal["ok", "throttled", "suspended"]
Layer = Literal["exact", "near", "cross_caller"]
BUCKETS = 4  # a retention window spans this many buckets (plus the current, partial one)


@dataclass(frozen=True)
class Observation:
    """One query's fingerprints and the answer it was given (stored for cached answers)."""

    exact: bytes
    near: list[bytes]
    answer: bytes


@dataclass(frozen=True)
class Verdict:
    """The caller's query number ``seq``, the layer that flagged it, and the matched query's
    stored answer (``cached``), if any."""

    seq: int
    layer: Layer | None
    matched: int | None
    cached: bytes | None


@dataclass(frozen=True)
class Outcome:
    """``refused`` is set (and nothing stored) when the caller was throttled or suspended."""

    refused: State | None
    retry_after_s: float
    verdicts: list[Verdict]
    state: State


@dataclass(frozen=True)
class Policy:
    """How a store judges and escalates (see ``service.config.DetectionSettings``)."""

    near_threshold: int = 25
    repeat_allowance: int = 0
    retention_s: float = 86400.0
    ids_per_key: int = 32
    flag_window_s: float = 3600.0
    throttle_after: int = 20
    suspend_after: int = 100
    throttle_s: float = 60.0
    escalate: bool = False
    store_answers: bool = False

    @property
    def bucket_s(self) -> float:
        return self.retention_s / BUCKETS


@dataclass(frozen=True)
class CallerStatus:
    """The operator's view of one caller."""

    caller: str
    state: State
    until: float | None
    queries: int
    first_flag_query: int | None
    flags: dict[str, dict[str, int]]  # model -> layer -> count
    flags_in_window: int


class DetectionStore(Protocol):
    async def observe(
        self,
        caller: str,
        model: str,
        observations: list[Observation],
        policy: Policy,
        now: float,
    ) -> Outcome:
        """Judge and index one request's images, in order; may raise ``CounterUnavailable``."""
        ...

    async def status(self, caller: str, policy: Policy, now: float) -> CallerStatus | None: ...

    async def callers(self) -> list[str]: ...

    async def observe_shared(
        self, caller: str, model: str, near: list[list[bytes]], policy: Policy, now: float
    ) -> list[str | None]:
        """The optional cross-caller index (shadow only): per image, the other caller matched."""
        ...

    async def lift(self, caller: str) -> None:
        """End a throttle or suspension and clear the flag window (fingerprints stay)."""
        ...

    async def forget(self, caller: str) -> None:
        """Drop everything stored about a caller."""
        ...


def bucket_range(now: float, policy: Policy) -> list[int]:
    """The bucket numbers a lookup at ``now`` reads, current first."""
    current = math.floor(now / policy.bucket_s)
    return [current - back for back in range(BUCKETS + 1)]


@dataclass
class _CallerMemory:
    seq: int = 0
    state: State = "ok"
    until: float = 0.0
    first_flag: int | None = None
    flags: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))
    window: list[float] = field(default_factory=list)
    # (model, layer, bucket) -> key -> ids; (model, bucket) -> seq -> answer
    index: dict[tuple[str, str, int], dict[bytes, list[int]]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    answers: dict[tuple[str, int], dict[int, bytes]] = field(
        default_factory=lambda: defaultdict(dict)
    )


def refusal(caller: _CallerMemory | None, policy: Policy, now: float) -> tuple[State | None, float]:
    if caller is None or not policy.escalate:
        return None, 0.0
    if caller.state == "suspended":
        return "suspended", 0.0
    if caller.state == "throttled" and caller.until > now:
        return "throttled", caller.until - now
    return None, 0.0


class MemoryDetectionStore:
    """The detection state of one process (with several workers, each detects alone)."""

    def __init__(self) -> None:
        self._callers: dict[str, _CallerMemory] = {}
        self._shared = _CallerMemory()  # the cross-caller index; answers hold the owners
        self._lock = asyncio.Lock()

    async def observe_shared(
        self, caller: str, model: str, near: list[list[bytes]], policy: Policy, now: float
    ) -> list[str | None]:
        """The cross-caller index (shadow only): for each image, the *other* caller whose
        stored query it near-duplicates, or None; such matches count as ``cross_caller`` flags."""
        async with self._lock:
            shared, buckets = self._shared, bucket_range(now, policy)
            self._expire(shared, buckets[-1])
            owners: list[str | None] = []
            for keys in near:
                shared.seq += 1
                best = _nearest(shared, model, keys, buckets, policy)
                owner = None
                if best is not None:
                    stored = (shared.answers[(model, b)].get(best) for b in buckets)
                    owner = next((o.decode() for o in stored if o is not None), None)
                owners.append(owner if owner != caller else None)
                for key in dict.fromkeys(keys):
                    _append(
                        shared.index[(model, "near", buckets[0])],
                        key,
                        shared.seq,
                        policy.ids_per_key,
                    )
                shared.answers[(model, buckets[0])][shared.seq] = caller.encode()
            flagged = sum(o is not None for o in owners)
            memory = self._callers.get(caller)
            if flagged and memory is not None:
                memory.flags[model]["cross_caller"] = (
                    memory.flags[model].get("cross_caller", 0) + flagged
                )
            return owners

    async def observe(
        self,
        caller: str,
        model: str,
        observations: list[Observation],
        policy: Policy,
        now: float,
    ) -> Outcome:
        async with self._lock:
            memory = self._callers.get(caller)
            refused, retry = refusal(memory, policy, now)
            if refused is not None:
                assert memory is not None
                return Outcome(refused, retry, [], memory.state)
            memory = self._callers.setdefault(caller, _CallerMemory())
            buckets = bucket_range(now, policy)
            self._expire(memory, buckets[-1])
            verdicts = [self._judge(memory, model, o, buckets, policy) for o in observations]
            self._escalate(memory, verdicts, policy, now)
            return Outcome(None, 0.0, verdicts, memory.state)

    @staticmethod
    def _expire(memory: _CallerMemory, oldest: int) -> None:
        for key in [k for k in memory.index if k[2] < oldest]:
            del memory.index[key]
        for akey in [k for k in memory.answers if k[1] < oldest]:
            del memory.answers[akey]

    def _judge(
        self,
        memory: _CallerMemory,
        model: str,
        observation: Observation,
        buckets: list[int],
        policy: Policy,
    ) -> Verdict:
        memory.seq += 1
        seq, current = memory.seq, buckets[0]
        layer: Layer | None = None
        matched: int | None = None
        found: list[list[int]] = []  # an empty digest: the exact layer is off
        if observation.exact:
            copies = [memory.index[(model, "exact", b)].get(observation.exact) for b in buckets]
            found = [ids for ids in copies if ids]
        if found:
            matched = found[-1][0]  # the oldest bucket's first id: the image's first answer
            if sum(map(len, found)) > policy.repeat_allowance:
                layer = "exact"
        else:
            best = _nearest(memory, model, observation.near, buckets, policy)
            if best is not None:
                layer, matched = "near", best
            for key in dict.fromkeys(observation.near):
                _append(memory.index[(model, "near", current)], key, seq, policy.ids_per_key)
        if observation.exact:
            index = memory.index[(model, "exact", current)]
            _append(index, observation.exact, seq, policy.ids_per_key, True)
        cached = None
        if matched is not None:
            cached = next(
                (
                    memory.answers[(model, b)][matched]
                    for b in buckets
                    if matched in memory.answers[(model, b)]
                ),
                None,
            )
        if policy.store_answers and not found:
            memory.answers[(model, current)][seq] = observation.answer
        if layer is not None:
            memory.flags[model][layer] = memory.flags[model].get(layer, 0) + 1
            if memory.first_flag is None:
                memory.first_flag = seq
        return Verdict(seq, layer, matched, cached)

    @staticmethod
    def _escalate(
        memory: _CallerMemory, verdicts: list[Verdict], policy: Policy, now: float
    ) -> None:
        memory.window.extend(now for v in verdicts if v.layer is not None)
        memory.window = [t for t in memory.window if t > now - policy.flag_window_s]
        if not policy.escalate:
            return
        if len(memory.window) >= policy.suspend_after:
            memory.state = "suspended"
        elif len(memory.window) >= policy.throttle_after and any(v.layer for v in verdicts):
            memory.state, memory.until = "throttled", now + policy.throttle_s

    async def status(self, caller: str, policy: Policy, now: float) -> CallerStatus | None:
        memory = self._callers.get(caller)
        if memory is None:
            return None
        state = memory.state
        if state == "throttled" and memory.until <= now:
            state = "ok"
        return CallerStatus(
            caller,
            state,
            memory.until if state == "throttled" else None,
            memory.seq,
            memory.first_flag,
            {m: dict(layers) for m, layers in memory.flags.items() if layers},
            sum(1 for t in memory.window if t > now - policy.flag_window_s),
        )

    async def callers(self) -> list[str]:
        return sorted(self._callers)

    async def lift(self, caller: str) -> None:
        async with self._lock:
            memory = self._callers.get(caller)
            if memory is not None:
                memory.state, memory.until, memory.window = "ok", 0.0, []

    async def forget(self, caller: str) -> None:
        async with self._lock:
            self._callers.pop(caller, None)


def _nearest(
    memory: _CallerMemory, model: str, keys: list[bytes], buckets: list[int], policy: Policy
) -> int | None:
    """The stored query sharing the most of ``keys`` (ties: the latest), if over threshold."""
    counts: dict[int, int] = defaultdict(int)
    for key in dict.fromkeys(keys):
        for b in buckets:
            for qid in memory.index[(model, "near", b)].get(key, ()):
                counts[qid] += 1
    if not counts:
        return None
    best = max(counts, key=lambda qid: (counts[qid], qid))
    return best if counts[best] > policy.near_threshold else None


def _append(
    index: dict[bytes, list[int]], key: bytes, seq: int, cap: int, keep_first: bool = False
) -> None:
    """Add ``seq`` to ``key``'s ids; past ``cap`` drop the oldest, or with ``keep_first`` the
    second oldest (the exact index: the first id is an image's first answer)."""
    ids = index.setdefault(key, [])
    ids.append(seq)
    if len(ids) > cap:
        del ids[1 if keep_first else 0]
