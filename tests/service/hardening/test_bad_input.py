"""Bad input: every kind gets a 4xx in the JSON error shape, counts nothing, and the server
answers the next good request. The body size limits are ``test_body_limits.py``."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.servers import ServiceProcess
from tests.service.hardening.conftest import (
    IMAGE,
    KEYS,
    MAX_BATCH,
    assert_json_error,
    good_request,
    npy,
)

KEY = KEYS["matrix"]
PICKLE_MARKER = Path(tempfile.gettempdir()) / f"snd-hardening-unpickled-{os.getpid()}"


class _Unpickles:
    """Unpickling this creates PICKLE_MARKER: the proof that a server loaded a pickle."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.mkdir, (str(PICKLE_MARKER),)


def image(value: Any) -> list[list[list[Any]]]:
    return [[[value] * IMAGE[2]] * IMAGE[1]]


def as_json(text: str) -> dict[str, Any]:
    return {"content": text.encode(), "headers": {"Content-Type": "application/json"}}


def as_npy(array: np.ndarray | np.generic, **params: str) -> dict[str, Any]:
    return {
        "content": npy(np.asarray(array)),
        "params": params,
        "headers": {"Content-Type": "application/x-npy"},
    }


def as_raw(
    body: bytes, shape: str | None, header_shape: str | None = None, **params: str
) -> dict[str, Any]:
    headers = {"Content-Type": "application/octet-stream"}
    if header_shape is not None:
        headers["X-Shape"] = header_shape
    if shape is not None:
        params["shape"] = shape
    return {"content": body, "params": params, "headers": headers}


def pixels(n: int, value: float = 0.5) -> np.ndarray:
    return np.full((n, *IMAGE), value, np.float32)


def pickled_object_npy() -> bytes:
    array = np.empty(1, dtype=object)
    array[0] = _Unpickles()
    return npy(array, allow_pickle=True)


def npy_header_only(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return buffer.getvalue()


GREY = image(0.5)
NAN_TEXT = json.dumps({"inputs": [GREY]}).replace("0.5", "NaN", 1)

# (kind, request, status, error code)
CASES: list[tuple[str, dict[str, Any], int, str]] = [
    # rank, shape, channels, image size
    ("rank 3 (no batch axis), JSON", {"json": {"inputs": GREY}}, 422, "bad_rank"),
    ("rank 5, npy", as_npy(np.zeros((1, 1, *IMAGE), np.float32)), 422, "bad_rank"),
    ("rank 1, raw", as_raw(pixels(1).tobytes(), "784"), 422, "bad_rank"),
    ("rank 0, npy scalar", as_npy(np.float32(0.5)), 422, "bad_rank"),
    ("image 27x28, JSON", {"json": {"inputs": [[[[0.5] * 27] * 28]]}}, 422, "bad_shape"),
    ("3 channels, npy", as_npy(np.zeros((1, 3, 28, 28), np.float32)), 422, "bad_shape"),
    (
        "image 32x32, raw",
        as_raw(np.zeros((1, 1, 32, 32), np.float32).tobytes(), "1,1,32,32"),
        422,
        "bad_shape",
    ),
    ("channels last, npy", as_npy(np.zeros((1, 28, 28, 1), np.float32)), 422, "bad_shape"),
    # dtypes
    ("float64 npy", as_npy(np.zeros((1, *IMAGE), np.float64)), 422, "bad_dtype"),
    ("float16 npy", as_npy(np.zeros((1, *IMAGE), np.float16)), 422, "bad_dtype"),
    ("int32 npy", as_npy(np.zeros((1, *IMAGE), np.int32)), 422, "bad_dtype"),
    ("int64 npy", as_npy(np.zeros((1, *IMAGE), np.int64)), 422, "bad_dtype"),
    ("uint8 npy", as_npy(np.zeros((1, *IMAGE), np.uint8)), 422, "bad_dtype"),
    ("bool npy", as_npy(np.zeros((1, *IMAGE), np.bool_)), 422, "bad_dtype"),
    ("complex64 npy", as_npy(np.zeros((1, *IMAGE), np.complex64)), 422, "bad_dtype"),
    ("structured npy", as_npy(np.zeros((1, *IMAGE), [("a", "<f4")])), 422, "bad_dtype"),
    (
        "pickled object npy (never unpickled)",
        {"content": pickled_object_npy(), "headers": {"Content-Type": "application/x-npy"}},
        422,
        "bad_dtype",
    ),
    # non-finite and out-of-range pixels
    ("NaN, raw", as_raw(pixels(1, np.nan).tobytes(), "1,1,28,28"), 422, "non_finite"),
    ("+inf, npy", as_npy(pixels(1, np.inf)), 422, "non_finite"),
    ("-inf, npy", as_npy(pixels(1, -np.inf)), 422, "non_finite"),
    ("JSON NaN token", as_json(NAN_TEXT), 422, "non_finite"),
    ("JSON Infinity token", as_json(NAN_TEXT.replace("NaN", "Infinity")), 422, "non_finite"),
    ("JSON -Infinity token", as_json(NAN_TEXT.replace("NaN", "-Infinity")), 422, "non_finite"),
    ("JSON 1e400 (overflows to inf)", as_json(NAN_TEXT.replace("NaN", "1e400")), 422, "non_finite"),
    (
        "JSON integer beyond any float",
        as_json(NAN_TEXT.replace("NaN", "1" + "0" * 400)),
        422,
        "out_of_range",
    ),
    ("pixel 2.0, JSON", {"json": {"inputs": [image(2.0)]}}, 422, "out_of_range"),
    ("pixel -0.1, raw", as_raw(pixels(1, -0.1).tobytes(), "1,1,28,28"), 422, "out_of_range"),
    ("pixel 255 (8-bit scale), npy", as_npy(pixels(1, 255.0)), 422, "out_of_range"),
    # empty batch and batch over the limit
    ("empty batch, npy (0,1,28,28)", as_npy(np.zeros((0, *IMAGE), np.float32)), 422, "empty_batch"),
    ("empty batch, raw", as_raw(b"", "0,1,28,28"), 422, "empty_batch"),
    ("empty batch, JSON []", {"json": {"inputs": []}}, 422, "bad_rank"),
    (
        "batch over the limit, raw",
        as_raw(pixels(MAX_BATCH + 1).tobytes(), f"{MAX_BATCH + 1},1,28,28"),
        413,
        "batch_too_large",
    ),
    (
        "batch over the limit, JSON",
        {"json": {"inputs": [image(0)] * (MAX_BATCH + 1)}},
        413,
        "batch_too_large",
    ),
    # malformed and truncated bodies
    ("malformed JSON", as_json("{not json"), 400, "malformed_json"),
    ("empty JSON body", as_json(""), 400, "malformed_json"),
    (
        "JSON not UTF-8",
        {"content": b"\xff\xfe\xfa{", "headers": {"Content-Type": "application/json"}},
        400,
        "malformed_json",
    ),
    ("deeply nested JSON", as_json("[" * 20_000 + "]" * 20_000), 400, "malformed_json"),
    (
        "deeply nested JSON inputs",
        as_json('{"inputs": ' + "[" * 20_000 + "]" * 20_000 + "}"),
        400,
        "malformed_json",
    ),
    (
        "inputs nested 70 deep",
        {"json": {"inputs": json.loads("[" * 70 + "0.5" + "]" * 70)}},
        422,
        "bad_rank",
    ),
    ("inputs flat", {"json": {"inputs": [0.5] * 784}}, 422, "bad_rank"),
    (
        "malformed npy",
        {"content": b"garbage", "headers": {"Content-Type": "application/x-npy"}},
        400,
        "malformed_npy",
    ),
    (
        "npz (zip) as npy",
        {"content": b"PK\x03\x04" + bytes(60), "headers": {"Content-Type": "application/x-npy"}},
        400,
        "malformed_npy",
    ),
    (
        "truncated npy",
        {"content": npy(pixels(1))[:-10], "headers": {"Content-Type": "application/x-npy"}},
        400,
        "malformed_npy",
    ),
    (
        "npy header claims 10^11 images",
        {
            "content": npy_header_only((10**11, *IMAGE)) + pixels(1).tobytes(),
            "headers": {"Content-Type": "application/x-npy"},
        },
        400,
        "malformed_npy",
    ),
    (
        "npy header of zero images beyond numpy's limits",
        {
            "content": npy_header_only((0, 10**17, 10**17, 1)),
            "headers": {"Content-Type": "application/x-npy"},
        },
        400,
        "malformed_npy",
    ),
    ("truncated raw body", as_raw(pixels(2).tobytes()[:-100], "2,1,28,28"), 400, "shape_mismatch"),
    # shapes that disagree with the body, or are not shapes
    (
        "raw: shape query disagrees with the body",
        as_raw(pixels(1).tobytes(), "2,1,28,28"),
        400,
        "shape_mismatch",
    ),
    (
        "raw: X-Shape header disagrees with the body",
        as_raw(pixels(2).tobytes(), None, header_shape="1,1,28,28"),
        400,
        "shape_mismatch",
    ),
    (
        "npy: shape query disagrees with the array",
        as_npy(pixels(2), shape="1,1,28,28"),
        400,
        "shape_mismatch",
    ),
    ("raw without a shape", as_raw(pixels(1).tobytes(), None), 400, "missing_shape"),
    ("negative shape", as_raw(pixels(1).tobytes(), "-1,1,28,28"), 400, "bad_shape"),
    ("non-integer shape", as_raw(pixels(1).tobytes(), "1.5,1,28,28"), 400, "bad_shape"),
    ("shape of words", as_raw(pixels(1).tobytes(), "one,1,28,28"), 400, "bad_shape"),
    (
        "shape in another script's digits",
        as_raw(pixels(1).tobytes(), "\u0661,1,28,28"),
        400,
        "bad_shape",
    ),
    (
        "shape of zero images beyond numpy's limits",
        as_raw(b"", "0,999999999999,999999999999,1"),
        400,
        "bad_shape",
    ),
    ("shape of 9 dimensions", as_raw(pixels(1).tobytes(), "1,1,1,1,1,1,1,28,28"), 400, "bad_shape"),
    # unknown model or output mode; the model name is only ever a key of the served models
    (
        "unknown model, JSON field",
        {"json": {"model": "nope", "inputs": [GREY]}},
        404,
        "unknown_model",
    ),
    ("unknown model, query", as_npy(pixels(1), model="nope"), 404, "unknown_model"),
    (
        "model as a file path",
        as_npy(pixels(1), model="../service/weights/resnet20-mnist.pt"),
        404,
        "unknown_model",
    ),
    (
        "model as a URL",
        {"json": {"model": "http://127.0.0.1:1/evil.pt", "inputs": [GREY]}},
        404,
        "unknown_model",
    ),
    ("model not a string", {"json": {"model": 3, "inputs": [GREY]}}, 422, "invalid_request"),
    (
        "unknown output, JSON field",
        {"json": {"inputs": [GREY], "output": "logits"}},
        422,
        "unknown_output",
    ),
    (
        "unknown output, query",
        as_raw(pixels(1).tobytes(), "1,1,28,28", output="logits"),
        422,
        "unknown_output",
    ),
    (
        "output not a string, JSON",
        {"json": {"inputs": [GREY], "output": ["scores"]}},
        422,
        "unknown_output",
    ),
    # content types
    (
        "text/plain",
        {"content": b"0.5", "headers": {"Content-Type": "text/plain"}},
        415,
        "unsupported_media_type",
    ),
    ("no content type", {"content": pixels(1).tobytes()}, 415, "unsupported_media_type"),
    (
        "multipart form",
        {"files": {"file": ("x.npy", npy(pixels(1)))}},
        415,
        "unsupported_media_type",
    ),
    (
        "image/png",
        {"content": b"\x89PNG\r\n\x1a\n", "headers": {"Content-Type": "image/png"}},
        415,
        "unsupported_media_type",
    ),
    (
        "gzip-encoded JSON (no route decompresses)",
        {
            "content": b"\x1f\x8b\x08\x00",
            "headers": {"Content-Type": "application/json", "Content-Encoding": "gzip"},
        },
        415,
        "unsupported_encoding",
    ),
    # JSON of the wrong form
    ("JSON array, not an object", {"json": [GREY]}, 422, "invalid_request"),
    ("JSON string", {"json": "inputs"}, 422, "invalid_request"),
    ("JSON null", as_json("null"), 422, "invalid_request"),
    ("JSON NaN as the whole body", as_json("NaN"), 422, "non_finite"),
    ("JSON object without inputs", {"json": {"model": "resnet20-mnist"}}, 422, "invalid_request"),
    ("JSON unknown field", {"json": {"inputs": [GREY], "sigma": 0}}, 422, "invalid_request"),
    ("JSON inputs not a list", {"json": {"inputs": "0.5"}}, 422, "invalid_request"),
    ("JSON booleans as pixels", {"json": {"inputs": [image(True)]}}, 422, "bad_array"),
    (
        "JSON one boolean among numbers",
        {"json": {"inputs": [[[[0.5] * 27 + [True]] * 28]]}},
        422,
        "bad_array",
    ),
    ("JSON numeric strings as pixels", {"json": {"inputs": [image("0.5")]}}, 422, "bad_array"),
    ("JSON null pixels", {"json": {"inputs": [image(None)]}}, 422, "bad_array"),
    ("JSON objects as pixels", {"json": {"inputs": [image({})]}}, 422, "bad_array"),
    (
        "JSON ragged rows",
        {"json": {"inputs": [[[[0.5] * 28] * 27 + [[0.5] * 27]]]}},
        422,
        "bad_array",
    ),
    ("JSON ragged batch", {"json": {"inputs": [GREY, [[[0.5] * 28] * 27]]}}, 422, "bad_array"),
]


@pytest.fixture(scope="module")
def server(hardened: ServiceProcess) -> Iterator[ServiceProcess]:
    yield hardened
    assert "unexpected error" not in hardened.log()  # no 500 was logged either


def test_the_matrix_is_wide() -> None:
    kinds = {case[0] for case in CASES}
    assert len(kinds) == len(CASES) >= 20


@pytest.mark.parametrize(
    ("request_kwargs", "status", "code"), [pytest.param(*case[1:], id=case[0]) for case in CASES]
)
def test_bad_input_is_a_json_4xx_that_counts_nothing(
    server: ServiceProcess, request_kwargs: dict[str, Any], status: int, code: str
) -> None:
    used = int(good_request(server, KEY).headers["X-Queries-Used"])
    headers = {**request_kwargs.get("headers", {}), "X-API-Key": KEY}
    response = httpx.post(
        server.url + "/predict", timeout=60, **{**request_kwargs, "headers": headers}
    )
    assert_json_error(response, status, code)
    assert "X-Queries-Used" not in response.headers
    # nothing was counted, and the server answers the next good request
    assert int(good_request(server, KEY).headers["X-Queries-Used"]) == used + 1
    assert not PICKLE_MARKER.exists(), "the server unpickled a request body"
