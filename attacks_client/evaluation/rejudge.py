"""``python -m attacks_client rejudge --config experiments/<name>.toml``: a second verdict.

The success rule of docs/attacking/protocol.md asks the *defended* endpoint, by a majority of
noisy draws.
A decision attack's candidate sits on the decision boundary, where that majority can be close to
a coin flip, so a failure could mean either that the attack found no adversarial image or that
the noise hides the one it found. This command asks the endpoint's noise-free twin (its
``pmis_reference``: the reference endpoint, or e.g. the adversarially trained model without SND)
about every stored candidate, once each, with the evaluator identity, and writes
``reference_judgement.jsonl`` beside the records: per (attack, endpoint, image), whether h
misclassified the candidate at each checkpoint. The report tabulates success under both rules.

Resumable like ``evaluate``: records already judged are skipped.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from attacks_client.evaluation.experiment import Experiment
from attacks_client.evaluation.grid import serve_endpoints
from attacks_client.evaluation.records import RECORDS, decode_array
from attacks_client.evaluation.resume import run_lock
from attacks_client.oracles.factory import open_oracle
from attacks_client.oracles.http import HttpOracle

REFERENCE_JUDGEMENT = "reference_judgement.jsonl"
RECORDS_PER_REQUEST = 64  # up to 4 candidates each: one checkpoint per candidate


class CandidatesDropped(ValueError):
    """The records keep their L2 distances but not the candidate images (a compact copy)."""


def record_key(record: dict[str, Any]) -> tuple[str, str, int]:
    return str(record["attack"]), str(record["endpoint"]), int(record["image"])


def load_judgements(directory: Path) -> dict[tuple[str, str, int], dict[str, bool | None]]:
    """(attack, endpoint, image) -> checkpoint -> h misclassified the candidate (None: there
    was no candidate)."""
    path = directory / REFERENCE_JUDGEMENT
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {record_key(row): dict(row["misclassified"]) for row in rows}


def rejudge(experiment: Experiment, out_dir: Path, *, progress: bool = True) -> Path:
    """Judge the candidates of ``out_dir``'s records on each endpoint's noise-free reference."""
    records = [
        json.loads(line) for line in (out_dir / RECORDS).read_text().splitlines() if line.strip()
    ]
    done = load_judgements(out_dir)
    endpoints = {e.name: e for e in experiment.endpoints}
    todo = [r for r in records if record_key(r) not in done and r["endpoint"] in endpoints]
    path = out_dir / REFERENCE_JUDGEMENT
    if not todo:
        return path
    stripped = [
        r
        for r in todo
        if any(
            c.get("l2") is not None and c.get("candidate") is None
            for c in r["checkpoints"].values()
        )
    ]
    if stripped:
        raise CandidatesDropped(
            f"{len(stripped)} records of {out_dir / RECORDS} have no stored candidates (a "
            "compact copy?): they cannot be rejudged; rejudge the run that made them"
        )
    by_reference: dict[str, list[dict[str, Any]]] = {}
    for record in todo:
        reference = experiment.pmis_reference_of(endpoints[record["endpoint"]])
        by_reference.setdefault(reference.name, []).append(record)
    with ExitStack() as stack:
        stack.enter_context(run_lock(out_dir))
        urls = serve_endpoints(experiment, stack)
        bar = stack.enter_context(
            tqdm(
                total=len(todo),
                desc=f"rejudge {experiment.name}",
                unit="record",
                disable=not progress,
            )
        )
        for name, group in by_reference.items():
            reference = endpoints[name]
            oracle = stack.enter_context(
                open_oracle(
                    urls[name],
                    reference.model,
                    api_key=reference.eval_api_key or reference.api_key,
                    output="label",
                )
            )
            for start in range(0, len(group), RECORDS_PER_REQUEST):
                chunk = group[start : start + RECORDS_PER_REQUEST]
                rows = judge_chunk(oracle, chunk, name)
                with path.open("a") as fh:
                    fh.writelines(json.dumps(row) + "\n" for row in rows)
                bar.update(len(chunk))
    return path


def judge_chunk(
    oracle: HttpOracle, records: list[dict[str, Any]], reference: str
) -> list[dict[str, Any]]:
    """One labels request for every candidate of ``records``; a row per record."""
    asked: list[tuple[int, str]] = []  # (record index, checkpoint)
    images: list[np.ndarray] = []
    for i, record in enumerate(records):
        for q, checkpoint in record["checkpoints"].items():
            if checkpoint.get("candidate") is not None:
                asked.append((i, q))
                images.append(decode_array(checkpoint["candidate"], oracle.input_shape))
    labels = oracle.labels(np.stack(images)) if images else np.zeros(0, int)
    verdicts: list[dict[str, bool | None]] = [
        {q: None for q in record["checkpoints"]} for record in records
    ]
    for (i, q), label in zip(asked, labels, strict=True):
        verdicts[i][q] = bool(label != records[i]["label"])
    return [
        {
            "attack": r["attack"],
            "endpoint": r["endpoint"],
            "image": r["image"],
            "reference": reference,
            "misclassified": v,
        }
        for r, v in zip(records, verdicts, strict=True)
    ]
