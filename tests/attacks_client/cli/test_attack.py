"""``python -m attacks_client``: help, one-line errors with exit codes, an end-to-end run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from attacks_client.attacks import ATTACKS
from attacks_client.attacks.hsja import HopSkipJump
from attacks_client.attacks.params import coerce, parse_params
from attacks_client.cli import COMMANDS, main
from attacks_client.evaluation.scoring import checkpoints_for
from tests.servers import ROOT, ServiceProcess, UpstreamProcess, free_port


def test_help_lists_every_attack() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "attacks_client", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0
    for name in ATTACKS:
        assert name in out.stdout
        assert name in COMMANDS


def test_server_down_is_one_line_and_exit_2() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    out = subprocess.run(
        [sys.executable, "-m", "attacks_client", "hsja", "--url", url, "--images", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.strip() == f"error: cannot reach {url} (ConnectError)"
    assert "Traceback" not in out.stderr


def test_bad_key_and_unknown_model_exit_2(
    keyed_server: ServiceProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["hsja", "--url", keyed_server.url, "--api-key", "wrong"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "refused the API key" in err and "\n" not in err
    assert (
        main(["geoda", "--url", keyed_server.url, "--api-key", "cli-key", "--model", "nope"]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert "unknown model 'nope'" in err and "resnet20-mnist" in err


def test_bad_param_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hsja", "--param", "gama=2"]) == 2
    assert "no such hyperparameter" in capsys.readouterr().err
    assert main(["hsja", "--param", "max_iter=1.5"]) == 2
    assert "expected an integer" in capsys.readouterr().err


def test_params_are_typed_by_annotation() -> None:
    params = parse_params(HopSkipJump, ["max_iter=10", "gamma=2", "init-size=5"])
    assert params == {"max_iter": 10, "gamma": 2.0, "init_size": 5}
    assert isinstance(params["gamma"], float)
    assert coerce("none", int | None) is None and coerce("3", int | None) == 3
    assert coerce("true", bool) is True
    assert checkpoints_for([1000, 2000, 5000, 10000], 3000) == [1000, 2000, 3000]


def test_attack_run_writes_records(
    keyed_server: ServiceProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "runs" / "hsja.jsonl"
    status = main(
        [
            "hsja",
            "--url",
            keyed_server.url,
            "--api-key",
            "cli-key",
            "--eval-api-key",
            "eval-key",
            "--images",
            "2",
            "--budget",
            "400",
            "--checkpoints",
            "100,200,1000",
            "--epsilon",
            "2",
            "3",
            "--eval-draws",
            "3",
            "--param",
            "init_num_evals=50",
            "--output",
            str(output),
            "--quiet",
        ]
    )
    assert status == 0
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(records) == 2
    for record in records:
        assert record["attack"] == "hsja" and record["params"]["init_num_evals"] == 50
        assert record["checkpoints"] == [100, 200, 400]
        assert record["queries"] <= 400 and record["stop_reason"] in ("budget", "converged")
        assert set(record["success"]) == {"2", "3"}
        assert len(record["l2"]) == len(record["misclassified"]) == 3
        assert len(record["query_l2"]) == -(-record["queries"] // record["query_l2_stride"])
        assert record["defense"] == {"kind": "none"} and record["model"] == "resnet20-mnist"
        l2 = [v for v in record["l2"] if v is not None]
        assert l2[-1] <= l2[0]
        assert record["misclassified"][-1]  # undefended: the candidate is adversarial
    shown = capsys.readouterr().out
    assert "success ε=2" in shown and "queries/s" in shown


def test_repeat_charges_t_queries_per_logical_query(
    keyed_server: ServiceProcess, tmp_path: Path
) -> None:
    output = tmp_path / "repeat.jsonl"
    status = main(
        [
            "boundary",
            "--url",
            keyed_server.url,
            "--api-key",
            "cli-key",
            "--images",
            "1",
            "--budget",
            "300",
            "--repeat",
            "3",
            "--eval-draws",
            "1",
            "--output",
            str(output),
            "--quiet",
            "--trajectory-stride",
            "1",
        ]
    )
    assert status == 0
    (record,) = [json.loads(line) for line in output.read_text().splitlines()]
    assert record["repeat"] == 3
    assert record["queries"] <= 300 and record["queries"] % 3 == 0
    assert len(record["query_l2"]) == record["queries"]  # one entry per real query


@pytest.mark.parametrize("form", ["v2+http", "--protocol v2"])
def test_attack_over_the_open_inference_protocol(
    keyed_server: ServiceProcess, tmp_path: Path, form: str
) -> None:
    output = tmp_path / "v2.jsonl"
    if form == "v2+http":
        endpoint = ["--url", "v2+" + keyed_server.url]
    else:
        endpoint = ["--url", keyed_server.url, "--protocol", "v2"]
    common = ["--model", "resnet20-mnist", "--api-key", "cli-key", "--images", "1"]
    common += ["--budget", "300", "--eval-draws", "2", "--output", str(output), "--quiet"]
    assert main(["hsja", *endpoint, *common, "--param", "init_num_evals=50"]) == 0
    (record,) = [json.loads(line) for line in output.read_text().splitlines()]
    assert 0 < record["queries"] <= 300 and record["misclassified"][-1]  # undefended model
    assert record["model"] == "resnet20-mnist"


def test_attack_a_kserve_server_directly(kserve_upstream: UpstreamProcess, tmp_path: Path) -> None:
    """No gateway at all: a score-based attack on kserve's own model (logits, its names)."""
    output = tmp_path / "kserve.jsonl"
    status = main(
        [
            "simba",
            "--url",
            f"v2+{kserve_upstream.url}",
            "--model",
            "resnet20",
            "--images",
            "1",
            "--budget",
            "300",
            "--eval-draws",
            "1",
            "--output",
            str(output),
            "--quiet",
        ]
    )
    assert status == 0
    (record,) = [json.loads(line) for line in output.read_text().splitlines()]
    assert record["model"] == "resnet20" and 0 < record["queries"] <= 300


def test_square_command_runs_in_both_norms_and_adaptive(
    keyed_server: ServiceProcess, tmp_path: Path
) -> None:
    """``python -m attacks_client square --param norm=2 --param epsilon=1.5`` over HTTP, and
    the adaptive form (``--repeat 4 --param confirm=3``), within budget and inside the ball."""
    common = ["--url", keyed_server.url, "--api-key", "cli-key", "--eval-api-key", "eval-key"]
    common += ["--images", "1", "--budget", "400", "--checkpoints", "400", "--quiet"]
    runs = {
        "l2": ["--param", "norm=2", "--param", "epsilon=1.5", "--epsilon", "1.5"],
        "adaptive": ["--repeat", "4", "--param", "confirm=3", "--epsilon", "1.5"],
        "linf": ["--param", "norm=inf", "--param", "epsilon=0.3"],  # judged in L∞ at 0.3
    }
    for name, extra in runs.items():
        output = tmp_path / f"{name}.jsonl"
        assert main(["square", *common, *extra, "--output", str(output)]) == 0
        records = [json.loads(line) for line in output.read_text().splitlines()]
        assert len(records) == 1
        for record in records:
            assert record["attack"] == "square" and record["queries"] <= 400
            l2 = [v for v in record["l2"] if v is not None]
            if name != "linf":
                assert record["norm"] == "l2" and set(record["success"]) == {"1.5"}
                assert all(v <= 1.5 + 1e-5 for v in l2)
                assert record["queries"] % 4 == 0 if name == "adaptive" else True
            else:  # the L∞ ball's attack is judged in L∞, at its own epsilon by default
                assert record["norm"] == "linf" and set(record["success"]) == {"0.3"}
                assert all(v <= 0.3 + 1e-6 for v in record["linf"] if v is not None)
                assert record["success"]["0.3"][-1]
                assert max(v for v in l2) > 0.3  # so an L2 verdict at 0.3 would say fail
        # undefended, Square fools the first image (459) within 400 queries at these radii (L2
        # 1.5: about 50-140 queries, also adaptive; L∞ 0.3: 1)
        assert records[0]["misclassified"][-1], (name, records[0]["queries"])
