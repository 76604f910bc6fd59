"""Locust latency with SND on and off: starts both servers, runs the headless locust command
of ``load_tests/locustfile.py`` against each, and tabulates p50/p95/p99 and requests/s.

    python -m benchmarks.bench_locust --users 32 --seconds 30 --write docs/performance.md
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import machine, write_section  # noqa: E402
from tests.servers import ROOT, ServiceProcess  # noqa: E402

HEADING = "## Locust latency"


def locust(url: str, users: int, seconds: int, csv_prefix: Path) -> list[dict[str, str]]:
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(ROOT / "load_tests" / "locustfile.py"),
        "--headless",
        "-u",
        str(users),
        "-r",
        str(max(users // 4, 1)),
        "-t",
        f"{seconds}s",
        "--host",
        url,
        "--csv",
        str(csv_prefix),
        "--only-summary",
    ]
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
    with Path(f"{csv_prefix}_stats.csv").open() as fh:
        return list(csv.DictReader(fh))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_locust")
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("runs/locust"))
    parser.add_argument("--write", type=Path)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, settings in (
        ("SND σ=0.01", {"defense": "snd", "sigma": 0.01}),
        ("no defense", {"defense": "none"}),
    ):
        with ServiceProcess(settings) as server:
            stats = locust(server.url, args.users, args.seconds, args.out / name.split()[0].lower())
        for row in stats:
            rows.append(
                (
                    name,
                    row["Name"],
                    row["Request Count"],
                    row["Failure Count"],
                    row["50%"],
                    row["95%"],
                    row["99%"],
                    f"{float(row['Requests/s']):.1f}",
                )
            )
    command = "python -m benchmarks.bench_locust" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:])
    )
    lines = [
        HEADING,
        "",
        f"`{command}` on {machine()}: locust (FastHttpUser, {args.users} users: 3 label "
        "users to 1 score user, 8 single-image requests to 1 batch of 32) on the same "
        "machine as the server (one worker, one torch thread). Latencies in ms; the CSVs "
        f"are in `{args.out}/`.",
        "",
        "| server | request | count | failures | p50 | p95 | p99 | req/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        write_section(args.write, HEADING, text)


if __name__ == "__main__":
    main()
