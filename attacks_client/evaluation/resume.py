"""Resuming a run safely: one writer per run directory, and no records mixed across settings.

A rerun of ``evaluate`` skips the records already written; :func:`check_resume` refuses a
directory whose records were made under other run-level settings (dataset, seed, budget,
checkpoints, evaluator draws), and the grid refuses records made with other attack parameters
(:class:`ResumeMismatch`). :func:`run_lock` keeps a second process out (:class:`RunInProgress`).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from attacks_client.evaluation.experiment import Experiment
from attacks_client.evaluation.records import RECORDS, read_lines


class RunInProgress(RuntimeError):
    """Another process is writing the same run directory."""


@contextmanager
def run_lock(out_dir: Path) -> Iterator[None]:
    """One writer per run directory: two ``evaluate`` (or ``rejudge``) processes on the same
    directory would run and append the same records twice. The lock is an ``flock`` on
    ``out_dir/.lock``, released when the process ends, however it ends."""
    with (out_dir / ".lock").open("a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            raise RunInProgress(
                f"{out_dir} is being written by another process (pid {holder}); "
                "wait for it to end or stop it first"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield


class ResumeMismatch(ValueError):
    """The output directory holds records made with other attack parameters."""


# what a record depends on besides its attack's params (checked per record by `jobs`)
RECORD_SETTINGS = ("dataset", "seed", "budget", "checkpoints", "eval_draws")


def check_resume(out_dir: Path, description: dict[str, Any]) -> None:
    """Refuse to add records to a directory whose records were made under other settings."""
    previous = out_dir / "experiment.json"
    if not previous.exists() or not read_lines(out_dir / RECORDS):
        return
    old = json.loads(previous.read_text())
    changed = [key for key in RECORD_SETTINGS if key in old and old[key] != description[key]]
    if changed:
        raise ResumeMismatch(
            f"{out_dir} holds records made with other values of {', '.join(changed)} than the "
            "config's; use a new output directory"
        )


def describe(experiment: Experiment) -> dict[str, Any]:
    """The experiment without secrets, for the report."""
    return {
        "name": experiment.name,
        "images": experiment.images,
        "seed": experiment.seed,
        "budget": experiment.budget,
        "checkpoints": list(experiment.budget_checkpoints),
        "epsilons": list(experiment.epsilons),
        "primary_epsilon": experiment.primary_epsilon,
        "linf_epsilons": list(experiment.linf_epsilons),
        "eval_draws": experiment.eval_draws,
        "dataset": experiment.dataset,
        "endpoints": [
            {
                "name": e.name,
                "serve": e.serve,
                "url": e.url,
                "model": e.model,
                "eval_model": e.eval_model,
            }
            for e in experiment.endpoints
        ],
        "serve": experiment.serve,
        "attacks": [
            {
                "key": a.key,
                "name": a.name,
                "repeat": a.repeat,
                "params": a.params,
                "norm": a.norm,
                **({"start": a.start} if a.start else {}),
            }
            for a in experiment.attacks
        ],
        "reference": experiment.reference.name,
    }
