"""Calls to a backend coalesced into one round trip: the Redis charges, and detection's calls."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from service.accounting.base import CounterUnavailable


class Coalesced(Protocol):
    """A call waiting in a coalescing queue (a charge, a detection call)."""

    @property
    def waiter(self) -> asyncio.Future[Any]: ...


P = TypeVar("P", bound=Coalesced)


async def drain(pending: list[P], limit: int, apply: Callable[[list[P]], Awaitable[None]]) -> None:
    """Apply the calls coalesced in ``pending``, ``limit`` at a time, until none is left.

    ``apply`` settles its batch's waiters; if it raises, the batch's waiters fail with
    ``CounterUnavailable`` (and, when the event loop is going away, every pending one)."""
    while pending:
        batch = pending[:limit]
        del pending[:limit]
        try:
            await apply(batch)
        except BaseException as exc:
            cancelled = not isinstance(exc, Exception)  # the loop is going away
            failed = batch + pending if cancelled else batch
            if cancelled:
                pending.clear()
            reason = str(exc) if isinstance(exc, CounterUnavailable) else repr(exc)
            for call in failed:
                if not call.waiter.done():
                    call.waiter.set_exception(CounterUnavailable(reason))
            if cancelled:
                raise
