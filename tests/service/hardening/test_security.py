"""The security model, each point with a test:

* the app's routes are exactly the known set, and every admin route depends on the admin check:
  ``test_routes.py``; admin routes refuse missing and wrong tokens:
  ``tests/service/api/test_usage.py`` (``test_admin_routes_refuse_missing_or_wrong_tokens``);
* a label-only model leaks no scores on any route, header or error;
* no noise value or generator seed appears in any response or log line, and responses carry
  only their documented keys;
* every ``torch.load`` in the repository passes ``weights_only=True``; nothing unpickles.
"""

from __future__ import annotations

import ast
import json
import logging
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from service.defenses import build_defense
from service.model_settings import DefenseSettings
from tests.servers import ROOT, ServiceProcess
from tests.service.hardening.conftest import (
    IMAGE,
    KEYS,
    LABEL_ONLY,
    MODEL,
    assert_json_error,
    npy,
)

NUM_CLASSES = 10
HEADERS_ALLOWED = {
    "date",
    "server",
    "content-length",
    "content-type",
    "connection",
    "x-queries-used",
    "x-queries-remaining",
    "retry-after",
}


def score_vectors(value: Any) -> Iterator[Any]:
    """Every list of NUM_CLASSES floats (a probability vector's shape) inside a JSON value."""
    if isinstance(value, list):
        if len(value) == NUM_CLASSES and all(isinstance(v, float) for v in value):
            yield value
        for item in value:
            yield from score_vectors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from score_vectors(item)


def keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from keys(item)


def assert_no_scores(response: httpx.Response) -> None:
    for name, value in response.headers.items():
        assert name.lower() in HEADERS_ALLOWED, (name, value)
        if name.lower().startswith("x-queries"):
            assert value.isdigit()
    if response.headers.get("content-type", "").startswith("application/json"):
        body = response.json()
        assert not {"scores", "probabilities", "probs", "logits"} & set(keys(body)), body
        assert not list(score_vectors(body))
    else:
        assert not re.search(r"score|prob|logit", response.text, re.IGNORECASE)


def test_a_label_only_model_leaks_no_scores(hardened: ServiceProcess) -> None:
    url, key = hardened.url, KEYS["leaks"]
    x = np.random.default_rng(1).random((2, *IMAGE), np.float32)
    auth = {"X-API-Key": key}
    as_npy = {"Content-Type": "application/x-npy", **auth}
    as_raw = {"Content-Type": "application/octet-stream", **auth}
    refused = [  # every way to ask for scores: 403, counted nothing
        httpx.post(
            f"{url}/predict",
            headers=auth,
            timeout=30,
            json={"model": LABEL_ONLY, "inputs": x.tolist(), "output": "scores"},
        ),
        httpx.post(
            f"{url}/predict",
            headers=auth,
            timeout=30,
            params={"output": "scores"},
            json={"model": LABEL_ONLY, "inputs": x.tolist()},
        ),
        httpx.post(
            f"{url}/predict",
            headers=as_npy,
            content=npy(x),
            timeout=30,
            params={"model": LABEL_ONLY, "output": "scores"},
        ),
        httpx.post(
            f"{url}/predict",
            headers=as_raw,
            content=x.tobytes(),
            timeout=30,
            params={"model": LABEL_ONLY, "output": "scores", "shape": "2,1,28,28"},
        ),
    ]
    for response in refused:
        assert_json_error(response, 403, "label_only")
    answered = [
        httpx.post(
            f"{url}/predict",
            headers=auth,
            timeout=30,
            json={"model": LABEL_ONLY, "inputs": x.tolist()},
        ),
        httpx.post(
            f"{url}/predict",
            headers=as_npy,
            content=npy(x),
            timeout=30,
            params={"model": LABEL_ONLY, "output": "label"},
        ),
        httpx.post(
            f"{url}/predict",
            headers=as_raw,
            content=x.tobytes(),
            timeout=30,
            params={"model": LABEL_ONLY, "shape": "2,1,28,28"},
        ),
    ]
    for response in answered:
        assert response.status_code == 200, response.text
        assert set(response.json()) == {"model", "labels"}
    # errors about the label-only model (bad input of every stage) carry no scores either
    errors = [
        httpx.post(
            f"{url}/predict",
            headers=as_raw,
            content=np.full((1, *IMAGE), np.nan, np.float32).tobytes(),
            params={"model": LABEL_ONLY, "shape": "1,1,28,28"},
        ),
        httpx.post(f"{url}/predict", headers=auth, json={"model": LABEL_ONLY, "inputs": [[1]]}),
        httpx.post(
            f"{url}/predict",
            headers=as_raw,
            content=b"x",
            params={"model": LABEL_ONLY, "shape": "1,1,28,28", "output": "scores"},
        ),
    ]
    assert all(400 <= r.status_code < 500 for r in errors)
    # the count moved by the answered images only
    used = [int(r.headers["X-Queries-Used"]) for r in answered]
    assert used[1] - used[0] == used[2] - used[1] == 2
    models = httpx.get(f"{url}/models").json()["models"]
    entry = next(m for m in models if m["name"] == LABEL_ONLY)
    assert entry["outputs"] == ["label"] and entry["defense"] == {"kind": "snd"}  # σ hidden
    metrics = httpx.get(f"{url}/metrics")
    health = [httpx.get(f"{url}/healthz"), httpx.get(f"{url}/readyz")]
    usage = httpx.get(f"{url}/usage/me", headers=auth)
    for response in [*refused, *answered, *errors, metrics, *health, usage]:
        assert_no_scores(response)
    assert not re.search(r"sigma|seed", metrics.text, re.IGNORECASE)


# ---- no noise, no seed; only documented keys --------------------------------------------------

FLOAT_ARRAY = re.compile(r"-?\d+\.\d+(?:e-?\d+)?(?:,\s*-?\d+\.\d+(?:e-?\d+)?){7,}")
DEFENSE_KEYS = {
    "kind",
    "sigma",
    "noise",
    "distribution",
    "alpha",
    "beta",
    "clip",
    "sp_amplitude",
    "min_scale",
    "max_scale",
    "interpolation",
}
MODEL_KEYS = {
    "name",
    "architecture",
    "input_shape",
    "num_classes",
    "classes",
    "defense",
    "outputs",
    "default",
}


def test_responses_carry_only_documented_keys(hardened: ServiceProcess) -> None:
    x = np.random.default_rng(2).random((3, *IMAGE), np.float32)
    body = httpx.post(
        f"{hardened.url}/predict",
        content=npy(x),
        params={"output": "scores"},
        headers={"Content-Type": "application/x-npy", "X-API-Key": KEYS["leaks"]},
        timeout=30,
    ).json()
    assert set(body) == {"model", "labels", "scores"}
    assert np.array(body["scores"]).shape == (3, NUM_CLASSES)
    for model in httpx.get(f"{hardened.url}/models").json()["models"]:
        assert set(model) == MODEL_KEYS
        assert set(model["defense"]) <= DEFENSE_KEYS
    assert set(httpx.get(f"{hardened.url}/healthz").json()) == {"status"}
    assert set(httpx.get(f"{hardened.url}/readyz").json()) == {"ready", "models", "counter"}


def test_the_debug_log_holds_no_seed_noise_or_scores(hardened: ServiceProcess) -> None:
    """The hardened server logs at debug level; after the requests of these tests its log
    names no seed and holds no vector of numbers (noise, images or scores)."""
    x = np.random.default_rng(3).random((2, *IMAGE), np.float32)
    for model in (MODEL, LABEL_ONLY):
        response = httpx.post(
            f"{hardened.url}/predict",
            content=npy(x),
            params={"model": model},
            headers={"Content-Type": "application/x-npy", "X-API-Key": KEYS["leaks"]},
            timeout=30,
        )
        assert response.status_code == 200
    log = hardened.log()
    assert "DEBUG" in log  # the level really was debug
    assert not re.search(r"seed|generator", log, re.IGNORECASE)
    assert not FLOAT_ARRAY.search(log), FLOAT_ARRAY.search(log)


@pytest.mark.parametrize(
    "defense",
    [
        DefenseSettings(kind="snd", sigma=0.02),
        DefenseSettings(kind="snd", sigma=0.02, distribution="beta", alpha=2, beta=5, clip=True),
        DefenseSettings(kind="snd", sigma=0.02, noise="uniform"),
        DefenseSettings(kind="snd", sigma=0.02, noise="laplace"),
        DefenseSettings(kind="snd", sigma=0.02, noise="salt_pepper"),
        DefenseSettings(kind="rp"),
    ],
    ids=lambda d: f"{d.kind}-{d.noise}-{d.distribution}",
)
def test_defenses_never_log_and_never_describe_their_seed(
    defense: DefenseSettings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    built = build_defense(defense)
    x = torch.rand(4, *IMAGE)
    for _ in range(3):
        built(x)
    assert [r for r in caplog.records if r.name.startswith("service")] == []
    described = json.dumps(built.describe()) + json.dumps(built.describe(hide_params=True))
    assert not {"seed", "generator", "state"} & set(built.describe())
    for generator in getattr(built, "_generators", {}).values():
        seed = str(generator.initial_seed())
        assert seed not in described and seed not in repr(built) and seed not in caplog.text


# ---- nothing unpickles ------------------------------------------------------------------------


def python_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if listed.returncode == 0 and listed.stdout.strip():
        return [ROOT / line for line in listed.stdout.splitlines()]
    return [p for p in ROOT.rglob("*.py") if not {".venv", ".git"} & set(p.parts)]


# CIFAR-10's "python version" batches are pickles: read only from an operator's local copy
# (offline evaluation, never a request body); docs/SECURITY.md says to trust that copy
CIFAR_PICKLES = {"service/offline/datasets.py", "attacks_client/data.py"}


def keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def test_every_torch_load_is_weights_only_and_nothing_unpickles() -> None:
    loads, offenders = 0, []
    for path in python_files():
        if not path.exists():
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if (owner, node.func.attr) == ("torch", "load"):
                loads += 1
                flag = keyword(node, "weights_only")
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    offenders.append(f"{where} torch.load without weights_only=True")
            elif (
                owner in {"pickle", "cPickle", "dill", "joblib"}
                and node.func.attr in {"load", "loads"}
                and str(path.relative_to(ROOT)) not in CIFAR_PICKLES
            ):
                offenders.append(f"{where} {owner}.{node.func.attr}")
            elif (owner, node.func.attr) in {("np", "load"), ("numpy", "load")}:
                flag = keyword(node, "allow_pickle")
                if isinstance(flag, ast.Constant) and flag.value is True:
                    offenders.append(f"{where} np.load(allow_pickle=True)")
    assert loads >= 1  # the scan does see the repository's loaders
    assert offenders == []
