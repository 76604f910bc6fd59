"""``POST /predict``: decode -> validate -> charge the caller -> defended forward -> encode."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from service.accounting import Charge, CounterUnavailable
from service.api.deps import CallerDep, Runtime, RuntimeDep
from service.batching import Overloaded
from service.codec import (
    JSON_TYPES,
    NPY_TYPES,
    RAW_TYPES,
    DecodedRequest,
    decode_json,
    decode_npy,
    decode_raw,
    parse_output,
    parse_shape,
    validate_images,
)
from service.errors import ApiError, error_responses
from service.inference import ModelHost
from service.metrics import QUERIES_ANSWERED, QUERIES_UNCOUNTED

log = logging.getLogger(__name__)

router = APIRouter(tags=["predict"])

PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "model": {"type": "string"},
                        "inputs": {
                            "type": "array",
                            "description": "images (N, C, H, W), float pixels in [0, 1]",
                            "minItems": 1,
                            "items": {
                                "type": "array",
                                "minItems": 1,
                                "items": {
                                    "type": "array",
                                    "minItems": 1,
                                    "items": {
                                        "type": "array",
                                        "minItems": 1,
                                        "items": {"type": "number", "minimum": 0, "maximum": 1},
                                    },
                                },
                            },
                        },
                        "output": {"type": "string", "enum": ["scores", "label"]},
                    },
                    "additionalProperties": False,
                }
            },
            "application/x-npy": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}

PREDICT_RESPONSE = {
    "type": "object",
    "required": ["model", "labels"],
    "properties": {
        "model": {"type": "string"},
        "labels": {"type": "array", "items": {"type": "integer"}},
        "scores": {
            "type": "array",
            "description": "softmax probabilities, only in 'scores' mode",
            "items": {"type": "array", "items": {"type": "number"}},
        },
    },
}


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` (also chunked)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "bad_content_length", "Content-Length must be an integer")
        if int(declared) > limit:
            raise ApiError(413, "body_too_large", f"body exceeds {limit} bytes")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "body_too_large", f"body exceeds {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        # the client went away mid-body: nothing was decoded or counted, nobody reads the answer
        raise ApiError(400, "client_disconnected", "the body was cut off") from None
    return b"".join(chunks)


async def decode(
    request: Request, runtime: Runtime, model: str | None, output: str | None, shape: str | None
) -> DecodedRequest:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in (*JSON_TYPES, *NPY_TYPES, *RAW_TYPES):
        raise ApiError(
            415,
            "unsupported_media_type",
            "send application/json, application/x-npy or application/octet-stream",
        )
    body = await read_body(request, runtime.settings.max_body_bytes)
    if content_type in JSON_TYPES:
        decoded = decode_json(body)
        if model is not None and decoded.model is None:
            decoded = DecodedRequest(decoded.images, model, decoded.output)
        if output is not None:
            decoded = DecodedRequest(decoded.images, decoded.model, parse_output(output))
        return decoded
    if content_type in NPY_TYPES:
        images = decode_npy(body)
        if shape and parse_shape(shape) != images.shape:
            raise ApiError(
                400,
                "shape_mismatch",
                f"the stated shape {shape!r} disagrees with the .npy array's {images.shape}",
            )
    else:
        images = decode_raw(body, shape)
    return DecodedRequest(images, model, parse_output(output))


async def refund(runtime: Runtime, caller: str, model: str, n: int) -> None:
    """Take back a charge whose images were not answered; a counter outage keeps the charge
    (over-counting is the safe side) rather than turning the failure into another one."""
    try:
        await runtime.counter.refund(caller, model, n)
    except CounterUnavailable:
        log.warning("could not refund %d queries of %s: counter unavailable", n, caller)


def resolve_host(runtime: Runtime, name: str | None) -> ModelHost:
    name = name or runtime.pool.default
    host = runtime.pool.hosts.get(name)
    if host is None:
        raise ApiError(
            404, "unknown_model", f"unknown model {name!r}; served: {', '.join(runtime.pool.hosts)}"
        )
    return host


@router.post(
    "/predict",
    summary="Classify a batch of [0, 1] images behind the model's defense",
    openapi_extra=PREDICT_BODY,
    responses={
        200: {"content": {"application/json": {"schema": PREDICT_RESPONSE}}},
        **error_responses(400, 401, 403, 404, 413, 415, 422, 429, 503, 504),
    },
)
async def predict(
    request: Request,
    runtime: RuntimeDep,
    caller: CallerDep,
    model: Annotated[str | None, Query(description="model name (binary bodies)")] = None,
    output: Annotated[str | None, Query(description="scores | label")] = None,
    shape: Annotated[str | None, Query(description="N,C,H,W of a raw float32 body")] = None,
    x_shape: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> JSONResponse:
    decoded = await decode(request, runtime, model, output, shape or x_shape)
    host = resolve_host(runtime, decoded.model)
    mode = decoded.output or host.output_modes[0]
    if mode == "scores" and "scores" not in host.output_modes:
        raise ApiError(
            403, "label_only", f"model {host.name!r} answers labels only; ask for output=label"
        )
    images = validate_images(decoded.images, host.spec.input_shape, runtime.settings.max_batch)
    n = len(images)

    settings = runtime.settings
    retry = {"Retry-After": str(settings.retry_after_s)}
    try:
        charge: Charge | None = await runtime.counter.charge(
            caller, host.name, n, settings.budget_for(caller)
        )
    except CounterUnavailable:
        if not settings.fail_open:
            raise ApiError(
                503,
                "counter_unavailable",
                "query accounting is unavailable; try again later",
                retry,
            ) from None
        log.warning(
            "counter unavailable: answering %d images of %s uncounted (fail_open)", n, caller
        )
        charge = None
    if charge is not None and not charge.allowed:
        raise ApiError(
            429,
            "budget_exhausted",
            f"query budget of {charge.budget} images is spent or too small for this "
            f"batch: {charge.used} used, this batch of {n} was refused and not "
            "counted",
            retry,
        )
    try:
        # on timeout the wait is cancelled (queued work may still run) and the charge refunded
        probs = await asyncio.wait_for(
            runtime.pool.predict(host, images), settings.request_timeout_s
        )
    except BaseException as exc:
        if charge is not None:
            await refund(runtime, caller, host.name, n)
        if isinstance(exc, Overloaded):
            raise ApiError(503, "overloaded", str(exc), retry) from None
        if isinstance(exc, TimeoutError):
            raise ApiError(
                504,
                "timeout",
                f"no answer within {settings.request_timeout_s} s; this request was not counted",
                retry,
            ) from None
        raise
    QUERIES_ANSWERED.labels(host.name, host.settings.defense.kind).inc(n)
    if charge is None:
        QUERIES_UNCOUNTED.labels(host.name).inc(n)
    body: dict[str, Any] = {"model": host.name, "labels": probs.argmax(1).tolist()}
    if mode == "scores":
        body["scores"] = probs.tolist()
    headers = {}
    if charge is not None:
        headers["X-Queries-Used"] = str(charge.used)
        if charge.remaining is not None:
            headers["X-Queries-Remaining"] = str(charge.remaining)
    return JSONResponse(body, headers=headers)
