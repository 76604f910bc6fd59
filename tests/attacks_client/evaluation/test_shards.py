"""Shards and merge: every job in exactly one shard, two shards merged equal one run of the same
seeds (over HTTP, on a deterministic endpoint), and merge's refusals."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from attacks_client.cli import main
from attacks_client.evaluation.experiment import AttackConfig, EndpointConfig, Experiment
from attacks_client.evaluation.grid import Evaluation, evaluate
from attacks_client.evaluation.records import ACCURACY, RECORDS
from attacks_client.evaluation.report import report
from attacks_client.evaluation.shards import MergeMismatch, Shard, merge
from tests.servers import ServiceProcess

TIMING = ("seconds", "attack_seconds")


def tiny(url: str, **changes: Any) -> Experiment:
    experiment = Experiment(
        name="shards",
        endpoints=(
            EndpointConfig(name="none", url=url, model="resnet20-mnist", api_key="shard-key"),
        ),
        attacks=(AttackConfig(name="simba-dct"), AttackConfig(name="square")),
        images=3,
        budget=120,
        checkpoints=(60, 120),
        epsilons=(1.5,),
        primary_epsilon=1.5,
        eval_draws=3,
        accuracy_repeats=1,
        accuracy_images=40,
        pmis_samples=10,
        sigma_hat_images=2,
        sigma_hat_draws=3,
    )
    return dataclasses.replace(experiment, **changes)


def records(out: Path) -> dict[tuple[str, str, int], dict[str, Any]]:
    found = {}
    for line in (out / RECORDS).read_text().splitlines():
        record = json.loads(line)
        for key in TIMING:
            record.pop(key)
        found[(record["attack"], record["endpoint"], record["image"])] = record
    return found


def test_shard_parsing() -> None:
    assert Shard.parse("2/4") == Shard(2, 4) and str(Shard(2, 4)) == "2/4"
    for bad in ("0/4", "5/4", "2", "a/b", "-1/2"):
        with pytest.raises(ValueError):
            Shard.parse(bad)


def test_every_job_is_in_exactly_one_shard_whatever_the_block(tmp_path: Path) -> None:
    experiment = tiny("http://unused", images=7)
    images = [11, 5, 3, 8, 2, 9, 4]
    full = Evaluation(experiment, tmp_path, {"none": "http://unused"}).jobs(images)
    keys = {(a.key, e.name, i) for a, e, i in full}
    assert len(keys) == len(full) == 14
    for count in (1, 2, 3, 5):
        dealt: list[tuple[str, str, int]] = []
        for index in range(1, count + 1):
            shard = Shard(index, count)
            evaluation = Evaluation(experiment, tmp_path, {}, shard=shard)
            by_block = {
                block: {(a.key, e.name, i) for a, e, i in evaluation.jobs(images, block)}
                for block in (1, 4, 16)
            }
            assert by_block[1] == by_block[4] == by_block[16]  # workers never change a shard
            dealt.extend(by_block[1])
        assert sorted(dealt) == sorted(keys)


def test_two_shards_merged_equal_one_run(keyed_server: ServiceProcess, tmp_path: Path) -> None:
    experiment = tiny(keyed_server.url)
    evaluate(experiment, tmp_path / "full", workers=1, progress=False)
    for index in (1, 2):
        evaluate(
            experiment, tmp_path / f"s{index}", workers=1, progress=False, shard=Shard(index, 2)
        )
    assert not (tmp_path / "s2" / ACCURACY).exists()  # the first shard measures it
    assert 0 < len(records(tmp_path / "s2")) < len(records(tmp_path / "full"))
    assert (
        main(["merge", str(tmp_path / "s1"), str(tmp_path / "s2"), "--out", str(tmp_path / "m")])
        == 0
    )
    assert records(tmp_path / "m") == records(tmp_path / "full")
    assert (tmp_path / "m" / ACCURACY).read_text() == (tmp_path / "full" / ACCURACY).read_text()
    assert (tmp_path / "m" / "report.md").exists() is False
    assert report(tmp_path / "m").exists()  # report takes the merged directory as it is

    # refusals: a shard twice, an overlap with the whole run, a non-empty target
    with pytest.raises(MergeMismatch, match="twice"):
        merge([tmp_path / "s1", tmp_path / "s1"], tmp_path / "x")
    with pytest.raises(MergeMismatch, match="repeats the run"):
        merge([tmp_path / "full", tmp_path / "s2"], tmp_path / "y")
    with pytest.raises(MergeMismatch, match="not empty"):
        merge([tmp_path / "s1", tmp_path / "s2"], tmp_path / "m")

    # another experiment: another budget, or other images
    other = tmp_path / "other"
    shutil.copytree(tmp_path / "s2", other)
    description = json.loads((other / "experiment.json").read_text())
    (other / "experiment.json").write_text(json.dumps({**description, "budget": 999}))
    with pytest.raises(MergeMismatch, match="budget"):
        merge([tmp_path / "s1", other], tmp_path / "z")
    (other / "experiment.json").write_text(json.dumps(description))
    (other / "images.json").write_text(json.dumps({"indices": [1, 2, 3]}))
    with pytest.raises(MergeMismatch, match="other images"):
        merge([tmp_path / "s1", other], tmp_path / "w")
    assert main(["merge", str(tmp_path / "s1"), str(other), "--out", str(tmp_path / "v")]) == 2
