"""Stateful detection end to end: real servers, a real Redis, the admin view and escalation."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.offline.datasets import mnist_subset
from tests.servers import RedisProcess, ServiceProcess, wait_for

ADMIN = "detection-admin"
CALLERS = ("alice", "bob", "carol", "dave", "erin")
MODEL, SHADOW = "resnet20-mnist", "mnist-shadow"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def detection_model(name: str, action: str) -> dict[str, object]:
    return {
        "name": name,
        "zoo": "resnet20-mnist",
        "defense": {"kind": "snd", "sigma": 0.01},
        "detection": {"action": action},
    }


@pytest.fixture(scope="module")
def server(redis_server: RedisProcess) -> Iterator[ServiceProcess]:
    settings = {
        "redis_url": f"redis://127.0.0.1:{redis_server.port}/6",
        "api_keys": {sha256(f"{c}-key"): c for c in CALLERS},
        "admin_token_sha256": sha256(ADMIN),
        "models": [detection_model(MODEL, "enforce"), detection_model(SHADOW, "shadow")],
        "detection_secret": "a-test-secret",
        "detection_throttle_after": 3,
        "detection_suspend_after": 6,
        "detection_throttle_s": 2,
    }
    with ServiceProcess(settings) as process:
        yield process


IMAGES = mnist_subset("test").images[:4]


def predict(
    server: ServiceProcess, caller: str, image: np.ndarray, model: str = MODEL
) -> httpx.Response:
    batch = np.ascontiguousarray(image[None], np.float32)
    return httpx.post(
        f"{server.url}/predict?model={model}&output=scores&shape=1,1,28,28",
        content=batch.tobytes(),
        headers={"Content-Type": "application/octet-stream", "X-API-Key": f"{caller}-key"},
        timeout=30,
    )


def admin_get(server: ServiceProcess, path: str) -> httpx.Response:
    return httpx.get(server.url + path, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)


def scores(response: httpx.Response) -> list[float]:
    assert response.status_code == 200, response.text
    return response.json()["scores"][0]  # type: ignore[no-any-return]


def test_enforce_answers_flagged_queries_with_the_matched_answer(server: ServiceProcess) -> None:
    first = predict(server, "alice", IMAGES[0])
    repeat = predict(server, "alice", IMAGES[0])
    near = predict(server, "alice", np.clip(IMAGES[0] + 0.001, 0, 1))
    other = predict(server, "alice", IMAGES[1])
    assert scores(repeat) == scores(first)  # the first answer again: voting gains nothing
    assert scores(near) == scores(first)  # the matched query's answer
    assert scores(other) != scores(first)
    hidden = {k for k in first.headers if k.lower() not in ("date", "content-length")}
    for response in (repeat, near, other):  # no header tells the caller it was flagged
        assert {
            k for k in response.headers if k.lower() not in ("date", "content-length")
        } == hidden
    status = admin_get(server, "/detections/key:alice").json()
    assert status["flags"] == {MODEL: {"exact": 1, "near": 1}}
    assert (status["first_flag_query"], status["queries"], status["state"]) == (2, 4, "ok")


def test_fresh_images_are_answered_with_fresh_noise(server: ServiceProcess) -> None:
    answers = [scores(predict(server, "erin", image)) for image in IMAGES]
    assert len({tuple(a) for a in answers}) == 4
    assert admin_get(server, "/detections/key:erin").json()["flags"] == {}


def usage(server: ServiceProcess, caller: str) -> dict[str, object]:
    return admin_get(server, f"/usage/key:{caller}").json()  # type: ignore[no-any-return]


def test_throttle_then_suspend_and_an_admin_lifts_it(server: ServiceProcess) -> None:
    image = IMAGES[2]
    for _ in range(4):  # the first query and three flagged repeats: throttled after them
        assert predict(server, "bob", image).status_code == 200
    throttled = predict(server, "bob", image)
    assert throttled.status_code == 429 and throttled.json()["error"]["code"] == "throttled"
    assert 1 <= int(throttled.headers["Retry-After"]) <= 2
    assert usage(server, "bob")["total"] == 4  # the refused request counted nothing
    assert usage(server, "bob")["detection_state"] == "throttled"
    answered = 4
    for _ in range(12):  # each throttle over, the next flag throttles again, until suspended
        response = predict(server, "bob", image)
        if response.status_code == 403:
            break
        if response.status_code == 429:  # wait until the admin view says the throttle is over
            wait_for(lambda: usage(server, "bob")["detection_state"] != "throttled", 10, "ok")
        else:
            answered += 1
    suspended = predict(server, "bob", IMAGES[3])
    assert suspended.status_code == 403 and suspended.json()["error"]["code"] == "suspended"
    assert answered == 7  # the first query and six flagged repeats: suspend_after = 6
    assert usage(server, "bob")["total"] == 7
    assert admin_get(server, "/detections/key:bob").json()["state"] == "suspended"
    lifted = httpx.post(
        f"{server.url}/detections/key:bob/lift",
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=10,
    )
    assert lifted.status_code == 200 and lifted.json()["state"] == "ok"
    assert predict(server, "bob", IMAGES[3]).status_code == 200


def test_shadow_only_counts(server: ServiceProcess) -> None:
    answers = [scores(predict(server, "carol", IMAGES[0], SHADOW)) for _ in range(8)]
    assert len({tuple(a) for a in answers}) == 8  # fresh noise each time, never refused
    status = admin_get(server, "/detections/key:carol").json()
    assert status["flags"] == {SHADOW: {"exact": 7}} and status["state"] == "ok"
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    samples = {
        (s.labels["model"], s.labels["layer"], s.labels["action"]): s.value
        for family in text_string_to_metric_families(text)
        if family.name == "snd_detections"
        for s in family.samples
        if s.name == "snd_detections_total"
    }
    assert samples[(SHADOW, "exact", "shadow")] == 7
    # a caller never learns from its own usage whether (or how) it is screened; the admin does
    mine = httpx.get(f"{server.url}/usage/me", headers={"X-API-Key": "carol-key"}, timeout=10)
    assert mine.status_code == 200 and mine.json()["detection_state"] is None
    assert admin_get(server, "/usage/key:carol").json()["detection_state"] == "ok"


def test_bad_input_leaves_no_fingerprint(server: ServiceProcess) -> None:
    bad = predict(server, "dave", IMAGES[0] + 2.0)
    assert bad.status_code == 422
    assert admin_get(server, "/detections/key:dave").status_code == 404
    assert predict(server, "dave", IMAGES[0]).status_code == 200
    assert admin_get(server, "/detections/key:dave").json()["queries"] == 1
    listed = admin_get(server, "/detections").json()
    assert listed["enabled"] and listed["models"] == {MODEL: "enforce", SHADOW: "shadow"}
    assert {"key:alice", "key:dave"} <= {c["caller"] for c in listed["callers"]}
    assert httpx.get(f"{server.url}/detections", timeout=10).status_code == 401


def test_fresh_policy_and_expiry_in_memory() -> None:
    """``repeat_policy=fresh`` flags a repeat but answers it with new noise; state expires."""
    model = detection_model(MODEL, "enforce")
    model["detection"] = {"action": "enforce", "repeat_policy": "fresh"}
    settings = {"models": [model], "detection_retention_s": 2, "admin_token_sha256": sha256(ADMIN)}
    with ServiceProcess(settings) as process:
        url = f"{process.url}/predict?output=scores&shape=1,1,28,28"
        body = np.ascontiguousarray(IMAGES[0][None]).tobytes()
        post = lambda: httpx.post(  # noqa: E731
            url, content=body, headers={"Content-Type": "application/octet-stream"}, timeout=30
        )
        first, second = post().json()["scores"], post().json()["scores"]
        assert first != second
        callers = admin_get(process, "/detections").json()["callers"]
        assert callers[0]["flags"] == {MODEL: {"exact": 1}}
        time.sleep(3.0)  # time under test: past retention plus a bucket, state expires
        post()
        callers = admin_get(process, "/detections").json()["callers"]
        assert callers[0]["flags"] == {MODEL: {"exact": 1}} and callers[0]["queries"] == 3


def test_cross_caller_index_sees_an_attack_split_over_keys(redis_server: RedisProcess) -> None:
    settings = {
        "redis_url": f"redis://127.0.0.1:{redis_server.port}/7",
        "detection_secret": "a-test-secret",  # required with Redis-held state
        "api_keys": {sha256(f"{c}-key"): c for c in CALLERS},
        "admin_token_sha256": sha256(ADMIN),
        "models": [detection_model(SHADOW, "shadow")],
        "detection_cross_caller": True,
    }
    with ServiceProcess(settings) as process:
        for caller, delta in (("alice", 0.0), ("bob", 0.001), ("carol", 0.002)):
            assert (
                predict(process, caller, np.clip(IMAGES[0] + delta, 0, 1), SHADOW).status_code
                == 200
            )
        assert predict(process, "dave", IMAGES[1], SHADOW).status_code == 200
        flags = {
            c["caller"]: c["flags"] for c in admin_get(process, "/detections").json()["callers"]
        }
        assert flags == {
            "key:alice": {},
            "key:bob": {SHADOW: {"cross_caller": 1}},
            "key:carol": {SHADOW: {"cross_caller": 1}},
            "key:dave": {},
        }


def test_the_secret_is_never_returned_or_logged(server: ServiceProcess) -> None:
    predict(server, "erin", IMAGES[3])
    bodies = [
        httpx.get(f"{server.url}{path}", timeout=10).text for path in ("/models", "/openapi.json")
    ]
    bodies += [admin_get(server, path).text for path in ("/detections", "/usage")]
    bodies.append(httpx.get(f"{server.url}/metrics", timeout=10).text)
    assert not any("a-test-secret" in body for body in bodies)
    assert "a-test-secret" not in server.log()


def test_blank_images_are_answered_and_only_repeat_exactly(server: ServiceProcess) -> None:
    blank = np.zeros((1, 28, 28), np.float32)
    assert predict(server, "dave", blank).status_code == 200
    assert predict(server, "dave", blank).status_code == 200
    assert predict(server, "dave", blank + 1.0).status_code == 200
    status = admin_get(server, "/detections/key:dave").json()
    assert status["flags"][MODEL] == {"exact": 1}


def test_v2_requests_are_screened_by_the_same_pipeline(server: ServiceProcess) -> None:
    from tests.oip import infer, outputs_of

    key = {"X-API-Key": "carol-key"}
    x = np.ascontiguousarray(IMAGES[1][None], np.float32)
    first = infer(server.url, MODEL, x, binary=True, headers=key)
    again = infer(server.url, MODEL, x, binary=False, headers=key)
    assert first.status_code == again.status_code == 200
    probs = [outputs_of(r)[1]["probabilities"] for r in (first, again)]
    assert np.array_equal(probs[0], probs[1])  # enforce: the repeat gets the first answer
    flags = admin_get(server, "/detections/key:carol").json()["flags"]
    assert flags[MODEL] == {"exact": 1}
