"""The records of an evaluation run: one JSON line per (attack, endpoint, image).

A record holds the queries used, and at each budget checkpoint the candidate (float32, zlib,
base64), its L2 and L∞ distances to x0, the evaluator's majority verdict and wrong votes, and
the L2 of the q-th query image (paper Table 3); the candidate-L2 trajectory; and P_mis over a
sample of the attack's queries (Table 5). ``RECORDS``, ``ACCURACY`` and ``IMAGES`` name
the run's files.
"""

from __future__ import annotations

import base64
import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from attacks_client.attacks import AttackResult
from attacks_client.evaluation.experiment import AttackConfig, EndpointConfig, Experiment
from attacks_client.oracles import Oracle

RECORDS, ACCURACY, IMAGES = "records.jsonl", "accuracy.jsonl", "images.json"
TRAJECTORY_POINTS = 100


def encode_array(x: np.ndarray) -> str:
    return base64.b64encode(zlib.compress(np.asarray(x, np.float32).tobytes())).decode()


def decode_array(text: str, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(zlib.decompress(base64.b64decode(text)), np.float32).reshape(shape)


def majority_misclassified(
    evaluator: Oracle, candidates: list[np.ndarray], label: int, draws: int
) -> list[tuple[bool, int]]:
    """For each candidate: (misclassified by a majority of ``draws``, number of wrong votes)."""
    if not candidates:
        return []
    batch = np.repeat(np.stack(candidates).astype(np.float32), draws, axis=0)
    votes = evaluator.labels(batch).reshape(len(candidates), draws)
    wrong = (votes != label).sum(1)
    return [(bool(w * 2 > draws), int(w)) for w in wrong]


def linf_distance(candidate: np.ndarray, x0: np.ndarray | None) -> float | None:
    """max |candidate − x0| (None when the result does not carry x0)."""
    if x0 is None:
        return None
    return float(np.abs(candidate.astype(np.float64) - x0.astype(np.float64)).max())


def query_l2_at(result: AttackResult, q: int) -> float | None:
    """L2 of the q-th query image (the last one if the attack stopped earlier)."""
    if len(result.query_l2) == 0:
        return None
    return float(result.query_l2[min(q, len(result.query_l2)) - 1])


def build_record(
    experiment: Experiment,
    attack: AttackConfig,
    endpoint: EndpointConfig,
    image: int,
    result: AttackResult,
    verdicts: dict[int, tuple[bool, int]],
    p_mis: tuple[int, int] | None,
    seconds: float,
    judge_queries: int = 0,
) -> dict[str, Any]:
    grid = np.unique(np.linspace(1, experiment.budget, TRAJECTORY_POINTS).astype(int))
    checkpoints = {}
    for q in experiment.budget_checkpoints:
        candidate = result.candidate_at(q)
        misclassified, votes = verdicts.get(q, (False, 0))
        l2 = result.l2_at(q)
        checkpoints[str(q)] = {
            "l2": None if candidate is None else l2,
            "linf": None if candidate is None else linf_distance(candidate, result.x0),
            "misclassified": candidate is not None and misclassified,
            "wrong_votes": votes,
            "query_l2": query_l2_at(result, q),
            "candidate": None if candidate is None else encode_array(candidate),
        }
    return {
        "attack": attack.key,
        "attack_name": attack.name,
        "repeat": attack.repeat,
        "norm": attack.norm,
        "params": {k: v for k, v in result.params.items() if jsonable(v)},
        "endpoint": endpoint.name,
        "image": image,
        "label": result.label,
        "budget": result.budget,
        "queries": result.queries,
        "reference_queries": result.reference_queries,
        "stop_reason": result.stop_reason,
        "attack_seconds": result.wall_time,
        "seconds": seconds,
        "checkpoints": checkpoints,
        "candidate_l2": [[int(q), _finite(result.l2_at(int(q)))] for q in grid],
        "mean_query_l2": float(result.query_l2.mean()) if len(result.query_l2) else None,
        "p_mis": None
        if p_mis is None
        else {
            "mismatches": p_mis[0],
            "samples": p_mis[1],
            "reference": experiment.pmis_reference_of(endpoint).name,
        },
        "judge_queries": judge_queries,
    }


def _finite(value: float) -> float | None:
    return value if np.isfinite(value) else None


def jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def read_lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [line for line in path.read_text().splitlines() if line.strip()]
