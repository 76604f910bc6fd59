"""``python -m attacks_client merge A B ... --out M``: join the run directories of one
experiment's shards (``evaluate --shard i/n``) into one run directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from attacks_client.cli.common import OUT, CliError, Command
from attacks_client.evaluation.shards import MergeMismatch, merge


def configure_merge(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sources", type=Path, nargs="+", help="run directories of the shards")
    parser.add_argument("--out", type=Path, required=True, help="the merged run directory (new)")


def run_merge(args: argparse.Namespace) -> int:
    try:
        out = merge(args.sources, args.out)
    except MergeMismatch as exc:
        raise CliError(str(exc)) from None
    records = sum(1 for line in (out / "records.jsonl").read_text().splitlines() if line)
    OUT.print(f"merged {len(args.sources)} run directories ({records} records) into {out}")
    OUT.print(
        f"next: python -m attacks_client rejudge --config <experiment>.toml --out {out} "
        f"(or report {out})"
    )
    return 0


COMMAND = Command(
    help="join the run directories of an experiment's shards into one (then rejudge / report)",
    configure=configure_merge,
    handler=run_merge,
)
