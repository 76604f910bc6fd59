"""POST /predict over a real uvicorn server: encodings, output modes, label-only, SND, errors."""

from __future__ import annotations

import io
import json

import httpx
import numpy as np
import pytest

from service.offline.datasets import mnist_subset
from tests.servers import ServiceProcess


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    test = mnist_subset("test")
    return test.images[:16], test.labels[:16]


def npy(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x)
    return buf.getvalue()


def post_npy(url: str, x: np.ndarray, **params: str) -> httpx.Response:
    return httpx.post(
        url + "/predict",
        content=npy(x),
        params=params,
        headers={"Content-Type": "application/x-npy"},
        timeout=30,
    )


def test_json_scores_and_labels(plain_server: ServiceProcess, digits: tuple) -> None:
    x, y = digits
    r = httpx.post(
        plain_server.url + "/predict", json={"inputs": x.tolist(), "output": "scores"}, timeout=30
    )
    assert r.status_code == 200, r.text
    body = r.json()
    scores = np.array(body["scores"])
    assert scores.shape == (16, 10)
    np.testing.assert_allclose(scores.sum(1), 1.0, atol=1e-5)
    assert body["labels"] == scores.argmax(1).tolist()
    assert (np.array(body["labels"]) == y).mean() >= 0.9


def test_json_label_mode_has_no_scores(plain_server: ServiceProcess, digits: tuple) -> None:
    x, _ = digits
    r = httpx.post(
        plain_server.url + "/predict",
        json={"inputs": x[:3].tolist(), "output": "label"},
        timeout=30,
    )
    assert r.status_code == 200
    assert set(r.json()) == {"model", "labels"}


def test_binary_encodings_agree_with_json(plain_server: ServiceProcess, digits: tuple) -> None:
    x, _ = digits
    by_json = httpx.post(plain_server.url + "/predict", json={"inputs": x.tolist()}).json()
    by_npy = post_npy(plain_server.url, x, output="scores").json()
    raw = httpx.post(
        plain_server.url + "/predict",
        content=x.tobytes(),
        params={"shape": "16,1,28,28", "output": "scores"},
        headers={"Content-Type": "application/octet-stream"},
    ).json()
    raw_header = httpx.post(
        plain_server.url + "/predict",
        content=x.tobytes(),
        params={"output": "label"},
        headers={"Content-Type": "application/octet-stream", "X-Shape": "16,1,28,28"},
    ).json()
    # float32 survives both transports bit-exactly, so the undefended answers are identical
    np.testing.assert_array_equal(by_json["scores"], by_npy["scores"])
    np.testing.assert_array_equal(by_npy["scores"], raw["scores"])
    assert raw_header["labels"] == by_npy["labels"] == by_json["labels"]
    assert "scores" not in raw_header


def test_sub_8_bit_probes_reach_the_model(plain_server: ServiceProcess, digits: tuple) -> None:
    """A 1e-4 perturbation (far below one 8-bit step) changes the scores: no quantization."""
    x, _ = digits
    probe = np.clip(
        x[:1] + 1e-4 * np.sign(np.random.default_rng(0).standard_normal(x[:1].shape)), 0, 1
    ).astype(np.float32)
    a = np.array(post_npy(plain_server.url, x[:1], output="scores").json()["scores"])
    b = np.array(post_npy(plain_server.url, probe, output="scores").json()["scores"])
    assert not np.array_equal(a, b)


def test_snd_answers_the_same_query_differently(snd_server: ServiceProcess, digits: tuple) -> None:
    x, _ = digits
    a = np.array(post_npy(snd_server.url, x, output="scores").json()["scores"])
    b = np.array(post_npy(snd_server.url, x, output="scores").json()["scores"])
    assert not np.array_equal(a, b)
    # small noise: the answers stay close
    assert np.abs(a - b).max() < 0.5


def test_snd_noise_differs_between_identical_images_in_one_batch(
    snd_server: ServiceProcess, digits: tuple
) -> None:
    x, _ = digits
    batch = np.repeat(x[:1], 8, axis=0)
    scores = np.array(post_npy(snd_server.url, batch, output="scores").json()["scores"])
    assert len({tuple(row) for row in scores.round(12)}) == 8


def test_label_only_model_never_returns_scores(
    label_only_server: ServiceProcess, digits: tuple
) -> None:
    x, _ = digits
    url = label_only_server.url
    default = post_npy(url, x[:2])
    assert default.status_code == 200 and set(default.json()) == {"model", "labels"}
    for response in (
        post_npy(url, x[:2], output="scores"),
        httpx.post(url + "/predict", json={"inputs": x[:2].tolist(), "output": "scores"}),
    ):
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "label_only"
        assert "scores" not in response.text.replace("output=scores", "").replace("labels only", "")
    info = httpx.get(url + "/models").json()["models"][0]
    assert info["outputs"] == ["label"]
    assert info["defense"] == {"kind": "snd"}  # σ hidden by the operator


def test_models_route_describes_the_defense(snd_server: ServiceProcess) -> None:
    info = httpx.get(snd_server.url + "/models").json()["models"]
    assert info == [
        {
            "name": "resnet20-mnist",
            "architecture": "resnet20-mnist",
            "input_shape": [1, 28, 28],
            "num_classes": 10,
            "classes": [str(d) for d in range(10)],
            "defense": {
                "kind": "snd",
                "sigma": 0.01,
                "noise": "gaussian",
                "distribution": "fixed",
                "clip": False,
            },
            "outputs": ["scores", "label"],
            "default": True,
        }
    ]


def test_health_and_readiness(snd_server: ServiceProcess) -> None:
    assert httpx.get(snd_server.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(snd_server.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True


@pytest.mark.parametrize(
    "request_kwargs,status,code",
    [
        ({"json": {"model": "nope", "inputs": [[[[0.0] * 28] * 28]]}}, 404, "unknown_model"),
        ({"json": {"inputs": [[[[0.0] * 28] * 28]], "output": "logits"}}, 422, "unknown_output"),
        ({"json": {"inputs": [[[[0.0] * 27] * 28]]}}, 422, "bad_shape"),
        ({"json": {"inputs": [[[[2.0] * 28] * 28]]}}, 422, "out_of_range"),
        ({"json": {"inputs": []}}, 422, "bad_rank"),
        (
            {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
            400,
            "malformed_json",
        ),
        (
            {
                "content": b'{"inputs": [[[[NaN]]]]}',
                "headers": {"Content-Type": "application/json"},
            },
            422,
            "non_finite",
        ),
        (
            {"content": b"abc", "headers": {"Content-Type": "text/plain"}},
            415,
            "unsupported_media_type",
        ),
        (
            {
                "content": b"\x00" * 12,
                "params": {"shape": "1,1,28,28"},
                "headers": {"Content-Type": "application/octet-stream"},
            },
            400,
            "shape_mismatch",
        ),
        (
            {"content": b"garbage", "headers": {"Content-Type": "application/x-npy"}},
            400,
            "malformed_npy",
        ),
    ],
)
def test_bad_requests_get_a_json_4xx(
    snd_server: ServiceProcess, request_kwargs: dict, status: int, code: str
) -> None:
    r = httpx.post(snd_server.url + "/predict", timeout=30, **request_kwargs)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert isinstance(r.json()["error"]["message"], str)
    ok = httpx.post(snd_server.url + "/predict", json={"inputs": [[[[0.0] * 28] * 28]]})
    assert ok.status_code == 200


def test_wrong_dtype_npy_is_refused(snd_server: ServiceProcess) -> None:
    r = post_npy(snd_server.url, np.zeros((1, 1, 28, 28), np.float64))
    assert r.status_code == 422 and r.json()["error"]["code"] == "bad_dtype"
    r = post_npy(snd_server.url, np.zeros((1, 1, 28, 28), np.uint8))
    assert r.status_code == 422


def test_openapi_declares_both_encodings(snd_server: ServiceProcess) -> None:
    schema = httpx.get(snd_server.url + "/openapi.json").json()
    content = schema["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert {"application/json", "application/x-npy", "application/octet-stream"} <= set(content)
    assert json.dumps(schema)  # serializable


def test_openapi_lists_every_status_predict_and_v2_answer(snd_server: ServiceProcess) -> None:
    """Every error status of the error table of docs/serving/api.md is declared, 502 (a proxied
    model's upstream failing) included; /v2's error schema carries the code beside the message."""
    paths = httpx.get(snd_server.url + "/openapi.json").json()["paths"]
    statuses = {"400", "401", "403", "404", "413", "415", "422", "429", "502", "503", "504"}
    predict = paths["/predict"]["post"]["responses"]
    assert statuses <= set(predict), sorted(statuses - set(predict))
    schema = predict["502"]["content"]["application/json"]["schema"]
    assert schema["properties"]["error"]["required"] == ["code", "message"]
    for path in ("/v2/models/{model}/infer", "/v2/models/{model}/versions/{version}/infer"):
        infer = paths[path]["post"]["responses"]
        assert statuses <= set(infer)
        v2_schema = infer["403"]["content"]["application/json"]["schema"]
        assert v2_schema["required"] == ["error", "code"]
        assert v2_schema["properties"]["code"] == {"type": "string"}
