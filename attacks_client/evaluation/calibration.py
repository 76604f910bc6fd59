"""``calibrate``: the σ an operator should run, chosen with evidence.

For each σ of a sweep the model is served behind SND σ (σ = 0: no defense) and measured as the
evaluation protocol measures it (:mod:`~attacks_client.evaluation.grid`): clean accuracy (mean ±
std over ``accuracy_repeats`` noisy passes of the test images), P_mis on clean images (answers
that differ from σ = 0's), σ̂ (the std of the margin loss under the noise, paper Sec. 4.2) and the
success of a quick attack set at L2 ≤ ε within the budget (HSJA with the parameterization the
paper ran, ART's; SimBA-DCT; Bandit-TD; the Square Attack in the L2 ball of radius ε, plain and
adaptive, since σ is to be judged by the strongest attack). The choice rule
(:func:`choose_sigma`): the largest σ whose mean clean accuracy is at most
``max_accuracy_drop`` percentage points below the baseline (σ = 0, or the smallest σ measured);
the verdict names the strongest attack there. A run is an evaluation directory, so an interrupted
calibration resumes where it stopped.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attacks_client.evaluation.experiment import EndpointConfig, Experiment
from attacks_client.evaluation.grid import evaluate
from attacks_client.evaluation.measures import success_counts
from attacks_client.evaluation.plots import plot_calibration
from attacks_client.evaluation.presets import attack_row
from attacks_client.evaluation.runs import Run
from attacks_client.evaluation.tables import markdown_table
from attacks_client.oracles import open_oracle

log = logging.getLogger(__name__)

DEFAULT_SIGMAS = (0.0, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05)
DEFAULT_ATTACKS = ("hsja", "popskipjump", "simba-dct", "bandit-td", "square", "square-adaptive")


@dataclass(frozen=True)
class CalibrationPlan:
    """What to sweep and how hard to attack each σ; the defaults finish in minutes on 2 cores."""

    model: str = "resnet20-mnist"
    weights: str | None = None
    sigmas: tuple[float, ...] = DEFAULT_SIGMAS
    attacks: tuple[str, ...] = DEFAULT_ATTACKS
    images: int = 5
    budget: int = 2000
    epsilon: float = 1.5
    max_accuracy_drop: float = 0.5
    accuracy_repeats: int = 5
    accuracy_images: int | None = None
    sigma_hat_images: int = 100
    """Images whose margin spread over 50 noise draws gives σ̂ (Sec. 4.2)."""
    dataset: str = "embedded"
    seed: int = 0
    eval_draws: int = 10
    url: str | None = None
    """A running gateway to calibrate instead: ``models`` are its models, σ read from each."""
    models: tuple[str, ...] = ()
    api_key: str | None = None
    eval_api_key: str | None = None
    serve_workers: int = 2

    def __post_init__(self) -> None:
        if self.url is None and not self.sigmas:
            raise ValueError("give at least one σ")
        if any(s < 0 or s > 1 for s in self.sigmas):
            raise ValueError("every σ must lie in [0, 1]")
        if self.url is not None and not self.models:
            raise ValueError("with a URL, name the gateway's models to compare (--models)")
        if min(self.images, self.budget, self.accuracy_repeats, self.eval_draws) < 1:
            raise ValueError("images, budget, accuracy repeats and eval draws must be positive")
        if self.max_accuracy_drop < 0:
            raise ValueError("the accuracy drop must be >= 0 percentage points")


def endpoint_name(sigma: float) -> str:
    return f"sigma-{sigma:g}"


def calibration_experiment(plan: CalibrationPlan) -> Experiment:
    """The evaluation grid of a calibration: one endpoint per σ (or per named model of a running
    gateway), the quick attacks on each."""
    attacks = tuple(attack_row(a, plan.epsilon) for a in plan.attacks)
    common: dict[str, Any] = {
        "attacks": attacks,
        "images": plan.images,
        "seed": plan.seed,
        "budget": plan.budget,
        "checkpoints": tuple(sorted({max(1, plan.budget // 2), plan.budget})),
        "epsilons": (plan.epsilon,),
        "primary_epsilon": plan.epsilon,
        "eval_draws": plan.eval_draws,
        "dataset": plan.dataset,
        "accuracy_repeats": plan.accuracy_repeats,
        "accuracy_images": plan.accuracy_images,
        "pmis_samples": 100,
        "sigma_hat_images": plan.sigma_hat_images,
        "sigma_hat_draws": 50,
    }
    if plan.url is not None:
        endpoints = tuple(
            EndpointConfig(
                name=m,
                url=plan.url,
                model=m,
                api_key=plan.api_key,
                eval_api_key=plan.eval_api_key,
                reference=i == 0,
            )
            for i, m in enumerate(plan.models)
        )
        return Experiment(name="calibration", endpoints=endpoints, **common)
    sigmas = sorted(set(plan.sigmas))
    models = []
    for sigma in sigmas:
        entry: dict[str, Any] = {
            "name": endpoint_name(sigma),
            "zoo": plan.model,
            "defense": {"kind": "snd", "sigma": sigma} if sigma > 0 else {"kind": "none"},
        }
        if plan.weights:
            entry["weights"] = plan.weights
        models.append(entry)
    endpoints = tuple(
        EndpointConfig(name=endpoint_name(s), model=endpoint_name(s), reference=i == 0)
        for i, s in enumerate(sigmas)
    )
    serve = {"workers": plan.serve_workers, "torch_threads": 1, "models": models}
    return Experiment(name="calibration", endpoints=endpoints, serve=serve, **common)


@dataclass(frozen=True)
class CalibrationRow:
    """One σ: clean accuracy in % (mean, std over repeats), P_mis on clean images, σ̂, and per
    attack the successes and images at the budget (L2 ≤ ε, the defended majority verdict)."""

    endpoint: str
    sigma: float
    accuracy: float
    accuracy_std: float
    clean_p_mis: float | None = None
    sigma_hat: float | None = None
    successes: dict[str, tuple[int, int]] = field(default_factory=dict)

    def success(self, attack: str) -> float:
        hits, n = self.successes.get(attack, (0, 0))
        return hits / n if n else math.nan


def sigma_of(defense: dict[str, Any]) -> float:
    """The σ of an endpoint's defense as ``GET /models`` described it (0 undefended)."""
    if defense.get("kind") == "none":
        return 0.0
    if defense.get("kind") == "snd":
        if "sigma" in defense:
            return float(defense["sigma"])
        raise ValueError("the gateway hides this model's σ (hide_defense_params)")
    raise ValueError(
        f"cannot calibrate a {defense.get('kind', 'hidden')!r} defense: give models behind SND "
        "(or none) whose parameters the gateway shows"
    )


def calibration_rows(run: Run) -> list[CalibrationRow]:
    """The rows of a calibration run, by increasing σ (endpoints without accuracy yet are left
    out)."""
    budget = run.checkpoints[-1]
    epsilon = float(run.experiment["primary_epsilon"])
    rows = []
    for row in run.accuracy:
        accuracies = [100 * a for a in row["accuracies"]]
        mean = sum(accuracies) / len(accuracies)
        std = math.sqrt(sum((a - mean) ** 2 for a in accuracies) / len(accuracies))
        successes = {}
        for attack in run.attacks:
            records = run.select(attack["key"], row["endpoint"])
            if records:
                successes[attack["key"]] = success_counts(records, budget, epsilon)
        rows.append(
            CalibrationRow(
                endpoint=row["endpoint"],
                sigma=sigma_of(row.get("defense") or {}),
                accuracy=mean,
                accuracy_std=std,
                clean_p_mis=row.get("clean_p_mis"),
                sigma_hat=row.get("sigma_hat"),
                successes=successes,
            )
        )
    return sorted(rows, key=lambda r: r.sigma)


def choose_sigma(rows: Sequence[CalibrationRow], max_drop: float) -> CalibrationRow | None:
    """The largest σ whose mean clean accuracy is within ``max_drop`` percentage points of the
    baseline (the σ = 0 row, else the smallest σ); ``None`` without rows."""
    if not rows:
        return None
    baseline = min(rows, key=lambda r: r.sigma)
    within = [r for r in rows if r.accuracy >= baseline.accuracy - max_drop - 1e-9]
    return max(within, key=lambda r: r.sigma)


def _fmt(value: float | None, digits: int = 4) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def calibration_table(rows: Sequence[CalibrationRow], attacks: Sequence[str]) -> str:
    header = ["σ", "Clean accuracy (%)", "P_mis (clean)", "σ̂"] + [
        f"{a} success (%)" for a in attacks
    ]
    body = [
        [
            f"{r.sigma:g}",
            f"{r.accuracy:.2f} ± {r.accuracy_std:.2f}",
            _fmt(r.clean_p_mis),
            _fmt(r.sigma_hat),
        ]
        + [
            f"{100 * r.success(a):.0f} ({r.successes.get(a, (0, 0))[0]}/"
            f"{r.successes.get(a, (0, 0))[1]})"
            for a in attacks
        ]
        for r in rows
    ]
    return markdown_table(header, body)


def verdict(rows: Sequence[CalibrationRow], choice: CalibrationRow | None, max_drop: float) -> str:
    """One sentence naming the σ to run, with its accuracy cost and the attack success there."""
    if choice is None:
        return "No σ was measured."
    baseline = min(rows, key=lambda r: r.sigma)
    attacks = ", ".join(
        f"{a} {100 * choice.success(a):.0f}% (vs {100 * baseline.success(a):.0f}% at σ = "
        f"{baseline.sigma:g})"
        for a in choice.successes
    )
    strongest = max(choice.successes, key=choice.success, default=None)
    if strongest is not None:
        attacks += (
            f". The strongest attack there is {strongest} "
            f"({100 * choice.success(strongest):.0f}%): that is what σ = {choice.sigma:g} "
            "leaves an attacker"
        )
    edge = (
        " It is the largest σ swept: extend --sigmas upward to find where accuracy gives way."
        if choice.sigma == max(r.sigma for r in rows) and len(rows) > 1
        else ""
    )
    return (
        f"Run σ = {choice.sigma:g}: the largest σ measured whose clean accuracy "
        f"({choice.accuracy:.2f}%) is within {max_drop:g} points of σ = {baseline.sigma:g}'s "
        f"({baseline.accuracy:.2f}%). Attack success there: {attacks or 'not measured'}.{edge}"
    )


def write_calibration(
    run: Run, rows: Sequence[CalibrationRow], max_drop: float, command: str
) -> Path:
    """``calibration.md``, ``calibration.csv`` and ``calibration.png`` in the run directory."""
    attacks = [a["key"] for a in run.attacks]
    choice = choose_sigma(rows, max_drop)
    exp = run.experiment
    out = run.directory
    images = run.accuracy[0]["images"] if run.accuracy else "–"
    repeats = len(run.accuracy[0]["accuracies"]) if run.accuracy else "–"
    with (out / "calibration.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            ["sigma", "endpoint", "accuracy_mean", "accuracy_std", "clean_p_mis", "sigma_hat"]
            + [f"{a}_success" for a in attacks]
        )
        for r in rows:
            writer.writerow(
                [r.sigma, r.endpoint, r.accuracy, r.accuracy_std, r.clean_p_mis, r.sigma_hat]
                + [r.success(a) for a in attacks]
            )
    baseline = min(rows, key=lambda r: r.sigma) if rows else None
    plot = plot_calibration(
        [r.sigma for r in rows],
        [r.accuracy for r in rows],
        [r.accuracy_std for r in rows],
        {a: [r.success(a) for r in rows] for a in attacks},
        out / "calibration.png",
        chosen=None if choice is None else choice.sigma,
        accuracy_floor=None if baseline is None else baseline.accuracy - max_drop,
    )
    lines = [
        "# Calibration: which σ to run",
        "",
        f"`{command}`",
        "",
        verdict(rows, choice, max_drop),
        "",
        calibration_table(rows, attacks),
        "",
        f"Attacks: {exp['images']} images each, {exp['checkpoints'][-1]} queries, success = L2 ≤ "
        f"{exp['primary_epsilon']} and misclassified by a majority of {exp['eval_draws']} "
        f"noisy draws. Clean accuracy: {images} test images, mean ± std over "
        f"{repeats} noisy passes. A few attacked images give coarse "
        "success rates (one image is 100/N points): for a decision, rerun at the chosen σ with "
        "`python -m attacks_client evaluate`.",
        "",
        f"![accuracy and attack success against σ]({plot.name})",
        "",
    ]
    path = out / "calibration.md"
    path.write_text("\n".join(lines))
    return path


@dataclass(frozen=True)
class Calibration:
    """A finished calibration: its rows, the chosen row and the page written."""

    rows: list[CalibrationRow]
    choice: CalibrationRow | None
    page: Path


def calibrate(
    plan: CalibrationPlan,
    out_dir: Path,
    *,
    workers: int = 4,
    progress: bool = True,
    command: str = "python -m attacks_client calibrate",
) -> Calibration:
    """Measure every σ of ``plan`` into ``out_dir`` (resuming what is there), then write the
    calibration page, CSV and plot. A gateway's models are checked first: each must show its σ."""
    if plan.url is not None:
        for model in plan.models:
            key = plan.eval_api_key or plan.api_key
            with open_oracle(plan.url, model, api_key=key) as oracle:
                try:
                    sigma_of(oracle.defense)
                except ValueError as exc:
                    raise ValueError(f"model {model!r}: {exc}") from None
    evaluate(calibration_experiment(plan), out_dir, workers=workers, progress=progress)
    run = Run.load(out_dir)
    rows = calibration_rows(run)
    page = write_calibration(run, rows, plan.max_accuracy_drop, command)
    return Calibration(rows, choose_sigma(rows, plan.max_accuracy_drop), page)
