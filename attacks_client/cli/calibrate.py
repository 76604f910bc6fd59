"""``python -m attacks_client calibrate``: which σ to run for a model, with the evidence.

Serves the model behind SND at each ``--sigmas`` value on a local server (or measures the named
``--models`` of a running gateway, ``--url``), measures clean accuracy, P_mis, σ̂ and a quick
attack set at each σ, and names the largest σ within ``--max-accuracy-drop`` percentage points
of σ = 0's accuracy (:mod:`attacks_client.evaluation.calibration`). Rerun the same command after
an interruption: it resumes.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from rich.table import Table

from attacks_client.cli.common import OUT, CliError, Command, exit_on_sigterm
from attacks_client.evaluation import ResumeMismatch, RunInProgress
from attacks_client.evaluation.calibration import (
    DEFAULT_ATTACKS,
    DEFAULT_SIGMAS,
    CalibrationPlan,
    calibrate,
    verdict,
)
from attacks_client.evaluation.presets import preset_names, row_key


def configure_calibrate(parser: argparse.ArgumentParser) -> None:
    what = parser.add_argument_group("what to calibrate")
    what.add_argument("--model", default="resnet20-mnist", help="zoo model to serve")
    what.add_argument("--weights", default=None, help="local weights file for --model")
    what.add_argument(
        "--sigmas",
        type=float,
        nargs="+",
        default=list(DEFAULT_SIGMAS),
        help="σ values to serve and measure (0 = no defense, the baseline)",
    )
    what.add_argument("--data", default="embedded", help="test images (see the attack commands)")
    what.add_argument("--url", default=None, help="calibrate a running gateway instead")
    what.add_argument(
        "--models", nargs="+", default=[], help="with --url: the gateway's models to compare"
    )
    what.add_argument("--api-key", default=None, help="with --url: the attacker's X-API-Key")
    what.add_argument("--eval-api-key", default=None, help="with --url: the evaluator's key")
    rule = parser.add_argument_group("the choice")
    rule.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=0.5,
        help="clean accuracy may fall this many percentage points below σ = 0's",
    )
    rule.add_argument("--accuracy-repeats", type=int, default=5, help="noisy passes per σ")
    rule.add_argument(
        "--accuracy-images", type=int, default=None, help="test images for accuracy (all)"
    )
    rule.add_argument(
        "--sigma-hat-images",
        type=int,
        default=100,
        help="images whose margin spread under the noise gives σ̂ (50 draws each)",
    )
    quick = parser.add_argument_group("the quick attacks")
    quick.add_argument(
        "--attacks", nargs="+", default=list(DEFAULT_ATTACKS), choices=preset_names()
    )
    quick.add_argument("--images", type=int, default=5, help="images attacked per σ")
    quick.add_argument("--budget", type=int, default=2000, help="queries per image")
    quick.add_argument("--epsilon", type=float, default=1.5, help="L2 radius of success")
    quick.add_argument("--eval-draws", type=int, default=10, help="evaluator draws per verdict")
    quick.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=4, help="images attacked at once")
    parser.add_argument("--out", type=Path, help="run directory (default: runs/calibrate-<model>)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def plan_of(args: argparse.Namespace) -> CalibrationPlan:
    try:
        return CalibrationPlan(
            model=args.model,
            weights=args.weights,
            sigmas=tuple(args.sigmas),
            attacks=tuple(args.attacks),
            images=args.images,
            budget=args.budget,
            epsilon=args.epsilon,
            max_accuracy_drop=args.max_accuracy_drop,
            accuracy_repeats=args.accuracy_repeats,
            accuracy_images=args.accuracy_images,
            sigma_hat_images=args.sigma_hat_images,
            dataset=args.data,
            seed=args.seed,
            eval_draws=args.eval_draws,
            url=args.url,
            models=tuple(args.models),
            api_key=args.api_key,
            eval_api_key=args.eval_api_key,
        )
    except ValueError as exc:
        raise CliError(str(exc)) from None


def command_line(plan: CalibrationPlan, out: Path) -> str:
    """The command that reproduces ``plan`` (written on the calibration page)."""
    parts = ["python", "-m", "attacks_client", "calibrate"]
    if plan.url:
        parts += ["--url", plan.url, "--models", *plan.models]
    else:
        parts += ["--model", plan.model] + (["--weights", plan.weights] if plan.weights else [])
        parts += ["--sigmas", *(f"{s:g}" for s in plan.sigmas)]
    parts += ["--max-accuracy-drop", f"{plan.max_accuracy_drop:g}"]
    parts += ["--attacks", *plan.attacks, "--images", str(plan.images)]
    parts += ["--budget", str(plan.budget), "--epsilon", f"{plan.epsilon:g}"]
    parts += ["--accuracy-repeats", str(plan.accuracy_repeats), "--out", str(out)]
    if plan.accuracy_images:
        parts += ["--accuracy-images", str(plan.accuracy_images)]
    if plan.sigma_hat_images != 100:
        parts += ["--sigma-hat-images", str(plan.sigma_hat_images)]
    return shlex.join(parts)


def run_calibrate(args: argparse.Namespace) -> int:
    plan = plan_of(args)
    if args.workers < 1:
        raise CliError("--workers must be positive")
    out = args.out or Path("runs") / f"calibrate-{plan.model if not plan.url else 'gateway'}"
    exit_on_sigterm()
    try:
        result = calibrate(
            plan,
            out,
            workers=args.workers,
            progress=not args.quiet,
            command=command_line(plan, out),
        )
    except (ResumeMismatch, RunInProgress, ValueError) as exc:
        raise CliError(str(exc)) from None
    table = Table(title=f"calibration of {plan.model if not plan.url else plan.url}")
    for column in ("σ", "clean accuracy (%)", "P_mis", "σ̂", *plan.attacks):
        table.add_column(column, justify="right")
    for row in result.rows:
        mark = " ←" if result.choice is not None and row is result.choice else ""
        table.add_row(
            f"{row.sigma:g}{mark}",
            f"{row.accuracy:.2f} ± {row.accuracy_std:.2f}",
            "–" if row.clean_p_mis is None else f"{row.clean_p_mis:.4f}",
            "–" if row.sigma_hat is None else f"{row.sigma_hat:.4f}",
            *[f"{100 * row.success(row_key(a, plan.epsilon)):.0f}%" for a in plan.attacks],
        )
    OUT.print(table)
    OUT.print(verdict(result.rows, result.choice, plan.max_accuracy_drop))
    OUT.print(f"page: {result.page}")
    return 0


COMMAND = Command(
    help="choose σ for a model: accuracy, P_mis and quick attacks at each σ, and the pick",
    configure=configure_calibrate,
    handler=run_calibrate,
)
