"""Where fingerprints live: the ``DetectionStore`` protocol, its types, and the in-memory store.

Per caller and model, each layer keeps an index ``key -> recent query ids`` in time buckets
(``retention_s / 4`` wide, looked up ``retention_s`` back), so state expires without a sweep. A
query matches the stored query that shares the most of its keys, when that count exceeds the
layer's threshold (exact layer: one digest, threshold 0; Blacklight: 50 hashes, threshold 25).
A query that repeats an image exactly is judged by the exact layer alone and not re-indexed.
Flags feed a per-caller sliding window that throttles, then suspends, under ``escalate``.

``RedisDetectionStore`` (``service.detection.redis_store``) runs the same algorithm as one Lua
call per request; this module's :class:`MemoryDetectionStore` is the single-process default and
the executable specification the Redis store is tested against. Redis forgets an idle caller by
its keys' TTLs; the memory store by a sweep and a cap on callers (see its docstring).
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from typing import Literal, Protocol

from service.detection import defaults
from service.detection.memory_index import append, nearest

State = Literal["ok", "throttled", "suspended"]
Layer = Literal["exact", "near", "cross_caller"]
BUCKETS = 4  # a retention window spans this many buckets (plus the current, partial one)
MAX_CALLERS = 100_000  # the memory store's cap on callers (least recently seen evicted)
SWEEP_EVERY = 256  # observe calls between two sweeps of the memory store
SWEEP_SLICE = 256  # callers one sweep looks at, at most (amortized: one per observe call)


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
    """How a store judges and escalates (see ``service.settings.DetectionSettings``)."""

    near_threshold: int = defaults.THRESHOLD
    repeat_allowance: int = defaults.REPEAT_ALLOWANCE
    retention_s: float = defaults.RETENTION_S
    ids_per_key: int = defaults.IDS_PER_KEY
    flag_window_s: float = defaults.FLAG_WINDOW_S
    throttle_after: int = defaults.THROTTLE_AFTER
    suspend_after: int = defaults.SUSPEND_AFTER
    throttle_s: float = defaults.THROTTLE_S
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

    async def refused(self, caller: str, policy: Policy, now: float) -> tuple[State | None, float]:
        """Whether the caller is refused now (``throttled``, with the seconds left, or
        ``suspended``): one cheap read before a request is charged and forwarded."""
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

    async def close(self) -> None:
        """Release the store's connections (the app's shutdown)."""
        ...


def bucket_range(now: float, policy: Policy) -> list[int]:
    """The bucket numbers a lookup at ``now`` reads, current first."""
    current = math.floor(now / policy.bucket_s)
    return [current - back for back in range(BUCKETS + 1)]


@dataclass
class _CallerMemory:
    seen: float = 0.0  # the last observe's time
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


def refusal(state: State, until: float, policy: Policy, now: float) -> tuple[State | None, float]:
    """Whether a caller in ``state`` (throttled ``until``) is refused at ``now``, and for how
    long; only under ``escalate`` (shadow never refuses)."""
    if not policy.escalate:
        return None, 0.0
    if state == "suspended":
        return "suspended", 0.0
    if state == "throttled" and until > now:
        return "throttled", until - now
    return None, 0.0


def _held(memory: _CallerMemory, now: float) -> bool:
    """Suspended, or throttled for a while yet: state that must outlive its fingerprints."""
    return memory.state == "suspended" or memory.until > now


class MemoryDetectionStore:
    """The detection state of one process (with several workers, each detects alone).

    Bounded, as Redis's TTLs bound the Redis store: callers are kept least recently seen first.
    Every ``sweep_every`` observe calls a sweep looks at up to ``sweep_slice`` callers from the
    front and forgets those whose state all expired (no fingerprint in the retention window, no
    flag in the flag window). Past ``max_callers`` the least recently seen caller is evicted.
    A held caller (suspended, or still throttled) is never swept and is evicted last: one met
    at the front moves to the back, so its refusal survives any number of new callers unless
    the whole table is held, and then the least recently seen is evicted all the same (memory
    stays bounded; an attacker needs ``max_callers`` suspended identities for it).
    """

    def __init__(
        self,
        max_callers: int = MAX_CALLERS,
        sweep_every: int = SWEEP_EVERY,
        sweep_slice: int = SWEEP_SLICE,
    ) -> None:
        self.max_callers, self.sweep_every, self.sweep_slice = max_callers, sweep_every, sweep_slice
        self._callers: OrderedDict[str, _CallerMemory] = OrderedDict()
        self._shared = _CallerMemory()  # the cross-caller index; answers hold the owners
        self._lock = asyncio.Lock()
        self._calls = 0

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
                best = nearest(shared.index, model, keys, buckets, policy.near_threshold)
                owner = None
                if best is not None:
                    stored = (shared.answers[(model, b)].get(best) for b in buckets)
                    owner = next((o.decode() for o in stored if o is not None), None)
                owners.append(owner if owner != caller else None)
                for key in dict.fromkeys(keys):
                    append(
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
            self._calls += 1
            if self._calls % self.sweep_every == 0:
                self._sweep(policy, now)
            memory = self._callers.get(caller)
            if memory is not None:
                refused, retry = refusal(memory.state, memory.until, policy, now)
                if refused is not None:
                    return Outcome(refused, retry, [], memory.state)
                self._callers.move_to_end(caller)
            else:
                self._make_room(now)
                memory = self._callers[caller] = _CallerMemory()
            memory.seen = now
            buckets = bucket_range(now, policy)
            self._expire(memory, buckets[-1])
            verdicts = [self._judge(memory, model, o, buckets, policy) for o in observations]
            self._escalate(memory, verdicts, policy, now)
            return Outcome(None, 0.0, verdicts, memory.state)

    def _sweep(self, policy: Policy, now: float) -> None:
        """Forget, from the least recently seen, callers whose state all expired."""
        keep = max(policy.retention_s + policy.bucket_s, policy.flag_window_s)
        for _ in range(min(self.sweep_slice, len(self._callers))):
            caller, memory = next(iter(self._callers.items()))
            if memory.seen > now - keep:
                return  # the callers behind were seen later (held ones excepted)
            if _held(memory, now):
                self._callers.move_to_end(caller)
            else:
                del self._callers[caller]

    def _make_room(self, now: float) -> None:
        """Below the cap by one: evict the least recently seen caller that is not held."""
        for _ in range(len(self._callers)):
            if len(self._callers) < self.max_callers:
                return
            caller, memory = next(iter(self._callers.items()))
            if _held(memory, now):
                self._callers.move_to_end(caller)
            else:
                del self._callers[caller]
        while self._callers and len(self._callers) >= self.max_callers:
            self._callers.popitem(last=False)  # all held: the least recently seen goes

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
            best = nearest(memory.index, model, observation.near, buckets, policy.near_threshold)
            if best is not None:
                layer, matched = "near", best
            for key in dict.fromkeys(observation.near):
                append(memory.index[(model, "near", current)], key, seq, policy.ids_per_key)
        if observation.exact:
            index = memory.index[(model, "exact", current)]
            append(index, observation.exact, seq, policy.ids_per_key, True)
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

    async def refused(self, caller: str, policy: Policy, now: float) -> tuple[State | None, float]:
        memory = self._callers.get(caller)
        return (None, 0.0) if memory is None else refusal(memory.state, memory.until, policy, now)

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

    async def close(self) -> None:
        """Nothing to release: the state is this process's memory."""
