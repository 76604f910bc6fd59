"""Experiment files: the committed ones are valid, and mistakes in one are caught on load."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from attacks_client.attacks import get_attack
from attacks_client.evaluation.experiment import Experiment

EXPERIMENTS = sorted((Path(__file__).resolve().parents[3] / "experiments").glob("*.toml"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_committed_experiments_load_and_their_attacks_accept_their_params(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # files that read URLs and keys from the environment (compose.toml) get placeholders
    for endpoint in tomllib.loads(path.read_text()).get("endpoints", []):
        for key, value in endpoint.items():
            if key.endswith("_env"):
                monkeypatch.setenv(value, "http://placeholder:8000" if "url" in key else "key")
    experiment = Experiment.load(path)
    for attack in experiment.attacks:
        get_attack(attack.name)(**attack.params)  # unknown names or params raise here
    served = {m["name"] for m in (experiment.serve or {}).get("models", [])}
    for endpoint in experiment.endpoints:
        if endpoint.model is not None and endpoint.url is None and endpoint.serve is None:
            assert endpoint.model in served, f"{endpoint.name}: no served model {endpoint.model}"
    assert any(a.runs_on(e.name) for a in experiment.attacks for e in experiment.endpoints)


def test_an_attack_naming_an_unknown_endpoint_is_refused() -> None:
    raw = {
        "name": "typo",
        "endpoints": [{"name": "snd", "url": "http://x"}],
        "attacks": [{"name": "hsja", "endpoints": ["sdn"]}],
    }
    with pytest.raises(ValueError, match="unknown endpoints: sdn"):
        Experiment.from_dict(raw)


def test_a_pmis_reference_must_be_an_endpoint_and_defaults_to_the_reference() -> None:
    endpoints: list[dict[str, object]] = [
        {"name": "plain", "url": "http://x", "reference": True},
        {"name": "at", "url": "http://y"},
        {"name": "at-snd", "url": "http://z", "pmis_reference": "at"},
    ]
    experiment = Experiment.from_dict(
        {"name": "p", "endpoints": endpoints, "attacks": [{"name": "hsja"}]}
    )
    by_name = {e.name: e for e in experiment.endpoints}
    assert experiment.pmis_reference_of(by_name["at-snd"]).name == "at"
    assert experiment.pmis_reference_of(by_name["at"]).name == "plain"
    endpoints[2]["pmis_reference"] = "nope"
    with pytest.raises(ValueError, match="pmis_reference 'nope'"):
        Experiment.from_dict({"name": "p", "endpoints": endpoints, "attacks": [{"name": "hsja"}]})


def test_one_attack_split_over_disjoint_endpoints_and_limited_to_fewer_images(
    tmp_path: Path,
) -> None:
    from attacks_client.evaluation.grid import Evaluation

    endpoints: list[dict[str, object]] = [{"name": n, "url": f"http://{n}"} for n in "abc"]
    endpoints[0]["reference"] = True
    attacks = [
        {"name": "hsja", "endpoints": ["a", "b"]},
        {"name": "hsja", "endpoints": ["c"], "images": 2},
    ]
    experiment = Experiment.from_dict(
        {"name": "s", "images": 5, "endpoints": endpoints, "attacks": attacks}
    )
    urls = {str(e["name"]): str(e["url"]) for e in endpoints}
    evaluation = Evaluation(experiment, tmp_path, urls)
    jobs = evaluation.jobs([7, 3, 9, 1, 4])  # the selection order
    assert sorted((e.name, i) for _, e, i in jobs if e.name == "c") == [("c", 3), ("c", 7)]
    assert len([j for j in jobs if j[1].name != "c"]) == 2 * 5
    overlapping = [{"name": "hsja", "endpoints": ["a", "b"]}, {"name": "hsja", "endpoints": ["b"]}]
    with pytest.raises(ValueError, match="unique labels"):
        Experiment.from_dict({"name": "s", "endpoints": endpoints, "attacks": overlapping})
    other_params = [
        {"name": "hsja", "endpoints": ["a"]},
        {"name": "hsja", "endpoints": ["b"], "params": {"gamma": 2.0}},
    ]
    with pytest.raises(ValueError, match="unique labels"):
        Experiment.from_dict({"name": "s", "endpoints": endpoints, "attacks": other_params})
    with pytest.raises(ValueError, match="images must be >= 1"):
        Experiment.from_dict(
            {"name": "s", "endpoints": endpoints, "attacks": [{"name": "hsja", "images": 0}]}
        )


def test_the_norm_a_row_is_judged_in_must_match_the_ball_it_searches() -> None:
    base = {
        "name": "x",
        "endpoints": [{"name": "none", "url": "http://127.0.0.1:1"}],
        "linf_epsilons": [0.1, 0.3],
    }
    ok = Experiment.from_dict(
        {
            **base,
            "attacks": [
                {"name": "square", "norm": "linf", "params": {"norm": "inf", "epsilon": 0.1}}
            ],
        }
    )
    assert ok.attacks[0].norm == "linf" and ok.linf_epsilons == (0.1, 0.3)
    rays = Experiment.from_dict({**base, "attacks": [{"name": "rays", "norm": "linf"}]})
    assert rays.attacks[0].norm == "linf"  # RayS searches L∞ by default
    psj = Experiment.from_dict(
        {**base, "attacks": [{"name": "popskipjump", "start": "other-class"}]}
    )
    assert psj.attacks[0].start == "other-class"
    with pytest.raises(ValueError, match="start must be one of other-class"):
        Experiment.from_dict({**base, "attacks": [{"name": "popskipjump", "start": "nearest"}]})
    for attack in (
        {"name": "square", "params": {"norm": "inf"}},  # an L∞ search judged in L2
        {"name": "square", "norm": "linf"},  # an L2 search judged in L∞
        {"name": "rays"},  # RayS's default L∞ search judged in L2
        {"name": "hsja", "norm": "l1"},
    ):
        with pytest.raises(ValueError, match="norm"):
            Experiment.from_dict({**base, "attacks": [attack]})
