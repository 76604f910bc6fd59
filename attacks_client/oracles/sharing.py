"""Client-side request sharing: concurrent attack runs against one endpoint share HTTP requests.

An evaluation runs many attacks at once, each sending one image (or a few) per query. Every
request costs the client and the server a whole HTTP round trip, so a grid of single-image
queries runs far below the model's batched rate. :class:`SharedRequests` is a group commit in
front of the oracles of one caller of one model (the server's batcher, on the client side):

* A run that finds fewer than ``parallel`` requests of the group in flight sends what is queued
  at once (window 0: a lone run is never delayed).
* Runs that arrive while ``parallel`` requests are in flight queue; the next request to go takes
  the queue in arrival order, up to the server's batch limit, and is sent by whichever waiting
  run gets the free slot first (it goes on waiting for its own images if they did not fit).
* Each run gets its own rows back and counts its own images (:class:`HttpOracle` keeps the count
  and the client-side budget, checked before anything is queued); the server adds fresh noise
  to every image as always.
* An error reaches exactly the runs whose images were in the failed request. A request the
  server refuses for its budget (429: nothing was charged) is sent again run by run, so the
  runs that fit are answered and only the others see ``BudgetExhausted``. A batch over the
  server's limit (413) is split and sent again (nothing was charged).

Only oracles of the same URL, model, API key and protocol may share one instance (the caller's
count on the server is the same either way); score and label requests queue separately.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from attacks_client.oracles.base import BatchTooLarge, BudgetExhausted, OracleError, Refused

log = logging.getLogger(__name__)

Answer = tuple[dict[str, Any], int | None]  # the chunk's payload, the server's X-Queries-Used
OutputMode = Literal["label", "scores"]


class Exchanger(Protocol):
    """What sends a request for a group: an oracle's one HTTP step, counted by nobody
    (:meth:`HttpOracle._exchange <attacks_client.oracles.http.HttpOracle._exchange>`)."""

    def _exchange(self, chunk: np.ndarray, output: OutputMode) -> Answer: ...


@dataclass(eq=False)
class _Ticket:
    """One run's chunk waiting for its rows (or to be told to send a request)."""

    sender: Exchanger
    chunk: np.ndarray
    output: OutputMode
    woken: threading.Event = field(default_factory=threading.Event, repr=False)
    group: list[_Ticket] | None = field(default=None, repr=False)  # to send, when appointed
    done: bool = False
    answer: Answer | None = None
    error: BaseException | None = field(default=None, repr=False)

    def result(self) -> Answer:
        if self.error is not None:
            raise self.error
        assert self.answer is not None
        return self.answer


class SharedRequests:
    """The request queue of one caller of one model (see the module docstring).

    ``parallel`` requests may be in flight at once (2: the next batch gathers while the server
    computes the last); ``max_batch`` caps the images of one request (lowered when the server
    answers 413). ``requests`` and ``images`` count what was sent, for benchmarks.
    """

    def __init__(self, *, parallel: int = 2, max_batch: int = 256) -> None:
        if parallel < 1 or max_batch < 1:
            raise ValueError("parallel and max_batch must be at least 1")
        self.parallel = parallel
        self.max_batch = max_batch
        self.requests = 0
        self.images = 0
        self._lock = threading.Lock()
        self._queue: list[_Ticket] = []  # arrival order, both output modes
        self._in_flight = 0

    def exchange(self, sender: Exchanger, chunk: np.ndarray, output: OutputMode) -> Answer:
        """``chunk``'s answer; sent with whatever other runs have queued.

        A slot is handed from a finished request straight to the head of the queue, which
        sends the next request; every other run sleeps until its own rows are in (one wake-up
        per run and request)."""
        ticket = _Ticket(sender, chunk, output)
        with self._lock:
            self._queue.append(ticket)
            if self._in_flight < self.parallel:  # then the queue held only this ticket
                self._in_flight += 1
                ticket.group = self._take()
        while True:
            if ticket.group is None:
                ticket.woken.wait()
                ticket.woken.clear()
                if ticket.done:
                    return ticket.result()
            group, ticket.group = ticket.group, None
            assert group is not None
            try:
                self._send(group, group[0].output)
            finally:  # the slot always passes on, and every member is always woken
                self._finish(group)
            if ticket.done:
                return ticket.result()

    def _take(self) -> list[_Ticket]:
        """The queue's head and the queued runs of its output mode after it, in arrival order,
        up to ``max_batch`` images."""
        head = self._queue.pop(0)
        group, images, rest = [head], len(head.chunk), []
        for waiting in self._queue:
            if waiting.output == head.output and images + len(waiting.chunk) <= self.max_batch:
                images += len(waiting.chunk)
                group.append(waiting)
            else:
                rest.append(waiting)
        self._queue = rest
        return group

    def _finish(self, group: list[_Ticket]) -> None:
        """Hand each run of ``group`` its answer, and the freed slot to the queue's head."""
        with self._lock:
            for member in group:
                if member.answer is None and member.error is None:
                    member.error = OracleError("the shared request ended without an answer")
                member.done = True
                member.woken.set()
            if self._queue:
                following = self._take()
                following[0].group = following
                following[0].woken.set()
            else:
                self._in_flight -= 1

    def _send(self, group: list[_Ticket], output: OutputMode) -> None:
        """One request for ``group``; every member ends with its rows or its error."""
        batch = group[0].chunk if len(group) == 1 else np.concatenate([t.chunk for t in group])
        try:
            payload, used = group[0].sender._exchange(batch, output)
        except BatchTooLarge as exc:  # nothing was charged: lower the limit, send in parts
            with self._lock:
                self.max_batch = max(1, min(exc.limit or len(batch) // 2, len(batch) - 1))
            if len(group) == 1:
                group[0].error = exc  # the run's oracle re-chunks its own batch
                return
            half = len(group) // 2
            self._send(group[:half], output)
            self._send(group[half:], output)
            return
        except BudgetExhausted as exc:
            if len(group) == 1 or isinstance(exc, Refused):
                group[0].error = exc
                for member in group[1:]:
                    member.error = exc
                return
            for member in group:  # the server charged nothing: let the runs that fit through
                self._send([member], output)
            return
        except BaseException as exc:  # noqa: BLE001 - handed to each run of the request
            for member in group:
                member.error = exc
            return
        with self._lock:
            self.requests += 1
            self.images += len(batch)
        start = 0
        for member in group:
            stop = start + len(member.chunk)
            rows = {k: v[start:stop] for k, v in payload.items()}
            member.answer = (rows, used)
            start = stop
