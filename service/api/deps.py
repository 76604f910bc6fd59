"""Request dependencies: the runtime, the caller's identity, the admin token.

They are ``async def`` although they never await: FastAPI runs a plain ``def`` dependency in its
thread pool, a thread hop per request that costs more than the work itself."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Header, Request

from service.accounting.base import QueryCounter
from service.detection.detector import QueryDetector
from service.detection.store import DetectionStore
from service.errors import ApiError
from service.serving.pool import ModelPool
from service.settings import Settings


@dataclass
class Runtime:
    """What a running server holds: settings, models, the query counter, and the detectors of
    the models that detect (with the store they share)."""

    settings: Settings
    pool: ModelPool
    counter: QueryCounter
    detections: DetectionStore | None = None
    detectors: dict[str, QueryDetector] = field(default_factory=dict)


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime | None = getattr(request.app.state, "runtime", None)
    if runtime is None:
        raise ApiError(503, "not_ready", "the service is starting", {"Retry-After": "1"})
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def sha256_hex(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def match_key(key: str, digests: dict[str, str]) -> str | None:
    """The caller whose hashed key matches, comparing against every digest in constant time."""
    candidate = sha256_hex(key)
    found = None
    for digest, caller in digests.items():
        if hmac.compare_digest(candidate, digest):
            found = caller
    return found


def client_address(request: Request, trusted_proxies: list[str]) -> str:
    """The peer address; ``X-Forwarded-For`` is honoured only from a trusted proxy, and then
    the right-most address that is not itself a trusted proxy is the client."""
    peer = request.client.host if request.client else "unknown"
    if not trusted_proxies or not _in_networks(peer, trusted_proxies):
        return peer
    forwarded = request.headers.get("x-forwarded-for", "")
    hops = [h.strip() for h in forwarded.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _in_networks(hop, trusted_proxies):
            return hop if _is_ip(hop) else peer
    return peer


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _in_networks(address: str, networks: list[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(net, strict=False) for net in networks)


async def get_caller(
    request: Request,
    runtime: RuntimeDep,
    x_api_key: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> str:
    """``key:<name>`` for a configured API key; ``addr:<ip>`` when the server runs open."""
    keys = runtime.settings.api_keys
    if not keys:
        return "addr:" + client_address(request, runtime.settings.trusted_proxies)
    if not x_api_key:
        raise ApiError(401, "missing_api_key", "this service needs an X-API-Key header")
    caller = match_key(x_api_key, keys)
    if caller is None:
        raise ApiError(401, "invalid_api_key", "the API key is not valid")
    return "key:" + caller


CallerDep = Annotated[str, Depends(get_caller)]


async def require_admin(
    runtime: RuntimeDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> None:
    """Admin routes need ``Authorization: Bearer <token>`` matching the configured hash."""
    expected = runtime.settings.admin_token_sha256
    if expected is None:
        raise ApiError(403, "admin_disabled", "no admin token is configured on this server")
    if not authorization or not authorization.startswith("Bearer "):
        raise ApiError(401, "missing_admin_token", "admin routes need 'Authorization: Bearer'")
    token = authorization.removeprefix("Bearer ").strip()
    if not hmac.compare_digest(sha256_hex(token), expected.lower()):
        raise ApiError(403, "invalid_admin_token", "the admin token is not valid")


AdminDep = Annotated[None, Depends(require_admin)]
