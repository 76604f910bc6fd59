"""``url_env``: an endpoint's URL read from the environment (the compose attacker's
``DEFENDED_URL=http://defended:8000``), like ``api_key_env``."""

from __future__ import annotations

import pytest

from attacks_client.evaluation.experiment import EndpointConfig, Experiment


def test_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_URL", "http://defended:8000")
    endpoint = EndpointConfig.from_dict({"name": "snd", "url_env": "SOME_URL"})
    assert endpoint.url == "http://defended:8000"


def test_unset_variable_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOME_URL", raising=False)
    with pytest.raises(ValueError, match=r"\$SOME_URL is not set"):
        EndpointConfig.from_dict({"name": "snd", "url_env": "SOME_URL"})


def test_url_and_url_env_together_are_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_URL", "http://a:1")
    with pytest.raises(ValueError, match="'url' or 'url_env'"):
        EndpointConfig.from_dict({"name": "snd", "url": "http://b:2", "url_env": "SOME_URL"})


def test_url_env_and_serve_together_are_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_URL", "http://a:1")
    with pytest.raises(ValueError, match="'url' or 'serve'"):
        EndpointConfig.from_dict(
            {"name": "snd", "url_env": "SOME_URL", "serve": {"defense": "none"}}
        )


def test_experiment_file_with_url_env(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLAIN_URL", "http://127.0.0.1:9")
    path = tmp_path / "x.toml"
    path.write_text(
        '[[endpoints]]\nname = "none"\nurl_env = "PLAIN_URL"\n\n[[attacks]]\nname = "hsja"\n'
    )
    experiment = Experiment.load(path)
    assert experiment.endpoints[0].url == "http://127.0.0.1:9"
