"""The evaluation harness end to end: a small grid against real services, the report's tables,
resuming, and the evaluator identity kept apart from the attacker's count."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from attacks_client.data import load_images
from attacks_client.evaluation.experiment import AttackConfig, EndpointConfig, Experiment
from attacks_client.evaluation.grid import Evaluation, evaluate
from attacks_client.evaluation.records import RECORDS, decode_array
from attacks_client.evaluation.report import report
from attacks_client.evaluation.resume import ResumeMismatch, RunInProgress, run_lock
from attacks_client.evaluation.runs import Run
from tests.servers import ServiceProcess

KEYS = {"attacker": "attacker-secret", "evaluator": "evaluator-secret"}
ADMIN = "admin-secret"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(scope="module")
def keyed_servers() -> Iterator[dict[str, ServiceProcess]]:
    common = {
        "api_keys": {sha(k): name for name, k in KEYS.items()},
        "admin_token_sha256": sha(ADMIN),
    }
    with (
        ServiceProcess({**common, "defense": "none"}) as plain,
        ServiceProcess({**common, "defense": "snd", "sigma": 0.01}) as snd,
    ):
        yield {"none": plain, "snd": snd}


def small_grid(servers: dict[str, ServiceProcess], images: int = 2) -> Experiment:
    endpoints = tuple(
        EndpointConfig(
            name=name, url=server.url, api_key=KEYS["attacker"], eval_api_key=KEYS["evaluator"]
        )
        for name, server in servers.items()
    )
    return Experiment(
        name="small",
        endpoints=endpoints,
        attacks=(AttackConfig(name="hsja"), AttackConfig(name="simba-dct")),
        images=images,
        budget=200,
        checkpoints=(100, 200),
        epsilons=(1.5, 3.0),
        primary_epsilon=1.5,
        eval_draws=5,
        accuracy_repeats=2,
        accuracy_images=100,
        pmis_samples=50,
        sigma_hat_images=5,
        sigma_hat_draws=10,
    )


def endpoint_urls(experiment: Experiment) -> dict[str, str]:
    return {e.name: str(e.url) for e in experiment.endpoints}


def usage(server: ServiceProcess, caller: str) -> int:
    r = httpx.get(f"{server.url}/usage/{caller}", headers={"Authorization": f"Bearer {ADMIN}"})
    r.raise_for_status()
    return int(r.json()["total"])


def records(directory: Path) -> list[dict]:
    return [json.loads(line) for line in (directory / RECORDS).read_text().splitlines()]


def test_small_grid_end_to_end(keyed_servers: dict[str, ServiceProcess], tmp_path: Path) -> None:
    before = {
        name: (usage(s, "key:attacker"), usage(s, "key:evaluator"))
        for name, s in keyed_servers.items()
    }
    experiment = small_grid(keyed_servers)
    evaluate(experiment, tmp_path, workers=2, progress=False)
    rows = records(tmp_path)
    assert len(rows) == 2 * 2 * 2
    assert {(r["attack"], r["endpoint"]) for r in rows} == {
        (a, e) for a in ("hsja", "simba-dct") for e in ("none", "snd")
    }
    for row in rows:
        assert row["queries"] <= 200
        assert set(row["checkpoints"]) == {"100", "200"}
        for check in row["checkpoints"].values():
            if check["candidate"] is not None:
                x = decode_array(check["candidate"], (1, 28, 28))
                assert abs(float(np.linalg.norm(x - x.clip(0, 1)))) == 0.0
    # the attacker is charged exactly the attacks' queries; the evaluator's checks go elsewhere
    for name, server in keyed_servers.items():
        mine = [r for r in rows if r["endpoint"] == name]
        attacker = usage(server, "key:attacker") - before[name][0]
        assert attacker == sum(r["queries"] for r in mine)
        evaluator = usage(server, "key:evaluator") - before[name][1]
        judged = sum(r["judge_queries"] for r in mine)
        assert judged > 0  # success is judged on the attacked (defended) endpoint itself
        selection_and_pmis = 0 if name == "snd" else None
        accuracy = 2 * 100 + 5 * 10  # 2 passes of 100 images, σ̂ from 10 draws of 5 images
        if selection_and_pmis is not None:
            assert evaluator == accuracy + judged
        else:  # the reference endpoint also picks the images and answers h(x) for P_mis
            assert evaluator > accuracy + judged
    # P_mis: zero on the deterministic model, measured on the defended one
    assert all(r["p_mis"]["mismatches"] == 0 for r in rows if r["endpoint"] == "none")
    clean = {r["endpoint"]: r for r in map(json.loads, (tmp_path / "accuracy.jsonl").open())}
    assert clean["none"]["clean_p_mis"] == 0 and clean["none"]["sigma_hat"] < 1e-4  # float noise
    # the served network is named (zoo-defended models such as RSE show "none" as defense)
    assert {r["architecture"] for r in clean.values()} == {"resnet20-mnist"}
    assert all(r["input_shape"] == [1, 28, 28] for r in clean.values())
    assert clean["snd"]["sigma_hat"] > 0  # the margin loss moves under σ = 0.01 noise

    path = report(tmp_path)
    text = path.read_text()
    for heading in (
        "Table 1",
        "Tables 2/3",
        "ε = 3.0",
        "Table 5",
        "Table 7",
        "Median L2",
        "At a glance",
        "95% intervals",
    ):
        assert heading in text
    # the glance row of each attack has one cell per endpoint, with that cell's image count
    glance = text.split("## At a glance")[1].split("\n## ")[0]
    hsja_row = next(line for line in glance.splitlines() if line.startswith("| hsja |"))
    assert hsja_row.count("n=2") == len(keyed_servers)
    assert (tmp_path / "tables" / "table1_clean_accuracy.csv").exists()
    assert {p.name for p in (tmp_path / "tables").glob("success_interval_*.csv")} == {
        "success_interval_eps1.5.csv",
        "success_interval_eps3.0.csv",
    }
    assert (tmp_path / "plots" / "l2_hsja.png").stat().st_size > 1000


def test_a_killed_run_resumes_without_redoing_records(
    keyed_servers: dict[str, ServiceProcess], tmp_path: Path
) -> None:
    experiment = small_grid(keyed_servers, images=1)
    evaluate(experiment, tmp_path, workers=1, progress=False)
    lines = (tmp_path / RECORDS).read_text().splitlines()
    assert len(lines) == 4
    # a run killed after two records: only those two survive
    (tmp_path / RECORDS).write_text("\n".join(lines[:2]) + "\n")
    evaluation = Evaluation(experiment, tmp_path, endpoint_urls(experiment))
    images = evaluation.select_images(__import__("attacks_client.data").data.load_images())
    missing = evaluation.jobs(images)
    assert len(missing) == 2
    attacker_before = sum(usage(s, "key:attacker") for s in keyed_servers.values())
    evaluate(experiment, tmp_path, workers=1, progress=False)
    after = (tmp_path / RECORDS).read_text().splitlines()
    assert after[:2] == lines[:2] and len(after) == 4
    spent = sum(usage(s, "key:attacker") for s in keyed_servers.values()) - attacker_before
    assert spent == sum(json.loads(x)["queries"] for x in after[2:])
    evaluate(experiment, tmp_path, workers=1, progress=False)  # nothing left to do
    assert len((tmp_path / RECORDS).read_text().splitlines()) == 4


def test_resuming_with_other_attack_parameters_is_refused(
    keyed_servers: dict[str, ServiceProcess], tmp_path: Path
) -> None:
    """Records made with one setting are never mixed with another's in a resumed run."""
    experiment = small_grid(keyed_servers, images=1)
    evaluate(experiment, tmp_path, workers=1, progress=False)
    image = records(tmp_path)[0]["image"]
    changed = dataclasses.replace(
        experiment,
        attacks=(AttackConfig(name="hsja", params={"gamma": 2.0}), AttackConfig(name="simba-dct")),
    )
    evaluation = Evaluation(changed, tmp_path, endpoint_urls(changed))
    with pytest.raises(ResumeMismatch, match="gamma"):
        evaluation.jobs([image])
    # P_mis names the endpoint it was measured against (the reference by default)
    assert {r["p_mis"]["reference"] for r in records(tmp_path)} == {experiment.reference.name}
    # settings every record depends on are checked too, before anything runs
    with pytest.raises(ResumeMismatch, match="budget"):
        evaluate(dataclasses.replace(experiment, budget=300), tmp_path, progress=False)
    # the same values, spelled out, are no change
    same = dataclasses.replace(
        experiment, attacks=(AttackConfig(name="hsja"), AttackConfig(name="simba-dct", params={}))
    )
    assert Evaluation(same, tmp_path, endpoint_urls(same)).jobs([image]) == []
    # records made under another default (here: before HSJA had a variant) are refused too
    lines = [json.loads(x) for x in (tmp_path / RECORDS).read_text().splitlines()]
    for line in lines:
        line["params"].pop("variant", None)
    (tmp_path / RECORDS).write_text("".join(json.dumps(x) + "\n" for x in lines))
    with pytest.raises(ResumeMismatch, match="variant"):
        Evaluation(same, tmp_path, endpoint_urls(same)).jobs([image])


def test_experiment_toml_is_validated(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[[endpoints]]\nname = "a"\nurl = "http://x"\n[[attacks]]\nname = "nope"\n')
    with pytest.raises(ValueError, match="unknown attack"):
        Experiment.load(path)
    path.write_text('[[endpoints]]\nname = "a"\n[[attacks]]\nname = "hsja"\n')
    with pytest.raises(ValueError, match="url"):
        Experiment.load(path)
    path.write_text(
        '[serve]\ndefense = "none"\n[[endpoints]]\nname = "a"\n'
        '[[attacks]]\nname = "hsja"\nrepeat = 5\n'
    )
    experiment = Experiment.load(path)
    assert experiment.serve == {"defense": "none"} and experiment.attacks[0].key == "hsja (T=5)"


def test_report_names_the_network_of_rows_written_without_it(tmp_path: Path) -> None:
    """Accuracy rows from before ``architecture`` was recorded take the zoo entry of the model
    the run served; an endpoint at an outside URL stays unnamed."""
    experiment = {
        "endpoints": [
            {"name": "rse", "serve": None, "url": None, "model": "rse"},
            {"name": "own", "serve": {"zoo": "resnet20-mnist"}, "url": None, "model": None},
            {"name": "far", "serve": None, "url": "http://example.test", "model": "x"},
        ],
        "serve": {"models": [{"name": "rse", "zoo": "resnet20-mnist-rse"}]},
    }
    run = Run(tmp_path, experiment, [], [])
    assert run.architecture({"endpoint": "rse"}) == "resnet20-mnist-rse"
    assert run.architecture({"endpoint": "own"}) == "resnet20-mnist"
    assert run.architecture({"endpoint": "far"}) is None
    assert run.architecture({"endpoint": "far", "architecture": "resnet50"}) == "resnet50"


def test_a_second_writer_of_one_run_directory_is_refused(tmp_path: Path) -> None:
    """While one process holds the run directory, another evaluate stops before writing or
    starting anything (two writers would run and append the same records twice)."""
    experiment = Experiment(
        name="locked",
        attacks=(AttackConfig(name="hsja"),),
        images=1,
        budget=10,
        checkpoints=(10,),
        epsilons=(1.5,),
        primary_epsilon=1.5,
        endpoints=(EndpointConfig(name="none", url="http://127.0.0.1:9", reference=True),),
    )
    with run_lock(tmp_path):
        with pytest.raises(RunInProgress, match=f"pid {os.getpid()}"):
            evaluate(experiment, tmp_path, progress=False)
        assert not (tmp_path / "experiment.json").exists()
    with run_lock(tmp_path):  # released with its holder
        pass


def test_report_finds_the_image_size_without_stored_candidates(tmp_path: Path) -> None:
    """E‖η‖₂ needs the pixels per image: the accuracy row's input shape, or else the run's
    dataset (committed records may drop their candidates to stay small)."""
    from attacks_client.evaluation.report import Report

    experiment = {"dataset": "embedded", "endpoints": [{"name": "a"}, {"name": "b"}]}
    rows: list[dict[str, Any]] = [{"endpoint": "a", "input_shape": [3, 32, 32]}, {"endpoint": "b"}]
    report_ = Report(Run(tmp_path, experiment, [], rows))
    assert report_._dimension("a") == 3 * 32 * 32
    assert report_._dimension("b") == 28 * 28


def test_linf_rows_are_judged_in_linf_and_the_evaluator_asks_its_own_model(
    tmp_path: Path,
) -> None:
    """A Square L∞ row is judged by the candidates' L∞ distance at ``linf_epsilons`` and tabled
    apart from the L2 rows; with ``eval_model`` the judge's draws go to the same network and
    defense without stateful detection, never to the attacked (detecting) model."""
    snd = {"kind": "snd", "sigma": 0.01}
    settings = {
        "api_keys": {sha(k): name for name, k in KEYS.items()},
        "admin_token_sha256": sha(ADMIN),
        "models": [
            {
                "name": "guarded",
                "zoo": "resnet20-mnist",
                "defense": snd,
                "detection": {"action": "enforce"},
            },
            {"name": "open", "zoo": "resnet20-mnist", "defense": snd},
        ],
    }
    with ServiceProcess(settings) as server:
        endpoint = EndpointConfig(
            name="guarded",
            url=server.url,
            model="guarded",
            eval_model="open",
            api_key=KEYS["attacker"],
            eval_api_key=KEYS["evaluator"],
        )
        linf = AttackConfig(
            name="square", label="square-linf", norm="linf", params={"norm": "inf", "epsilon": 0.3}
        )
        l2 = AttackConfig(name="square", params={"norm": "2", "epsilon": 1.5})
        experiment = dataclasses.replace(
            small_grid({}, images=2),
            endpoints=(endpoint,),
            attacks=(linf, l2),
            linf_epsilons=(0.1, 0.3),
            budget=100,
            checkpoints=(100,),
        )
        evaluate(experiment, tmp_path, workers=2, progress=False)
        admin = {"Authorization": f"Bearer {ADMIN}"}
        attacker = httpx.get(f"{server.url}/usage/key:attacker", headers=admin).json()
        evaluator = httpx.get(f"{server.url}/usage/key:evaluator", headers=admin).json()
    rows = records(tmp_path)
    assert {(r["attack"], r["norm"]) for r in rows} == {("square-linf", "linf"), ("square", "l2")}
    for row in rows:
        check = row["checkpoints"]["100"]
        if check["candidate"] is None:
            continue
        x0 = load_images("embedded").images[row["image"]]
        x = decode_array(check["candidate"], (1, 28, 28))
        assert check["linf"] == pytest.approx(float(np.abs(x - x0).max()), abs=1e-6)
        bound = 0.3 if row["norm"] == "linf" else 1.5
        measured = check["linf"] if row["norm"] == "linf" else check["l2"]
        assert measured <= bound + 1e-6
    # the attacker asked only the detecting model, the evaluator only the open one
    assert set(attacker["models"]) == {"guarded"} and attacker["total"] == sum(
        r["queries"] for r in rows
    )
    assert set(evaluator["models"]) == {"open"}
    text = report(tmp_path).read_text()
    assert "L∞ attacks at a glance" in text and "ε∞ = 0.3" in text
    l2_glance = text.split("## At a glance")[1].split("\n## ")[0]
    linf_glance = text.split("## L∞ attacks at a glance")[1].split("\n## ")[0]
    assert "| square |" in l2_glance and "square-linf" not in l2_glance
    assert "| square-linf |" in linf_glance and "| square |" not in linf_glance
    run = Run.load(tmp_path)
    linf_rows = run.select("square-linf", "guarded")
    # judged in L∞: every success at 0.3 is a candidate within 0.3 in L∞ (its L2 is far larger)
    assert all(
        r["checkpoints"]["100"]["l2"] > 1.5
        for r in linf_rows
        if r["checkpoints"]["100"]["misclassified"]
    )
    assert (tmp_path / "tables" / "success_interval_linf_eps0.3.csv").exists()
