"""Shards across machines: ``evaluate --shard i/n`` and ``merge``.

An experiment's jobs (attack × endpoint × image) are dealt round-robin over ``n`` shards in the
grid's canonical order (image, then attack, then endpoint, as in the experiment file), so shard
``i`` of ``n`` is the same set of jobs on every machine and for any number of workers. Each shard
runs into its own run directory (``shard.json`` says which it is); the first shard also measures
the clean accuracy. :func:`merge` joins run directories of one experiment into one that
``rejudge`` and ``report`` take as they are, refusing directories of other experiments (any
setting, budget or attack parameter), other images, or jobs present twice.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attacks_client.evaluation.records import ACCURACY, IMAGES, RECORDS, read_lines

SHARD = "shard.json"
MERGED = "merged.json"


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.index <= self.count:
            raise ValueError(f"shard {self.index}/{self.count}: need 1 <= i <= n")

    @classmethod
    def parse(cls, text: str) -> Shard:
        found = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if found is None:
            raise ValueError(f"a shard is written i/n (e.g. 2/4), not {text!r}")
        return cls(int(found.group(1)), int(found.group(2)))

    def owns(self, position: int) -> bool:
        """Whether the job at ``position`` of the canonical order is this shard's."""
        return position % self.count == self.index - 1

    @property
    def first(self) -> bool:
        return self.index == 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def write_shard(out_dir: Path, shard: Shard | None) -> None:
    """Mark ``out_dir`` as ``shard``'s, refusing a directory of another shard (or none)."""
    path = out_dir / SHARD
    old = json.loads(path.read_text()) if path.exists() else None
    new = None if shard is None else {"index": shard.index, "count": shard.count}
    if read_lines(out_dir / RECORDS) and old != new:
        was = "no shard" if old is None else f"shard {old['index']}/{old['count']}"
        raise MergeMismatch(f"{out_dir} holds the records of {was}; use a new output directory")
    if new is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(json.dumps(new))


class MergeMismatch(ValueError):
    """Run directories that cannot be joined (other experiment, images, or overlapping jobs)."""


def _job(record: dict[str, Any]) -> tuple[str, str, int]:
    return record["attack"], record["endpoint"], int(record["image"])


def _read(source: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    missing = [name for name in ("experiment.json", IMAGES) if not (source / name).is_file()]
    if missing:
        raise MergeMismatch(f"{source} is not a run directory (no {', '.join(missing)})")
    shard = json.loads((source / SHARD).read_text()) if (source / SHARD).exists() else None
    return (
        json.loads((source / "experiment.json").read_text()),
        json.loads((source / IMAGES).read_text()),
        shard,
    )


def _differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return sorted(k for k in a.keys() | b.keys() if json.dumps(a.get(k)) != json.dumps(b.get(k)))


def merge(sources: list[Path], out: Path) -> Path:
    """Join the run directories ``sources`` of one experiment into ``out`` (new or empty)."""
    if len(sources) < 2:
        raise MergeMismatch("merge needs at least two run directories")
    if out.exists() and any(out.iterdir()):
        raise MergeMismatch(f"{out} is not empty; merge into a new directory")
    experiment, images, _ = _read(sources[0])
    counts: set[int] = set()
    indices: set[int] = set()
    for source in sources:
        other, other_images, shard = _read(source)
        changed = _differences(experiment, other)
        if changed:
            raise MergeMismatch(
                f"{source} was run with other settings than {sources[0]} "
                f"({', '.join(changed)}): not the same experiment"
            )
        if other_images.get("indices") != images.get("indices"):
            raise MergeMismatch(f"{source} attacked other images than {sources[0]}")
        if shard is not None:
            counts.add(int(shard["count"]))
            if int(shard["index"]) in indices:
                raise MergeMismatch(f"shard {shard['index']} is given twice ({source})")
            indices.add(int(shard["index"]))
    if len(counts) > 1:
        raise MergeMismatch(f"the directories were sharded differently (n = {sorted(counts)})")
    records: dict[tuple[str, str, int], str] = {}
    accuracy: dict[str, str] = {}
    for source in sources:
        for line in read_lines(source / RECORDS):
            job = _job(json.loads(line))
            if job in records:
                raise MergeMismatch(f"{source} repeats the run {job} of another directory")
            records[job] = line
        for line in read_lines(source / ACCURACY):
            accuracy.setdefault(json.loads(line)["endpoint"], line)
    out.mkdir(parents=True, exist_ok=True)
    (out / "experiment.json").write_text(json.dumps(experiment, indent=1))
    (out / IMAGES).write_text(json.dumps(images))
    (out / ACCURACY).write_text("".join(line + "\n" for line in accuracy.values()))
    order = _canonical_order(experiment, images["indices"])
    ranked = sorted(records, key=lambda job: order.get(job, len(order)))
    (out / RECORDS).write_text("".join(records[job] + "\n" for job in ranked))
    (out / MERGED).write_text(
        json.dumps({"sources": [str(s) for s in sources], "records": len(records)}, indent=1)
    )
    return out


def _canonical_order(experiment: dict[str, Any], images: list[int]) -> dict[Any, int]:
    """Rank of every job in the grid's canonical order (image, attack, endpoint)."""
    attacks = [a["key"] for a in experiment["attacks"]]
    endpoints = [e["name"] for e in experiment["endpoints"]]
    jobs = [(a, e, i) for i in images for a in attacks for e in endpoints]
    return {job: rank for rank, job in enumerate(jobs)}
