"""``python -m attacks_client <attack> --url ...``: one attack on N images, scored and tabled.

Success at checkpoint q: the attack held a candidate after q queries, its distance to x0 is at
most epsilon (L2, or L∞ for an attack that searches an L∞ ball: ``--judge-norm``), and a
separate evaluator identity (not counted against the attack) sees it misclassified in the
majority of ``--eval-draws`` draws. One JSONL record per image (``--output``) and a summary
table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from attacks_client.attacks import ATTACKS, Attack, get_attack
from attacks_client.attacks.params import attack_signature, parse_params
from attacks_client.cli.common import CliError, Command, add_endpoint_arguments
from attacks_client.data import START_POOL, STARTS, ImageSet, load_images, other_class_start
from attacks_client.evaluation.experiment import searched_norm
from attacks_client.evaluation.scoring import (
    checkpoints_for,
    image_seed,
    score_result,
    select_images,
    summarize,
)
from attacks_client.oracles import JitterOracle, Oracle, RepeatOracle, open_oracle


def _checkpoints(text: str) -> list[int]:
    try:
        values = sorted({int(float(v)) for v in text.split(",") if v.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"checkpoints must be integers, got {text!r}") from None
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError("checkpoints must be positive")
    return values


def configure_attack(parser: argparse.ArgumentParser) -> None:
    add_endpoint_arguments(parser)
    run = parser.add_argument_group("run")
    run.add_argument(
        "--images", type=int, default=10, help="correctly classified test images to attack"
    )
    run.add_argument(
        "--data",
        default="embedded",
        help="'embedded' (MNIST test split), a CIFAR-10 batch dir, or a .npz file",
    )
    run.add_argument("--seed", type=int, default=0, help="image sampling and attack seed")
    run.add_argument("--budget", type=int, default=10_000, help="queries per image")
    run.add_argument(
        "--epsilon",
        type=float,
        nargs="+",
        default=None,
        help="success thresholds in the judged norm, several allowed (default: L2 1.0; "
        "in L∞ the attack's own epsilon, else 0.3)",
    )
    run.add_argument(
        "--judge-norm",
        choices=("l2", "linf"),
        default=None,
        help="the distance success is judged in (default: the ball the attack searches: "
        "L∞ for rays and square with norm=inf, else L2)",
    )
    run.add_argument(
        "--checkpoints",
        type=_checkpoints,
        default=[1000, 2000, 5000, 10000],
        help="query counts to score at, comma-separated (clipped to the budget)",
    )
    run.add_argument(
        "--eval-draws",
        type=int,
        default=10,
        help="evaluator draws per candidate; success needs a majority",
    )
    run.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="adaptive attack: majority/mean of T real queries per logical query",
    )
    run.add_argument(
        "--jitter",
        type=float,
        default=0.0,
        metavar="S",
        help="add the attacker's own Gaussian noise of std S to every query (against "
        "stateful detection); with --repeat each repeat gets its own draw",
    )
    run.add_argument(
        "--start",
        choices=STARTS,
        default=None,
        help="offer a decision attack a natural start: of the data's first "
        f"{START_POOL} images, one of another class (PopSkipJump's experiments)",
    )
    run.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="attack hyperparameter (repeatable), typed by the attack's signature",
    )
    run.add_argument(
        "--show-params",
        action="store_true",
        help="print the attack's hyperparameters and defaults, then exit",
    )
    run.add_argument("--output", default=None, help="JSONL file, one record per image")
    run.add_argument(
        "--trajectory-stride",
        type=int,
        default=10,
        help="keep every k-th query's L2 in the record (1 = all)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar")


def run_attack_command(name: str, args: argparse.Namespace) -> int:
    """``python -m attacks_client <attack> ...``: returns the exit status."""
    try:
        cls = get_attack(name)
    except ImportError as exc:
        raise CliError(f"attack {name!r} is not available in this install ({exc})") from None
    if args.show_params:
        for key, (annotation, default) in attack_signature(cls).items():
            print(f"{key} = {default!r}  ({getattr(annotation, '__name__', annotation)})")
        return 0
    try:
        params = parse_params(cls, args.param)
        attack = cls(**params)
    except (TypeError, ValueError) as exc:
        raise CliError(str(exc)) from None
    if min(args.budget, args.images, args.eval_draws, args.repeat, args.trajectory_stride) < 1:
        raise CliError(
            "--budget, --images, --eval-draws, --repeat and --trajectory-stride must be positive"
        )
    if args.jitter < 0:
        raise CliError("--jitter must be >= 0")
    if args.judge_norm is None:
        args.judge_norm = searched_norm(name, params)
    if args.epsilon is None:
        own = getattr(attack, "epsilon", None)
        args.epsilon = (
            [1.0] if args.judge_norm == "l2" else [float(own) if own is not None else 0.3]
        )
    data = load_images(args.data)
    return _run(attack, data, args)


def _run(attack: Attack, data: ImageSet, args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    output: Literal["label", "scores"] = "scores" if attack.needs_scores else "label"
    http = open_oracle(
        args.url,
        args.model,
        protocol=args.protocol,
        api_key=args.api_key,
        output=output,
        timeout=args.timeout,
    )
    evaluator = open_oracle(
        args.url,
        http.model,
        protocol=args.protocol,
        api_key=args.eval_api_key or args.api_key,
        output="label",
        timeout=args.timeout,
    )
    sent: Oracle = JitterOracle(http, args.jitter, seed=args.seed) if args.jitter > 0 else http
    oracle: Oracle = (
        RepeatOracle(sent, args.repeat, mean=attack.repeat_mean) if args.repeat > 1 else sent
    )
    if tuple(data.images.shape[1:]) != http.input_shape:
        raise FileNotFoundError(
            f"images of shape {tuple(data.images.shape[1:])} do not fit model {http.model!r} "
            f"{http.input_shape}; pass --data with matching images"
        )
    samples = select_images(data, args.images, args.seed, evaluator, args.eval_draws)
    pool = None
    if args.start == "other-class":
        pool = ImageSet(data.images[:START_POOL], data.labels[:START_POOL])
    if len(samples) < args.images:
        console.print(f"only {len(samples)} correctly classified images available")
    checkpoints = checkpoints_for(args.checkpoints, args.budget)
    common = {
        "model": http.model,
        "url": http.url,
        "defense": http.defense,
        "repeat": args.repeat,
        "jitter": args.jitter,
        "eval_draws": args.eval_draws,
        "start": args.start,
        "seed": args.seed,
    }
    stack = contextlib.ExitStack()
    stack.callback(http.close)
    stack.callback(evaluator.close)
    out = None
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        out = stack.enter_context(Path(args.output).open("w"))  # noqa: SIM115

    records: list[dict[str, Any]] = []
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
    ]
    start = time.perf_counter()
    with stack, Progress(*columns, console=console, disable=args.quiet) as progress:
        images_task = progress.add_task(attack.name, total=len(samples), status="")
        query_task = progress.add_task("queries", total=args.budget, status="")

        def report(queries: int, l2: float) -> None:
            progress.update(query_task, completed=queries, status=f"L2 {l2:.3f}")

        for sample in samples:
            progress.reset(query_task, total=args.budget, status="")
            result = attack(
                oracle,
                sample.image,
                sample.label,
                args.budget,
                seed=image_seed(args.seed, sample.index),
                progress=report,
                start=None if pool is None else other_class_start(pool, sample.label),
            )
            record = score_result(
                result,
                sample,
                evaluator,
                checkpoints,
                args.epsilon,
                args.eval_draws,
                stride=args.trajectory_stride,
                extra=common,
                norm=args.judge_norm,
            )
            records.append(record)
            if out is not None:
                out.write(json.dumps(record) + "\n")
                out.flush()
            progress.advance(images_task)
            trajectory = " ".join(
                f"{q}:{'-' if v is None else f'{v:.3f}'}"
                for q, v in zip(checkpoints, record["l2"], strict=True)
            )
            progress.console.print(
                f"image {sample.index} (label {sample.label}): {result.queries} queries, "
                f"{result.stop_reason}; L2 at {trajectory}",
                highlight=False,
                soft_wrap=True,
            )
    elapsed = time.perf_counter() - start
    attack_time = sum(r["wall_time"] for r in records)
    total_queries = sum(r["queries"] for r in records)

    table = Table(
        title=f"{attack.name} on {http.model} ({len(records)} images, "
        f"defense {http.defense.get('kind', '?')})"
    )
    table.add_column("queries", justify="right")
    symbol = "ε∞" if args.judge_norm == "linf" else "ε"
    for eps in args.epsilon:
        table.add_column(f"success {symbol}={eps:g}", justify="right")
    for column in ("median L2", "mean L2 (found)", "mean ‖x0−x_q‖"):
        table.add_column(column, justify="right")
    for row in summarize(records, args.epsilon):
        table.add_row(
            str(row["queries"]),
            *[f"{100 * row['success'][f'{e:g}']:.1f}%" for e in args.epsilon],
            f"{row['median_l2']:.3f}",
            f"{row['mean_l2']:.3f} ({row['found']})",
            f"{row['mean_query_l2']:.3f}",
        )
    Console().print(table)
    rate = total_queries / attack_time if attack_time > 0 else 0.0
    Console().print(
        f"{total_queries} attack queries in {attack_time:.1f}s "
        f"({rate:.0f} queries/s); {elapsed:.1f}s in all"
        + (f"; records in {args.output}" if args.output else "")
    )
    return 0


def _handler(name: str) -> Callable[[argparse.Namespace], int]:
    return lambda args: run_attack_command(name, args)


ATTACK_COMMANDS: dict[str, Command] = {
    name: Command(
        help=f"run the {name} attack against an endpoint",
        configure=configure_attack,
        handler=_handler(name),
    )
    for name in ATTACKS
}
