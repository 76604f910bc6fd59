"""The Open Inference Protocol (KServe v2) REST codec: infer requests and responses, in JSON or
with Triton's binary tensor data extension.

References: kserve/open-inference-protocol ``specification/protocol/inference_rest.md``
(``$inference_request``, ``$request_input``, ``$request_output``, ``$inference_response``) and
triton-inference-server ``docs/protocol/extension_binary_data.md``: when any tensor travels as
binary data the body is the JSON object followed by the tensors' bytes (little-endian, row-major,
no padding) in the order of the JSON's tensors, the header ``Inference-Header-Content-Length``
gives the JSON's length, an input's ``parameters.binary_data_size`` its byte count, and
``binary_data`` (per output) or ``binary_data_output`` (per request) asks for binary outputs.

The gateway's models take one input (``FP32 [-1, C, H, W]``, pixels in [0, 1]) and answer two
outputs: ``probabilities`` (``FP32 [-1, classes]``, scores mode only) and ``label``
(``INT64 [-1]``). Decoding checks only the protocol; the pipeline validates the images.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.errors import ApiError
from service.protocol.tensors import NotNumbers, OutOfRange, OutputMode, json_numbers

HEADER_LENGTH = "inference-header-content-length"
BINARY_EXTENSION = "binary_tensor_data"
INPUT_NAME = "input"
PROBABILITIES = "probabilities"
LABEL = "label"
OUTPUT_NAMES = (PROBABILITIES, LABEL)
DATATYPES: dict[str, np.dtype[Any]] = {
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "FP16": np.dtype("<f2"),
    "INT64": np.dtype("<i8"),
}
MAX_JSON_HEADER = 1 << 20  # the JSON part of a binary request: names and shapes, not pixels


def bad(message: str, code: str = "invalid_request") -> ApiError:
    """A request the protocol's decoding refuses: 400, the protocol's status for a failed
    inference request (rendered ``{"error": message, "code": code}`` on ``/v2`` paths). ``code``
    is the one ``/predict`` gives the same fault (``service/protocol/predict.py``): a NaN literal is
    ``non_finite``, booleans in the data ``bad_array``, an unknown field ``invalid_request``
    on both."""
    return ApiError(400, code, message)


class _Constant(ValueError):
    """A ``NaN``/``Infinity`` literal: not JSON, and not a pixel value either."""


@dataclass(frozen=True)
class InferRequest:
    """A decoded ``$inference_request``: the images, which outputs to answer, and how."""

    images: np.ndarray
    id: str | None
    outputs: tuple[str, ...] | None  # None: every output the model's mode allows
    binary: dict[str, bool] = field(default_factory=dict)  # output -> binary (absent: JSON)
    binary_default: bool = False

    @property
    def mode(self) -> OutputMode | None:
        """The pipeline's output mode: scores iff probabilities are asked for."""
        if self.outputs is None:
            return None
        return "scores" if PROBABILITIES in self.outputs else "label"


def split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    """The JSON object and the binary tail (empty without the extension's header)."""
    if header_length is None:
        head, tail = body, b""
    else:
        if not header_length.strip().isdigit():
            raise bad(
                "Inference-Header-Content-Length must be a non-negative integer", "malformed_body"
            )
        size = int(header_length)
        if size > len(body) or size > MAX_JSON_HEADER:
            raise bad(
                f"Inference-Header-Content-Length {size} exceeds the body or the limit",
                "malformed_body",
            )
        head, tail = body[:size], body[size:]
    try:
        payload = json.loads(head, parse_constant=_no_constants)
    except RecursionError:
        raise bad("the JSON is nested too deeply", "malformed_json") from None
    except _Constant as exc:
        raise bad(f"the inference request holds {exc}", "non_finite") from None
    except (ValueError, UnicodeDecodeError) as exc:
        message = f"the body is not a valid inference request: {str(exc)[:200]}"
        raise bad(message, "malformed_json") from None
    if not isinstance(payload, dict):
        raise bad("an inference request is a JSON object")
    return payload, tail


def _no_constants(token: str) -> float:
    raise _Constant(f"{token}, not a valid pixel value")


def _parameters(obj: dict[str, Any], where: str) -> dict[str, Any]:
    parameters = obj.get("parameters", {})
    if not isinstance(parameters, dict):
        raise bad(f"{where}: parameters must be an object")
    return parameters


def _flag(parameters: dict[str, Any], name: str, where: str) -> bool | None:
    value = parameters.get(name)
    if value is not None and not isinstance(value, bool):
        raise bad(f"{where}: {name} must be a boolean")
    return value


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 1 << 31 for d in value
    ):
        raise bad(f"{where}: shape must be a list of non-negative integers", "bad_shape")
    if len(value) > 8:
        raise bad(f"{where}: shape has too many dimensions", "bad_shape")
    return tuple(value)


def json_tensor(data: Any, shape: tuple[int, ...], dtype: np.dtype[Any], where: str) -> np.ndarray:
    """Tensor data given as JSON (nested or flat, row-major): numbers only, exactly as many as
    the shape holds; booleans, strings and null are refused rather than coerced."""
    if not isinstance(data, list):
        raise bad(f"{where}: data must be a list of numbers")
    flat: list[Any] = []
    stack: list[Any] = [data]
    while stack:  # iterative flatten: deep nesting cannot exhaust the stack
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            flat.append(item)
    try:
        array = json_numbers(flat, dtype)
    except NotNumbers as exc:
        raise bad(f"{where}: {exc}", "bad_array") from None
    except OutOfRange as exc:
        raise ApiError(422, "out_of_range", f"{where}: {exc}") from None
    if len(array) != math.prod(shape):
        raise bad(
            f"{where}: data has {len(array)} elements but shape {list(shape)} needs "
            f"{math.prod(shape)}",
            "shape_mismatch",
        )
    return array.reshape(shape)


def decode_infer(body: bytes, header_length: str | None, input_name: str) -> InferRequest:
    """Decode ``POST /v2/models/{m}/infer``: one input named ``input_name``, FP32 (FP64 and
    FP16 are converted), as JSON ``data`` or binary (``binary_data_size``)."""
    payload, tail = split_body(body, header_length)
    unknown = set(payload) - {
        "id",
        "parameters",
        "inputs",
        "outputs",
        "model_name",
        "model_version",
    }
    if unknown:
        raise bad(f"unknown fields: {', '.join(sorted(unknown))}")
    request_id = payload.get("id")
    if "id" in payload and not isinstance(request_id, str):
        raise bad("id must be a string")
    parameters = _parameters(payload, "request")
    binary_default = bool(_flag(parameters, "binary_data_output", "request"))
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise bad(f"inputs must be a list of one tensor, {input_name!r}")
    tensor = inputs[0]
    if tensor.get("name") != input_name:
        raise bad(f"unknown input {tensor.get('name')!r}; this model's input is {input_name!r}")
    where = f"input {input_name!r}"
    datatype = tensor.get("datatype")
    if datatype not in ("FP32", "FP64", "FP16"):
        raise bad(f"{where}: datatype must be FP32 (or FP64, FP16), got {datatype!r}", "bad_dtype")
    dtype = DATATYPES[datatype]
    shape = _shape(tensor.get("shape"), where)
    size = _parameters(tensor, where).get("binary_data_size")
    if size is not None:
        if header_length is None:
            raise bad(
                f"{where}: binary_data_size needs the Inference-Header-Content-Length header",
                "malformed_body",
            )
        expected = math.prod(shape) * dtype.itemsize
        if not isinstance(size, int) or isinstance(size, bool) or size != expected:
            raise bad(
                f"{where}: binary_data_size {size!r} must be {expected} for shape "
                f"{list(shape)} of {datatype}",
                "shape_mismatch",
            )
        if len(tail) != size:
            raise bad(
                f"{where}: {len(tail)} bytes of binary data follow the JSON, {size} stated",
                "shape_mismatch",
            )
        images = np.frombuffer(tail, dtype=dtype).reshape(shape)
    else:
        if tail:
            raise bad(
                "binary data follows the JSON but no input states binary_data_size",
                "malformed_body",
            )
        images = json_tensor(tensor.get("data"), shape, dtype, where)
    if "outputs" in payload and payload["outputs"] is None:
        raise bad("outputs must be a list of requested outputs (or absent)", "unknown_output")
    outputs, binary = _requested_outputs(payload.get("outputs"))
    return InferRequest(
        images.astype(np.float32, copy=False), request_id, outputs, binary, binary_default
    )


def _requested_outputs(value: Any) -> tuple[tuple[str, ...] | None, dict[str, bool]]:
    if value is None:
        return None, {}
    if not isinstance(value, list) or not value:
        raise bad("outputs must be a non-empty list of requested outputs", "unknown_output")
    names, binary = [], {}
    for item in value:
        if not isinstance(item, dict) or item.get("name") not in OUTPUT_NAMES:
            name = item.get("name") if isinstance(item, dict) else item
            raise bad(
                f"unknown output {name!r}; outputs: {', '.join(OUTPUT_NAMES)}", "unknown_output"
            )
        name = item["name"]
        flag = _flag(_parameters(item, f"output {name!r}"), "binary_data", f"output {name!r}")
        if flag is not None:
            binary[name] = flag
        names.append(name)
    return tuple(dict.fromkeys(names)), binary


def tensor_entry(
    name: str, datatype: str, array: np.ndarray, binary: bool
) -> tuple[dict[str, Any], bytes | None]:
    """A ``$request_input``/``$response_output`` for ``array``: its data as JSON, or (binary)
    its little-endian bytes to append after the JSON, with ``binary_data_size``."""
    entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
    if not binary:
        entry["data"] = array.ravel().tolist()
        return entry, None
    blob = np.ascontiguousarray(array, dtype=DATATYPES[datatype]).tobytes()
    entry["parameters"] = {"binary_data_size": len(blob)}
    return entry, blob


def pack(payload: dict[str, Any], blobs: list[bytes]) -> tuple[bytes, dict[str, str]]:
    """A body and its headers: the JSON alone, or followed by the binary tensors' bytes with
    ``Inference-Header-Content-Length`` (Triton's binary tensor data extension)."""
    head = json.dumps(payload, separators=(",", ":")).encode()
    if not blobs:
        return head, {"Content-Type": "application/json"}
    return b"".join([head, *blobs]), {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(head)),
    }


def encode_infer(
    request: InferRequest,
    model: str,
    probs: np.ndarray,
    mode: OutputMode,
    version: str | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The ``$inference_response`` body and its headers (binary when any output asked for it)."""
    names = request.outputs or ((PROBABILITIES, LABEL) if mode == "scores" else (LABEL,))
    tensors = {PROBABILITIES: probs.astype(np.float32, copy=False), LABEL: probs.argmax(1)}
    outputs, blobs = [], []
    for name in names:
        binary = request.binary.get(name, request.binary_default)
        datatype = "FP32" if name == PROBABILITIES else "INT64"
        entry, blob = tensor_entry(name, datatype, tensors[name], binary)
        outputs.append(entry)
        if blob is not None:
            blobs.append(blob)
    response: dict[str, Any] = {"model_name": model, "outputs": outputs}
    if version is not None:
        response["model_version"] = version
    if request.id is not None:
        response["id"] = request.id
    return pack(response, blobs)


# -- the client side: the gateway's proxy mode calls an upstream OIP v2 server -------------------


@dataclass(frozen=True)
class UpstreamModel:
    """What the upstream's metadata says: the input's name and (C, H, W), the output read."""

    input_name: str
    input_shape: tuple[int, int, int]
    output_name: str
    num_classes: int
    binary: bool


def parse_metadata(
    server: dict[str, Any],
    model: dict[str, Any],
    output: str | None = None,
    binary: bool | None = None,
) -> UpstreamModel:
    """The upstream model's one FP32 image input ``[-1|N, C, H, W]`` and its score output
    (``output``, or the first ``[N, classes]`` one); ``binary`` None: as the server lists."""
    inputs, outputs = model.get("inputs") or [], model.get("outputs") or []
    if len(inputs) != 1 or inputs[0].get("datatype") != "FP32" or len(inputs[0]["shape"]) != 4:
        raise ValueError(f"the upstream model needs one FP32 input [N, C, H, W], has {inputs}")
    chosen = [o for o in outputs if output in (None, o.get("name"))][:1]
    if not chosen or len(chosen[0].get("shape", [])) != 2 or chosen[0]["shape"][1] < 2:
        raise ValueError(f"no score output [N, classes] among the upstream's {outputs}")
    c, h, w = (int(d) for d in inputs[0]["shape"][1:])
    if min(c, h, w) < 1:
        raise ValueError(f"the upstream input's image shape must be fixed, is {inputs[0]}")
    listed = isinstance(server, dict) and BINARY_EXTENSION in (server.get("extensions") or [])
    return UpstreamModel(
        inputs[0]["name"],
        (c, h, w),
        chosen[0]["name"],
        int(chosen[0]["shape"][1]),
        listed if binary is None else binary,
    )


def encode_request(model: UpstreamModel, images: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """An ``$inference_request`` for ``images``: binary input and output when the upstream
    takes the extension, JSON otherwise."""
    tensor, blob = tensor_entry(model.input_name, "FP32", images, model.binary)
    output: dict[str, Any] = {"name": model.output_name}
    if model.binary:
        output["parameters"] = {"binary_data": True}
    return pack({"inputs": [tensor], "outputs": [output]}, [blob] if blob is not None else [])


def decode_response(
    model: UpstreamModel, body: bytes, header_length: str | None, n: int
) -> np.ndarray:
    """The score output ``(n, classes)`` of an ``$inference_response`` (JSON or binary);
    ``ValueError`` (or :class:`ApiError`) for anything else."""
    payload, tail = split_body(body, header_length)
    offset = 0
    for out in payload.get("outputs", []):
        dtype = DATATYPES.get(out.get("datatype", ""))
        if dtype is None:
            raise ValueError(f"unsupported output datatype {out.get('datatype')!r}")
        shape = tuple(out["shape"])
        binary = (out.get("parameters") or {}).get("binary_data_size")
        if binary is not None:
            array = np.frombuffer(tail, dtype, math.prod(shape), offset).reshape(shape)
            offset += int(binary)
        else:
            array = np.asarray(out["data"], dtype=dtype).reshape(shape)
        if out.get("name") == model.output_name:
            if shape != (n, model.num_classes):
                raise ValueError(f"output shape {shape}, expected {(n, model.num_classes)}")
            return array.astype(np.float32)
    raise ValueError(f"the upstream answered no output {model.output_name!r}")
