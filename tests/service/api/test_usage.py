"""Admin usage routes, budgets over HTTP, caller identity (API keys, X-Forwarded-For), metrics.

One keyed server with two models (an SND one and an undefended one) on a real Redis; two open
servers (client addresses as callers) with and without a trusted proxy.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import RedisProcess, ServiceProcess

ADMIN = "the-admin-token"
KEYS = {
    "alice": "alice-secret",
    "bob": "bob-secret",
    "carol": "carol-secret",
    "dave": "dave-secret",
    "erin": "erin-secret",
    "frank": "frank-secret",
}
SND_MODEL, PLAIN_MODEL = "resnet20-mnist", "mnist-undefended"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def admin(token: str = ADMIN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def images(n: int) -> bytes:
    return np.full((n, 1, 28, 28), 0.5, np.float32).tobytes()


def predict(
    server: ServiceProcess,
    n: int,
    key: str | None = None,
    model: str = SND_MODEL,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    sent = {"Content-Type": "application/octet-stream", **(headers or {})}
    if key is not None:
        sent["X-API-Key"] = key
    return httpx.post(
        f"{server.url}/predict?output=label&model={model}&shape={n},1,28,28",
        content=images(n),
        headers=sent,
        timeout=30,
    )


def usage(server: ServiceProcess, caller: str) -> dict[str, object]:
    response = httpx.get(f"{server.url}/usage/{caller}", headers=admin())
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def assert_error(response: httpx.Response, status: int | tuple[int, ...], code: str) -> None:
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, response.text
    assert response.json() == {
        "error": {"code": code, "message": response.json()["error"]["message"]}
    }
    assert response.json()["error"]["message"]


@pytest.fixture(scope="module")
def keyed(redis_server: RedisProcess) -> Iterator[ServiceProcess]:
    settings = {
        "redis_url": f"redis://127.0.0.1:{redis_server.port}/4",
        "models": [
            {"name": SND_MODEL},
            {"name": PLAIN_MODEL, "zoo": "resnet20-mnist", "defense": {"kind": "none"}},
        ],
        "api_keys": {sha256(secret): name for name, secret in KEYS.items()},
        "admin_token_sha256": sha256(ADMIN),
        "budgets": {"carol": 10, "key:frank": 5},
        "default_budget": 1000,
    }
    with ServiceProcess(settings) as server:
        yield server


ADMIN_ROUTES = [
    ("GET", "/usage", None),
    ("GET", "/usage/key:alice", None),
    ("DELETE", "/usage/key:alice", None),
    ("PUT", "/usage/key:alice/budget", {"budget": 1}),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
def test_admin_routes_refuse_missing_or_wrong_tokens(
    keyed: ServiceProcess, method: str, path: str, body: dict[str, int] | None
) -> None:
    assert predict(keyed, 2, KEYS["alice"]).status_code == 200
    before = usage(keyed, "key:alice")
    attempts = {
        "missing": ({}, 401, "missing_admin_token"),
        "not bearer": ({"Authorization": f"Basic {ADMIN}"}, 401, "missing_admin_token"),
        "wrong": (admin("not-the-token"), 403, "invalid_admin_token"),
        "api key as token": (admin(KEYS["alice"]), 403, "invalid_admin_token"),
        "api key header": ({"X-API-Key": KEYS["alice"]}, 401, "missing_admin_token"),
    }
    for headers, status, code in attempts.values():
        response = httpx.request(method, keyed.url + path, headers=headers, json=body)
        assert_error(response, status, code)
    assert usage(keyed, "key:alice") == before  # nothing was reset or changed


def test_admin_view_and_per_model_counts(keyed: ServiceProcess) -> None:
    httpx.delete(f"{keyed.url}/usage/key:bob", headers=admin()).raise_for_status()
    assert predict(keyed, 2, KEYS["bob"], SND_MODEL).status_code == 200
    assert predict(keyed, 3, KEYS["bob"], PLAIN_MODEL).status_code == 200
    bob = usage(keyed, "key:bob")
    assert bob == {
        "caller": "key:bob",
        "models": {PLAIN_MODEL: 3, SND_MODEL: 2},
        "detection_state": None,
        "total": 5,
        "budget": 1000,
        "budget_source": "settings",
        "remaining": 995,
    }
    listed = httpx.get(f"{keyed.url}/usage", headers=admin()).json()["callers"]
    assert bob in listed
    # the caller id may be URL-encoded
    assert httpx.get(f"{keyed.url}/usage/key%3Abob", headers=admin()).json() == bob
    assert usage(keyed, "key:never-seen")["total"] == 0
    assert_error(httpx.get(f"{keyed.url}/usage/bob", headers=admin()), 422, "invalid_request")

    reset = httpx.delete(f"{keyed.url}/usage/key:bob", headers=admin())
    assert reset.status_code == 200 and reset.json()["total"] == 0
    assert "key:bob" not in [
        c["caller"] for c in httpx.get(f"{keyed.url}/usage", headers=admin()).json()["callers"]
    ]


def test_callers_see_only_their_own_usage(keyed: ServiceProcess) -> None:
    assert predict(keyed, 1, KEYS["dave"]).status_code == 200
    mine = httpx.get(f"{keyed.url}/usage/me", headers={"X-API-Key": KEYS["dave"]}).json()
    assert mine == usage(keyed, "key:dave") and mine["caller"] == "key:dave"
    # another caller's usage needs the admin token, whatever API key is sent
    other = httpx.get(f"{keyed.url}/usage/key:alice", headers={"X-API-Key": KEYS["dave"]})
    assert_error(other, 401, "missing_admin_token")
    assert_error(httpx.get(f"{keyed.url}/usage/me"), 401, "missing_api_key")
    assert_error(
        httpx.get(f"{keyed.url}/usage/me", headers={"X-API-Key": "guess"}), 401, "invalid_api_key"
    )


def test_refused_requests_count_nothing(keyed: ServiceProcess) -> None:
    key = KEYS["erin"]
    bad = np.full((1, 1, 28, 28), np.nan, np.float32).tobytes()
    refusals = [
        predict(keyed, 1, "not-a-key"),
        predict(keyed, 1, None),
        predict(keyed, 1, key, model="no-such-model"),
        httpx.post(
            f"{keyed.url}/predict?output=label&shape=1,1,28,28",
            content=bad,
            headers={"X-API-Key": key, "Content-Type": "application/octet-stream"},
        ),
        httpx.post(
            f"{keyed.url}/predict?output=label&shape=1,1,27,28",
            content=images(1)[:-112],
            headers={"X-API-Key": key, "Content-Type": "application/octet-stream"},
        ),
        httpx.post(f"{keyed.url}/predict", json={"inputs": []}, headers={"X-API-Key": key}),
    ]
    assert [r.status_code // 100 for r in refusals] == [4] * len(refusals)
    assert usage(keyed, "key:erin")["total"] == 0


def test_budget_exact_then_429_and_admin_budgets(keyed: ServiceProcess) -> None:
    key = KEYS["carol"]
    httpx.delete(f"{keyed.url}/usage/key:carol", headers=admin()).raise_for_status()
    assert predict(keyed, 4, key).headers["X-Queries-Remaining"] == "6"
    assert predict(keyed, 4, key).status_code == 200
    crossing = predict(keyed, 3, key)  # 8 + 3 > 10: refused whole
    assert_error(crossing, 429, "budget_exhausted")
    assert int(crossing.headers["Retry-After"]) >= 1
    assert "budget of 10" in crossing.json()["error"]["message"]
    assert usage(keyed, "key:carol")["total"] == 8
    fits = predict(keyed, 2, key)  # a smaller batch still fits exactly
    assert fits.status_code == 200 and fits.headers["X-Queries-Remaining"] == "0"
    assert_error(predict(keyed, 1, key), 429, "budget_exhausted")
    assert_error(predict(keyed, 1, key, model=PLAIN_MODEL), 429, "budget_exhausted")
    assert usage(keyed, "key:carol")["total"] == 10

    raised = httpx.put(
        f"{keyed.url}/usage/key:carol/budget", json={"budget": 12}, headers=admin()
    ).json()
    assert (raised["budget"], raised["budget_source"], raised["remaining"]) == (12, "admin", 2)
    assert predict(keyed, 2, key).status_code == 200
    assert_error(predict(keyed, 1, key), 429, "budget_exhausted")
    cleared = httpx.put(
        f"{keyed.url}/usage/key:carol/budget", json={"budget": None}, headers=admin()
    ).json()
    assert (cleared["budget"], cleared["budget_source"], cleared["total"]) == (10, "settings", 12)
    assert_error(predict(keyed, 1, key), 429, "budget_exhausted")
    for bad in ({"budget": -1}, {"budget": "lots"}, {}, {"budget": 1, "extra": 2}):
        response = httpx.put(f"{keyed.url}/usage/key:carol/budget", json=bad, headers=admin())
        assert_error(response, 422, "invalid_request")

    assert httpx.delete(f"{keyed.url}/usage/key:carol", headers=admin()).json()["total"] == 0
    assert predict(keyed, 4, key).status_code == 200
    assert usage(keyed, "key:carol")["total"] == 4


def test_budget_by_full_caller_id(keyed: ServiceProcess) -> None:
    key = KEYS["frank"]
    assert predict(keyed, 5, key).status_code == 200
    assert_error(predict(keyed, 1, key), 429, "budget_exhausted")
    assert usage(keyed, "key:frank")["budget"] == 5


def metric(server: ServiceProcess, name: str, **labels: str) -> float:
    text = httpx.get(server.url + "/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def test_metrics_move_with_predictions_and_refusals(keyed: ServiceProcess) -> None:
    response = httpx.get(keyed.url + "/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    snd = {"model": SND_MODEL, "defense": "snd"}
    plain = {"model": PLAIN_MODEL, "defense": "none"}
    latency = {"method": "POST", "route": "/predict", "status": "200"}
    before = (
        metric(keyed, "snd_queries_answered_total", **snd),
        metric(keyed, "snd_queries_answered_total", **plain),
        metric(keyed, "snd_refusals_total", reason="invalid_api_key"),
        metric(keyed, "snd_request_duration_seconds_count", **latency),
    )
    assert predict(keyed, 3, KEYS["alice"]).status_code == 200
    assert predict(keyed, 2, KEYS["alice"], model=PLAIN_MODEL).status_code == 200
    assert predict(keyed, 1, "wrong").status_code == 401
    after = (
        metric(keyed, "snd_queries_answered_total", **snd),
        metric(keyed, "snd_queries_answered_total", **plain),
        metric(keyed, "snd_refusals_total", reason="invalid_api_key"),
        metric(keyed, "snd_request_duration_seconds_count", **latency),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [3, 2, 1, 2]
    assert metric(keyed, "snd_request_duration_seconds_bucket", le="+Inf", **latency) == after[3]
    # unknown URLs are one label value, not one per path
    httpx.get(keyed.url + "/no/such/path/123")
    assert metric(keyed, "snd_request_duration_seconds_count", route="unmatched", status="404") >= 1
    assert metric(keyed, "snd_refusals_total", reason="not_found") >= 1
    # /v2's errors carry their code beside the message: counted by it, not as "unknown"
    unknown = metric(keyed, "snd_refusals_total", reason="unknown")
    not_allowed = metric(keyed, "snd_refusals_total", reason="method_not_allowed")
    assert httpx.delete(keyed.url + "/v2/health/live").status_code == 405
    assert metric(keyed, "snd_refusals_total", reason="method_not_allowed") == not_allowed + 1
    assert metric(keyed, "snd_refusals_total", reason="unknown") == unknown


@pytest.fixture(scope="module")
def open_untrusted(redis_server: RedisProcess) -> Iterator[ServiceProcess]:
    settings = {
        "redis_url": f"redis://127.0.0.1:{redis_server.port}/5",
        "admin_token_sha256": sha256(ADMIN),
    }
    with ServiceProcess(settings) as server:
        yield server


@pytest.fixture(scope="module")
def open_trusted(redis_server: RedisProcess) -> Iterator[ServiceProcess]:
    settings = {
        "redis_url": f"redis://127.0.0.1:{redis_server.port}/6",
        "trusted_proxies": ["127.0.0.1/32"],
    }
    with ServiceProcess(settings) as server:
        yield server


SPOOFED = {"X-Forwarded-For": "203.0.113.7"}


def test_spoofed_forwarded_for_does_not_change_the_caller(open_untrusted: ServiceProcess) -> None:
    assert predict(open_untrusted, 2).status_code == 200
    assert predict(open_untrusted, 3, headers=SPOOFED).status_code == 200
    assert (
        predict(
            open_untrusted, 1, headers={"X-Forwarded-For": "198.51.100.1, 10.0.0.1"}
        ).status_code
        == 200
    )
    callers = httpx.get(f"{open_untrusted.url}/usage", headers=admin()).json()["callers"]
    assert [(c["caller"], c["total"]) for c in callers] == [("addr:127.0.0.1", 6)]
    me = httpx.get(f"{open_untrusted.url}/usage/me", headers=SPOOFED).json()
    assert me["caller"] == "addr:127.0.0.1"


def test_forwarded_for_counts_from_a_trusted_proxy(open_trusted: ServiceProcess) -> None:
    assert predict(open_trusted, 2, headers=SPOOFED).status_code == 200
    # the right-most address not itself a trusted proxy is the client; what the client
    # wrote to the left of it is ignored
    chained = {"X-Forwarded-For": "198.51.100.1, 203.0.113.7"}
    assert predict(open_trusted, 3, headers=chained).status_code == 200
    assert predict(open_trusted, 1).status_code == 200
    me = httpx.get(f"{open_trusted.url}/usage/me", headers=SPOOFED).json()
    assert (me["caller"], me["total"]) == ("addr:203.0.113.7", 5)
    direct = httpx.get(f"{open_trusted.url}/usage/me").json()
    assert (direct["caller"], direct["total"]) == ("addr:127.0.0.1", 1)
    # no admin token configured: the admin routes are off
    assert_error(httpx.get(f"{open_trusted.url}/usage", headers=admin()), 403, "admin_disabled")


def test_the_admin_list_is_paged_by_a_cursor(keyed: ServiceProcess) -> None:
    """Pages of ``limit`` callers in id order; following ``next`` lists each caller once."""
    for name in ("alice", "bob", "erin"):
        assert predict(keyed, 1, KEYS[name]).status_code == 200
    full = httpx.get(f"{keyed.url}/usage", headers=admin(), params={"limit": 1000}).json()
    assert full["next"] is None
    everyone = [c["caller"] for c in full["callers"]]
    assert len(everyone) >= 3 and everyone == sorted(everyone)
    walked: list[str] = []
    after: str | None = None
    for _ in range(len(everyone) + 1):
        params: dict[str, str | int] = {"limit": 2} | ({"after": after} if after else {})
        page = httpx.get(f"{keyed.url}/usage", headers=admin(), params=params).json()
        assert len(page["callers"]) <= 2
        walked += [c["caller"] for c in page["callers"]]
        after = page["next"]
        if after is None:
            break
    assert walked == everyone
    for bad in ({"limit": 0}, {"limit": 1001}):
        assert_error(
            httpx.get(f"{keyed.url}/usage", headers=admin(), params=bad), 422, "invalid_request"
        )
