"""``calibrate``: the choice rule on synthetic rows, and a tiny sweep end to end on real servers,
interrupted and resumed."""

from __future__ import annotations

import csv
import json
import math
import shlex
from pathlib import Path
from typing import Any

import pytest

from attacks_client.cli import main
from attacks_client.evaluation.calibration import (
    CalibrationPlan,
    CalibrationRow,
    calibration_experiment,
    choose_sigma,
    sigma_of,
    verdict,
)
from tests.servers import ServiceProcess


def row(sigma: float, accuracy: float) -> CalibrationRow:
    return CalibrationRow(f"sigma-{sigma:g}", sigma, accuracy, 0.1)


def chosen(rows: list[CalibrationRow], drop: float) -> float:
    choice = choose_sigma(rows, drop)
    assert choice is not None
    return choice.sigma


def test_the_largest_sigma_within_the_drop_is_chosen() -> None:
    rows = [row(0, 98.0), row(0.001, 97.8), row(0.005, 96.9), row(0.01, 97.5), row(0.02, 96.0)]
    # 97.5 is exactly 0.5 below: still within, and the dip at 0.005 does not stop the search
    assert chosen(rows, 0.5) == 0.01
    assert chosen(rows, 0.4) == 0.001
    assert chosen(rows, 0.0) == 0
    assert chosen(rows, 5.0) == 0.02
    # without σ = 0 the smallest σ (97.8) is the baseline; no rows, no choice
    assert chosen(rows[1:], 0.2) == 0.001
    assert chosen(rows[1:], 0.3) == 0.01
    assert choose_sigma([], 0.5) is None


def test_sigma_is_read_from_the_defense_and_a_hidden_one_is_refused() -> None:
    assert sigma_of({"kind": "none"}) == 0.0
    assert sigma_of({"kind": "snd", "sigma": 0.002}) == 0.002
    with pytest.raises(ValueError, match="hides"):
        sigma_of({"kind": "snd"})
    with pytest.raises(ValueError, match="hidden"):
        sigma_of({})
    with pytest.raises(ValueError, match="'rp'"):
        sigma_of({"kind": "rp"})


def test_a_plan_is_checked() -> None:
    with pytest.raises(ValueError, match="σ"):
        CalibrationPlan(sigmas=(0, 2.0))
    with pytest.raises(ValueError, match="models"):
        CalibrationPlan(url="http://127.0.0.1:1")
    plan = CalibrationPlan(sigmas=(0.01, 0, 0.01), weights="w.pt")
    experiment = calibration_experiment(plan)
    assert [e.name for e in experiment.endpoints] == ["sigma-0", "sigma-0.01"]
    assert experiment.reference.name == "sigma-0"
    models = experiment.serve["models"]  # type: ignore[index]
    assert models[0]["defense"] == {"kind": "none"} and models[1]["weights"] == "w.pt"
    assert [a.key for a in experiment.attacks] == [
        "hsja",
        "popskipjump",
        "simba-dct",
        "bandit-td",
        "square",
        "square (confirm=3)",
    ]
    square, adaptive = experiment.attacks[4:]
    # the Square Attack searches the calibration's L2 ball; the adaptive one confirms a success
    # on 3 fresh answers before it stops
    assert square.params == {"norm": "2", "epsilon": plan.epsilon} and square.repeat == 1
    assert adaptive.params == {"norm": "2", "epsilon": plan.epsilon, "confirm": 3}


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


TINY = shlex.split(
    "--images 2 --budget 150 --attacks simba-dct --accuracy-repeats 2 --accuracy-images 200 "
    "--sigma-hat-images 10 "
    "--max-accuracy-drop 1 --workers 2 --quiet"
)


def test_a_tiny_sweep_end_to_end_and_resumed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cal"
    assert main(["calibrate", "--sigmas", "0", "0.01", "--out", str(out), *TINY]) == 0
    printed = capsys.readouterr().out
    assert "Run σ =" in printed and "page:" in printed
    records = lines(out / "records.jsonl")
    assert sorted((r["endpoint"], r["image"]) for r in records) == sorted(
        (e, i) for e in ("sigma-0", "sigma-0.01") for i in {r["image"] for r in records}
    )
    assert len(records) == 4 and all(r["queries"] <= 150 for r in records)
    with (out / "calibration.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert [float(r["sigma"]) for r in table] == [0.0, 0.01]
    clean = float(table[0]["accuracy_mean"])
    assert 90 < clean <= 100 and float(table[0]["accuracy_std"]) == 0  # no noise, no spread
    assert abs(float(table[1]["accuracy_mean"]) - clean) < 3  # σ = 0.01 costs little
    assert float(table[0]["clean_p_mis"]) == 0 and float(table[1]["sigma_hat"]) > 0
    assert all(0 <= float(r["simba-dct_success"]) <= 1 for r in table)
    pick = 0.01 if float(table[1]["accuracy_mean"]) >= clean - 1 else 0.0
    page = (out / "calibration.md").read_text()
    assert f"Run σ = {pick:g}:" in page and "python -m attacks_client calibrate" in page
    assert (out / "calibration.png").stat().st_size > 10_000

    # the same command again: nothing is rerun; one more σ: only its records are added
    assert main(["calibrate", "--sigmas", "0", "0.01", "--out", str(out), *TINY]) == 0
    assert lines(out / "records.jsonl") == records
    assert main(["calibrate", "--sigmas", "0", "0.001", "0.01", "--out", str(out), *TINY]) == 0
    again = lines(out / "records.jsonl")
    assert again[:4] == records and {r["endpoint"] for r in again[4:]} == {"sigma-0.001"}
    assert len(again) == 6 and len(lines(out / "accuracy.jsonl")) == 3
    capsys.readouterr()
    # a changed budget is refused rather than mixed
    changed = [*TINY]
    changed[changed.index("150")] = "200"
    assert main(["calibrate", "--sigmas", "0", "0.01", "--out", str(out), *changed]) == 2
    assert "budget" in capsys.readouterr().err
    assert not math.isnan(clean)


def test_a_running_gateway_is_calibrated_by_its_models(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = [
        {"name": "plain", "zoo": "resnet20-mnist", "defense": {"kind": "none"}},
        {"name": "noisy", "zoo": "resnet20-mnist", "defense": {"kind": "snd", "sigma": 0.02}},
        {
            "name": "hidden",
            "zoo": "resnet20-mnist",
            "defense": {"kind": "snd", "sigma": 0.02},
            "hide_defense_params": True,
        },
    ]
    out = tmp_path / "gateway"
    with ServiceProcess({"models": models}) as server:
        args = ["calibrate", "--url", server.url, *TINY]
        assert main([*args, "--out", str(out), "--models", "plain", "noisy"]) == 0
        with (out / "calibration.csv").open() as fh:
            table = list(csv.DictReader(fh))
        assert [(r["endpoint"], float(r["sigma"])) for r in table] == [
            ("plain", 0.0),
            ("noisy", 0.02),
        ]
        # a model whose σ the gateway hides cannot be calibrated: a clear error, exit 2
        capsys.readouterr()
        hidden = ["--out", str(tmp_path / "hidden"), "--models", "plain", "hidden"]
        assert main([*args, *hidden]) == 2
        assert "'hidden'" in capsys.readouterr().err
        assert not (tmp_path / "hidden" / "records.jsonl").exists()  # refused before attacking


def test_the_verdict_names_the_choice_and_warns_at_the_edge_of_the_sweep() -> None:
    rows = [row(0, 98.0), row(0.01, 97.9), row(0.02, 97.0)]
    inside = verdict(rows, choose_sigma(rows, 0.5), 0.5)
    assert inside.startswith("Run σ = 0.01:") and "extend --sigmas" not in inside
    edge = verdict(rows, choose_sigma(rows, 2.0), 2.0)
    assert edge.startswith("Run σ = 0.02:") and "extend --sigmas upward" in edge
    assert verdict([], None, 0.5) == "No σ was measured."
