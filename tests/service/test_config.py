"""Settings from flags and SND_* environment variables."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from service.__main__ import build_parser, settings_from_args
from service.settings import Settings
from tests.servers import ROOT


def test_flat_flags_build_one_model() -> None:
    args = build_parser().parse_args(
        [
            "--model",
            "resnet20-mnist",
            "--defense",
            "snd",
            "--sigma",
            "0.02",
            "--label-only",
            "--clip",
        ]
    )
    settings = Settings(**settings_from_args(args))
    (model,) = settings.models
    assert model.defense.kind == "snd" and model.defense.sigma == 0.02 and model.defense.clip
    assert model.label_only and settings.default_model == "resnet20-mnist"


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SND_SIGMA", "0.005")
    monkeypatch.setenv("SND_SIGMA_DISTRIBUTION", "beta")
    monkeypatch.setenv("SND_ALPHA", "2")
    settings = Settings()
    defense = settings.models[0].defense
    assert (defense.sigma, defense.distribution, defense.alpha) == (0.005, "beta", 2.0)
    # flags win over the environment
    args = build_parser().parse_args(["--sigma", "0.03"])
    assert Settings(**settings_from_args(args)).models[0].defense.sigma == 0.03


def test_several_models_from_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "SND_MODELS",
        json.dumps(
            [
                {
                    "name": "mnist-snd",
                    "zoo": "resnet20-mnist",
                    "defense": {"kind": "snd", "sigma": 0.01},
                },
                {"name": "mnist-plain", "zoo": "resnet20-mnist", "defense": {"kind": "none"}},
            ]
        ),
    )
    settings = Settings()
    assert [m.name for m in settings.models] == ["mnist-snd", "mnist-plain"]
    assert settings.models[1].zoo_name == "resnet20-mnist"


@pytest.mark.parametrize(
    "bad",
    [
        {"sigma": -1},
        {"defense": "magic"},
        {"api_keys": {"short": "alice"}},
        {"trusted_proxies": ["10.0.0.0/8 "]},  # a stray space: was a 500 on every request
        {"trusted_proxies": ["proxy.internal"]},
        {"admin_token_sha256": "admin-secret"},  # the token itself, not its hash
        {"detection_throttle_after": 100, "detection_suspend_after": 100},
        # a flat flag beside the models list was silently ignored
        {"sigma": 0.05, "models": [{"name": "m", "zoo": "resnet20-mnist"}]},
        # a full request could never be queued
        {"max_batch": 512, "queue_max_images": 256},
        # detection state in Redis, keyed by each process's random key
        {"detection": "shadow", "redis_url": "redis://127.0.0.1:6379/0"},
        {
            "redis_url": "redis://127.0.0.1:6379/0",
            "models": [{"name": "m", "detection": {"action": "enforce"}}],
        },
    ],
)
def test_invalid_settings_are_refused(bad: dict) -> None:
    with pytest.raises(ValidationError):
        Settings(**bad)


def test_help_lists_every_setting() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "service", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for flag in ("--sigma", "--defense", "--label-only", "--redis-url", "--workers"):
        assert flag in out


def test_a_model_has_a_zoo_network_or_an_upstream() -> None:
    upstream = {"url": "http://127.0.0.1:8080/", "model": "resnet50"}
    (model,) = Settings(models=[{"name": "m", "upstream": upstream}]).models
    assert model.upstream is not None and model.upstream.url == "http://127.0.0.1:8080"
    assert model.upstream.binary == "auto" and model.upstream.outputs_are == "logits"
    for wrong in (
        {"name": "m", "zoo": "resnet20-mnist", "upstream": upstream},
        {"name": "m", "weights": "w.pt", "upstream": upstream},
        {"name": "m", "upstream": upstream, "defense": {"kind": "rp"}},
        {"name": "m", "upstream": {**upstream, "url": "ftp://x"}},
        {"name": "m", "upstream": {**upstream, "timeout_s": 0}},
        {"name": "m", "upstream": {**upstream, "binary": "sometimes"}},
        {"name": "m", "upstream": {"url": "http://x:1"}},
    ):
        with pytest.raises(ValidationError):
            Settings(models=[wrong])


def test_proxy_networks_are_normalized() -> None:
    settings = Settings(trusted_proxies=["10.1.2.3/8", "::1"], admin_token_sha256="AB" * 32)
    assert settings.trusted_proxies == ["10.0.0.0/8", "::1/128"]
    assert settings.admin_token_sha256 == "ab" * 32


def test_the_server_refuses_to_start_with_a_clear_message() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SND_")}
    env["SND_TRUSTED_PROXIES"] = '["10.0.0.0/8 "]'
    done = subprocess.run(
        [sys.executable, "-m", "service", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "invalid settings: trusted_proxies" in done.stderr
    assert "'10.0.0.0/8 ' is not an IP address or CIDR network" in done.stderr
    assert "Traceback" not in done.stderr


def test_detection_with_a_secret_or_one_memory_process_starts() -> None:
    redis = "redis://127.0.0.1:6379/0"
    assert Settings(detection="shadow", redis_url=redis, detection_secret="s").detection_secret
    in_memory = Settings(detection="shadow")
    assert in_memory.detection_needs_a_secret(workers=1) is None
    assert "workers" in str(in_memory.detection_needs_a_secret(workers=2))
    assert Settings(redis_url=redis).detection_needs_a_secret(workers=4) is None  # no detection


def test_several_detecting_workers_without_a_secret_refuse_to_start() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SND_")}
    done = subprocess.run(
        [sys.executable, "-m", "service", "--port", "0", "--detection", "shadow", "--workers", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "invalid settings: detection_secret: 2 workers detect" in done.stderr


def test_redis_timings_are_settings_the_counter_uses() -> None:
    from service.accounting.redis_counter import RedisCounter
    from service.app import build_counter

    settings = Settings(
        redis_url="redis://127.0.0.1:6379/0",
        redis_wait_replicas=1,
        redis_wait_timeout_ms=750,
        redis_token_ttl_s=90,
        redis_sentinel_check_s=2.5,
    )
    counter = build_counter(settings)  # connects lazily: no Redis needed
    assert isinstance(counter, RedisCounter)
    timings = (
        counter.wait_timeout_ms,
        counter.backend.token_ttl_s,
        counter.backend.connections.master_check_s,
    )
    assert timings == (750, 90, 2.5)
