"""Open Inference Protocol requests for the tests, written from the spec (kserve
open-inference-protocol ``inference_rest.md``; Triton's binary tensor data extension), without
the service's codec: JSON and binary infer requests, response parsing, the error shape."""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import numpy as np

DTYPES = {"FP32": "<f4", "INT64": "<i8", "FP64": "<f8", "FP16": "<f2"}


def tensor(name: str, x: np.ndarray, datatype: str = "FP32", binary: bool = False) -> dict:
    entry: dict[str, Any] = {"name": name, "shape": list(x.shape), "datatype": datatype}
    if binary:
        entry["parameters"] = {"binary_data_size": x.astype(DTYPES[datatype]).nbytes}
    else:
        entry["data"] = x.ravel().tolist()
    return entry


def infer(
    url: str,
    model: str,
    x: np.ndarray,
    *,
    name: str = "input",
    binary: bool = False,
    outputs: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    path: str | None = None,
) -> httpx.Response:
    """``POST {url}/v2/models/{model}/infer`` of one FP32 input, JSON or binary."""
    request: dict[str, Any] = {"inputs": [tensor(name, x, binary=binary)], **(extra or {})}
    if outputs is not None:
        request["outputs"] = outputs
    head = json.dumps(request).encode()
    sent = dict(headers or {})
    body = head
    if binary:
        body = head + np.ascontiguousarray(x, dtype="<f4").tobytes()
        sent["Inference-Header-Content-Length"] = str(len(head))
        sent.setdefault("Content-Type", "application/octet-stream")
    else:
        sent.setdefault("Content-Type", "application/json")
    target = url + (path or f"/v2/models/{model}/infer")
    return httpx.post(target, content=body, headers=sent, timeout=60)


def outputs_of(response: httpx.Response) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The response's JSON object and its outputs by name (JSON or binary data)."""
    assert response.status_code == 200, response.text[:500]
    body = response.content
    size = int(response.headers.get("inference-header-content-length", len(body)))
    head = json.loads(body[:size])
    arrays, offset = {}, size
    for out in head["outputs"]:
        dtype = DTYPES[out["datatype"]]
        n = (out.get("parameters") or {}).get("binary_data_size")  # kserve sends null
        if n is not None:
            arrays[out["name"]] = np.frombuffer(body[offset : offset + n], dtype).reshape(
                out["shape"]
            )
            offset += n
        else:
            arrays[out["name"]] = np.asarray(out["data"], dtype).reshape(out["shape"])
    assert offset == len(body), "bytes left over after the outputs"
    return head, arrays


def assert_oip_error(response: httpx.Response, status: int, code: str | None = None) -> str:
    """The protocol's error shape, ``{"error": "<message>"}``, with the gateway's stable
    ``code`` (the one ``/predict`` gives the same fault) beside it, and nothing else."""
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "code"} and isinstance(body["error"], str) and body["error"], body
    assert isinstance(body["code"], str) and body["code"], body
    if code is not None:
        assert body["code"] == code, body
    return str(body["error"])


def predict_scores(url: str, x: np.ndarray, **params: str) -> np.ndarray:
    """The scores ``/predict`` answers for ``x`` (npy body): what /v2 must agree with."""
    buf = io.BytesIO()
    np.save(buf, x)
    r = httpx.post(
        url + "/predict",
        content=buf.getvalue(),
        params={"output": "scores", **params},
        headers={"Content-Type": "application/x-npy"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return np.asarray(r.json()["scores"], np.float32)
