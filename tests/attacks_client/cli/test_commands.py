"""The evaluate, report and demo sub-commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from attacks_client.cli import main
from tests.servers import ROOT, check_alive, wait_for


def test_demo_prints_both_rows(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "attacks_client",
            "demo",
            "--images",
            "1",
            "--budget",
            "200",
            "--out",
            str(tmp_path / "demo"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "undefended" in out.stdout and "snd-0.01" in out.stdout
    assert "hsja succeeded on" in out.stdout and "simba-dct succeeded on" in out.stdout
    assert "square (confirm=3) succeeded on" in out.stdout
    # the closing sentence names the strongest attack behind SND, or says none succeeded
    assert "The strongest attack here" in out.stdout or "No attack here succeeded" in out.stdout
    assert (tmp_path / "demo" / "records.jsonl").read_text().count("\n") == 3 * 1 * 2


def test_evaluate_and_report_commands(tmp_path: Path) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(
        'name = "tiny"\nimages = 1\nbudget = 100\ncheckpoints = [50, 100]\n'
        "epsilons = [1.5]\nprimary_epsilon = 1.5\naccuracy_repeats = 1\naccuracy_images = 50\n"
        '[serve]\nmodels = [{ name = "m-snd", zoo = "resnet20-mnist", '
        'defense = { kind = "snd", sigma = 0.01 } }]\n'
        '[[endpoints]]\nname = "snd"\nmodel = "m-snd"\n'
        '[[attacks]]\nname = "hsja"\n'
    )
    out = tmp_path / "run"
    assert main(["evaluate", "--config", str(config), "--out", str(out), "--quiet"]) == 0
    assert (out / "report.md").exists()
    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0
    assert "Table 1" in (out / "report.md").read_text()


def test_clear_errors(tmp_path: Path) -> None:
    assert main(["evaluate", "--config", str(tmp_path / "missing.toml")]) == 2
    assert main(["report", str(tmp_path)]) == 2
    bad = tmp_path / "bad.toml"
    bad.write_text('[[endpoints]]\nname = "a"\nurl = "http://x"\n[[attacks]]\nname = "nope"\n')
    assert main(["evaluate", "--config", str(bad)]) == 2


def answered(port: int) -> float:
    """Images the service on ``port`` has answered (its ``snd_queries_answered`` metric)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "snd_queries_answered_total"
    )


def test_sigterm_stops_the_services_evaluate_started(tmp_path: Path) -> None:
    import signal

    import psutil

    config = tmp_path / "long.toml"
    config.write_text(
        'name = "long"\nimages = 2\nbudget = 100000\ncheckpoints = [1000]\nepsilons = [1.5]\n'
        "primary_epsilon = 1.5\naccuracy_repeats = 1\naccuracy_images = 20\n"
        '[[endpoints]]\nname = "snd"\nserve = { defense = "snd", sigma = 0.01 }\n'
        '[[attacks]]\nname = "boundary"\n'
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "attacks_client",
            "evaluate",
            "--config",
            str(config),
            "--out",
            str(tmp_path / "run"),
            "--quiet",
        ],
        cwd=ROOT,
    )
    run = tmp_path / "run"

    def measured_accuracy() -> bool:
        check_alive(proc, "evaluate", "")
        return (run / "accuracy.jsonl").exists()

    wait_for(measured_accuracy, 120, "evaluate's accuracy measurement")
    children = psutil.Process(proc.pid).children(recursive=True)
    ports = [int(c.environ()["SND_PORT"]) for c in children if "service" in c.cmdline()]
    assert ports, f"evaluate started no service: {[c.cmdline() for c in children]}"
    # SIGTERM mid-attack: once the service answers queries past the accuracy measurement
    answered_then = answered(ports[0])

    def attacking() -> bool:
        check_alive(proc, "evaluate", "")
        return answered(ports[0]) > answered_then

    wait_for(attacking, 60, "the attack's queries")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 143
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive
