"""The ``/predict`` codec: request bodies to image batches; no per-element Python work on binary
paths.

Encodings of ``POST /predict``:

* ``application/json``: ``{"model": str?, "inputs": [[[[float]]]], "output": "scores"|"label"}``;
* ``application/x-npy``: a ``.npy`` float32 array ``(N, C, H, W)``; ``model``/``output`` in the
  query string;
* ``application/octet-stream``: raw little-endian float32, shape ``N,C,H,W`` in the ``shape``
  query parameter or the ``X-Shape`` header.
"""

from __future__ import annotations

import io
import json
import math
import re
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from service.errors import ApiError
from service.protocol.tensors import (
    NotNumbers,
    OutOfRange,
    OutputMode,
    invalid,
    json_numbers,
    parse_output,
)

JSON_TYPES = ("application/json",)
NPY_TYPES = ("application/x-npy", "application/npy")
RAW_TYPES = ("application/octet-stream",)


@dataclass(frozen=True)
class DecodedRequest:
    """A predict request after decoding, before the model's own checks."""

    images: np.ndarray
    model: str | None
    output: OutputMode | None


def bad_request(message: str, code: str = "malformed_body") -> ApiError:
    return ApiError(400, code, message)


SHAPE_PATTERN = re.compile(r"[0-9]{1,12}(?:[,x][0-9]{1,12})*")


def parse_shape(text: str) -> tuple[int, ...]:
    """``N,C,H,W`` (or ``NxCxHxW``): ASCII digits only, so no signs, ``_`` or other scripts."""
    if not SHAPE_PATTERN.fullmatch(text.strip()):
        raise bad_request(f"shape must be comma-separated integers, got {text!r}", "bad_shape")
    shape = tuple(int(part) for part in text.strip().replace("x", ",").split(","))
    if len(shape) > 8:
        raise bad_request(f"shape {text!r} is not a valid array shape", "bad_shape")
    return shape


def _reject_constant(token: str) -> float:
    raise ValueError(f"{token} is not a valid pixel value")


def decode_json(body: bytes) -> DecodedRequest:
    try:
        payload = json.loads(body, parse_constant=_reject_constant)
    except RecursionError:
        raise bad_request("JSON is nested too deeply", "malformed_json") from None
    except (ValueError, UnicodeDecodeError) as exc:
        message = str(exc) if "pixel value" in str(exc) else "body is not valid JSON"
        code = "non_finite" if "pixel value" in str(exc) else "malformed_json"
        error = invalid(message, code) if code == "non_finite" else bad_request(message, code)
        raise error from None
    if not isinstance(payload, dict):
        raise invalid("JSON body must be an object with an 'inputs' field", "invalid_request")
    unknown = set(payload) - {"model", "inputs", "output"}
    if unknown:
        raise invalid(f"unknown fields: {', '.join(sorted(unknown))}", "invalid_request")
    model = payload.get("model")
    if model is not None and not isinstance(model, str):
        raise invalid("model must be a string", "invalid_request")
    if "inputs" not in payload:
        raise invalid("missing field 'inputs'", "invalid_request")
    inputs = payload["inputs"]
    if not isinstance(inputs, list):
        raise invalid("inputs must be a nested list (N, C, H, W)", "invalid_request")
    return DecodedRequest(json_pixels(inputs), model, parse_output(payload.get("output")))


def json_pixels(inputs: list[Any]) -> np.ndarray:
    """The nested list as float32, refusing what numpy would quietly coerce: booleans
    (``true`` -> 1.0), numeric strings (``"0.5"``), ``null`` (NaN) and ragged lists."""
    rank, first = 0, cast(Any, inputs)
    while isinstance(first, list):
        rank, first = rank + 1, (first[0] if first else None)
    if rank != 4:  # cheap: a wrong rank is refused before any pass over the elements
        raise invalid(f"inputs must have rank 4 (N, C, H, W), got rank {rank}", "bad_rank")
    try:
        cells = np.array(inputs, dtype=object)
    except (ValueError, TypeError, RecursionError):
        raise invalid("inputs must be a rectangular nested list of numbers", "bad_array") from None
    flat = cells.ravel().tolist()
    if any(isinstance(v, list | dict) for v in flat):
        raise invalid("inputs must be a rectangular nested list of numbers", "bad_array")
    try:
        return json_numbers(flat).reshape(cells.shape)
    except NotNumbers:
        raise invalid(
            "inputs must be numbers (not booleans, strings or null)", "bad_array"
        ) from None
    except OutOfRange as exc:  # an integer beyond any float
        raise invalid(str(exc), "out_of_range") from None


NPY_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def decode_npy(body: bytes) -> np.ndarray:
    """A float32 ``.npy`` array. The header is checked before any data is touched: no pickles
    (object dtypes are refused, never loaded) and no allocation of a size only the header
    claims; the data must be exactly as long as the header says."""
    stream = io.BytesIO(body)
    try:
        version = np.lib.format.read_magic(stream)
        shape, fortran_order, dtype = NPY_HEADER_READERS[version](stream)
    except Exception:
        raise bad_request("body is not a valid .npy array", "malformed_npy") from None
    if dtype.hasobject or dtype.kind != "f" or dtype.itemsize != 4:
        raise invalid(f"dtype must be float32, got {dtype}", "bad_dtype")
    offset = stream.tell()
    count = math.prod(shape)
    if len(body) - offset != count * dtype.itemsize:
        raise bad_request(
            f".npy data has {len(body) - offset} bytes but its header's shape {shape} needs "
            f"{count * dtype.itemsize}",
            "malformed_npy",
        )
    try:
        array = np.frombuffer(body, dtype=dtype, count=count, offset=offset)
        array = array.reshape(shape, order="F" if fortran_order else "C")
    except ValueError:  # e.g. zero images with dimensions beyond numpy's limits
        raise bad_request(
            f".npy shape {shape} is not a valid array shape", "malformed_npy"
        ) from None
    return array.astype(np.float32, copy=False)


def decode_raw(body: bytes, shape_text: str | None) -> np.ndarray:
    if not shape_text:
        raise bad_request(
            "raw float32 bodies need a shape (query 'shape' or header X-Shape)", "missing_shape"
        )
    shape = parse_shape(shape_text)
    expected = math.prod(shape) * 4
    if len(body) != expected:
        raise bad_request(
            f"body has {len(body)} bytes but shape {shape} needs {expected} (float32)",
            "shape_mismatch",
        )
    try:
        return np.frombuffer(body, dtype="<f4").reshape(shape)
    except ValueError:  # e.g. an empty body with dimensions beyond numpy's limits
        raise bad_request(f"shape {shape} is not a valid array shape", "bad_shape") from None
