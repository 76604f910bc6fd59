"""The Open Inference Protocol routes over a real server: metadata, health, JSON and binary
infer through the same pipeline as /predict, label-only, the protocol's error shape."""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from service.offline.datasets import mnist_subset
from tests.oip import assert_oip_error, infer, outputs_of, predict_scores
from tests.servers import REFUSING_LABELS, REFUSING_WATCHED, ServiceProcess, refusing_settings

MODEL = "resnet20-mnist"


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    test = mnist_subset("test")
    return test.images[:8], test.labels[:8]


def test_server_metadata_and_health(snd_server: ServiceProcess) -> None:
    meta = httpx.get(snd_server.url + "/v2", timeout=10).json()
    assert meta["name"] == "snd-gateway" and "binary_tensor_data" in meta["extensions"]
    live = httpx.get(snd_server.url + "/v2/health/live", timeout=10)
    ready = httpx.get(snd_server.url + "/v2/health/ready", timeout=10)
    assert (live.status_code, live.json()) == (200, {"live": True})
    assert (ready.status_code, ready.json()) == (200, {"ready": True})
    model_ready = httpx.get(f"{snd_server.url}/v2/models/{MODEL}/ready", timeout=10)
    assert model_ready.status_code == 200 and model_ready.json()["ready"] is True


def test_model_metadata_names_shapes(snd_server: ServiceProcess) -> None:
    for path in (f"/v2/models/{MODEL}", f"/v2/models/{MODEL}/versions/1"):
        meta = httpx.get(snd_server.url + path, timeout=10).json()
        assert meta["name"] == MODEL and meta["versions"] == ["1"]
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]}]
        assert meta["outputs"] == [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
            {"name": "label", "datatype": "INT64", "shape": [-1]},
        ]


def test_unknown_model_and_version_are_oip_404(snd_server: ServiceProcess) -> None:
    assert "unknown model" in assert_oip_error(
        httpx.get(snd_server.url + "/v2/models/nope", timeout=10), 404
    )
    assert_oip_error(httpx.get(f"{snd_server.url}/v2/models/{MODEL}/versions/7", timeout=10), 404)
    assert_oip_error(httpx.get(f"{snd_server.url}/v2/models/{MODEL}/nothing", timeout=10), 404)
    x = np.zeros((1, 1, 28, 28), np.float32)
    assert_oip_error(infer(snd_server.url, "nope", x), 404)


def test_json_and_binary_answer_what_predict_answers(
    plain_server: ServiceProcess, digits: tuple
) -> None:
    """Undefended, float32 travels bit-exactly: /v2 (JSON, binary) and /predict agree."""
    x, y = digits
    expected = predict_scores(plain_server.url, x)
    for binary in (False, True):
        outputs = [
            {"name": "probabilities", "parameters": {"binary_data": binary}},
            {"name": "label", "parameters": {"binary_data": binary}},
        ]
        r = infer(plain_server.url, MODEL, x, binary=binary, outputs=outputs, extra={"id": "r-1"})
        head, arrays = outputs_of(r)
        assert head["id"] == "r-1" and head["model_name"] == MODEL
        assert r.headers["content-type"].startswith(
            "application/octet-stream" if binary else "application/json"
        )
        np.testing.assert_array_equal(arrays["probabilities"], expected)
        np.testing.assert_array_equal(arrays["label"], expected.argmax(1))
        assert arrays["label"].dtype == np.int64 and (arrays["label"] == y).mean() >= 0.85


def test_outputs_default_selection_and_binary_data_output(
    plain_server: ServiceProcess, digits: tuple
) -> None:
    x, _ = digits
    head, arrays = outputs_of(infer(plain_server.url, MODEL, x[:2]))
    assert [o["name"] for o in head["outputs"]] == ["probabilities", "label"]
    assert all("data" in o for o in head["outputs"])  # JSON unless asked otherwise
    head, arrays = outputs_of(
        infer(
            plain_server.url,
            MODEL,
            x[:2],
            outputs=[{"name": "label"}],
            extra={"parameters": {"binary_data_output": True}},
        )
    )
    assert [o["name"] for o in head["outputs"]] == ["label"]
    assert head["outputs"][0]["parameters"]["binary_data_size"] == 16
    # the version route is the same inference; nested JSON data is accepted as well
    r = httpx.post(
        f"{plain_server.url}/v2/models/{MODEL}/versions/1/infer",
        json={
            "inputs": [
                {
                    "name": "input",
                    "shape": [2, 1, 28, 28],
                    "datatype": "FP32",
                    "data": x[:2].tolist(),
                }
            ]
        },
        timeout=30,
    )
    _, nested = outputs_of(r)
    np.testing.assert_array_equal(nested["label"], arrays["label"])


def test_snd_noise_on_v2_and_counting(snd_server: ServiceProcess, digits: tuple) -> None:
    x, _ = digits
    r1 = infer(snd_server.url, MODEL, x[:4], binary=True)
    r2 = infer(snd_server.url, MODEL, x[:4], binary=True)
    p1, p2 = outputs_of(r1)[1]["probabilities"], outputs_of(r2)[1]["probabilities"]
    assert not np.array_equal(p1, p2)  # fresh noise for every query
    assert int(r2.headers["x-queries-used"]) == int(r1.headers["x-queries-used"]) + 4


def test_label_only_model_never_sends_scores(
    label_only_server: ServiceProcess, digits: tuple
) -> None:
    x, _ = digits
    url = label_only_server.url
    meta = httpx.get(f"{url}/v2/models/{MODEL}", timeout=10).json()
    assert [o["name"] for o in meta["outputs"]] == ["label"]
    head, arrays = outputs_of(
        infer(url, MODEL, x[:3], binary=True, extra={"parameters": {"binary_data_output": True}})
    )
    assert list(arrays) == ["label"] and arrays["label"].shape == (3,)
    asked = infer(url, MODEL, x[:3], outputs=[{"name": "probabilities"}, {"name": "label"}])
    assert "labels only" in assert_oip_error(asked, 403, "label_only")
    assert b'probabilities":' not in asked.content


def test_predict_keeps_its_own_error_shape(snd_server: ServiceProcess) -> None:
    r = httpx.get(snd_server.url + "/v2x", timeout=10)  # not a /v2 path
    assert set(r.json()["error"]) == {"code", "message"}


# ---- refusals: one code on both protocols ---------------------------------------------------

REFUSING_KEYS = {"budget-key": "budgeted", "throttle-key": "throttled", "suspend-key": "suspended"}
LABELS, WATCHED = REFUSING_LABELS, REFUSING_WATCHED


@pytest.fixture(scope="module")
def refusing_server() -> Iterator[ServiceProcess]:
    """A budget of 1 for "budgeted", a label-only model, and a model under stateful detection
    that throttles at the first flag (for 2 s) and suspends at the second."""
    keys = {hashlib.sha256(k.encode()).hexdigest(): c for k, c in REFUSING_KEYS.items()}
    settings = refusing_settings(keys, {"budgeted": 1}, throttle_s=2)
    with ServiceProcess(settings) as server:
        yield server


def predict_npy(
    url: str, key: str, model: str, x: np.ndarray, output: str = "label"
) -> httpx.Response:
    buffer = io.BytesIO()
    np.save(buffer, x)
    return httpx.post(
        url + "/predict",
        content=buffer.getvalue(),
        params={"model": model, "output": output},
        headers={"Content-Type": "application/x-npy", "X-API-Key": key},
        timeout=30,
    )


def both(
    url: str, key: str, model: str, x: np.ndarray, output: str = "label"
) -> tuple[httpx.Response, httpx.Response]:
    """The same request on /predict and on /v2."""
    names = ["probabilities", "label"] if output == "scores" else ["label"]
    outputs = [{"name": n} for n in names]
    return predict_npy(url, key, model, x, output), infer(
        url, model, x, outputs=outputs, headers={"X-API-Key": key}
    )


def assert_same_refusal(
    pair: tuple[httpx.Response, httpx.Response], status: int, code: str
) -> None:
    predicted, inferred = pair
    assert predicted.status_code == status, predicted.text
    assert predicted.json()["error"]["code"] == code
    assert_oip_error(inferred, status, code)
    assert "probabilities" not in inferred.text and "scores" not in predicted.json()


def test_refusals_have_one_code_on_both_protocols(
    refusing_server: ServiceProcess, digits: tuple
) -> None:
    url, x = refusing_server.url, digits[0][:1]
    assert_same_refusal(both(url, "budget-key", "nope", x), 404, "unknown_model")
    assert_same_refusal(both(url, "budget-key", LABELS, x, "scores"), 403, "label_only")
    assert predict_npy(url, "budget-key", MODEL, x).status_code == 200  # the budget of 1 is spent
    assert_same_refusal(both(url, "budget-key", MODEL, x), 429, "budget_exhausted")
    # throttled: the first query, then a repeat (flag 1); the next request is refused
    for _ in range(2):
        assert predict_npy(url, "throttle-key", WATCHED, x).status_code == 200
    throttled = both(url, "throttle-key", WATCHED, x)
    assert_same_refusal(throttled, 429, "throttled")
    assert all(r.headers["Retry-After"] for r in throttled)


def test_suspended_has_one_code_on_both_protocols(
    refusing_server: ServiceProcess, digits: tuple
) -> None:
    url, x = refusing_server.url, digits[0][1:2]
    answered = 0
    for _ in range(8):  # a throttle between the first and the second flag, then suspended
        predicted = predict_npy(url, "suspend-key", WATCHED, x)
        if predicted.status_code == 403:
            break
        if predicted.status_code == 429:
            time.sleep(float(predicted.headers["Retry-After"]))
        else:
            answered += 1
    assert answered == 3  # the first query and two flagged repeats: suspend_after = 2
    assert_same_refusal(both(url, "suspend-key", WATCHED, digits[0][2:3]), 403, "suspended")
