"""``evaluate`` over the Open Inference Protocol: one experiment whose endpoints are kserve's
ModelServer itself (no defense, the reference) and the gateway's /v2 routes (SND σ = 0.01),
both named by ``v2+http://`` URLs; the attacker is charged exactly the attack's queries."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx

from attacks_client.evaluation.experiment import AttackConfig, EndpointConfig, Experiment
from attacks_client.evaluation.grid import evaluate
from attacks_client.evaluation.records import RECORDS
from attacks_client.evaluation.report import report
from tests.servers import ServiceProcess, UpstreamProcess

ADMIN = "v2-grid-admin"
KEYS = {"counts": "v2-attacker-key", "stats": "v2-evaluator-key"}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_evaluate_over_v2_upstream_and_gateway(
    kserve_upstream: UpstreamProcess, tmp_path: Path
) -> None:
    settings = {
        "models": [
            {
                "name": "guarded",
                "upstream": {"url": kserve_upstream.url, "model": "resnet20"},
                "defense": {"kind": "snd", "sigma": 0.01},
            }
        ],
        "api_keys": {sha(KEYS["counts"]): "attacker", sha(KEYS["stats"]): "evaluator"},
        "admin_token_sha256": sha(ADMIN),
    }
    with ServiceProcess(settings) as gateway:
        experiment = Experiment(
            name="v2",
            endpoints=(
                EndpointConfig(
                    name="kserve", url=f"v2+{kserve_upstream.url}", model="resnet20", reference=True
                ),
                EndpointConfig(
                    name="gateway",
                    url=f"v2+{gateway.url}",
                    model="guarded",
                    api_key=KEYS["counts"],
                    eval_api_key=KEYS["stats"],
                ),
            ),
            attacks=(AttackConfig(name="hsja"),),
            images=1,
            budget=150,
            checkpoints=(150,),
            epsilons=(3.0,),
            primary_epsilon=3.0,
            eval_draws=3,
            accuracy_repeats=1,
            accuracy_images=40,
            pmis_samples=20,
            sigma_hat_images=2,
            sigma_hat_draws=4,
        )
        evaluate(experiment, tmp_path, workers=1, progress=False)
        rows = [json.loads(line) for line in (tmp_path / RECORDS).read_text().splitlines()]
        charged = httpx.get(
            f"{gateway.url}/usage/key:attacker", headers={"Authorization": f"Bearer {ADMIN}"}
        ).json()["total"]
    assert {r["endpoint"] for r in rows} == {"kserve", "gateway"}
    assert all(0 < r["queries"] <= 150 for r in rows)
    assert charged == sum(r["queries"] for r in rows if r["endpoint"] == "gateway")
    clean = {r["endpoint"]: r for r in map(json.loads, (tmp_path / "accuracy.jsonl").open())}
    assert min(clean["kserve"]["accuracies"] + clean["gateway"]["accuracies"]) >= 0.9
    assert "Table 1" in report(tmp_path).read_text()
