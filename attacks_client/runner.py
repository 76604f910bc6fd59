"""Running an attack over a set of images and scoring it (the evaluation protocol, DESIGN §7).

Reusable pieces for the CLI and for grid runners: :func:`select_images` (N correctly classified
images, fixed seed), :func:`misclassified` (the evaluator's majority vote), :func:`score_result`
(one JSONL record per attacked image), :func:`summarize` (the table rows).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import numpy as np

from attacks_client.attacks import get_attack
from attacks_client.attacks.base import Attack, AttackResult
from attacks_client.data import ImageSet, load_images
from attacks_client.oracle import Oracle


@dataclass(frozen=True)
class Sample:
    """One image to attack: its index in the data source, pixels and label."""

    index: int
    image: np.ndarray
    label: int


# -- hyperparameters ----------------------------------------------------------------------------


def coerce(value: str, annotation: Any) -> Any:
    """Parse ``value`` as ``annotation`` (int, float, bool, str, Literal, ``X | None``)."""
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        if value.lower() in ("none", "null") and len(options) < len(get_args(annotation)):
            return None
        errors = []
        for option in options:
            try:
                return coerce(value, option)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError("; ".join(errors))
    if origin is Literal:
        choices = get_args(annotation)
        for choice in choices:
            if str(choice) == value:
                return choice
        raise ValueError(f"expected one of {', '.join(map(str, choices))}")
    if annotation is bool:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError("expected true or false")
    if annotation is int:
        number = float(value)
        if not number.is_integer():
            raise ValueError("expected an integer")
        return int(number)
    if annotation is float:
        return float(value)
    if annotation is str or annotation is Any:
        return value
    raise ValueError(f"cannot parse a {annotation!r} from the command line")


def attack_signature(cls: type[Attack]) -> dict[str, tuple[Any, Any]]:
    """``name -> (annotation, default)`` of the attack's ``__init__`` hyperparameters."""
    import inspect

    hints = typing.get_type_hints(cls.__init__)
    out = {}
    for name, parameter in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        out[name] = (hints.get(name, str), parameter.default)
    return out


def parse_params(cls: type[Attack], pairs: Sequence[str]) -> dict[str, Any]:
    """``["k=200", "alpha=0.1"]`` -> typed keyword arguments of ``cls``; ``ValueError`` names the
    offending pair."""
    signature = attack_signature(cls)
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise ValueError(f"--param {pair!r}: expected KEY=VALUE")
        if key not in signature:
            raise ValueError(f"--param {key!r}: {cls.name} has no such hyperparameter; "
                             f"it takes {', '.join(signature)}")
        try:
            params[key] = coerce(value.strip(), signature[key][0])
        except ValueError as exc:
            raise ValueError(f"--param {pair!r}: {exc}") from None
    return params


# -- images and evaluation ----------------------------------------------------------------------


def misclassified(
    evaluator: Oracle, candidates: np.ndarray, label: int, draws: int,
    target: int | None = None,
) -> np.ndarray:
    """Boolean per candidate: adversarial in a strict majority of ``draws`` evaluator draws
    (all draws of all candidates in one batch)."""
    if len(candidates) == 0:
        return np.zeros(0, bool)
    votes = evaluator.labels(np.repeat(candidates, draws, axis=0)).reshape(len(candidates), draws)
    hits = votes == target if target is not None else votes != label
    return np.asarray(hits.sum(1) * 2 > draws)


def select_images(
    data: ImageSet, n: int, seed: int, evaluator: Oracle, draws: int = 1, chunk: int = 32
) -> list[Sample]:
    """The first ``n`` images, in a seeded random order, that the evaluator classifies
    correctly (majority of ``draws``)."""
    order = np.random.default_rng(seed).permutation(len(data))
    chosen: list[Sample] = []
    for start in range(0, len(order), chunk):
        idx = order[start : start + chunk]
        votes = evaluator.labels(np.repeat(data.images[idx], draws, axis=0))
        votes = votes.reshape(len(idx), draws)
        correct = (votes == data.labels[idx][:, None]).sum(1) * 2 > draws
        for i, ok in zip(idx, correct, strict=True):
            if ok:
                chosen.append(Sample(int(i), data.images[i], int(data.labels[i])))
                if len(chosen) == n:
                    return chosen
    return chosen


def checkpoints_for(requested: Sequence[int], budget: int) -> list[int]:
    """The requested checkpoints within the budget, plus the budget itself."""
    points = sorted({q for q in requested if q <= budget} | {budget})
    return points


def _finite(value: float, digits: int = 5) -> float | None:
    return round(float(value), digits) if math.isfinite(value) else None


def score_result(
    result: AttackResult,
    sample: Sample,
    evaluator: Oracle,
    checkpoints: Sequence[int],
    epsilons: Sequence[float],
    draws: int,
    *,
    stride: int = 10,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSONL record of one attacked image, with the evaluator's verdicts."""
    candidates = [result.candidate_at(q) for q in checkpoints]
    present = [i for i, c in enumerate(candidates) if c is not None]
    verdict = np.zeros(len(checkpoints), bool)
    if present:
        batch = np.stack([candidates[i] for i in present])  # type: ignore[misc]
        verdict[present] = misclassified(evaluator, batch, sample.label, draws)
    l2 = [result.l2_at(q) for q in checkpoints]
    query_l2 = result.query_l2
    at_query = [
        _finite(float(query_l2[min(q, len(query_l2)) - 1])) if len(query_l2) else None
        for q in checkpoints
    ]
    record: dict[str, Any] = {
        "attack": result.attack,
        "params": _jsonable(result.params),
        "image_index": sample.index,
        "label": sample.label,
        "budget": result.budget,
        "queries": result.queries,
        "reference_queries": result.reference_queries,
        "stop_reason": result.stop_reason,
        "wall_time": round(result.wall_time, 3),
        "checkpoints": list(checkpoints),
        "l2": [_finite(v) for v in l2],
        "misclassified": verdict.tolist(),
        "success": {
            f"{eps:g}": [bool(v and d <= eps) for v, d in zip(verdict, l2, strict=True)]
            for eps in epsilons
        },
        "query_l2_at": at_query,
        "updates": [[u.queries, _finite(u.l2)] for u in result.updates],
        "query_l2_stride": stride,
        "query_l2": [round(float(v), 4) for v in query_l2[::stride]],
    }
    if extra:
        record.update(extra)
    return record


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)


def summarize(
    records: Sequence[dict[str, Any]], epsilons: Sequence[float]
) -> list[dict[str, Any]]:
    """Per checkpoint: success rate per epsilon, median/mean candidate L2, mean query L2."""
    if not records:
        return []
    rows = []
    for j, q in enumerate(records[0]["checkpoints"]):
        l2 = np.array([math.inf if r["l2"][j] is None else r["l2"][j] for r in records])
        finite = l2[np.isfinite(l2)]
        at_query = [r["query_l2_at"][j] for r in records if r["query_l2_at"][j] is not None]
        rows.append({
            "queries": q,
            "success": {f"{e:g}": float(np.mean([r["success"][f"{e:g}"][j] for r in records]))
                        for e in epsilons},
            "median_l2": float(np.median(l2)),
            "mean_l2": float(finite.mean()) if len(finite) else math.inf,
            "found": int(len(finite)),
            "mean_query_l2": float(np.mean(at_query)) if at_query else math.nan,
        })
    return rows



# -- the attack command -------------------------------------------------------------------------


def image_seed(seed: int, index: int) -> int:
    """A per-image attack seed derived from the run seed and the image index."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def run_attack_command(name: str, args: argparse.Namespace) -> int:
    """``python -m attacks_client <attack> ...``: returns the exit status."""
    from attacks_client.cli import CliError

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
        raise CliError("--budget, --images, --eval-draws, --repeat and --trajectory-stride "
                       "must be positive")
    data = load_images(args.data)
    return _run(attack, data, args)


def _run(attack: Attack, data: ImageSet, args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.table import Table

    from attacks_client.adaptive import RepeatOracle
    from attacks_client.http import HttpOracle

    console = Console(stderr=True)
    output: Literal["label", "scores"] = "scores" if attack.needs_scores else "label"
    http = HttpOracle(args.url, args.model, api_key=args.api_key, output=output,
                      timeout=args.timeout)
    evaluator = HttpOracle(args.url, http.model, api_key=args.eval_api_key or args.api_key,
                           output="label", timeout=args.timeout)
    oracle: Oracle = RepeatOracle(http, args.repeat) if args.repeat > 1 else http
    if tuple(data.images.shape[1:]) != http.input_shape:
        raise FileNotFoundError(
            f"images of shape {tuple(data.images.shape[1:])} do not fit model {http.model!r} "
            f"{http.input_shape}; pass --data with matching images")
    samples = select_images(data, args.images, args.seed, evaluator, args.eval_draws)
    if len(samples) < args.images:
        console.print(f"only {len(samples)} correctly classified images available")
    checkpoints = checkpoints_for(args.checkpoints, args.budget)
    common = {"model": http.model, "url": http.url, "defense": http.defense,
              "repeat": args.repeat, "eval_draws": args.eval_draws, "seed": args.seed}
    stack = contextlib.ExitStack()
    stack.callback(http.close)
    stack.callback(evaluator.close)
    out = None
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        out = stack.enter_context(Path(args.output).open("w"))  # noqa: SIM115

    records: list[dict[str, Any]] = []
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[status]}")]
    start = time.perf_counter()
    with stack, Progress(*columns, console=console, disable=args.quiet) as progress:
        images_task = progress.add_task(attack.name, total=len(samples), status="")
        query_task = progress.add_task("queries", total=args.budget, status="")

        def report(queries: int, l2: float) -> None:
            progress.update(query_task, completed=queries, status=f"L2 {l2:.3f}")

        for sample in samples:
            progress.reset(query_task, total=args.budget, status="")
            result = attack(oracle, sample.image, sample.label, args.budget,
                            seed=image_seed(args.seed, sample.index), progress=report)
            record = score_result(result, sample, evaluator, checkpoints, args.epsilon,
                                  args.eval_draws, stride=args.trajectory_stride,
                                  extra=common)
            records.append(record)
            if out is not None:
                out.write(json.dumps(record) + "\n")
                out.flush()
            progress.advance(images_task)
            trajectory = " ".join(f"{q}:{'-' if v is None else f'{v:.3f}'}"
                                  for q, v in zip(checkpoints, record["l2"], strict=True))
            progress.console.print(
                f"image {sample.index} (label {sample.label}): {result.queries} queries, "
                f"{result.stop_reason}; L2 at {trajectory}", highlight=False, soft_wrap=True)
    elapsed = time.perf_counter() - start
    attack_time = sum(r["wall_time"] for r in records)
    total_queries = sum(r["queries"] for r in records)

    table = Table(title=f"{attack.name} on {http.model} ({len(records)} images, "
                        f"defense {http.defense.get('kind', '?')})")
    table.add_column("queries", justify="right")
    for eps in args.epsilon:
        table.add_column(f"success ε={eps:g}", justify="right")
    for column in ("median L2", "mean L2 (found)", "mean ‖x0−x_q‖"):
        table.add_column(column, justify="right")
    for row in summarize(records, args.epsilon):
        table.add_row(
            str(row["queries"]),
            *[f"{100 * row['success'][f'{e:g}']:.1f}%" for e in args.epsilon],
            f"{row['median_l2']:.3f}", f"{row['mean_l2']:.3f} ({row['found']})",
            f"{row['mean_query_l2']:.3f}",
        )
    Console().print(table)
    rate = total_queries / attack_time if attack_time > 0 else 0.0
    Console().print(f"{total_queries} attack queries in {attack_time:.1f}s "
                    f"({rate:.0f} queries/s); {elapsed:.1f}s in all"
                    + (f"; records in {args.output}" if args.output else ""))
    return 0
