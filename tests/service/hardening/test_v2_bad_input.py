"""Bad input on the Open Inference Protocol routes: a 4xx in the protocol's error shape
(``{"error": "..."}``) with the code ``/predict`` gives the same fault, nothing counted, and the
next good request answered; a label-only model's scores never leave on /v2 either."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from tests.oip import assert_oip_error, infer, outputs_of, tensor
from tests.servers import ServiceProcess
from tests.service.hardening.conftest import (
    IMAGE,
    KEYS,
    LABEL_ONLY,
    MAX_BATCH,
    MODEL,
    assert_json_error,
    npy,
)

KEY = KEYS["v2"]
GREY = np.full((1, *IMAGE), 0.5, np.float32)
GOOD = {"inputs": [tensor("input", GREY)]}


def binary(head: dict[str, Any], tail: bytes, length: int | None = None) -> dict[str, Any]:
    text = json.dumps(head).encode()
    size = str(len(text) if length is None else length)
    return {"content": text + tail, "headers": {"Inference-Header-Content-Length": size}}


def as_json(payload: Any) -> dict[str, Any]:
    return {"content": json.dumps(payload).encode()}


def with_input(**changes: Any) -> dict[str, Any]:
    return as_json({"inputs": [{**tensor("input", GREY), **changes}]})


SIZE = GREY.nbytes
BIN_INPUT = {**tensor("input", GREY, binary=True)}
# (kind, request, status, code: the one /predict gives the same fault)
CASES: list[tuple[str, dict[str, Any], int, str]] = [
    ("not JSON", {"content": b"{nope"}, 400, "malformed_json"),
    ("JSON not an object", as_json([1]), 400, "invalid_request"),
    ("empty body", {"content": b""}, 400, "malformed_json"),
    (
        "NaN token",
        {"content": json.dumps(GOOD).replace("0.5", "NaN", 1).encode()},
        400,
        "non_finite",
    ),
    ("no inputs", as_json({"outputs": [{"name": "label"}]}), 400, "invalid_request"),
    ("two inputs", as_json({"inputs": [tensor("input", GREY)] * 2}), 400, "invalid_request"),
    ("unknown input name", with_input(name="x"), 400, "invalid_request"),
    ("datatype INT32", with_input(datatype="INT32"), 400, "bad_dtype"),
    ("datatype BYTES", with_input(datatype="BYTES"), 400, "bad_dtype"),
    ("shape not a list", with_input(shape="1,1,28,28"), 400, "bad_shape"),
    ("negative shape", with_input(shape=[-1, 1, 28, 28]), 400, "bad_shape"),
    ("shape of booleans", with_input(shape=[True, 1, 28, 28]), 400, "bad_shape"),
    ("data shorter than shape", with_input(data=[0.5] * 700), 400, "shape_mismatch"),
    ("data of strings", with_input(data=["0.5"] * 784), 400, "bad_array"),
    ("data of booleans", with_input(data=[True] * 784), 400, "bad_array"),
    ("data of nulls", with_input(data=[None] * 784), 400, "bad_array"),
    (
        "data missing",
        as_json({"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32"}]}),
        400,
        "invalid_request",
    ),
    (
        "data deeply nested",
        {
            "content": json.dumps(GOOD)
            .encode()
            .replace(b'"data": [', b'"data": ' + b"[" * 30000 + b"[", 1)
            .replace(b"]}", b"]" * 30000 + b"]}", 1)
        },
        400,
        "malformed_json",
    ),
    ("unknown field", as_json({**GOOD, "sigma": 0}), 400, "invalid_request"),
    ("id not a string", as_json({**GOOD, "id": 3}), 400, "invalid_request"),
    ("unknown output", as_json({**GOOD, "outputs": [{"name": "logits"}]}), 400, "unknown_output"),
    (
        "binary_data not a bool",
        as_json({**GOOD, "outputs": [{"name": "label", "parameters": {"binary_data": 1}}]}),
        400,
        "invalid_request",
    ),
    ("rank 3", with_input(shape=[1, 28, 28]), 422, "bad_rank"),
    ("image 28x27", with_input(shape=[1, 1, 28, 27], data=[0.5] * 756), 422, "bad_shape"),
    ("empty batch", with_input(shape=[0, 1, 28, 28], data=[]), 422, "empty_batch"),
    ("pixel 2.0", with_input(data=[2.0] * 784), 422, "out_of_range"),
    ("pixel -0.5", with_input(data=[-0.5] * 784), 422, "out_of_range"),
    (
        "integer beyond any float",
        {"content": json.dumps(GOOD).replace("0.5", "1" + "0" * 400, 1).encode()},
        422,
        "out_of_range",
    ),
    (
        "FP64 overflowing float32",
        with_input(datatype="FP64", data=[1e300] * 784),
        422,
        "non_finite",
    ),
    (
        "batch over the limit",
        with_input(shape=[MAX_BATCH + 1, 1, 28, 28], data=[0.5] * 784 * (MAX_BATCH + 1)),
        413,
        "batch_too_large",
    ),
    (
        "binary NaN",
        binary({"inputs": [BIN_INPUT]}, np.full(784, np.nan, "<f4").tobytes()),
        422,
        "non_finite",
    ),
    (
        "binary +inf",
        binary({"inputs": [BIN_INPUT]}, np.full(784, np.inf, "<f4").tobytes()),
        422,
        "non_finite",
    ),
    (
        "binary truncated",
        binary({"inputs": [BIN_INPUT]}, GREY.tobytes()[:-4]),
        400,
        "shape_mismatch",
    ),
    (
        "binary extra bytes",
        binary({"inputs": [BIN_INPUT]}, GREY.tobytes() + b"\0" * 4),
        400,
        "shape_mismatch",
    ),
    (
        "binary size disagrees with shape",
        binary(
            {"inputs": [{**BIN_INPUT, "parameters": {"binary_data_size": SIZE - 4}}]},
            GREY.tobytes()[:-4],
        ),
        400,
        "shape_mismatch",
    ),
    (
        "header length beyond the body",
        binary({"inputs": [BIN_INPUT]}, GREY.tobytes(), 10**7),
        400,
        "malformed_body",
    ),
    (
        "header length not a number",
        {"content": json.dumps(GOOD).encode(), "headers": {"Inference-Header-Content-Length": "x"}},
        400,
        "malformed_body",
    ),
    (
        "header length cuts the JSON",
        binary({"inputs": [BIN_INPUT]}, GREY.tobytes(), 20),
        400,
        "malformed_json",
    ),
    (
        "binary size without the header",
        {"content": json.dumps({"inputs": [BIN_INPUT]}).encode() + GREY.tobytes()},
        400,
        "malformed_json",  # without the header the bytes after the JSON make it no JSON
    ),
    (
        "gzip body",
        {"content": b"\x1f\x8b", "headers": {"Content-Encoding": "gzip"}},
        415,
        "unsupported_encoding",
    ),
]


@pytest.fixture(scope="module")
def server(hardened: ServiceProcess) -> Iterator[ServiceProcess]:
    yield hardened
    assert "unexpected error" not in hardened.log()


def used(server: ServiceProcess) -> int:
    response = infer(server.url, MODEL, GREY, headers={"X-API-Key": KEY})
    outputs_of(response)
    return int(response.headers["X-Queries-Used"])


def test_the_matrix_is_wide() -> None:
    assert len({case[0] for case in CASES}) == len(CASES) >= 30


@pytest.mark.parametrize(
    ("request_kwargs", "status", "code"), [pytest.param(*c[1:], id=c[0]) for c in CASES]
)
def test_bad_v2_input_is_an_oip_4xx_that_counts_nothing(
    server: ServiceProcess, request_kwargs: dict[str, Any], status: int, code: str
) -> None:
    before = used(server)
    headers = {**request_kwargs.get("headers", {}), "X-API-Key": KEY}
    response = httpx.post(
        f"{server.url}/v2/models/{MODEL}/infer",
        timeout=60,
        **{**request_kwargs, "headers": headers},
    )
    assert_oip_error(response, status, code)
    assert "X-Queries-Used" not in response.headers
    assert used(server) == before + 1


def test_v2_needs_the_api_key(server: ServiceProcess) -> None:
    assert "X-API-Key" in assert_oip_error(infer(server.url, MODEL, GREY), 401, "missing_api_key")
    wrong = infer(server.url, MODEL, GREY, headers={"X-API-Key": "wrong"})
    assert_oip_error(wrong, 401, "invalid_api_key")


def test_label_only_scores_never_leave_on_v2(server: ServiceProcess) -> None:
    key = {"X-API-Key": KEY}
    for outputs in ([{"name": "probabilities"}], [{"name": "label"}, {"name": "probabilities"}]):
        refused = infer(server.url, LABEL_ONLY, GREY, outputs=outputs, headers=key, binary=True)
        assert_oip_error(refused, 403, "label_only")
    head, arrays = outputs_of(
        infer(
            server.url,
            LABEL_ONLY,
            GREY,
            headers=key,
            extra={"parameters": {"binary_data_output": True}},
        )
    )
    assert list(arrays) == ["label"]
    meta = httpx.get(f"{server.url}/v2/models/{LABEL_ONLY}", timeout=10)
    assert [o["name"] for o in meta.json()["outputs"]] == ["label"]
    assert "sigma" not in meta.text


def pixel_image(value: Any) -> list[list[list[Any]]]:
    return [[[value] * IMAGE[2]] * IMAGE[1]]


PREDICT_JSON = {"Content-Type": "application/json"}
PREDICT_GOOD = json.dumps({"inputs": [pixel_image(0.5)]})
# (fault, /predict request, its status, /v2 request, its status, the one code of both)
PARITY: list[tuple[str, dict[str, Any], int, dict[str, Any], int, str]] = [
    (
        "NaN literal",
        {"content": PREDICT_GOOD.replace("0.5", "NaN", 1).encode(), "headers": PREDICT_JSON},
        422,
        {"content": json.dumps(GOOD).replace("0.5", "NaN", 1).encode()},
        400,
        "non_finite",
    ),
    (
        "booleans as data",
        {"json": {"inputs": [pixel_image(True)]}},
        422,
        with_input(data=[True] * 784),
        400,
        "bad_array",
    ),
    (
        "null as data",
        {"json": {"inputs": [pixel_image(None)]}},
        422,
        with_input(data=[None] * 784),
        400,
        "bad_array",
    ),
    (
        "unknown field",
        {"json": {"inputs": [pixel_image(0.5)], "sigma": 0}},
        422,
        as_json({**GOOD, "sigma": 0}),
        400,
        "invalid_request",
    ),
    ("not an object", {"json": [1]}, 422, as_json([1]), 400, "invalid_request"),
    (
        "image shape not the model's",
        {"json": {"inputs": [[[[0.5] * 27] * 28]]}},
        422,
        with_input(shape=[1, 1, 28, 27], data=[0.5] * 756),
        422,
        "bad_shape",
    ),
    (
        "rank 3",
        {"json": {"inputs": pixel_image(0.5)}},
        422,
        with_input(shape=[1, 28, 28]),
        422,
        "bad_rank",
    ),
    (
        "data disagrees with the stated shape",
        {
            "content": GREY.tobytes()[:-4],
            "params": {"shape": "1,1,28,28"},
            "headers": {"Content-Type": "application/octet-stream"},
        },
        400,
        with_input(data=[0.5] * 783),
        400,
        "shape_mismatch",
    ),
    (
        "not float32",
        {
            "content": npy(GREY.astype(np.int32)),
            "headers": {"Content-Type": "application/x-npy"},
        },
        422,
        with_input(datatype="INT32"),
        400,
        "bad_dtype",
    ),
    (
        "unknown output",
        {"json": {"inputs": [pixel_image(0.5)], "output": "logits"}},
        422,
        as_json({**GOOD, "outputs": [{"name": "logits"}]}),
        400,
        "unknown_output",
    ),
    (
        "pixel outside [0, 1]",
        {"json": {"inputs": [pixel_image(2.0)]}},
        422,
        with_input(data=[2.0] * 784),
        422,
        "out_of_range",
    ),
    (
        "not JSON",
        {"content": b"{nope", "headers": PREDICT_JSON},
        400,
        {"content": b"{nope"},
        400,
        "malformed_json",
    ),
    (
        "gzip-encoded body",
        {"content": b"\x1f\x8b", "headers": {**PREDICT_JSON, "Content-Encoding": "gzip"}},
        415,
        {"content": b"\x1f\x8b", "headers": {"Content-Encoding": "gzip"}},
        415,
        "unsupported_encoding",
    ),
]


@pytest.mark.parametrize(
    ("predict_kwargs", "predict_status", "v2_kwargs", "v2_status", "code"),
    [pytest.param(*p[1:], id=p[0]) for p in PARITY],
)
def test_one_fault_one_code_on_both_protocols(
    server: ServiceProcess,
    predict_kwargs: dict[str, Any],
    predict_status: int,
    v2_kwargs: dict[str, Any],
    v2_status: int,
    code: str,
) -> None:
    """The same bad input gets the same code from /predict and /v2; each protocol keeps its
    status convention (the error table of docs/serving/api.md)."""
    key = {"X-API-Key": KEY}
    predicted = httpx.post(
        f"{server.url}/predict",
        timeout=60,
        **{**predict_kwargs, "headers": {**predict_kwargs.get("headers", {}), **key}},
    )
    assert_json_error(predicted, predict_status, code)
    inferred = httpx.post(
        f"{server.url}/v2/models/{MODEL}/infer",
        timeout=60,
        **{**v2_kwargs, "headers": {**v2_kwargs.get("headers", {}), **key}},
    )
    assert_oip_error(inferred, v2_status, code)
