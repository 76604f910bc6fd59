"""The proxy's OIP client pieces without a server: reading an upstream's metadata, encoding a
request in JSON and binary, decoding JSON and binary answers, refusing what does not fit."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from service.protocol.oip import (
    HEADER_LENGTH,
    UpstreamModel,
    decode_response,
    encode_request,
    parse_metadata,
)

META = {
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 1, 28, 28]}],
    "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}],
}


def test_metadata_names_shapes_and_binary_choice() -> None:
    model = parse_metadata({"extensions": ["binary_tensor_data"]}, META)
    assert model == UpstreamModel("x", (1, 28, 28), "logits", 10, True)
    assert not parse_metadata({"extensions": []}, META).binary
    assert not parse_metadata({"extensions": ["binary_tensor_data"]}, META, binary=False).binary
    assert parse_metadata([], META, binary=True).binary  # type: ignore[arg-type]  # forced
    for bad in (
        {**META, "inputs": META["inputs"] * 2},
        {**META, "inputs": [{**META["inputs"][0], "datatype": "INT8"}]},
        {**META, "inputs": [{**META["inputs"][0], "shape": [-1, 1, -1, 28]}]},
        {**META, "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1]}]},
    ):
        with pytest.raises(ValueError):
            parse_metadata({}, bad)
    with pytest.raises(ValueError):
        parse_metadata({}, META, output="nope")


@pytest.mark.parametrize("binary", [True, False])
def test_request_and_answer_round_trip(binary: bool) -> None:
    model = UpstreamModel("x", (1, 2, 2), "logits", 3, binary)
    images = np.arange(8, dtype=np.float32).reshape(2, 1, 2, 2) / 8
    body, headers = encode_request(model, images)
    size = int(headers.get("Inference-Header-Content-Length", len(body)))
    head = json.loads(body[:size])
    assert head["inputs"][0]["name"] == "x" and head["outputs"][0]["name"] == "logits"
    sent = (
        np.frombuffer(body[size:], "<f4")
        if binary
        else np.asarray(head["inputs"][0]["data"], np.float32)
    )
    np.testing.assert_array_equal(sent.reshape(images.shape), images)
    logits = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = {"name": "logits", "datatype": "FP32", "shape": [2, 3]}
    if binary:
        answer = json.dumps({"outputs": [{**out, "parameters": {"binary_data_size": 24}}]}).encode()
        response = httpx.Response(
            200,
            content=answer + logits.tobytes(),
            headers={"Inference-Header-Content-Length": str(len(answer))},
        )
    else:
        response = httpx.Response(200, json={"outputs": [{**out, "data": logits.ravel().tolist()}]})
    body, header = response.content, response.headers.get(HEADER_LENGTH)
    np.testing.assert_array_equal(decode_response(model, body, header, 2), logits)
    with pytest.raises(ValueError, match="shape"):
        decode_response(model, body, header, 3)  # an answer for another batch size
    with pytest.raises(ValueError, match="no output"):
        other = UpstreamModel("x", (1, 2, 2), "other", 3, binary)
        decode_response(other, body, header, 2)
