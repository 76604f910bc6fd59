"""``rejudge``: stored candidates judged by the endpoint's noise-free reference, over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from attacks_client.data import load_images
from attacks_client.evaluation.experiment import AttackConfig, EndpointConfig, Experiment
from attacks_client.evaluation.records import RECORDS, encode_array
from attacks_client.evaluation.rejudge import (
    REFERENCE_JUDGEMENT,
    CandidatesDropped,
    load_judgements,
    rejudge,
)
from attacks_client.evaluation.report import Report
from attacks_client.evaluation.runs import Run
from attacks_client.oracles.http import HttpOracle
from tests.servers import ServiceProcess, free_port


@pytest.fixture(scope="module")
def plain() -> Iterator[ServiceProcess]:
    with ServiceProcess({"defense": "none"}) as server:
        yield server


def record(
    image: int, label: int, candidates: dict[str, np.ndarray | None], l2: float = 1.0
) -> dict[str, Any]:
    return {
        "attack": "hsja",
        "endpoint": "snd",
        "image": image,
        "label": label,
        "checkpoints": {
            q: {
                "l2": None if c is None else l2,
                "misclassified": False,
                "candidate": None if c is None else encode_array(c),
            }
            for q, c in candidates.items()
        },
    }


def test_candidates_are_judged_by_the_reference_once(plain: ServiceProcess, tmp_path: Path) -> None:
    data = load_images("embedded")
    with HttpOracle(plain.url) as h:
        predicted = h.labels(data.images[:50])
    correct = [i for i in range(50) if predicted[i] == data.labels[i]]
    a = correct[0]
    b = next(i for i in correct if data.labels[i] != data.labels[a])
    # x0 itself is not adversarial for h; an image h calls another class is
    rows = [
        record(a, int(data.labels[a]), {"100": data.images[a], "200": data.images[b]}),
        record(b, int(data.labels[b]), {"100": None, "200": data.images[b]}),
    ]
    (tmp_path / RECORDS).write_text("".join(json.dumps(r) + "\n" for r in rows))
    experiment = Experiment(
        name="rejudge",
        attacks=(AttackConfig(name="hsja"),),
        images=2,
        budget=200,
        checkpoints=(100, 200),
        epsilons=(1.5,),
        primary_epsilon=1.5,
        # the defended endpoint is never asked: its URL has nothing behind it
        endpoints=(
            EndpointConfig(name="none", url=plain.url, reference=True),
            EndpointConfig(name="snd", url=f"http://127.0.0.1:{free_port()}"),
        ),
    )

    rejudge(experiment, tmp_path, progress=False)
    judgements = load_judgements(tmp_path)
    assert judgements == {
        ("hsja", "snd", a): {"100": False, "200": True},
        ("hsja", "snd", b): {"100": None, "200": False},
    }
    rejudge(experiment, tmp_path, progress=False)  # resumed: nothing asked or written again
    assert len((tmp_path / REFERENCE_JUDGEMENT).read_text().splitlines()) == 2

    run = Run(
        tmp_path,
        {
            "endpoints": [{"name": "none"}, {"name": "snd"}],
            "attacks": [{"key": "hsja", "repeat": 1}],
            "checkpoints": [100, 200],
        },
        rows,
        [],
        judgements,
    )
    table = Report(run).reference_table([0.5, 1.5])
    # at 200 queries: image a's candidate (L2 1.0) fools h, image b's does not -> 50% at 1.5
    assert "| hsja | 0 / 50 (n=2) |" in table  # only endpoints with records get a column


def test_records_without_their_candidates_are_refused(tmp_path: Path) -> None:
    """A compact copy (candidates dropped, L2 kept) cannot be judged: refused up front, before
    any endpoint is contacted, instead of reading as 'not adversarial'."""
    compact = record(0, 7, {"100": np.zeros((1, 28, 28), np.float32)})
    compact["checkpoints"]["100"]["candidate"] = None
    (tmp_path / RECORDS).write_text(json.dumps(compact) + "\n")
    experiment = Experiment(
        name="compact",
        attacks=(AttackConfig(name="hsja"),),
        images=1,
        budget=100,
        checkpoints=(100,),
        epsilons=(1.5,),
        primary_epsilon=1.5,
        endpoints=(
            EndpointConfig(name="none", url=f"http://127.0.0.1:{free_port()}", reference=True),
            EndpointConfig(name="snd", url=f"http://127.0.0.1:{free_port()}"),
        ),
    )
    with pytest.raises(CandidatesDropped, match="no stored candidates"):
        rejudge(experiment, tmp_path, progress=False)
    assert not (tmp_path / REFERENCE_JUDGEMENT).exists()
