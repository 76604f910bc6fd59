"""Evaluation: the paper's protocol over the attacks (above them, below the CLI).

An :class:`Experiment` file (``experiments/*.toml``) names endpoints and attacks; :func:`evaluate`
runs the grid into JSONL records (:mod:`~attacks_client.evaluation.records`), resumably, starting
the local services it asks for (:mod:`~attacks_client.evaluation.launch`); :func:`rejudge` adds
the noise-free reference's verdicts; :func:`report` writes the tables (from
:mod:`~attacks_client.evaluation.measures`) and plots of a run (:class:`Run`).
"""

from attacks_client.evaluation.experiment import AttackConfig, EndpointConfig, Experiment
from attacks_client.evaluation.grid import evaluate
from attacks_client.evaluation.rejudge import CandidatesDropped, rejudge
from attacks_client.evaluation.report import report
from attacks_client.evaluation.resume import ResumeMismatch, RunInProgress
from attacks_client.evaluation.runs import Run

__all__ = [
    "AttackConfig",
    "CandidatesDropped",
    "EndpointConfig",
    "Experiment",
    "ResumeMismatch",
    "Run",
    "RunInProgress",
    "evaluate",
    "rejudge",
    "report",
]
