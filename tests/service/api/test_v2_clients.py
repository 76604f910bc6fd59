"""Contract tests: the unmodified clients users have talk to the gateway's /v2 routes —
Triton's ``tritonclient[http]`` (binary tensors by default) and kserve's
``InferenceRESTClient`` — and get the same answers as /predict."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from service.offline.datasets import mnist_subset
from tests.oip import predict_scores
from tests.servers import ServiceProcess

triton = pytest.importorskip("tritonclient.http")
kserve = pytest.importorskip("kserve")
from tritonclient.utils import InferenceServerException  # noqa: E402

MODEL = "resnet20-mnist"


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return mnist_subset("test").images[:6]


def triton_infer(url: str, x: np.ndarray, binary: bool, outputs: list[str]) -> object:
    client = triton.InferenceServerClient(url.removeprefix("http://"))
    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    asked = [triton.InferRequestedOutput(name, binary_data=binary) for name in outputs]
    return client.infer(MODEL, [tensor], outputs=asked, request_id="t-1")


def test_tritonclient_metadata_and_health(snd_server: ServiceProcess) -> None:
    client = triton.InferenceServerClient(snd_server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    meta = client.get_model_metadata(MODEL)
    assert meta["inputs"][0]["shape"] == [-1, 1, 28, 28]
    assert [o["name"] for o in meta["outputs"]] == ["probabilities", "label"]
    assert not client.is_model_ready("nope")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_infer_matches_predict(
    plain_server: ServiceProcess, digits: np.ndarray, binary: bool
) -> None:
    result = triton_infer(plain_server.url, digits, binary, ["probabilities", "label"])
    expected = predict_scores(plain_server.url, digits)
    np.testing.assert_array_equal(result.as_numpy("probabilities"), expected)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(result.as_numpy("label"), expected.argmax(1))  # type: ignore[attr-defined]
    assert result.get_response()["id"] == "t-1"  # type: ignore[attr-defined]


def test_tritonclient_sees_protocol_errors(
    snd_server: ServiceProcess, label_only_server: ServiceProcess, digits: np.ndarray
) -> None:
    with pytest.raises(InferenceServerException) as bad:
        triton_infer(snd_server.url, np.full_like(digits, 2.0), True, ["label"])
    assert bad.value.status() == "422" and "[0, 1]" in bad.value.message()
    with pytest.raises(InferenceServerException) as refused:
        triton_infer(label_only_server.url, digits, True, ["probabilities"])
    assert refused.value.status() == "403" and "labels only" in refused.value.message()
    labels = triton_infer(label_only_server.url, digits, True, ["label"])
    assert labels.as_numpy("label").shape == (6,)  # type: ignore[attr-defined]


def kserve_infer(url: str, x: np.ndarray, binary: bool) -> tuple[object, dict[str, str]]:
    async def go() -> tuple[object, dict[str, str]]:
        config = kserve.RESTConfig(protocol="v2", timeout=30)
        client = kserve.InferenceRESTClient(config)
        try:
            assert await client.is_server_live(url) and await client.is_server_ready(url)
            assert await client.is_model_ready(url, MODEL)
            tensor = kserve.InferInput("input", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x, binary_data=binary)
            request = kserve.InferRequest(model_name=MODEL, infer_inputs=[tensor], request_id="k-1")
            headers: dict[str, str] = {}
            response = await client.infer(url, request, model_name=MODEL, response_headers=headers)
            return response, headers
        finally:
            await client.close()

    return asyncio.run(go())


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_kserve_rest_client_infer_matches_predict(
    plain_server: ServiceProcess, digits: np.ndarray, binary: bool
) -> None:
    response, headers = kserve_infer(plain_server.url, digits, binary)
    outputs = {o.name: o.as_numpy() for o in response.outputs}  # type: ignore[attr-defined]
    expected = predict_scores(plain_server.url, digits)
    np.testing.assert_array_equal(outputs["probabilities"], expected)
    np.testing.assert_array_equal(outputs["label"], expected.argmax(1))
    assert response.id == "k-1" and int(headers["x-queries-used"]) >= 6  # type: ignore[attr-defined]


def test_kserve_rest_client_sees_protocol_errors(snd_server: ServiceProcess) -> None:
    with pytest.raises(httpx.HTTPStatusError) as bad:
        kserve_infer(snd_server.url, np.zeros((1, 1, 28, 27), np.float32), True)
    assert bad.value.response.status_code == 422
    assert "does not match the model's" in str(bad.value)  # the message of {"error": ...}
