"""The oracle for an endpoint: ``/predict`` (:class:`HttpOracle`) or the Open Inference
Protocol (:class:`OipOracle`), chosen by ``protocol`` or by a ``v2+http://`` URL."""

from __future__ import annotations

from typing import Any, Literal

from attacks_client.oracles.http import HttpOracle
from attacks_client.oracles.oip import OipOracle

Protocol = Literal["predict", "v2"]
PROTOCOLS: tuple[Protocol, ...] = ("predict", "v2")


def protocol_of(url: str, protocol: str | None = None) -> tuple[str, Protocol]:
    """The plain URL and its protocol: ``v2+http(s)://`` means v2; an explicit ``protocol``
    must agree with the URL's."""
    prefixed = url.startswith(("v2+http://", "v2+https://"))
    if protocol is not None and protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if prefixed and protocol == "predict":
        raise ValueError(f"{url} is an OIP v2 URL but the protocol is 'predict'")
    chosen: Protocol = "v2" if prefixed or protocol == "v2" else "predict"
    return url.removeprefix("v2+"), chosen


def open_oracle(
    url: str, model: str | None = None, *, protocol: str | None = None, **options: Any
) -> HttpOracle:
    """An oracle for ``model`` at ``url`` (``options`` as :class:`HttpOracle` takes them)."""
    plain, chosen = protocol_of(url, protocol)
    if chosen == "v2":
        return OipOracle(plain, model, **options)
    return HttpOracle(plain, model, **options)
