"""``POST /predict``: decode (JSON, npy or raw float32) -> the shared pipeline -> encode."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from service.api.deps import CallerDep, Runtime, RuntimeDep
from service.api.openapi import error_responses
from service.api.pipeline import answer
from service.errors import ApiError
from service.protocol.predict import (
    JSON_TYPES,
    NPY_TYPES,
    RAW_TYPES,
    DecodedRequest,
    decode_json,
    decode_npy,
    decode_raw,
    parse_shape,
)
from service.protocol.tensors import parse_output

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

# every error status /predict answers (the error table of docs/serving/api.md): 502 is a proxied
# model's upstream failing (``service/serving/upstream.py``)
PREDICT_ERRORS = (400, 401, 403, 404, 413, 415, 422, 429, 502, 503, 504)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` (also chunked),
    and with 415 when it is encoded (gzip, ...): no route decompresses."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise ApiError(415, "unsupported_encoding", f"Content-Encoding {encoding!r}: send it plain")
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


@router.post(
    "/predict",
    summary="Classify a batch of [0, 1] images behind the model's defense",
    openapi_extra=PREDICT_BODY,
    responses={
        200: {"content": {"application/json": {"schema": PREDICT_RESPONSE}}},
        **error_responses(*PREDICT_ERRORS),
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
    result = await answer(runtime, caller, decoded.images, decoded.model, decoded.output)
    body: dict[str, Any] = {"model": result.host.name, "labels": result.labels}
    if result.mode == "scores":
        body["scores"] = result.probs.tolist()
    return JSONResponse(body, headers=result.usage_headers())
