"""The Open Inference Protocol (KServe v2) REST routes: a second codec over the one pipeline.

Per kserve/open-inference-protocol ``inference_rest.md``: server metadata (``GET /v2``, with the
``binary_tensor_data`` extension of Triton), health (``/v2/health/live``, ``/v2/health/ready``),
model metadata and readiness, and ``POST /v2/models/{m}[/versions/{v}]/infer``. Infer decodes
the request (:mod:`service.protocol.oip`), runs :func:`service.api.pipeline.answer` (the same
defense, caller, counting, budget, label-only policy and limits as ``/predict``) and encodes the
answer.
Errors on ``/v2`` paths take the protocol's shape ``{"error": "<message>"}`` with the stable
``code`` ``/predict`` gives the same fault beside it (``service/api/errors.py``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from service import __version__
from service.api.deps import CallerDep, Runtime, RuntimeDep
from service.api.openapi import error_responses
from service.api.pipeline import answer, resolve_host
from service.api.readiness import readiness
from service.api.routes.predict import read_body
from service.errors import ApiError
from service.protocol.oip import BINARY_EXTENSION, LABEL, PROBABILITIES, decode_infer, encode_infer
from service.serving.pool import Host

router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"])
VERSION = "1"


def oip_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return error_responses(*statuses, oip=True)


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


@router.get("", response_model=ServerMetadata, summary="Server metadata")
async def server_metadata() -> ServerMetadata:
    return ServerMetadata(name="snd-gateway", version=__version__, extensions=[BINARY_EXTENSION])


@router.get("/health/live", summary="Liveness")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get(
    "/health/ready",
    summary="Readiness: every model answers (proxied: its upstream is ready) and the query "
    "counter is reachable",
    responses={503: {"description": "not ready"}},
)
async def ready(request: Request) -> JSONResponse:
    state = await readiness(request)
    return JSONResponse({"ready": state.ready}, status_code=state.status, headers=state.headers)


def host_for(runtime: Runtime, model: str, version: str | None) -> Host:
    host = resolve_host(runtime, model)
    if version is not None and version != VERSION:
        raise ApiError(404, "unknown_version", f"model {model!r} has no version {version!r}")
    return host


def metadata(host: Host) -> ModelMetadata:
    spec = host.signature
    outputs = [TensorMetadata(name=LABEL, datatype="INT64", shape=[-1])]
    if "scores" in host.output_modes:
        outputs.insert(
            0, TensorMetadata(name=PROBABILITIES, datatype="FP32", shape=[-1, spec.num_classes])
        )
    return ModelMetadata(
        name=host.name,
        versions=[VERSION],
        platform="snd-gateway",
        inputs=[
            TensorMetadata(name=spec.input_name, datatype="FP32", shape=[-1, *spec.input_shape])
        ],
        outputs=outputs,
    )


@router.get(
    "/models/{model}",
    response_model=ModelMetadata,
    summary="Model metadata",
    responses=oip_errors(404, 503),
)
async def model_metadata(model: str, runtime: RuntimeDep) -> ModelMetadata:
    return metadata(host_for(runtime, model, None))


@router.get(
    "/models/{model}/versions/{version}",
    response_model=ModelMetadata,
    summary="Model metadata (one version)",
    responses=oip_errors(404, 503),
)
async def version_metadata(model: str, version: str, runtime: RuntimeDep) -> ModelMetadata:
    return metadata(host_for(runtime, model, version))


async def model_ready(runtime: Runtime, model: str, version: str | None) -> JSONResponse:
    host = host_for(runtime, model, version)
    ok = await runtime.pool.ready(host)
    return JSONResponse({"name": host.name, "ready": ok}, status_code=200 if ok else 503)


@router.get(
    "/models/{model}/ready",
    summary="Model readiness",
    responses={503: {"description": "not ready"}, **oip_errors(404)},
)
async def ready_model(model: str, runtime: RuntimeDep) -> JSONResponse:
    return await model_ready(runtime, model, None)


@router.get(
    "/models/{model}/versions/{version}/ready",
    summary="Model readiness (one version)",
    responses={503: {"description": "not ready"}, **oip_errors(404)},
)
async def ready_version(model: str, version: str, runtime: RuntimeDep) -> JSONResponse:
    return await model_ready(runtime, model, version)


INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": {"type": "object"},
                        "inputs": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": 1,
                            "items": {
                                "type": "object",
                                "required": ["name", "shape", "datatype", "data"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "shape": {"type": "array", "items": {"type": "integer"}},
                                    "datatype": {"type": "string"},
                                    "parameters": {"type": "object"},
                                    "data": {"type": "array", "items": {"type": "number"}},
                                },
                            },
                        },
                        "outputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string", "enum": [PROBABILITIES, LABEL]},
                                    "parameters": {"type": "object"},
                                },
                            },
                        },
                    },
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
INFER_RESPONSE = {
    "type": "object",
    "required": ["model_name", "outputs"],
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "outputs": {"type": "array", "items": {"type": "object"}},
    },
}
INFER_ROUTE: dict[str, Any] = {
    "openapi_extra": INFER_BODY,
    "responses": {
        200: {
            "content": {
                "application/json": {"schema": INFER_RESPONSE},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            }
        },
        **oip_errors(400, 401, 403, 404, 413, 415, 422, 429, 502, 503, 504),
    },
    "response_class": Response,
}
HeaderLength = Annotated[str | None, Header(include_in_schema=False)]


async def infer(
    request: Request,
    runtime: Runtime,
    caller: str,
    model: str,
    version: str | None,
    header_length: str | None,
) -> Response:
    host = host_for(runtime, model, version)
    body = await read_body(request, runtime.settings.max_body_bytes)
    decoded = decode_infer(body, header_length, host.signature.input_name)
    result = await answer(runtime, caller, decoded.images, host.name, decoded.mode)
    content, headers = encode_infer(decoded, host.name, result.probs, result.mode, version)
    return Response(content, headers={**headers, **result.usage_headers()})


@router.post("/models/{model}/infer", summary="Inference behind the model's defense", **INFER_ROUTE)
async def infer_model(
    model: str,
    request: Request,
    runtime: RuntimeDep,
    caller: CallerDep,
    inference_header_content_length: HeaderLength = None,
) -> Response:
    return await infer(request, runtime, caller, model, None, inference_header_content_length)


@router.post(
    "/models/{model}/versions/{version}/infer",
    summary="Inference behind the model's defense (one version)",
    **INFER_ROUTE,
)
async def infer_version(
    model: str,
    version: str,
    request: Request,
    runtime: RuntimeDep,
    caller: CallerDep,
    inference_header_content_length: HeaderLength = None,
) -> Response:
    return await infer(request, runtime, caller, model, version, inference_header_content_length)
