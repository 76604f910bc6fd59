"""Bad input on the Open Inference Protocol routes: a 4xx in the protocol's error shape
(``{"error": "..."}``), nothing counted, and the next good request answered; a label-only
model's scores never leave on /v2 either."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from tests.oip import assert_oip_error, infer, outputs_of, tensor
from tests.servers import ServiceProcess
from tests.service.hardening.conftest import IMAGE, KEYS, LABEL_ONLY, MAX_BATCH, MODEL

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
# (kind, request, status)
CASES: list[tuple[str, dict[str, Any], int]] = [
    ("not JSON", {"content": b"{nope"}, 400),
    ("JSON not an object", as_json([1]), 400),
    ("empty body", {"content": b""}, 400),
    ("NaN token", {"content": json.dumps(GOOD).replace("0.5", "NaN", 1).encode()}, 400),
    ("no inputs", as_json({"outputs": [{"name": "label"}]}), 400),
    ("two inputs", as_json({"inputs": [tensor("input", GREY)] * 2}), 400),
    ("unknown input name", with_input(name="x"), 400),
    ("datatype INT32", with_input(datatype="INT32"), 400),
    ("datatype BYTES", with_input(datatype="BYTES"), 400),
    ("shape not a list", with_input(shape="1,1,28,28"), 400),
    ("negative shape", with_input(shape=[-1, 1, 28, 28]), 400),
    ("shape of booleans", with_input(shape=[True, 1, 28, 28]), 400),
    ("data shorter than shape", with_input(data=[0.5] * 700), 400),
    ("data of strings", with_input(data=["0.5"] * 784), 400),
    ("data of booleans", with_input(data=[True] * 784), 400),
    ("data of nulls", with_input(data=[None] * 784), 400),
    (
        "data missing",
        as_json({"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32"}]}),
        400,
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
    ),
    ("unknown field", as_json({**GOOD, "sigma": 0}), 400),
    ("id not a string", as_json({**GOOD, "id": 3}), 400),
    ("unknown output", as_json({**GOOD, "outputs": [{"name": "logits"}]}), 400),
    (
        "binary_data not a bool",
        as_json({**GOOD, "outputs": [{"name": "label", "parameters": {"binary_data": 1}}]}),
        400,
    ),
    ("rank 3", with_input(shape=[1, 28, 28]), 422),
    ("image 28x27", with_input(shape=[1, 1, 28, 27], data=[0.5] * 756), 422),
    ("empty batch", with_input(shape=[0, 1, 28, 28], data=[]), 422),
    ("pixel 2.0", with_input(data=[2.0] * 784), 422),
    ("pixel -0.5", with_input(data=[-0.5] * 784), 422),
    (
        "integer beyond any float",
        {"content": json.dumps(GOOD).replace("0.5", "1" + "0" * 400, 1).encode()},
        422,
    ),
    ("FP64 overflowing float32", with_input(datatype="FP64", data=[1e300] * 784), 422),
    (
        "batch over the limit",
        with_input(shape=[MAX_BATCH + 1, 1, 28, 28], data=[0.5] * 784 * (MAX_BATCH + 1)),
        413,
    ),
    ("binary NaN", binary({"inputs": [BIN_INPUT]}, np.full(784, np.nan, "<f4").tobytes()), 422),
    ("binary +inf", binary({"inputs": [BIN_INPUT]}, np.full(784, np.inf, "<f4").tobytes()), 422),
    ("binary truncated", binary({"inputs": [BIN_INPUT]}, GREY.tobytes()[:-4]), 400),
    ("binary extra bytes", binary({"inputs": [BIN_INPUT]}, GREY.tobytes() + b"\0" * 4), 400),
    (
        "binary size disagrees with shape",
        binary(
            {"inputs": [{**BIN_INPUT, "parameters": {"binary_data_size": SIZE - 4}}]},
            GREY.tobytes()[:-4],
        ),
        400,
    ),
    ("header length beyond the body", binary({"inputs": [BIN_INPUT]}, GREY.tobytes(), 10**7), 400),
    (
        "header length not a number",
        {"content": json.dumps(GOOD).encode(), "headers": {"Inference-Header-Content-Length": "x"}},
        400,
    ),
    ("header length cuts the JSON", binary({"inputs": [BIN_INPUT]}, GREY.tobytes(), 20), 400),
    (
        "binary size without the header",
        {"content": json.dumps({"inputs": [BIN_INPUT]}).encode() + GREY.tobytes()},
        400,
    ),
    ("gzip body", {"content": b"\x1f\x8b", "headers": {"Content-Encoding": "gzip"}}, 415),
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
    ("request_kwargs", "status"), [pytest.param(*c[1:], id=c[0]) for c in CASES]
)
def test_bad_v2_input_is_an_oip_4xx_that_counts_nothing(
    server: ServiceProcess, request_kwargs: dict[str, Any], status: int
) -> None:
    before = used(server)
    headers = {**request_kwargs.get("headers", {}), "X-API-Key": KEY}
    response = httpx.post(
        f"{server.url}/v2/models/{MODEL}/infer",
        timeout=60,
        **{**request_kwargs, "headers": headers},
    )
    assert_oip_error(response, status)
    assert "X-Queries-Used" not in response.headers
    assert used(server) == before + 1


def test_v2_needs_the_api_key(server: ServiceProcess) -> None:
    assert "X-API-Key" in assert_oip_error(infer(server.url, MODEL, GREY), 401)
    wrong = infer(server.url, MODEL, GREY, headers={"X-API-Key": "wrong"})
    assert_oip_error(wrong, 401)


def test_label_only_scores_never_leave_on_v2(server: ServiceProcess) -> None:
    key = {"X-API-Key": KEY}
    for outputs in ([{"name": "probabilities"}], [{"name": "label"}, {"name": "probabilities"}]):
        refused = infer(server.url, LABEL_ONLY, GREY, outputs=outputs, headers=key, binary=True)
        assert_oip_error(refused, 403)
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
