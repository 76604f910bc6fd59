"""The Square Attack in the parity harness: non-finite images are counted and never sent, ART's
query accounting, the rows end to end, and a page of some attacks that keeps the others."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from attacks_client.attacks.square import SquareAttack
from attacks_client.oracles.base import FunctionOracle
from benchmarks.parity.art_runs import run_art
from benchmarks.parity.jobs import NonFiniteGuard, seed_art
from benchmarks.parity.page import write_page
from tests.servers import ROOT

SHAPE = (1, 28, 28)
LABEL = 3


def finite_only(seen: list[np.ndarray]) -> FunctionOracle:
    """A linear softmax no perturbation of x0 = 0.5 in the L2 ball of 1.5 flips (class 3 wins
    by 30 logits, a pixel moves a logit by at most 0.5 · 4); it records every batch it gets."""
    weights = np.random.default_rng(0).standard_normal((10, 784)).astype(np.float32)

    def predict(x: np.ndarray) -> np.ndarray:
        seen.append(x.copy())
        z = x.reshape(len(x), -1) @ weights.T * 0.5 + 30 * np.eye(10)[LABEL]
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    return FunctionOracle(predict, SHAPE, 10)


def test_the_guard_withholds_counts_and_answers_non_finite_images() -> None:
    seen: list[np.ndarray] = []
    guard = NonFiniteGuard(finite_only(seen), LABEL)
    x = np.full((3, *SHAPE), 0.5, np.float32)
    x[1, 0, 0, 0], x[2, 0, 5, 5] = np.nan, np.inf
    scores = guard.scores(x)
    assert np.isfinite(scores[0]).all() and np.isnan(scores[1:]).all()
    assert (guard.queries, guard.nonfinite, guard.inner.queries) == (3, 2, 1)
    assert guard.labels(x[1:]).tolist() == [LABEL, LABEL]  # not adversarial
    assert (guard.queries, guard.nonfinite) == (5, 4)
    assert len(seen) == 1 and all(np.isfinite(batch).all() for batch in seen)


def test_art_square_l2_asks_non_finite_images_and_ours_never_does() -> None:
    """ART's L2 update divides by a zero mass (its square_attack.py, line 465): over a few seeds
    it asks about NaN images, which the guard keeps from the model. Its count is 3 + 3 per
    iteration, exactly the budget. Ours, in both norms, asks about none."""
    x0 = np.full(SHAPE, 0.5, np.float32)
    seen: list[np.ndarray] = []
    art_nonfinite = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        for seed in range(5):
            guard = NonFiniteGuard(finite_only(seen), LABEL)
            seed_art(seed)
            candidate, _, started = run_art("square-l2", guard, x0, LABEL, 300)
            assert started and guard.queries == 300  # 3 + 3 x max_iter, max_iter = 99
            assert candidate is None or np.linalg.norm(candidate - x0) <= 1.5 * (1 + 1e-6)
            art_nonfinite += guard.nonfinite
    assert art_nonfinite > 0
    where = {(Path(w.filename).name, w.lineno) for w in caught if "divide" in str(w.message)}
    assert where == {("square_attack.py", 465)}
    for norm in ("2", "inf"):
        for seed in range(5):
            guard = NonFiniteGuard(finite_only(seen), LABEL)
            SquareAttack(norm=norm)(guard, x0, LABEL, 300, seed=seed)
            assert guard.nonfinite == 0 and guard.queries <= 300
    assert all(np.isfinite(batch).all() for batch in seen)


def test_the_square_rows_run_end_to_end(tmp_path: Path) -> None:
    """The harness's tiny Square run over HTTP: both implementations in the records, within the
    budget, ours without a non-finite image, and the page has both rows."""
    page = tmp_path / "parity.md"
    command = [
        sys.executable,
        "-m",
        "benchmarks.parity",
        "--attacks",
        "square-linf",
        "square-l2",
        "--images",
        "1",
        "--budget",
        "60",
        "--endpoints",
        "none",
        "--inprocess-images",
        "0",
        "--workers",
        "1",
        "--out",
        str(tmp_path),
        "--page",
        str(page),
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = (tmp_path / "records.jsonl").read_text().splitlines()
    records = {(r["attack"], r["implementation"]): r for r in map(json.loads, lines)}
    for attack in ("square-linf", "square-l2"):
        for impl in ("ours", "art"):
            record = records[(attack, impl)]
            assert record["endpoint"] == "none" and record["stop_reason"] != "time-limit"
            assert 1 <= record["queries"] <= 60 and record["nonfinite"] >= 0
        assert records[(attack, "ours")]["nonfinite"] == 0
    linf = [r["linf"] for r in records.values() if r["attack"] == "square-linf" and r["linf"]]
    assert all(d <= 0.3 * (1 + 1e-6) for d in linf)
    text = page.read_text()
    assert "| square-l2 | none | 1 |" in text and "| square-linf | none | 1 |" in text
    assert "| ε∞=0.3 ours | ε∞=0.3 ART | median L∞ ours |" in text
    assert "3 + 3 · `max_iter` queries in all (60 here)" in text


def record(attack: str, impl: str, image: int, **extra: Any) -> dict[str, Any]:
    return {
        "attack": attack,
        "implementation": impl,
        "endpoint": "none",
        "image": image,
        "l2": 1.0,
        "defended": True,
        "h": True,
        "started": True,
        "stop_reason": "converged",
        "queries": 50,
        "seconds": 1.0,
        **extra,
    }


def test_a_page_of_some_attacks_keeps_the_other_rows(tmp_path: Path) -> None:
    """Rerunning only Square over a records file seeded with older records (no non-finite
    counts) keeps their rows, names both commands and keeps the Reading."""
    page = tmp_path / "parity.md"
    old = "python -m benchmarks.parity --images 2 --budget 60"
    page.write_text(f"# old\n\nCommand: `{old}`. Machine: x.\n\n## Reading\n\nBy hand.\n")
    rows = [record("hsja", impl, image) for impl in ("ours", "art") for image in (1, 2)]
    rows += [record("square-l2", "ours", image, nonfinite=0) for image in (1, 2)]
    rows += [record("square-l2", "art", 1, nonfinite=7), record("square-l2", "art", 2, nonfinite=0)]
    records = {(r["attack"], r["implementation"], r["endpoint"], r["image"]): r for r in rows}
    args = argparse.Namespace(
        attacks=["square-l2"],
        endpoints=["none"],
        seed=0,
        budget=60,
        eval_draws=10,
        inprocess_images=0,
    )
    new = "python -m benchmarks.parity --attacks square-l2 --images 1 --budget 60"
    write_page(page, records, args, [1], new)
    text = page.read_text()
    assert text.count("| hsja | none | 2 |") == 2  # both verdict tables, both images
    assert "| 0 | **7 in 1/2 runs: ART broken** |" in text
    assert "| 1.00 | 1.00 | – | – | yes |" in text  # hsja: records without the count
    assert (
        f"Commands: `{new}` for square-l2; the rows of hsja are the records already in the "
        f"records file, made by `{old}`. Machine:"
    ) in text
    assert text.rstrip().endswith("## Reading\n\nBy hand.")


@pytest.mark.parametrize("name", ["square-l2", "square-linf"])
def test_art_square_is_within_budget_at_any_budget(name: str) -> None:
    x0 = np.full(SHAPE, 0.5, np.float32)
    for budget in (4, 5, 61):
        guard = NonFiniteGuard(finite_only([]), LABEL)
        seed_art(0)
        run_art(name, guard, x0, LABEL, budget)
        assert budget - 3 < guard.queries <= budget
