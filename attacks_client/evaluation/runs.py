"""A run directory read back: the experiment, its records, clean accuracy and judgements."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attacks_client.evaluation.records import ACCURACY, RECORDS
from attacks_client.evaluation.rejudge import load_judgements


@dataclass
class Run:
    """The records of one evaluation directory, grouped."""

    directory: Path
    experiment: dict[str, Any]
    records: list[dict[str, Any]]
    accuracy: list[dict[str, Any]]
    # (attack, endpoint, image) -> checkpoint -> the noise-free reference misclassified the
    # candidate (``rejudge``); empty when the run was not rejudged
    judgements: dict[tuple[str, str, int], dict[str, bool | None]] = field(default_factory=dict)

    @classmethod
    def load(cls, directory: Path) -> Run:
        def lines(name: str) -> list[dict[str, Any]]:
            path = directory / name
            if not path.exists():
                return []
            return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]

        experiment = json.loads((directory / "experiment.json").read_text())
        return cls(
            directory, experiment, lines(RECORDS), lines(ACCURACY), load_judgements(directory)
        )

    @property
    def endpoints(self) -> list[str]:
        return [e["name"] for e in self.experiment["endpoints"]]

    @property
    def attacks(self) -> list[dict[str, Any]]:
        """One entry per attack key (an attack split over endpoint sets is listed once)."""
        unique: dict[str, dict[str, Any]] = {}
        for attack in self.experiment["attacks"]:
            unique.setdefault(attack["key"], attack)
        return list(unique.values())

    @property
    def checkpoints(self) -> list[int]:
        return list(self.experiment["checkpoints"])

    def select(self, attack: str, endpoint: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["attack"] == attack and r["endpoint"] == endpoint]

    def defense(self, endpoint: str) -> dict[str, Any]:
        for row in self.accuracy:
            if row["endpoint"] == endpoint:
                return dict(row.get("defense") or {})
        return {}

    def architecture(self, row: dict[str, Any]) -> str | None:
        """The network behind an accuracy row's endpoint: as ``/models`` told it, or else (rows
        written before that was recorded) the zoo entry of a model this run served itself."""
        if row.get("architecture"):
            return str(row["architecture"])
        endpoint = next(
            (e for e in self.experiment["endpoints"] if e["name"] == row["endpoint"]), None
        )
        served = (endpoint or {}).get("serve") or self.experiment.get("serve") or {}
        if endpoint is None or endpoint.get("url"):
            return None
        if served.get("zoo") and not served.get("models"):
            return str(served["zoo"])
        for model in served.get("models", []):
            if model.get("name") == endpoint.get("model") and model.get("zoo"):
                return str(model["zoo"])
        return None
